// ATen entry points of the CUDA kernels (cuda/kernels.h): argument checks with messages
// that name the argument, layout fix-ups (copies only when the inner stride is not 1 or a row is
// not 16-byte aligned), the device guard and current stream, and the plain ATen references.
#include "cuda/kernels.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <string>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "launch.h"

namespace attnkit::cuda {
namespace {

namespace ck = attnkit::cuda_kernels;

std::string Shape(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&s, i ? ", " : "", t.size(i));
  return s + "]";
}

absl::Status LaunchStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ", cudaGetErrorString(err)));
}

absl::StatusOr<ck::DType> KernelDType(const at::Tensor& t, const char* name) {
  if (t.scalar_type() == at::kBFloat16) return ck::DType::kBFloat16;
  if (t.scalar_type() == at::kHalf) return ck::DType::kFloat16;
  return absl::InvalidArgumentError(absl::StrCat(name, " must be bfloat16 or float16, got ",
                                                 std::string(c10::toString(t.scalar_type()))));
}

absl::Status CheckCuda(const at::Tensor& t, const char* name, const at::Device& device) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (!t.is_cuda())
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be on a CUDA device, got ", t.device().str()));
  if (t.device() != device)
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is on ", t.device().str(), ", expected ", device.str()));
  return absl::OkStatus();
}

// The kernels read rows with 16-byte copies: inner stride 1, row/head strides multiples of 8
// elements and a 16-byte aligned base. Anything else is copied to a contiguous tensor.
at::Tensor KernelLayout(const at::Tensor& t) {
  bool ok = t.stride(-1) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int64_t i = 0; i + 1 < t.dim() && ok; ++i) ok = t.size(i) == 1 || t.stride(i) % 8 == 0;
  return ok ? t : t.contiguous();
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

using Named = std::pair<const at::Tensor*, const char*>;
absl::Status CheckAllCuda(std::initializer_list<Named> tensors, const at::Device& device) {
  for (const Named& t : tensors) {
    absl::Status st = CheckCuda(*t.first, t.second, device);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace

bool Compiled() { return true; }

bool Available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return count > 0 && at::globalContext().hasCUDA();
}

absl::StatusOr<BlockLists> MaskToBlockLists(const at::Tensor& mask, at::Device device) {
  if (!mask.defined() || mask.dim() != 3)
    return absl::InvalidArgumentError("mask must be [mask_heads, q_blocks, k_blocks]");
  if (mask.scalar_type() != at::kBool && mask.scalar_type() != at::kByte)
    return absl::InvalidArgumentError("mask must be bool or uint8");
  if (!device.is_cuda()) return absl::InvalidArgumentError("device must be a CUDA device");
  c10::cuda::CUDAGuard guard(device);
  at::Tensor m = mask.to(device, at::kByte).contiguous();
  const int64_t rows = m.size(0) * m.size(1), kb = m.size(2);
  auto opts = at::TensorOptions().device(device).dtype(at::kInt);
  BlockLists lists{at::empty({m.size(0), m.size(1), std::max<int64_t>(kb, 1)}, opts),
                   at::empty({m.size(0), m.size(1)}, opts)};
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  absl::Status st =
      LaunchStatus(ck::LaunchMaskToLists(m.data_ptr<uint8_t>(), static_cast<int>(rows),
                                         static_cast<int>(kb), lists.indices.data_ptr<int32_t>(),
                                         lists.counts.data_ptr<int32_t>(), stream),
                   "MaskToBlockLists");
  if (!st.ok()) return st;
  return lists;
}

absl::StatusOr<BlockLists> ShapeBlockLists(int64_t q_len, int64_t k_len, int64_t block_size,
                                           int64_t sink_size, int64_t recent_size,
                                           int64_t last_query_size, bool tri_shape,
                                           at::Device device, at::Tensor* mask) {
  if (block_size < 1) return absl::InvalidArgumentError("block_size must be >= 1");
  if (q_len < 0 || q_len > k_len)
    return absl::InvalidArgumentError(
        absl::StrCat("need 0 <= q_len <= k_len, got q_len ", q_len, " and k_len ", k_len));
  if (sink_size < 0 || recent_size < 0 || last_query_size < 0)
    return absl::InvalidArgumentError("sink_size, recent_size and last_query_size must be >= 0");
  if (!device.is_cuda()) return absl::InvalidArgumentError("device must be a CUDA device");
  const int64_t qb = CeilDiv(q_len, block_size), kb = CeilDiv(k_len, block_size);
  const int64_t sink_blocks = std::max<int64_t>(1, CeilDiv(sink_size, block_size));
  const int64_t recent_blocks = recent_size / block_size;
  int64_t tail = 0;
  // DenseTailRows of masks.h: the padding of the last block counts too; no tail for 0 queries.
  if (tri_shape && last_query_size > 0) {
    const int64_t pad = qb * block_size - q_len;
    tail = std::min(qb, CeilDiv(std::min(last_query_size, q_len) + pad, block_size));
  }
  const bool dense = q_len <= recent_size;
  const int64_t reach = CeilDiv(k_len - q_len, block_size);  // BlockGrid::reach
  c10::cuda::CUDAGuard guard(device);
  auto opts = at::TensorOptions().device(device).dtype(at::kInt);
  BlockLists lists{at::empty({1, qb, std::max<int64_t>(kb, 1)}, opts), at::empty({1, qb}, opts)};
  bool* mask_ptr = nullptr;
  if (mask != nullptr) {
    *mask = at::empty({1, qb, kb}, at::TensorOptions().device(device).dtype(at::kBool));
    mask_ptr = mask->data_ptr<bool>();
  }
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  absl::Status st = LaunchStatus(
      ck::LaunchShapeBlockLists(
          static_cast<int>(qb), static_cast<int>(kb), static_cast<int>(sink_blocks),
          static_cast<int>(recent_blocks), static_cast<int>(tail), dense, static_cast<int>(reach),
          lists.indices.data_ptr<int32_t>(), lists.counts.data_ptr<int32_t>(), mask_ptr, stream),
      "ShapeBlockLists");
  if (!st.ok()) return st;
  return lists;
}

absl::StatusOr<at::Tensor> BlockSparseAttention(const at::Tensor& q_in, const at::Tensor& k_in,
                                                const at::Tensor& v_in, const BlockLists& lists,
                                                int64_t block_size, double scale) {
  if (!q_in.defined()) return absl::InvalidArgumentError("q is undefined");
  const at::Device device = q_in.device();
  if (absl::Status st = CheckAllCuda({{&q_in, "q"},
                                      {&k_in, "k"},
                                      {&v_in, "v"},
                                      {&lists.indices, "lists.indices"},
                                      {&lists.counts, "lists.counts"}},
                                     device);
      !st.ok())
    return st;
  if (q_in.dim() != 3 || k_in.dim() != 3 || v_in.dim() != 3)
    return absl::InvalidArgumentError(
        absl::StrCat("q, k, v must be [H, Lq, d], [Hkv, Lk, d], "
                     "[Hkv, Lk, d]; got ",
                     Shape(q_in), ", ", Shape(k_in), ", ", Shape(v_in)));
  auto dtype = KernelDType(q_in, "q");
  if (!dtype.ok()) return dtype.status();
  if (k_in.scalar_type() != q_in.scalar_type() || v_in.scalar_type() != q_in.scalar_type())
    return absl::InvalidArgumentError("k and v must have q's dtype");
  const int64_t H = q_in.size(0), Lq = q_in.size(1), d = q_in.size(2);
  const int64_t Hkv = k_in.size(0), Lk = k_in.size(1);
  if (d != 64 && d != 128)
    return absl::InvalidArgumentError(absl::StrCat("head dim must be 64 or 128, got ", d));
  if (k_in.size(2) != d || v_in.size(2) != d || v_in.size(0) != Hkv || v_in.size(1) != Lk)
    return absl::InvalidArgumentError(absl::StrCat("k and v must be [", Hkv, ", ", Lk, ", ", d,
                                                   "]; got ", Shape(k_in), " and ", Shape(v_in)));
  if (Hkv < 1 || H % Hkv != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("kv heads (", Hkv, ") must divide query heads (", H, ")"));
  if (Lq > Lk)
    return absl::InvalidArgumentError(absl::StrCat("Lq (", Lq, ") must be <= Lk (", Lk, ")"));
  if (block_size < 128 || block_size % 128 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be a multiple of 128 on CUDA, got ", block_size));
  if (!std::isfinite(scale) || scale <= 0)
    return absl::InvalidArgumentError("scale must be finite and > 0");
  const int64_t qb = CeilDiv(Lq, block_size);
  const at::Tensor& idx = lists.indices;
  const at::Tensor& cnt = lists.counts;
  if (idx.scalar_type() != at::kInt || cnt.scalar_type() != at::kInt || idx.dim() != 3 ||
      cnt.dim() != 2 || (idx.size(0) != 1 && idx.size(0) != H) || idx.size(1) != qb ||
      cnt.size(0) != idx.size(0) || cnt.size(1) != qb)
    return absl::InvalidArgumentError(absl::StrCat("lists must be int32 indices [1 or ", H, ", ",
                                                   qb, ", n] and counts [1 or ", H, ", ", qb,
                                                   "]; got ", Shape(idx), " and ", Shape(cnt)));
  if (Lk > (int64_t{1} << 30) || H * Hkv > (int64_t{1} << 30))
    return absl::InvalidArgumentError("sequence too long for the CUDA kernel");
  c10::cuda::CUDAGuard guard(device);
  const at::Tensor q = KernelLayout(q_in), k = KernelLayout(k_in), v = KernelLayout(v_in);
  const at::Tensor indices = idx.contiguous(), counts = cnt.contiguous();
  at::Tensor out = at::empty({H, Lq, d}, q.options().memory_format(at::MemoryFormat::Contiguous));
  if (Lq == 0 || H == 0) return out;
  ck::AttentionArgs a{};
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.out = out.data_ptr();
  a.q_head_stride = q.stride(0);
  a.q_row_stride = q.stride(1);
  a.k_head_stride = k.stride(0);
  a.k_row_stride = k.stride(1);
  a.v_head_stride = v.stride(0);
  a.v_row_stride = v.stride(1);
  a.o_head_stride = out.stride(0);
  a.o_row_stride = out.stride(1);
  a.num_heads = static_cast<int>(H);
  a.group = static_cast<int>(H / Hkv);
  a.q_len = static_cast<int>(Lq);
  a.k_len = static_cast<int>(Lk);
  a.head_dim = static_cast<int>(d);
  a.block_size = static_cast<int>(block_size);
  a.indices = indices.data_ptr<int32_t>();
  a.counts = counts.data_ptr<int32_t>();
  a.mask_heads = static_cast<int>(indices.size(0));
  a.q_blocks = static_cast<int>(qb);
  a.max_list = static_cast<int>(indices.size(2));
  a.scale = static_cast<float>(scale);
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  absl::Status st =
      LaunchStatus(ck::LaunchBlockSparseAttention(a, *dtype, stream), "BlockSparseAttention");
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<at::Tensor> BlockSparseAttentionReference(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& mask, int64_t block_size,
                                                         double scale) {
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3 || mask.dim() != 3)
    return absl::InvalidArgumentError("q, k, v and mask must be 3-D");
  const int64_t H = q.size(0), Lq = q.size(1), Hkv = k.size(0), Lk = k.size(1);
  if (Hkv < 1 || H % Hkv != 0 || Lq > Lk)
    return absl::InvalidArgumentError("need Hkv | H and Lq <= Lk");
  const auto dev = q.device();
  at::Tensor qf = q.to(at::kFloat);
  at::Tensor kf = k.to(at::kFloat).repeat_interleave(H / Hkv, 0);
  at::Tensor vf = v.to(at::kFloat).repeat_interleave(H / Hkv, 0);
  at::Tensor m = mask.to(dev, at::kBool)
                     .repeat_interleave(block_size, 1)
                     .repeat_interleave(block_size, 2)
                     .narrow(1, 0, Lq)
                     .narrow(2, 0, Lk);
  at::Tensor i = at::arange(Lq, at::TensorOptions().device(dev).dtype(at::kLong)).unsqueeze(1);
  at::Tensor j = at::arange(Lk, at::TensorOptions().device(dev).dtype(at::kLong)).unsqueeze(0);
  m = at::logical_and(m, (j <= i + (Lk - Lq)).unsqueeze(0));
  at::Tensor s = at::matmul(qf, kf.transpose(1, 2)) * scale;
  s = s.masked_fill(at::logical_not(m), -std::numeric_limits<float>::infinity());
  at::Tensor p = at::softmax(s, -1);
  p = at::where(at::isnan(p), at::zeros_like(p), p);  // rows that see no key
  return at::matmul(p, vf);
}

absl::StatusOr<at::Tensor> XAttentionEstimate(const at::Tensor& q_in, const at::Tensor& k_in,
                                              int64_t block_size, int64_t stride) {
  if (!q_in.defined()) return absl::InvalidArgumentError("q is undefined");
  const at::Device device = q_in.device();
  if (absl::Status st = CheckAllCuda({{&q_in, "q"}, {&k_in, "k"}}, device); !st.ok()) return st;
  if (q_in.dim() != 3 || k_in.dim() != 3)
    return absl::InvalidArgumentError(absl::StrCat("q, k must be [H, Lq, d], [Hkv, Lk, d]; got ",
                                                   Shape(q_in), ", ", Shape(k_in)));
  auto dtype = KernelDType(q_in, "q");
  if (!dtype.ok()) return dtype.status();
  if (k_in.scalar_type() != q_in.scalar_type())
    return absl::InvalidArgumentError("k must have q's dtype");
  const int64_t H = q_in.size(0), Lq = q_in.size(1), d = q_in.size(2);
  const int64_t Hkv = k_in.size(0), Lk = k_in.size(1);
  if (d != 64 && d != 128)
    return absl::InvalidArgumentError(absl::StrCat("head dim must be 64 or 128, got ", d));
  if (k_in.size(2) != d)
    return absl::InvalidArgumentError(
        absl::StrCat("k must be [Hkv, Lk, ", d, "], got ", Shape(k_in)));
  if (Hkv < 1 || H % Hkv != 0)
    return absl::InvalidArgumentError("kv heads must divide query heads");
  if (Lq > Lk) return absl::InvalidArgumentError("Lq must be <= Lk");
  if (stride < 1 || block_size % stride != 0 || (block_size / stride) % 8 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("block_size / stride must be a whole multiple of 8 on CUDA; got block_size ",
                     block_size, " and stride ", stride));
  if (Lk > (int64_t{1} << 30)) return absl::InvalidArgumentError("sequence too long");
  c10::cuda::CUDAGuard guard(device);
  const at::Tensor q = KernelLayout(q_in), k = KernelLayout(k_in);
  const int64_t qb = CeilDiv(Lq, block_size), kb = CeilDiv(Lk, block_size);
  at::Tensor out = at::zeros({H, qb, kb}, q.options().dtype(at::kFloat));
  if (Lq == 0 || H == 0) return out;
  ck::EstimateArgs a{};
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.out = out.data_ptr<float>();
  a.q_head_stride = q.stride(0);
  a.q_row_stride = q.stride(1);
  a.k_head_stride = k.stride(0);
  a.k_row_stride = k.stride(1);
  a.num_heads = static_cast<int>(H);
  a.group = static_cast<int>(H / Hkv);
  a.q_len = static_cast<int>(Lq);
  a.k_len = static_cast<int>(Lk);
  a.head_dim = static_cast<int>(d);
  a.block_size = static_cast<int>(block_size);
  a.stride = static_cast<int>(stride);
  a.q_blocks = static_cast<int>(qb);
  a.k_blocks = static_cast<int>(kb);
  // One-pass scratch (log2 partial sums per reshaped row and cell); none for the two-pass path.
  a.scratch_rows = ck::EstimateScratchRows(a);
  at::Tensor scratch;
  if (a.scratch_rows > 0) {
    scratch = at::empty({H * a.scratch_rows * kb}, q.options().dtype(at::kFloat));
    a.scratch = scratch.data_ptr<float>();
  }
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  absl::Status st =
      LaunchStatus(ck::LaunchXAttentionEstimate(a, *dtype, stream), "XAttentionEstimate");
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<at::Tensor> PagedDecodeAttention(const at::Tensor& q_in, const PagedCache& cache,
                                                double scale, at::Tensor* scores,
                                                int64_t split_tokens, const at::Tensor* out_in) {
  if (!q_in.defined()) return absl::InvalidArgumentError("q is undefined");
  const at::Device device = q_in.device();
  const bool by_id = !cache.page_ptrs.defined();
  const at::Tensor& pp = by_id ? cache.page_ids : cache.page_ptrs;
  const char* table_name = by_id ? "cache.page_ids" : "cache.page_ptrs";
  if (absl::Status st = CheckAllCuda(
          {{&q_in, "q"}, {&pp, table_name}, {&cache.lengths, "cache.lengths"}}, device);
      !st.ok())
    return st;
  auto dtype = KernelDType(q_in, "q");
  if (!dtype.ok()) return dtype.status();
  if (cache.dtype != q_in.scalar_type())
    return absl::InvalidArgumentError("the cache's dtype must be q's dtype");
  if (q_in.dim() != 2 || q_in.size(1) != cache.head_dim)
    return absl::InvalidArgumentError(
        absl::StrCat("q must be [H, ", cache.head_dim, "], got ", Shape(q_in)));
  const int64_t H = q_in.size(0), d = cache.head_dim;
  if (d != 64 && d != 128)
    return absl::InvalidArgumentError(absl::StrCat("head dim must be 64 or 128, got ", d));
  if (pp.scalar_type() != (by_id ? at::kInt : at::kLong) || pp.dim() != 2 || pp.size(0) < 1 ||
      H % pp.size(0) != 0 || pp.stride(1) != 1)
    return absl::InvalidArgumentError(absl::StrCat(
        table_name, " must be ", by_id ? "int32" : "int64",
        " [Hkv, max_pages] with unit inner stride and Hkv dividing ", H, ", got ", Shape(pp)));
  const int64_t Hkv = pp.size(0);
  if (by_id) {
    if (absl::Status st = CheckCuda(cache.arena, "cache.arena", device); !st.ok()) return st;
    if (cache.arena.scalar_type() != cache.dtype || cache.arena.dim() != 2 ||
        cache.arena.size(1) != d || !cache.arena.is_contiguous() ||
        cache.arena.size(0) % (2 * std::max<int64_t>(cache.page_size, 1)) != 0)
      return absl::InvalidArgumentError(
          absl::StrCat("cache.arena must be contiguous [pages * 2 * page_size, ", d,
                       "] in the cache's dtype, got ", Shape(cache.arena)));
  }
  if (H / Hkv > 8) return absl::InvalidArgumentError("at most 8 query heads per kv head on CUDA");
  if (cache.lengths.scalar_type() != at::kInt || cache.lengths.dim() != 1 ||
      cache.lengths.size(0) != Hkv)
    return absl::InvalidArgumentError(absl::StrCat("cache.lengths must be int32 [", Hkv, "]"));
  if (cache.page_size < 1 || cache.max_length < 0 ||
      cache.max_length > pp.size(1) * cache.page_size || cache.max_length > (int64_t{1} << 30))
    return absl::InvalidArgumentError(
        "cache.page_size must be >= 1 and 0 <= cache.max_length <= max_pages * page_size");
  if (scores != nullptr) {
    absl::Status st = CheckCuda(*scores, "scores", device);
    if (!st.ok()) return st;
    if (scores->scalar_type() != at::kFloat || scores->dim() != 2 ||
        (scores->size(0) != Hkv && scores->size(0) != H) || scores->size(1) < cache.max_length ||
        scores->stride(1) != 1)
      return absl::InvalidArgumentError(
          absl::StrCat("scores must be float32 [", Hkv, " or ", H, ", >= ", cache.max_length,
                       "] with unit inner stride, got ", Shape(*scores)));
  }
  if (out_in != nullptr) {
    absl::Status st = CheckCuda(*out_in, "out", device);
    if (!st.ok()) return st;
    if ((out_in->scalar_type() != at::kFloat && out_in->scalar_type() != q_in.scalar_type()) ||
        out_in->dim() != 2 || out_in->size(0) != H || out_in->size(1) != d ||
        !out_in->is_contiguous())
      return absl::InvalidArgumentError(absl::StrCat(
          "out must be contiguous float32 or ", c10::toString(q_in.scalar_type()), " [", H, ", ", d,
          "], got ", c10::toString(out_in->scalar_type()), " ", Shape(*out_in)));
  }
  if (cache.rows_per_sequence < 0 ||
      (cache.rows_per_sequence > 0 && Hkv % cache.rows_per_sequence != 0))
    return absl::InvalidArgumentError(absl::StrCat("cache.rows_per_sequence must be 0 or divide ",
                                                   Hkv, ", got ", cache.rows_per_sequence));
  if (!std::isfinite(scale) || scale <= 0)
    return absl::InvalidArgumentError("scale must be finite and > 0");
  if (split_tokens < 0 || split_tokens > 1024 || split_tokens % 64 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("split_tokens must be 0 or a multiple of 64 up to 1024, got ", split_tokens));
  c10::cuda::CUDAGuard guard(device);
  const at::Tensor q = KernelLayout(q_in);
  const at::Tensor table = pp.contiguous(), lengths = cache.lengths.contiguous();
  at::Tensor out = out_in != nullptr
                       ? *out_in
                       : at::empty({H, d}, q.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t ws_floats = ck::DecodeWorkspaceFloats(static_cast<int>(H), static_cast<int>(d),
                                                      static_cast<int>(cache.max_length));
  at::Tensor ws = at::empty({ws_floats}, q.options().dtype(at::kFloat));
  ck::DecodeArgs a{};
  a.q = q.data_ptr();
  a.q_stride = q.stride(0);
  if (by_id) {
    a.page_ids = table.data_ptr<int32_t>();
    a.page_base = static_cast<const char*>(cache.arena.data_ptr());
    a.page_bytes = 2 * cache.page_size * d * static_cast<int64_t>(cache.arena.element_size());
  } else {
    a.page_ptrs = table.data_ptr<int64_t>();
  }
  a.max_pages = static_cast<int>(table.size(1));
  a.lengths = lengths.data_ptr<int32_t>();
  a.max_length = static_cast<int>(cache.max_length);
  a.page_size = static_cast<int>(cache.page_size);
  a.num_heads = static_cast<int>(H);
  a.group = static_cast<int>(H / Hkv);
  a.head_dim = static_cast<int>(d);
  a.out = out.data_ptr();
  a.out_float = out.scalar_type() == at::kFloat;
  a.scores = scores != nullptr ? scores->data_ptr<float>() : nullptr;
  a.scores_stride = scores != nullptr ? scores->stride(0) : 0;
  a.scores_per_head = scores != nullptr && scores->size(0) == H && H != Hkv;
  a.scale = static_cast<float>(scale);
  a.workspace = ws.data_ptr<float>();
  a.split_tokens = static_cast<int>(split_tokens);
  a.seq_rows = static_cast<int>(cache.rows_per_sequence);
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  absl::Status st = LaunchStatus(ck::LaunchPagedDecode(a, *dtype, stream), "PagedDecodeAttention");
  if (!st.ok()) return st;
  return out;
}

absl::Status AppendPagedRows(const at::Tensor& arena, const at::Tensor& page_ids,
                             const at::Tensor& lengths, int64_t page_size, const at::Tensor& k,
                             const at::Tensor& v) {
  if (!arena.defined()) return absl::InvalidArgumentError("arena is undefined");
  const at::Device device = arena.device();
  if (absl::Status st = CheckAllCuda(
          {{&arena, "arena"}, {&page_ids, "page_ids"}, {&lengths, "lengths"}, {&k, "k"}, {&v, "v"}},
          device);
      !st.ok())
    return st;
  if (arena.element_size() != 2 || arena.dim() != 2 || !arena.is_contiguous() || page_size < 1 ||
      arena.size(0) % (2 * page_size) != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "arena must be contiguous 16-bit [pages * 2 * page_size, d] with page_size >= 1, got ",
        c10::toString(arena.scalar_type()), " ", Shape(arena), " and page_size ", page_size));
  const int64_t d = arena.size(1);
  if (k.dim() != 4 || v.sizes() != k.sizes() || k.size(3) != d ||
      k.scalar_type() != arena.scalar_type() || v.scalar_type() != arena.scalar_type() ||
      k.stride(3) != 1 || v.stride(3) != 1)
    return absl::InvalidArgumentError(
        absl::StrCat("k and v must be [S, Hkv, T, ", d, "] in the arena's dtype (",
                     c10::toString(arena.scalar_type()), ") with unit inner stride, got ",
                     c10::toString(k.scalar_type()), " ", Shape(k), " and ",
                     c10::toString(v.scalar_type()), " ", Shape(v)));
  const int64_t R = k.size(0) * k.size(1), T = k.size(2);
  if (page_ids.scalar_type() != at::kInt || page_ids.dim() != 2 || page_ids.size(0) != R ||
      page_ids.stride(1) != 1)
    return absl::InvalidArgumentError(
        absl::StrCat("page_ids must be int32 [", R, ", max_pages] with unit inner stride, got ",
                     c10::toString(page_ids.scalar_type()), " ", Shape(page_ids)));
  if (lengths.scalar_type() != at::kInt || lengths.dim() != 1 || lengths.size(0) != R ||
      !lengths.is_contiguous())
    return absl::InvalidArgumentError(
        absl::StrCat("lengths must be contiguous int32 [", R, "], got ", Shape(lengths)));
  if (R > (int64_t{1} << 30) || T > (int64_t{1} << 24))
    return absl::InvalidArgumentError("too many rows or tokens for one append");
  const c10::cuda::CUDAGuard guard(device);
  ck::AppendArgs a{};
  a.arena = arena.data_ptr();
  a.page_ids = page_ids.data_ptr<int32_t>();
  a.ids_stride = page_ids.stride(0);
  a.lengths = lengths.data_ptr<int32_t>();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.k_seq_stride = k.stride(0);
  a.k_head_stride = k.stride(1);
  a.k_token_stride = k.stride(2);
  a.v_seq_stride = v.stride(0);
  a.v_head_stride = v.stride(1);
  a.v_token_stride = v.stride(2);
  a.rows = static_cast<int>(R);
  a.kv_heads = static_cast<int>(k.size(1));
  a.tokens = static_cast<int>(T);
  a.head_dim = static_cast<int>(d);
  a.page_size = static_cast<int>(page_size);
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  return LaunchStatus(ck::LaunchAppendPagedRows(a, stream), "AppendPagedRows");
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> DenseDecodeReference(const at::Tensor& q,
                                                                       const at::Tensor& k,
                                                                       const at::Tensor& v,
                                                                       double scale) {
  if (q.dim() != 2 || k.dim() != 3 || v.dim() != 3 || k.size(0) < 1 || q.size(0) % k.size(0) != 0)
    return absl::InvalidArgumentError("q [H, d], k and v [Hkv, L, d] with Hkv dividing H");
  const int64_t H = q.size(0), Hkv = k.size(0), G = H / Hkv, d = q.size(1);
  at::Tensor qf = q.to(at::kFloat).view({Hkv, G, d});
  at::Tensor s = at::matmul(qf, k.to(at::kFloat).transpose(1, 2)) * scale;  // [Hkv, G, L]
  at::Tensor p = at::softmax(s, -1);
  at::Tensor out = at::matmul(p, v.to(at::kFloat)).reshape({H, d});
  return std::make_pair(out, p.sum(1));
}

absl::Status AccumulateScoreRows(const at::Tensor& scores, const at::Tensor& attention,
                                 int64_t sources_per_row, int64_t start,
                                 const std::vector<int64_t>& fresh,
                                 const std::vector<int64_t>& prev) {
  const int64_t rows = static_cast<int64_t>(fresh.size());
  if (!scores.is_cuda() || scores.scalar_type() != at::kDouble || scores.dim() != 2 ||
      scores.size(0) != rows || scores.stride(1) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("scores must be float64 [", rows,
                     ", capacity] on a CUDA device with unit inner stride, got ",
                     std::string(c10::toString(scores.scalar_type())), " ", Shape(scores)));
  }
  if (!attention.is_cuda() || attention.device() != scores.device() ||
      attention.scalar_type() != at::kFloat || attention.dim() != 2 ||
      attention.size(0) != rows * sources_per_row || attention.stride(1) != 1 ||
      sources_per_row < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention must be float32 [", rows * sources_per_row,
                     ", K] with unit inner stride on the scores' device, got ",
                     std::string(c10::toString(attention.scalar_type())), " ", Shape(attention)));
  }
  if (prev.size() != fresh.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prev has ", prev.size(), " rows, fresh ", rows));
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (prev[r] < 0 || prev[r] > fresh[r] || fresh[r] > scores.size(1) ||
        start + fresh[r] > attention.size(1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", r, ": need 0 <= prev (", prev[r], ") <= fresh (", fresh[r],
                       ") <= capacity (", scores.size(1), ") and start + fresh <= K (", start,
                       " + ", fresh[r], " vs ", attention.size(1), ")"));
    }
  }
  const c10::cuda::CUDAGuard guard(scores.device());
  const auto stream = c10::cuda::getCurrentCUDAStream(scores.device().index()).stream();
  ck::ScoreRowsArgs a{};
  a.scores = scores.data_ptr<double>();
  a.score_stride = scores.stride(0);
  a.attention = attention.data_ptr<float>();
  a.attention_stride = attention.stride(0);
  a.sources_per_row = static_cast<int>(sources_per_row);
  a.start = start;
  for (int64_t row0 = 0; row0 < rows; row0 += ck::kScoreRowsChunk) {
    const int64_t n = std::min<int64_t>(ck::kScoreRowsChunk, rows - row0);
    int64_t max_fresh = 0;
    for (int64_t r = 0; r < n; ++r) {
      a.fresh[r] = fresh[row0 + r];
      a.prev[r] = prev[row0 + r];
      max_fresh = std::max(max_fresh, fresh[row0 + r]);
    }
    absl::Status st =
        LaunchStatus(ck::LaunchAccumulateScoreRows(a, static_cast<int>(row0), static_cast<int>(n),
                                                   max_fresh, stream),
                     "AccumulateScoreRows");
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace attnkit::cuda
