// Page formats of the KV cache (kv_format): the int8 row quantization against a plain ATen
// reference, and the paged decode kernel (core/kernels/cpu/paged_attention.cc) reading float32,
// float16, bfloat16, int8 and KIVI int4/int2 pages (and a residual window) directly, against dense
// ATen attention over the rows the pages hold, on every vector path (plain loops, AVX2, AVX-512
// where the CPU has it), ragged lengths, page sizes, GQA and multi-query calls with their
// observation.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "cpu/paged_attention.h"

namespace attnkit::kernels {
namespace {

// The ATen reference of symmetric int8 quantization per token and group of channels: scale =
// float16(max |x| / 127), q = round-half-even(x / scale) clamped to [-127, 127], 0 where the scale
// is 0. x [n, d] float; returns q (int8 [n, d]) and scales (half [n, d / group]).
std::pair<at::Tensor, at::Tensor> ReferenceQuantize(const at::Tensor& x, int group) {
  const int64_t n = x.size(0), d = x.size(1);
  const at::Tensor g = x.reshape({n, d / group, group});
  const at::Tensor scales = (std::get<0>(g.abs().max(-1)) / 127.0).clamp_max(65504.0).to(at::kHalf);
  const at::Tensor s = scales.to(at::kFloat).unsqueeze(-1);
  at::Tensor q =
      at::where(s > 0, at::round(g / at::where(s > 0, s, at::ones_like(s))), at::zeros_like(g));
  q = q.clamp(-127, 127).to(at::kChar).reshape({n, d});
  return {q, scales};
}

at::Tensor ReferenceDequantize(const at::Tensor& q, const at::Tensor& scales, int group) {
  const int64_t n = q.size(0), d = q.size(1);
  return (q.to(at::kFloat).reshape({n, d / group, group}) * scales.to(at::kFloat).unsqueeze(-1))
      .reshape({n, d});
}

TEST(Int8Rows, QuantizeMatchesTheAtenReference) {
  at::manual_seed(11);
  for (int group : {4, 8, 32}) {
    at::Tensor x = at::randn({50, 64}) * 3.0;
    x[3].zero_();                          // an all-zero row: scale 0, q 0
    x[4].narrow(0, 0, group).fill_(1e-9);  // a group whose scale underflows float16
    x[5] = x[5] * 1e4;                     // large values
    const auto [q_ref, s_ref] = ReferenceQuantize(x, group);
    std::vector<int8_t> q(64);
    std::vector<c10::Half> s(64 / group);
    std::vector<float> back(64);
    for (int64_t i = 0; i < x.size(0); ++i) {
      const at::Tensor row = x[i].contiguous();
      QuantizeRowInt8(row.data_ptr<float>(), 64, group, q.data(), s.data());
      for (int j = 0; j < 64; ++j) {
        ASSERT_EQ(q[j], q_ref[i][j].item<int8_t>()) << "row " << i << " channel " << j;
      }
      for (int g = 0; g < 64 / group; ++g) {
        ASSERT_EQ(s[g].x, s_ref[i][g].item<c10::Half>().x) << "row " << i << " group " << g;
      }
      DequantizeRowInt8(q.data(), s.data(), 64, group, back.data());
      const at::Tensor expect =
          ReferenceDequantize(q_ref.narrow(0, i, 1), s_ref.narrow(0, i, 1), group)[0];
      for (int j = 0; j < 64; ++j) ASSERT_EQ(back[j], expect[j].item<float>());
    }
  }
}

// Pages holding `rows` [n, d] (floats) in `format` from row `first` of the first page; `held`
// receives the rows as the pages hold them (rounded or quantized) in float.
struct Pages {
  std::vector<std::vector<char>> memory;
  std::vector<const char*> pointers;
};

Pages MakePages(RowFormat format, const at::Tensor& rows, int P, int group, int64_t first,
                at::Tensor* held) {
  const int64_t n = rows.size(0), d = rows.size(1);
  const int64_t page_bytes = PageBytes(format, P, static_cast<int>(d), group);
  Pages pages;
  const int64_t count = (first + n + P - 1) / P;
  for (int64_t p = 0; p < count; ++p) pages.memory.emplace_back(page_bytes, char(0x5a));
  for (auto& m : pages.memory) pages.pointers.push_back(m.data());
  at::Tensor stored, q, scales;
  switch (format) {
    case RowFormat::kFloat16:
      stored = rows.to(at::kHalf).contiguous();
      *held = stored.to(at::kFloat);
      break;
    case RowFormat::kBFloat16:
      stored = rows.to(at::kBFloat16).contiguous();
      *held = stored.to(at::kFloat);
      break;
    case RowFormat::kInt4:
    case RowFormat::kInt2:
    case RowFormat::kInt4Channel:
    case RowFormat::kInt2Channel: {
      // KIVI pages written with QuantizeKivi (checked against KIVI's own functions and an ATen
      // reference in kivi_test.cc); the held rows read back with ReadPageRow.
      const int bits = KiviBits(format);
      const at::Tensor x = rows.contiguous();
      const float* xp = x.data_ptr<float>();
      *held = at::empty({n, d});
      for (int64_t p = 0; p < count; ++p) {
        char* page = pages.memory[p].data();
        const int64_t t0 = std::max<int64_t>(0, p * P - first);
        const int64_t t1 = std::min<int64_t>(n, (p + 1) * P - first);
        if (IsPerChannel(format)) {  // a whole page per call, from its row 0
          EXPECT_EQ(first, 0);
          const int64_t channel_bytes = static_cast<int64_t>(P) * bits / 8;
          auto* halves = reinterpret_cast<c10::Half*>(page + d * channel_bytes);
          for (int64_t c = 0; c < d; ++c) {
            QuantizeKivi(xp + t0 * d + c, t1 - t0, d, bits,
                         reinterpret_cast<uint8_t*>(page) + c * channel_bytes, 0, halves + c,
                         halves + d + c);
          }
        } else {
          const int64_t row_bytes = d * bits / 8, ng = d / group;
          auto* scales_h = reinterpret_cast<c10::Half*>(page + P * row_bytes);
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t row = (first + t) % P;
            for (int64_t g = 0; g < ng; ++g) {
              QuantizeKivi(xp + t * d + g * group, group, 1, bits,
                           reinterpret_cast<uint8_t*>(page) + row * row_bytes, g * group,
                           scales_h + row * ng + g, scales_h + P * ng + row * ng + g);
            }
          }
        }
        for (int64_t t = t0; t < t1; ++t) {
          ReadPageRow(format, page, P, static_cast<int>(d), group, (first + t) % P,
                      held->data_ptr<float>() + t * d);
        }
      }
      return pages;
    }
    case RowFormat::kInt8:
      std::tie(q, scales) = ReferenceQuantize(rows, group);
      stored = q.contiguous();
      scales = scales.contiguous();
      *held = ReferenceDequantize(q, scales, group);
      break;
    default:
      stored = rows.contiguous();
      *held = stored.clone();
  }
  const int64_t row_bytes = stored.element_size() * d;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = first + i;
    char* page = pages.memory[pos / P].data();
    std::memcpy(page + (pos % P) * row_bytes,
                static_cast<const char*>(stored.data_ptr()) + i * row_bytes, row_bytes);
    if (format == RowFormat::kInt8) {
      const int64_t ng = d / group;
      std::memcpy(page + P * d + (pos % P) * ng * 2,
                  static_cast<const char*>(scales.data_ptr()) + i * ng * 2, ng * 2);
    }
  }
  return pages;
}

struct Case {
  RowFormat keys, values;
  int d, group, P, G;
  int64_t L, T, residual, first;
};

std::string Name(const Case& c) {
  const char* names[] = {"f32", "f16", "bf16", "int8", "int4", "int2", "int4ch", "int2ch"};
  return std::string("keys ") + names[static_cast<int>(c.keys)] + " values " +
         names[static_cast<int>(c.values)] + " d " + std::to_string(c.d) + " group " +
         std::to_string(c.group) + " P " + std::to_string(c.P) + " G " + std::to_string(c.G) +
         " L " + std::to_string(c.L) + " T " + std::to_string(c.T) + " residual " +
         std::to_string(c.residual) + " first " + std::to_string(c.first);
}

// Runs the kernel on one case and compares with dense attention over the held rows.
void CheckCase(const Case& c, RowFormat residual_format) {
  const int64_t main_len = c.L - c.residual;
  const at::Tensor k = at::randn({c.L, c.d}), v = at::randn({c.L, c.d});
  const at::Tensor q = at::randn({c.G, c.T, c.d}).contiguous();
  at::Tensor kh_main, vh_main, kh_res, vh_res;
  Pages km = MakePages(c.keys, k.narrow(0, 0, main_len), c.P, c.group, 0, &kh_main);
  Pages vm = MakePages(c.values, v.narrow(0, 0, main_len), c.P, c.group, 0, &vh_main);
  Pages kr =
      MakePages(residual_format, k.narrow(0, main_len, c.residual), c.P, c.group, c.first, &kh_res);
  Pages vr =
      MakePages(residual_format, v.narrow(0, main_len, c.residual), c.P, c.group, c.first, &vh_res);
  const at::Tensor keys = at::cat({kh_main, kh_res}), values = at::cat({vh_main, vh_res});
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  // Reference: causal softmax(q K^T * scale) V, query t sees [0, L - T + t].
  at::Tensor scores = at::matmul(q, keys.t()) * scale;
  const at::Tensor limit = at::arange(c.L - c.T, c.L).unsqueeze(1);
  scores.masked_fill_(at::arange(c.L).unsqueeze(0).gt(limit),
                      -std::numeric_limits<float>::infinity());
  const at::Tensor probs = at::softmax(scores, -1);
  const at::Tensor expect = at::matmul(probs, values);

  const int64_t window = std::min<int64_t>(2, c.T);
  at::Tensor out = at::full({c.G, c.T, c.d}, 7.0f);
  at::Tensor rows = at::zeros({c.G, window, c.L}), sums = at::zeros({c.G, c.L});
  std::vector<float> scratch(c.G * c.T * c.L);
  PagedGroupArgs a;
  a.main.keys = km.pointers.data();
  a.main.values = vm.pointers.data();
  a.main.key_format = c.keys;
  a.main.value_format = c.values;
  a.residual.keys = kr.pointers.data();
  a.residual.values = vr.pointers.data();
  a.residual.first = c.first;
  a.residual.length = c.residual;
  a.residual.key_format = a.residual.value_format = residual_format;
  a.length = c.L;
  a.page_size = c.P;
  a.group_size = c.group;
  a.rows_per_query = c.G;
  a.queries = c.T;
  a.head_dim = c.d;
  a.scale = scale;
  a.q = q.data_ptr<float>();
  a.out = out.data_ptr<float>();
  a.window_rows = rows.data_ptr<float>();
  a.window = window;
  a.column_sums = sums.data_ptr<float>();
  a.scratch = scratch.data();
  PagedGroupAttention(a);
  const std::string what = Name(c) + " path " + PagedGroupPath(a);
  EXPECT_TRUE(at::allclose(out, expect, 1e-4, 1e-5))
      << what << " max diff " << (out - expect).abs().max().item<float>();
  EXPECT_TRUE(at::allclose(rows, probs.narrow(1, c.T - window, window), 1e-4, 1e-6)) << what;
  EXPECT_TRUE(at::allclose(sums, probs.sum(1), 1e-4, 1e-5)) << what;
}

class PagedFormats : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { SetPagedMaxIsaForTesting(GetParam()); }
  void TearDown() override { SetPagedMaxIsaForTesting(2); }
};

TEST_P(PagedFormats, EveryFormatPairMatchesDenseAttentionOverTheHeldRows) {
  at::manual_seed(5 + GetParam());
  const RowFormat all[] = {RowFormat::kFloat32, RowFormat::kFloat16, RowFormat::kBFloat16,
                           RowFormat::kInt8};
  for (RowFormat keys : all) {
    for (RowFormat values : all) {
      // d 64 / group 32 (every path), d 24 / group 8 (AVX2 at most), d 12 / group 4 (plain).
      for (const auto& [d, group] : {std::pair<int, int>{64, 32}, {24, 8}, {12, 4}}) {
        CheckCase({keys, values, d, group, 16, 4, 53, 1, 0, 0}, RowFormat::kFloat32);
        CheckCase({keys, values, d, group, 4, 2, 37, 3, 6, 3}, RowFormat::kFloat32);
        CheckCase({keys, values, d, group, 8, 1, 29, 5, 13, 7}, RowFormat::kBFloat16);
      }
    }
  }
}

TEST_P(PagedFormats, KiviKeysPerChannelAndValuesPerToken) {
  at::manual_seed(23 + GetParam());
  const RowFormat keys[] = {RowFormat::kInt4Channel, RowFormat::kInt2Channel, RowFormat::kFloat16};
  const RowFormat values[] = {RowFormat::kInt4, RowFormat::kInt2, RowFormat::kInt8};
  for (RowFormat k : keys) {
    for (RowFormat v : values) {
      // The key page is a group of P tokens; partial last pages (L - residual not a multiple
      // of P) and P not a multiple of the vector width take the tail loop.
      for (const auto& [d, group] : {std::pair<int, int>{64, 32}, {128, 16}, {24, 8}, {12, 4}}) {
        CheckCase({k, v, d, group, 32, 4, 77, 1, 7, 0}, RowFormat::kFloat32);
        CheckCase({k, v, d, group, 16, 2, 64, 3, 16, 5}, RowFormat::kBFloat16);
        CheckCase({k, v, d, group, 8, 8, 29, 2, 3, 1}, RowFormat::kFloat32);
        CheckCase({k, v, d, group, 4, 1, 9, 1, 0, 0}, RowFormat::kFloat32);
      }
    }
  }
}

TEST_P(PagedFormats, RaggedLengthsPageSizesAndGqaOnInt8) {
  at::manual_seed(17 + GetParam());
  for (int P : {1, 3, 16, 64}) {
    for (int G : {1, 3, 8}) {
      for (int64_t L : {1, 2, 17, 130}) {
        for (int64_t residual : {int64_t{0}, std::min<int64_t>(L, 5)}) {
          const int64_t T = std::min<int64_t>(L, 2);
          CheckCase({RowFormat::kInt8, RowFormat::kInt8, 128, 32, P, G, L, T, residual, P - 1},
                    RowFormat::kFloat16);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Paths, PagedFormats, ::testing::Values(0, 1, 2), [](const ::testing::TestParamInfo<int>& info) {
      return std::string(info.param == 0 ? "Scalar" : info.param == 1 ? "Avx2" : "Best");
    });

}  // namespace
}  // namespace attnkit::kernels
