// Helpers the host-store tests share (kivi_test.cc, quantized_store_test.cc, think_test.cc): a
// host store made from options, and causal attention in plain ATen as the reference the stores'
// attention is checked against.
#ifndef ATTNKIT_TESTS_CPP_SESSION_STORE_TESTING_H_
#define ATTNKIT_TESTS_CPP_SESSION_STORE_TESTING_H_

#include <limits>
#include <memory>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

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

}  // namespace attnkit::session::testing

#endif  // ATTNKIT_TESTS_CPP_SESSION_STORE_TESTING_H_
