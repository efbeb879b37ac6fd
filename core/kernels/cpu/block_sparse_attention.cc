#include "cpu/block_sparse_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cpu/bf16_dot.h"
#include "cpu/sparse_gemm.h"
#include "cpu/sparse_parallel.h"
#include "cpu/sparse_vec.h"

namespace attnkit::kernels {
namespace {

namespace sv = sparse_vec;

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

bool IsFloatType(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Keys per chunk of the online softmax, in whole blocks: about 2048 keys for BLAS (larger products
// thread better), 512 for the micro-kernel (its packed panels stay in L2).
int64_t ChunkBlocks(int64_t block, bool blas) {
  return std::max<int64_t>(1, (blas ? 2048 : 512) / block);
}

// C[M, N] = A[M, K] * B[N, K]^T (row-major, leading dimensions given).
void GemmNT(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float* c, int64_t ldc) {
  auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor ta = at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, opts);
  at::Tensor tb = at::from_blob(const_cast<float*>(b), {n, k}, {ldb, 1}, opts);
  at::Tensor tc = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  at::mm_out(tc, ta, tb.t());
}

// C[M, N] += A[M, K] * B[K, N].
void GemmNNAcc(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* c, int64_t ldc) {
  auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor ta = at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, opts);
  at::Tensor tb = at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, opts);
  at::Tensor tc = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  tc.addmm_(ta, tb);
}

struct Task {
  int64_t head;
  int64_t row;
  int64_t cost;
};

}  // namespace

absl::Status CheckBlockSparseInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& mask, int64_t block_size, double scale) {
  if (block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("block_size: must be >= 1, got ", block_size));
  }
  if (!std::isfinite(scale)) {
    return absl::InvalidArgumentError(absl::StrCat("scale: must be finite, got ", scale));
  }
  const std::pair<const at::Tensor*, const char*> inputs[] = {{&q, "q"}, {&k, "k"}, {&v, "v"}};
  for (const auto& [t, name] : inputs) {
    if (!t->defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": undefined tensor"));
    if (t->dim() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": expected rank 3 [heads, tokens, head_dim], got shape ", Shape(t->sizes())));
    }
    if (!IsFloatType(t->scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": expected float32, float16 or bfloat16, got ", c10::toString(t->scalar_type())));
    }
  }
  if (!mask.defined()) return absl::InvalidArgumentError("mask: undefined tensor");
  if (k.device() != q.device() || v.device() != q.device() || mask.device() != q.device()) {
    return absl::InvalidArgumentError("q, k, v, mask: must be on the same device");
  }
  const int64_t heads = q.size(0), q_len = q.size(1), dim = q.size(2);
  const int64_t kv_heads = k.size(0), k_len = k.size(1);
  if (heads < 1 || dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("q: heads and head_dim must be >= 1, got shape ", Shape(q.sizes())));
  }
  if (kv_heads < 1 || heads % kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("k: kv heads (", kv_heads, ") must divide the query heads (", heads, ")"));
  }
  if (k.size(2) != dim) {
    return absl::InvalidArgumentError(absl::StrCat("k: expected shape [", kv_heads, ", ", k_len,
                                                   ", ", dim, "] (head_dim of q), got ",
                                                   Shape(k.sizes())));
  }
  if (v.size(0) != kv_heads || v.size(1) != k_len) {
    return absl::InvalidArgumentError(absl::StrCat("v: expected shape [", kv_heads, ", ", k_len,
                                                   ", head_dim] like k, got ", Shape(v.sizes())));
  }
  if (q_len > k_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("q: the queries are the last positions of the keys, so q_len (", q_len,
                     ") must be <= k_len (", k_len, ")"));
  }
  if (mask.scalar_type() != at::kBool && mask.scalar_type() != at::kByte) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask: expected bool or uint8, got ", c10::toString(mask.scalar_type())));
  }
  const int64_t qb = CeilDiv(q_len, block_size), kb = CeilDiv(k_len, block_size);
  if (mask.dim() != 3 || (mask.size(0) != 1 && mask.size(0) != heads) || mask.size(1) != qb ||
      mask.size(2) != kb) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask: expected shape [1 or ", heads, ", ", qb, ", ", kb,
                     "] (heads, ceil(q_len ", q_len, " / block ", block_size, "), ceil(k_len ",
                     k_len, " / block ", block_size, ")), got ", Shape(mask.sizes())));
  }
  return absl::OkStatus();
}

bool Bf16PathTaken(at::ScalarType q, at::ScalarType k, at::ScalarType v) {
  return q == at::kBFloat16 && k == at::kBFloat16 && v == at::kBFloat16 &&
         bf16_dot::Bf16DotAvailable();
}

absl::StatusOr<at::Tensor> BlockSparseAttentionCpu(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& mask,
                                                   int64_t block_size, double scale,
                                                   SparseGemm gemm) {
  if (absl::Status s = CheckBlockSparseInputs(q, k, v, mask, block_size, scale); !s.ok()) return s;
  if (!q.device().is_cpu()) {
    auto out =
        BlockSparseAttentionCpu(q.cpu(), k.cpu(), v.cpu(), mask.cpu(), block_size, scale, gemm);
    if (!out.ok()) return out;
    return out->to(q.device());
  }
  const int64_t heads = q.size(0), q_len = q.size(1), dim = q.size(2);
  const int64_t kv_heads = k.size(0), k_len = k.size(1), vdim = v.size(2);
  const int64_t group = heads / kv_heads;
  const int64_t delta = k_len - q_len;
  const int64_t B = block_size;
  const int64_t qb = CeilDiv(q_len, B), kb = CeilDiv(k_len, B);
  at::Tensor out = at::zeros({heads, q_len, vdim}, at::TensorOptions().dtype(at::kFloat));
  if (q_len == 0 || k_len == 0 || vdim == 0) return out;

  const bool bf16 = gemm == SparseGemm::kBf16Dot &&
                    Bf16PathTaken(q.scalar_type(), k.scalar_type(), v.scalar_type());
  if (gemm == SparseGemm::kBf16Dot && !bf16) gemm = SparseGemm::kBlas;
  // float32, compact, the scale folded into q; or, on the bfloat16 path, the inputs as they are
  // (the scale applied to the float32 scores).
  const at::Tensor qf = bf16 ? q.contiguous() : at::mul(q.to(at::kFloat), scale).contiguous();
  const at::Tensor kf = bf16 ? k.contiguous() : k.to(at::kFloat).contiguous();
  const at::Tensor vf = bf16 ? v.contiguous() : v.to(at::kFloat).contiguous();
  const at::Tensor mf = mask.to(at::kBool).contiguous();
  const float* qp = bf16 ? nullptr : qf.data_ptr<float>();
  const float* kp = bf16 ? nullptr : kf.data_ptr<float>();
  const float* vp = bf16 ? nullptr : vf.data_ptr<float>();
  auto bits = [](const at::Tensor& t) {
    return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>());
  };
  const uint16_t* qh = bf16 ? bits(qf) : nullptr;
  const uint16_t* kh = bf16 ? bits(kf) : nullptr;
  const uint16_t* vh = bf16 ? bits(vf) : nullptr;
  const bool* mp = mf.data_ptr<bool>();
  float* op = out.data_ptr<float>();
  const int64_t mask_heads = mf.size(0);

  // Tasks (head, query block), costliest first, handed out dynamically.
  std::vector<Task> tasks;
  tasks.reserve(heads * qb);
  for (int64_t h = 0; h < heads; ++h) {
    const bool* row_mask = mp + (mask_heads == 1 ? 0 : h) * qb * kb;
    for (int64_t r = 0; r < qb; ++r) {
      const int64_t last_key = std::min(k_len - 1, std::min(q_len, (r + 1) * B) - 1 + delta);
      int64_t cost = 0;
      for (int64_t c = 0; c <= last_key / B; ++c) cost += row_mask[r * kb + c] ? 1 : 0;
      if (cost > 0) tasks.push_back({h, r, cost});
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const Task& a, const Task& b) { return a.cost > b.cost; });
  const bool blas = gemm == SparseGemm::kBlas;
  const int64_t chunk_blocks = ChunkBlocks(B, blas);
  const int64_t chunk_keys = chunk_blocks * B;
  std::atomic<int64_t> next{0};
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  // Both paths fan the tasks out over at::get_num_threads() workers that take them one at a time,
  // so a worker slowed by another process on its core takes fewer tasks instead of holding the
  // others at a barrier. The BLAS products then run inside the workers' OpenMP region, where the
  // OpenMP build of OpenBLAS (the one attnkit.sh selects) runs each on its calling thread.
  const int64_t workers = sparse_parallel::Workers(num_tasks);

  sparse_parallel::RunWorkers(workers, [&](int64_t) {
    std::vector<float> scores(B * chunk_keys), acc(B * vdim), row_max(B), row_sum(B);
    const bool floats = !bf16;
    std::vector<float> kbuf(floats ? chunk_keys * dim : 0), vbuf(floats ? chunk_keys * vdim : 0);
    std::vector<float> kpack(blas || bf16 ? 0 : sparse_gemm::PackedSize(dim, chunk_keys));
    std::vector<float> vpack(blas || bf16 ? 0 : sparse_gemm::PackedSize(chunk_keys, vdim));
    std::vector<uint32_t> kpack16(bf16 ? bf16_dot::PackedKeysWords(chunk_keys, dim) : 0);
    std::vector<uint32_t> vpack16(bf16 ? bf16_dot::PackedValuesWords(chunk_keys, vdim) : 0);
    std::vector<uint16_t> vbuf16(bf16 ? chunk_keys * vdim : 0);
    std::vector<int64_t> chunk;  // key block indices of the current chunk
    chunk.reserve(chunk_blocks);
    for (int64_t t; (t = next.fetch_add(1)) < num_tasks;) {
      const Task& task = tasks[t];
      const int64_t h = task.head, r = task.row, hk = h / group;
      const int64_t q0 = r * B, q1 = std::min(q_len, q0 + B), nq = q1 - q0;
      const int64_t last_key = std::min(k_len - 1, q1 - 1 + delta);
      const bool* row_mask = mp + ((mask_heads == 1 ? 0 : h) * qb + r) * kb;
      const float* qrows = bf16 ? nullptr : qp + (h * q_len + q0) * dim;
      const float* khead = bf16 ? nullptr : kp + hk * k_len * dim;
      const float* vhead = bf16 ? nullptr : vp + hk * k_len * vdim;
      sv::Fill(acc.data(), nq * vdim, 0.0f);
      sv::Fill(row_max.data(), nq, -std::numeric_limits<float>::infinity());
      sv::Fill(row_sum.data(), nq, 0.0f);

      // The bfloat16 path's products: keys packed block by block, values gathered then packed.
      auto bf16_scores = [&]() {
        int64_t n = 0;
        int64_t total = 0;
        for (int64_t c : chunk) total += std::min(k_len, (c + 1) * B) - c * B;
        const uint16_t* kheadh = kh + hk * k_len * dim;
        const uint16_t* vheadh = vh + hk * k_len * vdim;
        for (int64_t c : chunk) {
          const int64_t len = std::min(k_len, (c + 1) * B) - c * B;
          bf16_dot::PackKeysBf16(kheadh + c * B * dim, dim, len, dim, n, total, kpack16.data());
          std::memcpy(vbuf16.data() + n * vdim, vheadh + c * B * vdim, len * vdim * 2);
          n += len;
        }
        bf16_dot::PackValuesBf16(vbuf16.data(), vdim, n, vdim, vpack16.data());
        bf16_dot::ScoresBf16(nq, n, dim, qh + (h * q_len + q0) * dim, dim, kpack16.data(),
                             static_cast<float>(scale), scores.data(), n);
        return n;
      };

      auto run_chunk = [&]() {
        // Keys of the chunk: whole blocks in ascending order, the last one possibly partial.
        int64_t n = 0;
        bool contiguous = true;
        for (size_t i = 1; i < chunk.size(); ++i) contiguous &= chunk[i] == chunk[i - 1] + 1;
        const int64_t first_key = chunk.front() * B;
        const float* kc = nullptr;
        const float* vc = nullptr;
        if (bf16) {
          n = bf16_scores();
        } else if (contiguous) {
          n = std::min(k_len, (chunk.back() + 1) * B) - first_key;
          kc = khead + first_key * dim;
          vc = vhead + first_key * vdim;
        } else {
          for (int64_t c : chunk) {
            const int64_t len = std::min(k_len, (c + 1) * B) - c * B;
            std::memcpy(kbuf.data() + n * dim, khead + c * B * dim, len * dim * sizeof(float));
            std::memcpy(vbuf.data() + n * vdim, vhead + c * B * vdim, len * vdim * sizeof(float));
            n += len;
          }
          kc = kbuf.data();
          vc = vbuf.data();
        }
        if (bf16) {
          // Scores already computed.
        } else if (blas) {
          GemmNT(nq, n, dim, qrows, dim, kc, dim, scores.data(), n);
        } else {
          sparse_gemm::PackTransposed(kc, dim, n, dim, kpack.data());
          sparse_gemm::GemmPacked(nq, n, dim, qrows, dim, kpack.data(), scores.data(), n,
                                  /*accumulate=*/false);
        }
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t qpos = q0 + i + delta;
          // Keys at positions <= qpos form a prefix of the chunk (blocks ascend).
          int64_t valid = 0;
          for (int64_t c : chunk) {
            const int64_t len = std::min(k_len, (c + 1) * B) - c * B;
            valid += std::clamp<int64_t>(qpos - c * B + 1, 0, len);
          }
          float* s = scores.data() + i * n;
          if (valid == 0) {
            sv::Fill(s, n, 0.0f);
            continue;
          }
          const float mx = std::max(row_max[i], sv::RowMax(s, valid));
          const float sum = sv::ExpSubSum(s, valid, mx);
          if (valid < n) sv::Fill(s + valid, n - valid, 0.0f);
          const float alpha = std::exp(row_max[i] - mx);  // 0 on the first chunk (-inf)
          if (alpha != 1.0f) sv::Scale(acc.data() + i * vdim, vdim, alpha);
          row_sum[i] = row_sum[i] * alpha + sum;
          row_max[i] = mx;
        }
        if (bf16) {
          bf16_dot::AccumulatePVBf16(nq, n, vdim, scores.data(), n, vpack16.data(), acc.data(),
                                     vdim);
        } else if (blas) {
          GemmNNAcc(nq, vdim, n, scores.data(), n, vc, vdim, acc.data(), vdim);
        } else {
          sparse_gemm::PackRows(vc, vdim, n, vdim, vpack.data());
          sparse_gemm::GemmPacked(nq, vdim, n, scores.data(), n, vpack.data(), acc.data(), vdim,
                                  /*accumulate=*/true);
        }
      };

      chunk.clear();
      for (int64_t c = 0; c <= last_key / B; ++c) {
        if (!row_mask[c]) continue;
        chunk.push_back(c);
        if (static_cast<int64_t>(chunk.size()) == chunk_blocks) {
          run_chunk();
          chunk.clear();
        }
      }
      if (!chunk.empty()) run_chunk();

      float* orows = op + (h * q_len + q0) * vdim;
      for (int64_t i = 0; i < nq; ++i) {
        if (row_sum[i] > 0) {
          const float inv = 1.0f / row_sum[i];
          for (int64_t j = 0; j < vdim; ++j) orows[i * vdim + j] = acc[i * vdim + j] * inv;
        }
      }
    }
  });
  return out;
}

absl::StatusOr<at::Tensor> BlockSparseAttentionReference(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& mask, int64_t block_size,
                                                         double scale) {
  if (absl::Status s = CheckBlockSparseInputs(q, k, v, mask, block_size, scale); !s.ok()) return s;
  const int64_t heads = q.size(0), q_len = q.size(1);
  const int64_t kv_heads = k.size(0), k_len = k.size(1), vdim = v.size(2);
  if (q_len == 0 || k_len == 0) {
    return at::zeros({heads, q_len, vdim}, q.options().dtype(at::kFloat));
  }
  const int64_t group = heads / kv_heads;
  at::Tensor qf = q.to(at::kFloat);
  at::Tensor kf = k.to(at::kFloat).repeat_interleave(group, 0);
  at::Tensor vf = v.to(at::kFloat).repeat_interleave(group, 0);
  at::Tensor scores = at::matmul(qf, kf.transpose(1, 2)).mul_(scale);  // [H, Lq, Lk]
  at::Tensor allowed = mask.to(at::kBool)
                           .repeat_interleave(block_size, 1)
                           .narrow(1, 0, q_len)
                           .repeat_interleave(block_size, 2)
                           .narrow(2, 0, k_len);
  auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
  at::Tensor qpos = at::arange(q_len, opts).add_(k_len - q_len).unsqueeze(1);
  at::Tensor kpos = at::arange(k_len, opts).unsqueeze(0);
  allowed = allowed.logical_and(kpos.le(qpos));  // [1 or H, Lq, Lk]
  scores.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);
  probs.masked_fill_(allowed.logical_not(), 0.0);  // fully masked rows: NaN -> 0
  return at::matmul(probs, vf);
}

}  // namespace attnkit::kernels
