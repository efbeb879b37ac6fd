// Helpers the host-store tests share (kivi_test.cc, quantized_store_test.cc, think_test.cc): a
// host store made from options, causal attention in plain ATen as the reference the stores'
// attention is checked against, and a session run through a prompt and decode steps of random
// inputs.
#ifndef ATTNKIT_TESTS_CPP_SESSION_STORE_TESTING_H_
#define ATTNKIT_TESTS_CPP_SESSION_STORE_TESTING_H_

#include <limits>
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "session/kv_store.h"

namespace attnkit::session::testing {

// The host store for `o` (which must outlive it); null, with a test failure, when it is refused.
inline std::unique_ptr<KvStore> Host(const SessionOptions& o) {
  auto store = MakeHostStore(StoreContext{&o, nullptr});
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

// Causal attention of q [G, T, d] over keys/values [L, d]: query t sees tokens [0, L - T + t].
inline at::Tensor Dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        double scale) {
  const int64_t T = q.size(1), L = k.size(0);
  at::Tensor s = at::matmul(q, k.t()) * scale;
  s.masked_fill_(at::arange(L).unsqueeze(0).gt(at::arange(L - T, L).unsqueeze(1)),
                 -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(s, -1), v);
}

// Creates a session from `text` (2 layers, 4 query heads, 2 kv heads, head_dim 32) into *session
// and runs a prompt of `prompt` tokens, then `decode_steps` calls of one token, through both
// layers: q (times `q_scale`), k and v drawn in that order from seed `seed`. Every call must
// succeed with finite outputs (fatal failures otherwise: wrap in ASSERT_NO_FATAL_FAILURE).
inline void RunRandomCalls(const std::string& text, int64_t prompt, int decode_steps, uint64_t seed,
                           double q_scale, std::unique_ptr<Session>* session) {
  auto options = ParseSessionConfig(text, true);
  ASSERT_TRUE(options.ok()) << options.status();
  auto created = Session::Create(*options);
  ASSERT_TRUE(created.ok()) << created.status();
  *session = std::move(*created);
  at::manual_seed(seed);
  for (int step = 0; step <= decode_steps; ++step) {
    const int64_t T = step == 0 ? prompt : 1;
    for (int layer = 0; layer < 2; ++layer) {
      const at::Tensor q = at::randn({1, 4, T, 32}).mul(q_scale);
      const at::Tensor k = at::randn({1, 2, T, 32}), v = at::randn({1, 2, T, 32});
      at::Tensor out = at::empty({1, 4, T, 32});
      const absl::Status s = (*session)->Attend(layer, q, k, v, out);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_TRUE(at::isfinite(out).all().item<bool>()) << "step " << step;
    }
  }
}

}  // namespace attnkit::session::testing

#endif  // ATTNKIT_TESTS_CPP_SESSION_STORE_TESTING_H_
