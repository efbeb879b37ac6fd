#include "attnkit/attnkit_sparse.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "attnkit/sparse/sparse_attention.h"
#include "capi_internal.h"

struct attnkit_sparse_attention {
  std::unique_ptr<attnkit::sparse::SparseAttention> impl;
};

using attnkit::capi::Guard;
using attnkit::capi::GuardVoid;
using attnkit::capi::ShapeString;

namespace {

constexpr const char kQLayout[] = "[batch, heads, q_len, head_dim]";
constexpr const char kKVLayout[] = "[batch, kv_heads, k_len, head_dim]";

absl::Status Create(const void* data, size_t size, bool text, attnkit_sparse_attention** out) {
  ATTNKIT_CHECK_ARG(out);
  *out = nullptr;
  if (data == nullptr && size > 0) {
    return absl::InvalidArgumentError(text ? "text: must not be NULL" : "data: must not be NULL");
  }
  const absl::string_view view = attnkit::capi::ByteView(data, size);
  auto options = attnkit::ParseSparseAttentionConfig(view, text);
  if (!options.ok()) return options.status();
  auto impl = attnkit::sparse::SparseAttention::Create(*options);
  if (!impl.ok()) return impl.status();
  *out = attnkit::capi::Adopt(new attnkit_sparse_attention{std::move(*impl)},
                              attnkit::capi::HandleKind::kSparseAttention);
  return absl::OkStatus();
}

// A float tensor argument of rank 4 with the given logical layout.
absl::StatusOr<at::Tensor> Input(const DLTensor* t, const char* name, const char* layout,
                                 bool is_output = false) {
  attnkit::capi::TensorSpec spec{name};
  spec.rank = 4;
  spec.layout = layout;
  spec.is_output = is_output;
  return attnkit::capi::FromDLPack(t, spec);
}

// A uint8 (or 8-bit bool) mask argument of rank 4, or 3 or 4 with `allow_rank3`; `expected` (its
// shape and layout) is named in rank errors.
absl::StatusOr<at::Tensor> MaskArgument(const DLTensor* t, const char* name, bool allow_rank3,
                                        bool is_output, const std::string& expected) {
  attnkit::capi::TensorSpec spec{name};
  spec.rank = allow_rank3 ? -1 : 4;
  spec.layout = expected.c_str();
  spec.is_output = is_output;
  spec.mask = true;
  auto mask = attnkit::capi::FromDLPack(t, spec);
  if (mask.ok() && allow_rank3 && mask->dim() != 3 && mask->dim() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected rank 3 or 4 ", expected, ", got rank ", mask->dim()));
  }
  return mask;
}

// Checks that k and v belong to q: same batch, GQA heads, one k_len.
absl::Status CheckBatch(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v) {
  const int64_t batch = q.size(0), heads = q.size(1);
  if (k.size(0) != batch || k.size(1) < 1 || heads % k.size(1) != 0 || k.size(3) != q.size(3)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "k: expected ", kKVLayout, " = [", batch, ", a divisor of ", heads, ", k_len, ", q.size(3),
        "] to match q ", ShapeString(q.sizes()), " ", kQLayout, ", got ", ShapeString(k.sizes())));
  }
  if (q.size(2) > k.size(2)) {
    return absl::InvalidArgumentError(absl::StrCat("q: q_len (", q.size(2), ") must be <= k_len (",
                                                   k.size(2),
                                                   "): the queries are the last positions"));
  }
  if (v != nullptr && (v->size(0) != batch || v->size(1) != k.size(1) || v->size(2) != k.size(2))) {
    return absl::InvalidArgumentError(absl::StrCat("v: expected [", batch, ", ", k.size(1), ", ",
                                                   k.size(2), ", head_dim] like k, got ",
                                                   ShapeString(v->sizes())));
  }
  return absl::OkStatus();
}

absl::Status CheckOut(const at::Tensor& out, const at::Tensor& q, const at::Tensor& v) {
  const std::vector<int64_t> expected{q.size(0), q.size(1), q.size(2), v.size(3)};
  if (out.sizes() != at::IntArrayRef(expected)) {
    return absl::InvalidArgumentError(absl::StrCat("out: expected shape ", ShapeString(expected),
                                                   " [batch, heads, q_len, head_dim of v], got ",
                                                   ShapeString(out.sizes())));
  }
  return absl::OkStatus();
}

// [first byte, last byte + 1) reachable through a tensor's strides.
std::pair<uintptr_t, uintptr_t> Span(const at::Tensor& t) {
  if (t.numel() == 0) return {0, 0};
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t last = 0;
  for (int64_t i = 0; i < t.dim(); ++i) last += (t.size(i) - 1) * t.stride(i);
  return {begin, begin + (last + 1) * t.element_size()};
}

absl::Status CheckNoAlias(const at::Tensor& out, std::initializer_list<const at::Tensor*> inputs) {
  const auto o = Span(out);
  for (const at::Tensor* in : inputs) {
    const auto i = Span(*in);
    if (o.first < i.second && i.first < o.second) {
      return absl::InvalidArgumentError("out: must not share memory with q, k, v or mask");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> ResolveScale(double scale, int64_t head_dim) {
  if (!std::isfinite(scale)) {
    return absl::InvalidArgumentError(absl::StrCat("scale: must be finite, got ", scale));
  }
  return scale == 0 ? 1.0 / std::sqrt(static_cast<double>(head_dim)) : scale;
}

}  // namespace

extern "C" {

attnkit_status* attnkit_sparse_attention_create(const void* data, size_t size,
                                                attnkit_sparse_attention** out) {
  return Guard(__func__, [&]() { return Create(data, size, /*text=*/false, out); });
}

attnkit_status* attnkit_sparse_attention_create_from_text(const char* text, size_t size,
                                                          attnkit_sparse_attention** out) {
  return Guard(__func__, [&]() { return Create(text, size, /*text=*/true, out); });
}

void attnkit_sparse_attention_free(attnkit_sparse_attention* sparse) {
  GuardVoid([&] {
    if (attnkit::capi::ReleaseHandle(sparse, attnkit::capi::HandleKind::kSparseAttention))
      delete sparse;
  });
}

attnkit_status* attnkit_sparse_attention_mask_shape(const attnkit_sparse_attention* sparse,
                                                    int64_t num_heads, int64_t q_len, int64_t k_len,
                                                    int64_t* mask_heads, int64_t* q_blocks,
                                                    int64_t* k_blocks) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(sparse, kSparseAttention);
    ATTNKIT_CHECK_ARG(mask_heads);
    ATTNKIT_CHECK_ARG(q_blocks);
    ATTNKIT_CHECK_ARG(k_blocks);
    if (num_heads < 1) {
      return absl::InvalidArgumentError(absl::StrCat("num_heads: must be >= 1, got ", num_heads));
    }
    auto grid = attnkit::sparse::BlockGrid::Make(q_len, k_len, sparse->impl->options().block_size);
    if (!grid.ok()) return grid.status();
    const int64_t heads = sparse->impl->MaskHeads(num_heads);
    int64_t cells = 0;
    if (__builtin_mul_overflow(heads, grid->q_blocks * grid->k_blocks, &cells)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "num_heads: ", num_heads, " gives a mask [mask_heads, q_blocks, k_blocks] = [", heads,
          ", ", grid->q_blocks, ", ", grid->k_blocks, "] of more than 2^63 elements (q_len ", q_len,
          ", k_len ", k_len, ")"));
    }
    *mask_heads = heads;
    *q_blocks = grid->q_blocks;
    *k_blocks = grid->k_blocks;
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_sparse_attention_build_mask(const attnkit_sparse_attention* sparse,
                                                    const DLTensor* q, const DLTensor* k,
                                                    DLTensor* mask_out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(sparse, kSparseAttention);
    auto qt = Input(q, "q", kQLayout);
    if (!qt.ok()) return qt.status();
    auto kt = Input(k, "k", kKVLayout);
    if (!kt.ok()) return kt.status();
    if (absl::Status s = CheckBatch(*qt, *kt, nullptr); !s.ok()) return s;
    const auto& impl = *sparse->impl;
    auto grid =
        attnkit::sparse::BlockGrid::Make(qt->size(2), kt->size(2), impl.options().block_size);
    if (!grid.ok()) return grid.status();
    const std::vector<int64_t> expected{qt->size(0), impl.MaskHeads(qt->size(1)), grid->q_blocks,
                                        grid->k_blocks};
    const std::string layout =
        absl::StrCat(ShapeString(expected), " [batch, mask_heads, q_blocks, k_blocks]");
    auto mt = MaskArgument(mask_out, "mask_out", /*allow_rank3=*/false, /*is_output=*/true, layout);
    if (!mt.ok()) return mt.status();
    if (mt->sizes() != at::IntArrayRef(expected)) {
      return absl::InvalidArgumentError(
          absl::StrCat("mask_out: expected shape ", layout, ", got ", ShapeString(mt->sizes())));
    }
    for (int64_t b = 0; b < qt->size(0); ++b) {
      auto mask = impl.BuildMask((*qt)[b], (*kt)[b]);
      if (!mask.ok()) return mask.status();
      (*mt)[b].copy_(mask->to(at::kByte));
    }
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_sparse_attention_attention(const attnkit_sparse_attention* sparse,
                                                   const DLTensor* q, const DLTensor* k,
                                                   const DLTensor* v, const DLTensor* mask,
                                                   double scale, DLTensor* out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(sparse, kSparseAttention);
    auto qt = Input(q, "q", kQLayout);
    if (!qt.ok()) return qt.status();
    auto kt = Input(k, "k", kKVLayout);
    if (!kt.ok()) return kt.status();
    auto vt = Input(v, "v", kKVLayout);
    if (!vt.ok()) return vt.status();
    if (absl::Status s = CheckBatch(*qt, *kt, &*vt); !s.ok()) return s;
    const auto& impl = *sparse->impl;
    auto grid =
        attnkit::sparse::BlockGrid::Make(qt->size(2), kt->size(2), impl.options().block_size);
    if (!grid.ok()) return grid.status();
    const int64_t batch = qt->size(0), heads = qt->size(1);
    const std::string layout =
        absl::StrCat("[", batch, ", 1 or ", heads, ", ", grid->q_blocks, ", ", grid->k_blocks,
                     "] [batch, mask_heads, q_blocks, k_blocks] (or without batch)");
    auto mt = MaskArgument(mask, "mask", /*allow_rank3=*/true, /*is_output=*/false, layout);
    if (!mt.ok()) return mt.status();
    const bool batched = mt->dim() == 4;
    const int64_t mh = mt->size(batched ? 1 : 0);
    if ((batched && mt->size(0) != batch) || (mh != 1 && mh != heads) ||
        mt->size(mt->dim() - 2) != grid->q_blocks || mt->size(mt->dim() - 1) != grid->k_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mask: expected shape ", layout, ", got ", ShapeString(mt->sizes()), " (q_len ",
          qt->size(2), ", k_len ", kt->size(2), ", block_size ", impl.options().block_size, ")"));
    }
    auto ot = Input(out, "out", "[batch, heads, q_len, head_dim]", /*is_output=*/true);
    if (!ot.ok()) return ot.status();
    if (absl::Status s = CheckOut(*ot, *qt, *vt); !s.ok()) return s;
    if (absl::Status s = CheckNoAlias(*ot, {&*qt, &*kt, &*vt, &*mt}); !s.ok()) return s;
    auto resolved = ResolveScale(scale, qt->size(3));
    if (!resolved.ok()) return resolved.status();
    for (int64_t b = 0; b < batch; ++b) {
      auto o = impl.Attention((*qt)[b], (*kt)[b], (*vt)[b], batched ? (*mt)[b] : *mt, *resolved);
      if (!o.ok()) return o.status();
      (*ot)[b].copy_(*o);
    }
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_sparse_attention_prefill(const attnkit_sparse_attention* sparse,
                                                 const DLTensor* q, const DLTensor* k,
                                                 const DLTensor* v, double scale, DLTensor* out,
                                                 double* density) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(sparse, kSparseAttention);
    auto qt = Input(q, "q", kQLayout);
    if (!qt.ok()) return qt.status();
    auto kt = Input(k, "k", kKVLayout);
    if (!kt.ok()) return kt.status();
    auto vt = Input(v, "v", kKVLayout);
    if (!vt.ok()) return vt.status();
    if (absl::Status s = CheckBatch(*qt, *kt, &*vt); !s.ok()) return s;
    auto ot = Input(out, "out", "[batch, heads, q_len, head_dim]", /*is_output=*/true);
    if (!ot.ok()) return ot.status();
    if (absl::Status s = CheckOut(*ot, *qt, *vt); !s.ok()) return s;
    if (absl::Status s = CheckNoAlias(*ot, {&*qt, &*kt, &*vt}); !s.ok()) return s;
    auto resolved = ResolveScale(scale, qt->size(3));
    if (!resolved.ok()) return resolved.status();
    const int64_t batch = qt->size(0);
    double total = 0;
    for (int64_t b = 0; b < batch; ++b) {
      double d = 1.0;
      auto o = sparse->impl->Prefill((*qt)[b], (*kt)[b], (*vt)[b], *resolved, &d);
      if (!o.ok()) return o.status();
      (*ot)[b].copy_(*o);
      total += d;
    }
    if (density != nullptr) *density = batch > 0 ? total / static_cast<double>(batch) : 1.0;
    return absl::OkStatus();
  });
}

}  // extern "C"
