#include "cpu/xattention_estimate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cpu/sparse_gemm.h"
#include "cpu/sparse_parallel.h"
#include "cpu/sparse_vec.h"

namespace attnkit::kernels {
namespace {

namespace sv = sparse_vec;

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Zero-padded to `rows` tokens and reshaped: [heads, rows / stride, stride * d], in float32, times
// `multiplier`. With `reverse` the tokens of each group of `stride` are taken last to first (the
// query side). One pass, parallel over heads.
at::Tensor StridedReshape(const at::Tensor& x, int64_t rows, int64_t stride, bool reverse,
                          double multiplier) {
  const int64_t heads = x.size(0), len = x.size(1), dim = x.size(2);
  if (!x.is_cpu()) {
    // Tensors elsewhere (the reference on a CUDA device): the same rows as tensor operations.
    at::Tensor padded = at::constant_pad_nd(x.to(at::kFloat), {0, 0, 0, rows - len});
    at::Tensor grouped = padded.reshape({heads, rows / stride, stride, dim});
    if (reverse) grouped = grouped.flip({2});
    at::Tensor out = grouped.reshape({heads, rows / stride, stride * dim});
    return multiplier == 1.0 ? out.contiguous() : out.mul(multiplier).contiguous();
  }
  const at::Tensor src = x.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({heads, rows / stride, stride * dim}, src.options());
  const float* sp = src.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float m = static_cast<float>(multiplier);
  at::parallel_for(0, heads * (rows / stride), 64, [&](int64_t begin, int64_t end) {
    for (int64_t gi = begin; gi < end; ++gi) {
      const int64_t h = gi / (rows / stride), i = gi % (rows / stride);
      for (int64_t t = 0; t < stride; ++t) {
        const int64_t token = i * stride + (reverse ? stride - 1 - t : t);
        float* dst = op + (gi * stride + t) * dim;
        if (token >= len) {
          std::fill(dst, dst + dim, 0.0f);
          continue;
        }
        const float* row = sp + (h * len + token) * dim;
        if (m == 1.0f) {
          std::copy(row, row + dim, dst);
        } else {
          for (int64_t j = 0; j < dim; ++j) dst[j] = row[j] * m;
        }
      }
    }
  });
  return out;
}

struct Geometry {
  int64_t heads, kv_heads, q_len, k_len, dim;
  int64_t block, stride, cell;  // cell = block / stride reshaped rows (and keys) per block
  int64_t q_blocks, k_blocks;
  int64_t q_rows, k_cols;  // reshaped rows/keys holding at least one real token
  int64_t shift;           // reshaped causal offset: key j allowed for row i iff j <= i + shift
};

Geometry MakeGeometry(const at::Tensor& q, const at::Tensor& k, int64_t block, int64_t stride) {
  Geometry g;
  g.heads = q.size(0);
  g.q_len = q.size(1);
  g.dim = q.size(2);
  g.kv_heads = k.size(0);
  g.k_len = k.size(1);
  g.block = block;
  g.stride = stride;
  g.cell = block / stride;
  g.q_blocks = CeilDiv(g.q_len, block);
  g.k_blocks = CeilDiv(g.k_len, block);
  g.q_rows = CeilDiv(g.q_len, stride);
  g.k_cols = CeilDiv(g.k_len, stride);
  g.shift = (g.k_len - g.q_len) / stride;
  return g;
}

struct Task {
  int64_t head;
  int64_t first_block;
  int64_t cost;
};

}  // namespace

absl::Status CheckXAttentionInputs(const at::Tensor& q, const at::Tensor& k, int64_t block_size,
                                   int64_t stride) {
  if (block_size < 1 || stride < 1 || block_size % stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat("stride: block_size (", block_size,
                                                   ") must be a positive multiple of stride (",
                                                   stride, ")"));
  }
  const std::pair<const at::Tensor*, const char*> inputs[] = {{&q, "q"}, {&k, "k"}};
  for (const auto& [t, name] : inputs) {
    if (!t->defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": undefined tensor"));
    if (t->dim() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": expected rank 3 [heads, tokens, head_dim], got shape ", Shape(t->sizes())));
    }
    const auto type = t->scalar_type();
    if (type != at::kFloat && type != at::kHalf && type != at::kBFloat16) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": expected float32, float16 or bfloat16, got ", c10::toString(type)));
    }
  }
  if (k.device() != q.device()) return absl::InvalidArgumentError("q, k: must be on one device");
  if (q.size(0) < 1 || q.size(2) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("q: heads and head_dim must be >= 1, got shape ", Shape(q.sizes())));
  }
  if (k.size(0) < 1 || q.size(0) % k.size(0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "k: kv heads (", k.size(0), ") must divide the query heads (", q.size(0), ")"));
  }
  if (k.size(2) != q.size(2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("k: expected head_dim ", q.size(2), " like q, got shape ", Shape(k.sizes())));
  }
  if (q.size(1) > k.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("q: q_len (", q.size(1), ") must be <= k_len (", k.size(1), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> XAttentionEstimateCpu(const at::Tensor& q, const at::Tensor& k,
                                                 int64_t block_size, int64_t stride,
                                                 SparseGemm gemm) {
  if (absl::Status s = CheckXAttentionInputs(q, k, block_size, stride); !s.ok()) return s;
  if (!q.device().is_cpu()) {
    auto out = XAttentionEstimateCpu(q.cpu(), k.cpu(), block_size, stride, gemm);
    if (!out.ok()) return out;
    return out->to(q.device());
  }
  const Geometry g = MakeGeometry(q, k, block_size, stride);
  at::Tensor out =
      at::zeros({g.heads, g.q_blocks, g.k_blocks}, at::TensorOptions().dtype(at::kFloat));
  if (g.q_len == 0) return out;
  const int64_t width = g.stride * g.dim;
  const at::Tensor qt = StridedReshape(q, g.q_blocks * g.block, g.stride, /*reverse=*/true,
                                       1.0 / (std::sqrt(static_cast<double>(g.dim)) * g.stride));
  const at::Tensor kt = StridedReshape(k, g.k_blocks * g.block, g.stride, /*reverse=*/false, 1.0);
  const int64_t qt_rows = qt.size(1), kt_rows = kt.size(1);
  const float* qp = qt.data_ptr<float>();
  const float* kp = kt.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = g.heads / g.kv_heads;

  // The vectorized path packs k~^T of every kv head once (as many floats as k).
  const bool blas = gemm == SparseGemm::kBlas;
  const int64_t packed_size = sparse_gemm::PackedSize(width, g.k_cols);
  std::vector<float> packed(blas ? 0 : g.kv_heads * packed_size);
  if (!blas) {
    at::parallel_for(0, g.kv_heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t hk = begin; hk < end; ++hk) {
        sparse_gemm::PackTransposed(kp + hk * kt_rows * width, width, g.k_cols, width,
                                    packed.data() + hk * packed_size);
      }
    });
  }

  // One task: `blocks_per_task` query blocks of one head (a strip of at most 64 reshaped rows).
  const int64_t blocks_per_task = std::max<int64_t>(1, 64 / g.cell);
  std::vector<Task> tasks;
  for (int64_t h = 0; h < g.heads; ++h) {
    for (int64_t b = 0; b < g.q_blocks; b += blocks_per_task) {
      const int64_t row_end =
          std::min(g.q_rows, std::min(g.q_blocks, b + blocks_per_task) * g.cell);
      const int64_t row_begin = b * g.cell;
      if (row_end <= row_begin) continue;
      tasks.push_back({h, b, (row_end - row_begin) * std::min(g.k_cols, row_end + g.shift)});
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const Task& a, const Task& b) { return a.cost > b.cost; });
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  std::atomic<int64_t> next{0};
  // As in block_sparse_attention.cc: BLAS threads its own products, the micro-kernel uses workers.
  const int64_t workers = blas ? 1 : sparse_parallel::Workers(num_tasks);
  const int64_t max_rows = blocks_per_task * g.cell;

  sparse_parallel::RunWorkers(workers, [&](int64_t) {
    std::vector<float> strip(max_rows * g.k_cols);
    auto opts = at::TensorOptions().dtype(at::kFloat);
    for (int64_t t; (t = next.fetch_add(1)) < num_tasks;) {
      const Task& task = tasks[t];
      const int64_t h = task.head, hk = h / group;
      const int64_t row_begin = task.first_block * g.cell;
      const int64_t row_end =
          std::min(g.q_rows, std::min(g.q_blocks, task.first_block + blocks_per_task) * g.cell);
      const int64_t rows = row_end - row_begin;
      const int64_t cols = std::min(g.k_cols, row_end + g.shift);
      // strip[rows, cols] = q~[rows] . k~[:cols]^T (already scaled by 1 / (sqrt(d) S)).
      const float* qrows = qp + (h * qt_rows + row_begin) * width;
      if (blas) {
        at::Tensor a = at::from_blob(const_cast<float*>(qrows), {rows, width}, opts);
        at::Tensor b =
            at::from_blob(const_cast<float*>(kp) + hk * kt_rows * width, {cols, width}, opts);
        at::Tensor c = at::from_blob(strip.data(), {rows, cols}, opts);
        at::mm_out(c, a, b.t());
      } else {
        sparse_gemm::GemmPacked(rows, cols, width, qrows, width, packed.data() + hk * packed_size,
                                strip.data(), cols, /*accumulate=*/false);
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = row_begin + i;
        const int64_t valid = std::min(g.k_cols, row + g.shift + 1);
        float* s = strip.data() + i * cols;
        const float mx = sv::RowMax(s, valid);
        const float inv = 1.0f / sv::ExpSubSum(s, valid, mx);
        float* dst = op + (h * g.q_blocks + row / g.cell) * g.k_blocks;
        for (int64_t c0 = 0, col = 0; c0 < valid; c0 += g.cell, ++col) {
          dst[col] += sv::RowSum(s + c0, std::min(g.cell, valid - c0)) * inv;
        }
      }
    }
  });
  return out;
}

absl::StatusOr<at::Tensor> XAttentionEstimateReference(const at::Tensor& q, const at::Tensor& k,
                                                       int64_t block_size, int64_t stride) {
  if (absl::Status s = CheckXAttentionInputs(q, k, block_size, stride); !s.ok()) return s;
  const Geometry g = MakeGeometry(q, k, block_size, stride);
  if (g.q_len == 0) {
    return at::zeros({g.heads, g.q_blocks, g.k_blocks}, q.options().dtype(at::kFloat));
  }
  const int64_t group = g.heads / g.kv_heads;
  const at::Tensor qt = StridedReshape(q, g.q_blocks * g.block, g.stride, true, 1.0);
  const at::Tensor kt =
      StridedReshape(k, g.k_blocks * g.block, g.stride, false, 1.0).repeat_interleave(group, 0);
  const int64_t rows = qt.size(1), cols = kt.size(1);
  at::Tensor scores = at::matmul(qt, kt.transpose(1, 2))
                          .div_(std::sqrt(static_cast<double>(g.dim)))
                          .div_(static_cast<double>(g.stride));  // [H, rows, cols]
  auto lopts = at::TensorOptions().dtype(at::kLong).device(q.device());
  at::Tensor i = at::arange(rows, lopts).unsqueeze(1);
  at::Tensor j = at::arange(cols, lopts).unsqueeze(0);
  at::Tensor masked = j.gt(i.add(g.shift)).logical_or(j.ge(g.k_cols));
  scores.masked_fill_(masked, -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);
  probs.masked_fill_(i.ge(g.q_rows), 0.0);
  return probs.view({g.heads, g.q_blocks, g.cell, g.k_blocks, g.cell}).sum({2, 4});
}

}  // namespace attnkit::kernels
