// The decode step's device-resident pieces on CUDA: cuda::AppendPagedRows against its ATen
// reference (session::AppendPagedRowsReference), the decode kernel reading a page-id table into
// an arena (as the device store's resident table does) against the same kernel reading
// addresses, its float32 output against its 16-bit one, and the two as one step captured in a CUDA
// graph and replayed, against steps run eagerly and the dense reference.
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "session/paged_append.h"

#ifdef ATTNKIT_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace attnkit::testing {
namespace {

#ifdef ATTNKIT_WITH_CUDA
// An arena of `pages` pages [pages * 2 * P, d] and, for R cache rows, a table of distinct page
// ids in a shuffled order (int32 [R, max_pages]) and lengths (int32 [R]), all on the GPU.
struct Arena {
  at::Tensor rows, ids, lengths;
};
Arena MakeArena(int64_t R, int64_t max_pages, int64_t P, int64_t d, at::ScalarType dtype,
                const std::vector<int32_t>& lengths) {
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  const int64_t pages = R * max_pages + 3;
  Arena a;
  a.rows = at::randn({pages * 2 * P, d}, cuda.dtype(at::kFloat)).to(dtype);
  a.ids = at::randperm(pages, at::kLong)
              .narrow(0, 0, R * max_pages)
              .view({R, max_pages})
              .to(at::kInt)
              .to(at::kCUDA);
  a.lengths = at::tensor(lengths, at::kInt).to(at::kCUDA);
  return a;
}

// Row r's first n cached keys (or values) gathered from the arena, [n, d].
at::Tensor Gather(const Arena& a, int64_t r, int64_t n, int64_t P, bool values) {
  const at::Tensor ids = a.ids[r].to(at::kCPU).to(at::kLong);
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < n; ++i) {
    rows.push_back(ids[i / P].item<int64_t>() * 2 * P + (values ? P : 0) + i % P);
  }
  return a.rows.index_select(0, at::tensor(rows, at::kLong).to(at::kCUDA));
}
#endif

class AppendPagedRowsCuda : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(AppendPagedRowsCuda, MatchesReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const at::ScalarType dtype = GetParam();
  at::manual_seed(5);
  const int64_t S = 3, Hkv = 2, R = S * Hkv, P = 16, d = 128, max_pages = 8;
  const std::vector<int32_t> lengths = {0, 15, 16, 17, 40, 95};
  for (const int64_t T : {1, 7, 33}) {
    for (const bool aligned : {true, false}) {
      Arena a = MakeArena(R, max_pages, P, d, dtype, lengths);
      Arena b{a.rows.clone(), a.ids.clone(), a.lengths.clone()};
      // k, v [S, Hkv, T, d]: contiguous, or a view with 2-element offsets and padded strides (the
      // kernel's element-wise path).
      const auto o = at::TensorOptions().device(at::kCUDA).dtype(dtype);
      at::Tensor k = at::randn({S, Hkv, T, d}, o.dtype(at::kFloat)).to(dtype);
      at::Tensor v = at::randn({S, Hkv, T, d}, o.dtype(at::kFloat)).to(dtype);
      if (!aligned) {
        k = at::randn({S, Hkv, T, d + 3}, o.dtype(at::kFloat)).to(dtype).narrow(3, 1, d);
        v = at::randn({S, Hkv + 1, T, d + 5}, o.dtype(at::kFloat))
                .to(dtype)
                .narrow(1, 1, Hkv)
                .narrow(3, 2, d);
      }
      ASSERT_TRUE(cuda::AppendPagedRows(a.rows, a.ids, a.lengths, P, k, v).ok());
      session::AppendPagedRowsReference(b.rows, b.ids, b.lengths, P, k, v);
      EXPECT_TRUE(at::equal(a.rows, b.rows)) << "T " << T << " aligned " << aligned;
      EXPECT_TRUE(at::equal(a.lengths, b.lengths));
      EXPECT_EQ(a.lengths[5].item<int32_t>(), 95 + T);
      // The tokens are where the table says (row 1's tokens cross a page boundary).
      EXPECT_TRUE(at::equal(Gather(a, 3, 17 + T, P, false).narrow(0, 17, T), k[1][1]));
      EXPECT_TRUE(at::equal(Gather(a, 1, 15 + T, P, true).narrow(0, 15, T), v[0][1]));
    }
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Types, AppendPagedRowsCuda, ::testing::Values(at::kBFloat16, at::kHalf));

TEST(AppendPagedRowsCudaTest, RejectsBadArguments) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  Arena a = MakeArena(2, 4, 16, 64, at::kBFloat16, {0, 3});
  const auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor k = at::zeros({1, 2, 1, 64}, o);
  EXPECT_TRUE(cuda::AppendPagedRows(a.rows, a.ids, a.lengths, 16, k, k).ok());
  // k of another dtype, the table of another row count, lengths of int64, a CPU tensor.
  EXPECT_EQ(cuda::AppendPagedRows(a.rows, a.ids, a.lengths, 16, k.to(at::kHalf), k).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::AppendPagedRows(a.rows, a.ids.narrow(0, 0, 1), a.lengths, 16, k, k).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::AppendPagedRows(a.rows, a.ids, a.lengths.to(at::kLong), 16, k, k).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::AppendPagedRows(a.rows, a.ids, a.lengths, 16, k.cpu(), k).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::AppendPagedRows(a.rows, a.ids, a.lengths, 0, k, k).code(),
            absl::StatusCode::kInvalidArgument);
#endif
}

// The decode kernel over a page-id table reads what it reads over page addresses: the same bits,
// the same scores; its float32 output rounds to its 16-bit output.
TEST(PagedDecodeByIdCuda, MatchesAddressTable) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  at::manual_seed(9);
  const int64_t Hkv = 4, G = 4, H = Hkv * G, P = 64, d = 128, max_pages = 40;
  const std::vector<int32_t> lengths = {2500, 1, 0, 1999};
  Arena a = MakeArena(Hkv, max_pages, P, d, at::kBFloat16, lengths);
  const int64_t page_bytes = 2 * P * d * a.rows.element_size();
  const at::Tensor ptrs =
      (a.ids.to(at::kLong) * page_bytes + reinterpret_cast<int64_t>(a.rows.data_ptr()))
          .contiguous();
  cuda::PagedCache by_ptr, by_id;
  by_ptr.page_ptrs = ptrs;
  by_id.page_ids = a.ids;
  by_id.arena = a.rows;
  for (cuda::PagedCache* c : {&by_ptr, &by_id}) {
    c->lengths = a.lengths;
    c->max_length = 2500;
    c->page_size = P;
    c->head_dim = d;
    c->dtype = at::kBFloat16;
  }
  const auto o = at::TensorOptions().device(at::kCUDA);
  const at::Tensor q = at::randn({H, d}, o).to(at::kBFloat16);
  const double scale = 1 / std::sqrt(double(d));
  at::Tensor s1 = at::zeros({H, 2500}, o), s2 = s1.clone();
  auto x = cuda::PagedDecodeAttention(q, by_ptr, scale, &s1);
  auto y = cuda::PagedDecodeAttention(q, by_id, scale, &s2);
  ASSERT_TRUE(x.ok()) << x.status();
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_TRUE(at::equal(*x, *y));
  EXPECT_TRUE(at::equal(s1, s2));
  const at::Tensor out = at::full({H, d}, NAN, o);
  auto z = cuda::PagedDecodeAttention(q, by_id, scale, nullptr, 0, &out);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->data_ptr(), out.data_ptr());
  EXPECT_TRUE(at::equal(out.to(at::kBFloat16), *x)) << "float32 output rounds to the 16-bit one";
  // The reference, per kv head holding tokens.
  for (int64_t g = 0; g < Hkv; ++g) {
    if (lengths[g] == 0) continue;
    auto ref = cuda::DenseDecodeReference(q.narrow(0, g * G, G),
                                          Gather(a, g, lengths[g], P, false).unsqueeze(0),
                                          Gather(a, g, lengths[g], P, true).unsqueeze(0), scale);
    ASSERT_TRUE(ref.ok());
    EXPECT_LT(RelError(out.narrow(0, g * G, G), ref->first), 1e-2) << g;
  }
  // An out of the wrong shape or dtype, and an arena of the wrong width, are refused.
  const at::Tensor bad = at::zeros({H, d}, o.dtype(at::kHalf));
  EXPECT_EQ(cuda::PagedDecodeAttention(q, by_id, scale, nullptr, 0, &bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  cuda::PagedCache narrow = by_id;
  narrow.arena = a.rows.narrow(1, 0, 64);
  EXPECT_EQ(cuda::PagedDecodeAttention(q, narrow, scale).status().code(),
            absl::StatusCode::kInvalidArgument);
#endif
}

// A batched call whose sequences pick their own split sizes (rows_per_sequence) gives each
// sequence the bits of a call holding it alone, outputs and scores, though the sequences' lengths
// would give the call as a whole other split sizes.
TEST(PagedDecodeByIdCuda, BatchedSequencesGiveTheBitsOfCallsAlone) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  at::manual_seed(13);
  const int64_t Hkv = 4, S = 3, R = S * Hkv, G = 4, P = 64, d = 128, max_pages = 320;
  const std::vector<int32_t> lengths = {20000, 19000, 100, 5, 1500, 2000, 0, 64, 7000, 1, 2, 20001};
  Arena a = MakeArena(R, max_pages, P, d, at::kBFloat16, lengths);
  const auto o = at::TensorOptions().device(at::kCUDA);
  const at::Tensor q = at::randn({R * G, d}, o).to(at::kBFloat16);
  const double scale = 1 / std::sqrt(double(d));
  cuda::PagedCache all;
  all.page_ids = a.ids;
  all.arena = a.rows;
  all.lengths = a.lengths;
  all.max_length = 20001;
  all.page_size = P;
  all.head_dim = d;
  all.dtype = at::kBFloat16;
  all.rows_per_sequence = Hkv;
  at::Tensor scores = at::zeros({R, 20001}, o), head_scores = at::zeros({R * G, 20001}, o);
  auto batched = cuda::PagedDecodeAttention(q, all, scale, &scores);
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_TRUE(cuda::PagedDecodeAttention(q, all, scale, &head_scores).ok());
  for (int64_t s = 0; s < S; ++s) {
    cuda::PagedCache one = all;
    one.page_ids = a.ids.narrow(0, s * Hkv, Hkv);
    one.lengths = a.lengths.narrow(0, s * Hkv, Hkv);
    one.max_length = *std::max_element(lengths.begin() + s * Hkv, lengths.begin() + (s + 1) * Hkv);
    one.rows_per_sequence = 0;  // the call's own split size: the one-sequence rule
    at::Tensor alone_scores = at::zeros({Hkv, one.max_length}, o);
    at::Tensor alone_heads = at::zeros({Hkv * G, one.max_length}, o);
    const at::Tensor qs = q.narrow(0, s * Hkv * G, Hkv * G);
    auto alone = cuda::PagedDecodeAttention(qs, one, scale, &alone_scores);
    ASSERT_TRUE(alone.ok()) << alone.status();
    ASSERT_TRUE(cuda::PagedDecodeAttention(qs, one, scale, &alone_heads).ok());
    EXPECT_TRUE(at::equal(batched->narrow(0, s * Hkv * G, Hkv * G), *alone)) << "sequence " << s;
    EXPECT_TRUE(
        at::equal(scores.narrow(0, s * Hkv, Hkv).narrow(1, 0, one.max_length), alone_scores))
        << "sequence " << s;
    EXPECT_TRUE(at::equal(head_scores.narrow(0, s * Hkv * G, Hkv * G).narrow(1, 0, one.max_length),
                          alone_heads))
        << "sequence " << s;
  }
  // A row count that does not divide the kv rows is refused.
  all.rows_per_sequence = 5;
  EXPECT_EQ(cuda::PagedDecodeAttention(q, all, scale).status().code(),
            absl::StatusCode::kInvalidArgument);
#endif
}

// One decode step (append the token's keys and values by the table, attend) captured in a CUDA
// graph and replayed step after step with new inputs copied into its buffers: each replay's
// output equals the same step run eagerly with the graph's launch sizes, and the dense reference.
TEST(DecodeStepGraphCuda, ReplaysMatchEagerSteps) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  at::manual_seed(11);
  const int64_t S = 2, Hkv = 2, R = S * Hkv, G = 4, P = 32, d = 128;
  const int64_t max_pages = 16, capacity = max_pages * P, steps = 40;
  const std::vector<int32_t> start = {100, 31, 64, 500};
  Arena graph_side = MakeArena(R, max_pages, P, d, at::kBFloat16, start);
  Arena eager{graph_side.rows.clone(), graph_side.ids.clone(), graph_side.lengths.clone()};
  const auto o = at::TensorOptions().device(at::kCUDA);
  // The graph's input and output buffers.
  at::Tensor k_in = at::zeros({S, Hkv, 1, d}, o.dtype(at::kBFloat16)), v_in = k_in.clone();
  at::Tensor q_in = at::zeros({R * G, d}, o.dtype(at::kBFloat16));
  at::Tensor out = at::zeros({R * G, d}, o);
  const double scale = 1 / std::sqrt(double(d));
  auto step = [&](Arena& a, const at::Tensor& k, const at::Tensor& v, const at::Tensor& q,
                  const at::Tensor& result) {
    absl::Status st = cuda::AppendPagedRows(a.rows, a.ids, a.lengths, P, k, v);
    if (!st.ok()) return st;
    cuda::PagedCache c;
    c.page_ids = a.ids;
    c.arena = a.rows;
    c.lengths = a.lengths;
    c.max_length = capacity;  // fixed launch sizes: the replays' lengths differ
    c.page_size = P;
    c.head_dim = d;
    c.dtype = at::kBFloat16;
    return cuda::PagedDecodeAttention(q, c, scale, nullptr, 0, &result).status();
  };
  at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  {
    const at::cuda::CUDAStreamGuard guard(side);
    // A warm-up launch outside the capture sets the kernels' attributes once.
    Arena scratch{graph_side.rows.clone(), graph_side.ids.clone(), graph_side.lengths.clone()};
    ASSERT_TRUE(step(scratch, k_in, v_in, q_in, out).ok());
    side.synchronize();
    graph.capture_begin();
    const absl::Status captured = step(graph_side, k_in, v_in, q_in, out);
    graph.capture_end();
    ASSERT_TRUE(captured.ok()) << captured;
  }
  at::cuda::getCurrentCUDAStream().synchronize();
  // Capturing launched nothing: the lengths are the starting ones.
  EXPECT_TRUE(at::equal(graph_side.lengths, eager.lengths));
  at::Tensor eager_out = at::zeros_like(out);
  for (int64_t t = 0; t < steps; ++t) {
    const at::Tensor k = at::randn({S, Hkv, 1, d}, o).to(at::kBFloat16);
    const at::Tensor v = at::randn({S, Hkv, 1, d}, o).to(at::kBFloat16);
    const at::Tensor q = at::randn({R * G, d}, o).to(at::kBFloat16);
    k_in.copy_(k);
    v_in.copy_(v);
    q_in.copy_(q);
    graph.replay();
    ASSERT_TRUE(step(eager, k, v, q, eager_out).ok());
    at::cuda::getCurrentCUDAStream().synchronize();
    ASSERT_TRUE(at::equal(graph_side.lengths, eager.lengths)) << "step " << t;
    ASSERT_TRUE(at::equal(graph_side.rows, eager.rows)) << "step " << t;
    ASSERT_TRUE(at::equal(out, eager_out)) << "step " << t;
  }
  // The last step against the dense reference over each row's tokens.
  for (int64_t r = 0; r < R; ++r) {
    const int64_t n = start[r] + steps;
    auto ref = cuda::DenseDecodeReference(q_in.narrow(0, r * G, G),
                                          Gather(graph_side, r, n, P, false).unsqueeze(0),
                                          Gather(graph_side, r, n, P, true).unsqueeze(0), scale);
    ASSERT_TRUE(ref.ok());
    EXPECT_LT(RelError(out.narrow(0, r * G, G), ref->first), 1e-2) << r;
  }
#endif
}

}  // namespace
}  // namespace attnkit::testing
