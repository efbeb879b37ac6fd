// The thread-safety contract of the C ABI (attnkit_common.h): one object is used by one thread at a
// time, distinct objects are independent, and the stateless functions (configs, tensor checks,
// status getters) may be called from any number of threads at once. Each test runs the same work
// on several threads at once and compares every thread's results with a run on one thread. Run
// under ThreadSanitizer by scripts/tsan.sh, which is where a data race between "independent"
// objects (shared caches, globals, lazily built tables) shows up.
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attnkit.h"

namespace {

constexpr int kThreads = 4;

const char kSession[] =
    "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 8 "
    "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN window_size: 2 "
    "start_tokens: 1 "
    "intermediate_tokens: 4 recent_tokens: 2 }";

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  DLTensor dl{};
  Tensor(std::vector<int64_t> s, float seed) : shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    data.resize(n);
    for (int64_t i = 0; i < n; ++i) data[i] = static_cast<float>(((i * 37 + 11) % 23) - 11) * seed;
    dl.data = data.data();
    dl.device = {kDLCPU, 0};
    dl.ndim = static_cast<int32_t>(shape.size());
    dl.dtype = {kDLFloat, 32, 1};
    dl.shape = shape.data();
  }
};

std::string Take(attnkit_status* status) {
  std::string message = status == nullptr ? "" : attnkit_status_get_message(status);
  attnkit_status_free(status);
  return message;
}

// A prompt of 6 tokens and 10 decode steps over both layers; every output and the final positions.
std::vector<float> RunSession(float seed) {
  attnkit_session* session = nullptr;
  EXPECT_EQ(Take(attnkit_session_create_from_text(kSession, std::strlen(kSession), &session)), "");
  if (session == nullptr) return {};
  std::vector<float> outputs;
  for (int step = 0; step < 11; ++step) {
    const int64_t tokens = step == 0 ? 6 : 1;
    for (int layer = 0; layer < 2; ++layer) {
      const float s = seed * (1.0f + 0.01f * static_cast<float>(step * 2 + layer));
      Tensor q({1, 4, tokens, 8}, s), k({1, 2, tokens, 8}, -s), v({1, 2, tokens, 8}, 0.5f * s);
      Tensor out({1, 4, tokens, 8}, 0);
      EXPECT_EQ(Take(attnkit_session_attend(session, layer, &q.dl, &k.dl, &v.dl, &out.dl)), "");
      outputs.insert(outputs.end(), out.data.begin(), out.data.end());
    }
  }
  attnkit_int64_array* positions = nullptr;
  EXPECT_EQ(Take(attnkit_session_positions(session, 1, 0, 1, &positions)), "");
  if (positions != nullptr) {
    for (size_t i = 0; i < positions->size; ++i) {
      outputs.push_back(static_cast<float>(positions->data[i]));
    }
  }
  attnkit_int64_array_free(positions);
  attnkit_session_free(session);
  return outputs;
}

TEST(Threads, DistinctSessionsRunIndependently) {
  std::vector<std::vector<float>> expected(kThreads);
  for (int t = 0; t < kThreads; ++t) expected[t] = RunSession(0.1f * static_cast<float>(t + 1));
  std::vector<std::vector<float>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &got] { got[t] = RunSession(0.1f * static_cast<float>(t + 1)); });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_FALSE(expected[t].empty());
    EXPECT_EQ(got[t], expected[t]) << "thread " << t;
  }
}

std::vector<int64_t> RunPolicy(int seed) {
  const char config[] =
      "algorithm: H2O granularity: PER_TOKEN start_tokens: 1 intermediate_tokens: 2 recent_tokens: "
      "1";
  attnkit_eviction_policy* policy = nullptr;
  EXPECT_EQ(
      Take(attnkit_eviction_policy_create_from_text(config, std::strlen(config), 1, 4, 2, &policy)),
      "");
  if (policy == nullptr) return {};
  Tensor attention({1, 4, 2, 8}, 0.01f * static_cast<float>(seed));
  for (float& a : attention.data) a = a < 0 ? -a : a;
  const int64_t length = 8;
  EXPECT_EQ(Take(attnkit_eviction_policy_observe(policy, 0, &attention.dl, &length, 1)), "");
  attnkit_kept_positions* kept = nullptr;
  EXPECT_EQ(Take(attnkit_eviction_policy_select(policy, 0, nullptr, &length, 1, &kept)), "");
  std::vector<int64_t> out;
  size_t size = 0;
  const int64_t* row = attnkit_kept_positions_row(kept, 0, &size);
  if (row != nullptr) out.assign(row, row + size);
  attnkit_kept_positions_free(kept);
  attnkit_eviction_policy_free(policy);
  return out;
}

TEST(Threads, DistinctPoliciesRunIndependently) {
  std::vector<std::vector<int64_t>> expected(kThreads), got(kThreads);
  for (int t = 0; t < kThreads; ++t) expected[t] = RunPolicy(t + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &got] {
      for (int i = 0; i < 5; ++i) got[t] = RunPolicy(t + 1);
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(expected[t].size(), 4u);
    EXPECT_EQ(got[t], expected[t]) << "thread " << t;
  }
}

// One immutable sparse-attention object shared by every thread (attnkit_sparse.h promises it).
std::vector<float> RunSparse(const attnkit_sparse_attention* sparse, float seed) {
  Tensor q({1, 4, 40, 8}, seed), k({1, 2, 40, 8}, -seed), v({1, 2, 40, 8}, 0.5f * seed);
  Tensor out({1, 4, 40, 8}, 0);
  double density = 0;
  EXPECT_EQ(
      Take(attnkit_sparse_attention_prefill(sparse, &q.dl, &k.dl, &v.dl, 0.0, &out.dl, &density)),
      "");
  out.data.push_back(static_cast<float>(density));
  return out.data;
}

TEST(Threads, OneSparseAttentionSharedByThreads) {
  const char config[] =
      "mode: XATTENTION block_size: 8 min_sparse_length: 8 xattention { stride: 4 threshold: 0.5 }";
  attnkit_sparse_attention* sparse = nullptr;
  ASSERT_EQ(Take(attnkit_sparse_attention_create_from_text(config, std::strlen(config), &sparse)),
            "");
  std::vector<std::vector<float>> expected(kThreads), got(kThreads);
  for (int t = 0; t < kThreads; ++t) expected[t] = RunSparse(sparse, 0.2f * (t + 1));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) got[t] = RunSparse(sparse, 0.2f * (t + 1));
    });
  }
  for (std::thread& th : threads) th.join();
  attnkit_sparse_attention_free(sparse);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(got[t], expected[t]) << "thread " << t;
}

// One pruner shared by every thread, and one selection read by every thread (attnkit_visual.h).
TEST(Threads, OneVisualPrunerAndSelectionSharedByThreads) {
  const char config[] = "method: CDPRUNER num_keep_tokens: 3 theta: 0.5";
  attnkit_visual_pruner* pruner = nullptr;
  ASSERT_EQ(Take(attnkit_visual_pruner_create_from_text(config, std::strlen(config), &pruner)), "");
  auto select = [pruner](float seed) {
    Tensor embeds({2, 6, 4}, seed), features({2, 6, 8}, -seed), text({3, 4}, 0.3f * seed);
    attnkit_visual_selection* selection = nullptr;
    EXPECT_EQ(
        Take(attnkit_visual_pruner_select(pruner, &embeds.dl, &features.dl, &text.dl, &selection)),
        "");
    std::vector<int64_t> kept;
    for (size_t image = 0; image < attnkit_visual_selection_num_images(selection); ++image) {
      const int64_t* indices = attnkit_visual_selection_indices(selection, image);
      kept.insert(kept.end(), indices,
                  indices + attnkit_visual_selection_num_kept(selection, image));
    }
    attnkit_visual_selection_free(selection);
    return kept;
  };
  std::vector<std::vector<int64_t>> expected(kThreads), got(kThreads);
  for (int t = 0; t < kThreads; ++t) expected[t] = select(0.3f * (t + 1));
  Tensor embeds({6, 4}, 1), features({6, 8}, -1), text({3, 4}, 0.5f);
  attnkit_visual_selection* shared = nullptr;
  ASSERT_EQ(Take(attnkit_visual_pruner_select(pruner, &embeds.dl, &features.dl, &text.dl, &shared)),
            "");
  std::vector<std::vector<int64_t>> flat(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) got[t] = select(0.3f * (t + 1));
      attnkit_int64_array* indices = nullptr;
      EXPECT_EQ(Take(attnkit_visual_selection_flat_indices(shared, &indices)), "");
      if (indices != nullptr) flat[t].assign(indices->data, indices->data + indices->size);
      attnkit_int64_array_free(indices);
    });
  }
  for (std::thread& th : threads) th.join();
  attnkit_visual_selection_free(shared);
  attnkit_visual_pruner_free(pruner);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(expected[t].size(), 6u);
    EXPECT_EQ(got[t], expected[t]) << "thread " << t;
    EXPECT_EQ(flat[t].size(), 3u);
    EXPECT_EQ(flat[t], flat[0]);
  }
}

TEST(Threads, StatelessFunctionsFromManyThreadsAtOnce) {
  const std::string bad = "num_layers: 5000 num_heads: 4 num_kv_heads: 2 head_dim: 8";
  std::vector<std::string> errors(kThreads), binaries(kThreads), checks(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        errors[t] =
            Take(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, bad.data(), bad.size()));
        attnkit_buffer* buffer = nullptr;
        Take(attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, kSession, std::strlen(kSession),
                                           &buffer));
        if (buffer != nullptr) {
          binaries[t].assign(reinterpret_cast<const char*>(buffer->data), buffer->size);
        }
        attnkit_buffer_free(buffer);
        Tensor x({3, 4}, 1);
        x.dl.ndim = 9;
        checks[t] = Take(attnkit_tensor_check(&x.dl, "x", 2, 0));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_NE(errors[t].find("num_layers: must be at most 1024"), std::string::npos) << errors[t];
    EXPECT_EQ(errors[t], errors[0]);
    EXPECT_FALSE(binaries[t].empty());
    EXPECT_EQ(binaries[t], binaries[0]);
    EXPECT_NE(checks[t].find("x: rank 9"), std::string::npos) << checks[t];
  }
}

TEST(Threads, AStatusIsReadOnAnotherThread) {
  attnkit_status* status = attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, "num_layers: -1",
                                                        std::strlen("num_layers: -1"));
  ASSERT_NE(status, nullptr);
  std::string message;
  attnkit_status_code code = ATTNKIT_OK;
  std::thread reader([&] {
    message = attnkit_status_get_message(status);
    code = attnkit_status_get_code(status);
  });
  reader.join();
  attnkit_status_free(status);
  EXPECT_EQ(code, ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(message.find("num_layers"), std::string::npos) << message;
}

}  // namespace
