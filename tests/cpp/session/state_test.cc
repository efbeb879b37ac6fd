// Session::Save / Load / Fork: a loaded or forked session goes on exactly (bit for bit) as the
// original does, for every ready-made config in samples/configs (eviction policies, schedules,
// quantized pages, sparse prefill, head split) and more; damaged blobs are clear errors that leave
// the session as it was.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <malloc.h>

#include <ATen/Functions.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "session/session_testing.h"
#include "util/archive.h"

namespace attnkit {
namespace {

// The samples' model shape (stories260k: head_split's labels are per its layers and kv heads),
// with two sequences.
constexpr int kLayers = 5, kHeads = 8, kKvHeads = 4, kDim = 8, kBatch = 2;
const char* kShape =
    "\nnum_layers: 5 num_heads: 8 num_kv_heads: 4 head_dim: 8 batch_size: 2 rope { theta: 10000 }";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every session config in samples/configs plus configs the samples do not cover.
std::vector<std::pair<std::string, std::string>> Configs() {
  std::vector<std::pair<std::string, std::string>> out;
  const auto dir = std::filesystem::path(ATTNKIT_SOURCE_DIR) / "samples" / "configs";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".textproto") continue;
    const std::string text = ReadFile(entry.path());
    if (text.find("attnkit.v1.SessionConfig") == std::string::npos) continue;
    out.emplace_back(entry.path().stem().string(), text);
  }
  out.emplace_back("rkv_bf16", R"(dtype: BFLOAT16 page_size: 8
      eviction { enabled: true algorithm: RKV granularity: PER_TOKEN start_tokens: 4
                 intermediate_tokens: 40 recent_tokens: 8 window_size: 8 })");
  out.emplace_back("h2o_normalized_per_head", R"(page_size: 4
      eviction { enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true
                 normalize_scores: true start_tokens: 2 intermediate_tokens: 50 recent_tokens: 6 })");
  out.emplace_back("tova_rerotate", R"(page_size: 4
      eviction { enabled: true algorithm: TOVA granularity: PER_TOKEN start_tokens: 2
                 intermediate_tokens: 50 recent_tokens: 6 rerotate_keys: true })");
  out.emplace_back("int8_residual_snapkv", R"(page_size: 16
      kv_format { keys: INT8 values: INT8 residual_tokens: 8 }
      eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 4
                 intermediate_tokens: 60 window_size: 8 pooling { kernel_size: 5 } })");
  out.emplace_back("think_snapkv", R"(page_size: 4
      kv_format { key_channel_ratio: 0.6 residual_tokens: 4 key_channel_window: 8 }
      eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2
                 intermediate_tokens: 40 recent_tokens: 6 window_size: 8 })");
  out.emplace_back("think_int8_values", R"(page_size: 8
      kv_format { key_channel_ratio: 0.4 values: INT8 group_size: 4 })");
  out.emplace_back("cam_int8_per_head_interval", R"(page_size: 8
      kv_format { keys: INT8 values: INT8 residual_tokens: 8 }
      eviction { enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true
                 start_tokens: 2 intermediate_tokens: 50 recent_tokens: 6
                 schedule { interval_steps: 4 } cache_merging { merge_budget: 6 seed: 2 } })");
  out.emplace_back("head_split_h2o_retrieval", R"(page_size: 4
      head_split { streaming: [true, false, false, true, true, false, false, false, true, true,
                               false, false, true, false, false, false, false, false, false, true]
                   sink_tokens: 2 recent_tokens: 10 }
      eviction { enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true
                 start_tokens: 2 intermediate_tokens: 40 recent_tokens: 6
                 cache_merging { merge_budget: 4 } })");
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<Session> Create(const std::string& text) {
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  if (!options.ok()) return nullptr;
  auto session = Session::Create(*options);
  EXPECT_TRUE(session.ok()) << session.status();
  return session.ok() ? std::move(*session) : nullptr;
}

// One call's inputs for every layer.
struct Call {
  int64_t tokens;
  std::vector<at::Tensor> q, k, v;
};

std::vector<Call> MakeCalls(const std::vector<int64_t>& tokens, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<Call> calls;
  for (int64_t t : tokens) {
    Call c{t, {}, {}, {}};
    for (int l = 0; l < kLayers; ++l) {
      c.q.push_back(at::randn({kBatch, kHeads, t, kDim}, gen, at::TensorOptions(at::kFloat)));
      c.k.push_back(at::randn({kBatch, kKvHeads, t, kDim}, gen, at::TensorOptions(at::kFloat)));
      c.v.push_back(at::randn({kBatch, kKvHeads, t, kDim}, gen, at::TensorOptions(at::kFloat)));
    }
    calls.push_back(std::move(c));
  }
  return calls;
}

// Runs `call` through every layer; returns the outputs.
std::vector<at::Tensor> RunCall(Session& s, const Call& call) {
  std::vector<at::Tensor> outs;
  for (int l = 0; l < kLayers; ++l) {
    at::Tensor out = at::empty_like(call.q[l]);
    const absl::Status status = s.Attend(l, call.q[l], call.k[l], call.v[l], out);
    EXPECT_TRUE(status.ok()) << status;
    outs.push_back(out);
  }
  return outs;
}

std::vector<std::vector<int64_t>> AllPositions(const Session& s) {
  std::vector<std::vector<int64_t>> out;
  for (int l = 0; l < kLayers; ++l) {
    for (int b = 0; b < kBatch; ++b) {
      for (int h = 0; h < kKvHeads; ++h) out.push_back(*s.Positions(l, b, h));
    }
  }
  return out;
}

// A prompt in two chunks and 24 decode steps: what the saved session has seen.
std::vector<Call> History() {
  return MakeCalls({70, 60, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
                   7);
}
// 40 more decode steps (the continuation all three sessions run).
std::vector<Call> Continuation() { return MakeCalls(std::vector<int64_t>(40, 1), 11); }

class StateTest : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(StateTest, SaveLoadAndForkGoOnBitForBit) {
  const std::string text = GetParam().second + kShape;
  auto original = Create(text);
  ASSERT_NE(original, nullptr);
  for (const Call& call : History()) RunCall(*original, call);

  auto blob = original->Save();
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto loaded = Create(text);
  ASSERT_NE(loaded, nullptr);
  const absl::Status load = loaded->Load(*blob);
  ASSERT_TRUE(load.ok()) << load;
  auto fork = original->Fork();
  ASSERT_TRUE(fork.ok()) << fork.status();
  // A blob is a function of the state: the loaded session saves the same bytes.
  EXPECT_TRUE(*loaded->Save() == *blob);
  EXPECT_EQ(AllPositions(*loaded), AllPositions(*original));

  int step = 0;
  for (const Call& call : Continuation()) {
    const std::vector<at::Tensor> want = RunCall(*original, call);
    const std::vector<at::Tensor> got_loaded = RunCall(*loaded, call);
    const std::vector<at::Tensor> got_fork = RunCall(**fork, call);
    for (int l = 0; l < kLayers; ++l) {
      ASSERT_TRUE(at::equal(got_loaded[l], want[l])) << "loaded, step " << step << " layer " << l;
      ASSERT_TRUE(at::equal(got_fork[l], want[l])) << "fork, step " << step << " layer " << l;
    }
    ++step;
  }
  EXPECT_EQ(AllPositions(*loaded), AllPositions(*original));
  EXPECT_EQ(AllPositions(**fork), AllPositions(*original));
  EXPECT_EQ(loaded->BytesHeld(), original->BytesHeld());
  EXPECT_EQ((*fork)->BytesHeld(), original->BytesHeld());
  EXPECT_EQ(loaded->Stats().evicted_tokens, original->Stats().evicted_tokens);
  EXPECT_EQ(*loaded->NextPosition(1), *original->NextPosition(1));
}

INSTANTIATE_TEST_SUITE_P(Configs, StateTest, ::testing::ValuesIn(Configs()),
                         [](const auto& info) { return info.param.first; });

// Heap bytes in use: glibc's count (arena allocations and mmapped blocks), or the sanitizer
// allocator's when ASan or TSan replaces malloc (mallinfo2 then reports nothing).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// The sanitizer runtimes' allocator statistics (sanitizer/allocator_interface.h, which g++ does
// not ship).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

size_t HeapBytesInUse() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

std::string SampleConfig(const char* name) {
  return ReadFile(std::filesystem::path(ATTNKIT_SOURCE_DIR) / "samples/configs" /
                  (std::string(name) + ".textproto")) +
         kShape;
}

// A fork shares the host store's pages copy-on-write: forking copies no page (the heap grows by
// far less than the pages held), and whatever either side writes afterwards (appends, evictions
// that compact, a reset and a new prompt) leaves the other's tokens as they were: the fork then
// goes on exactly as a session loaded from a blob saved at the moment of the fork.
TEST(StateTest, ForkSharesPagesCopyOnWrite) {
  for (const char* name : {"snapkv", "int4_pages", "streaming_llm"}) {
    SCOPED_TRACE(name);
    const std::string text = SampleConfig(name);
    auto source = Create(text);
    for (const Call& call : History()) RunCall(*source, call);
    const std::string blob = *source->Save();
    auto fork = source->Fork();
    ASSERT_TRUE(fork.ok()) << fork.status();
    // The source writes: 40 steps (each evicting), a reset, a new prompt.
    for (const Call& call : Continuation()) RunCall(*source, call);
    source->Reset();
    for (const Call& call : MakeCalls({90, 1, 1}, 13)) RunCall(*source, call);
    auto twin = Create(text);
    ASSERT_TRUE(twin->Load(blob).ok());
    for (const Call& call : Continuation()) {
      const auto want = RunCall(*twin, call);
      const auto got = RunCall(**fork, call);
      for (int l = 0; l < kLayers; ++l) ASSERT_TRUE(at::equal(got[l], want[l]));
    }
    EXPECT_EQ(AllPositions(**fork), AllPositions(*twin));
    EXPECT_EQ((*fork)->BytesHeld(), twin->BytesHeld());
    // A fork of a fork, the source gone: still its own.
    auto second = (*fork)->Fork();
    ASSERT_TRUE(second.ok());
    source.reset();
    fork->reset();
    const auto calls = MakeCalls({1, 1, 1}, 17);
    for (const Call& call : calls) {
      const auto want = RunCall(*twin, call);
      const auto got = RunCall(**second, call);
      for (int l = 0; l < kLayers; ++l) ASSERT_TRUE(at::equal(got[l], want[l]));
    }
  }
}

// Forking copies no page: at head dim 128 (the pages dominate what a session holds) the heap grows
// by a small fraction of the bytes of pages the fork holds; a deep copy (Load) grows it by more
// than them.
TEST(StateTest, ForkAllocatesNoPages) {
  for (const char* name : {"snapkv", "int4_pages", "full_cache"}) {
    SCOPED_TRACE(name);
    const std::string text = ReadFile(std::filesystem::path(ATTNKIT_SOURCE_DIR) /
                                      "samples/configs" / (std::string(name) + ".textproto")) +
                             "\nnum_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 128";
    auto source = Create(text);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
    for (int64_t tokens : {600, 1}) {
      const at::Tensor q = at::randn({1, 4, tokens, 128}, gen, at::TensorOptions(at::kFloat));
      const at::Tensor k = at::randn({1, 2, tokens, 128}, gen, at::TensorOptions(at::kFloat));
      ASSERT_TRUE(source->Attend(0, q, k, k, at::empty_like(q)).ok());
    }
    const std::string blob = *source->Save();
    const size_t pages = static_cast<size_t>(source->BytesHeld());
    size_t before = HeapBytesInUse();
    auto fork = source->Fork();
    ASSERT_TRUE(fork.ok()) << fork.status();
    const size_t forked = HeapBytesInUse() - before;
    EXPECT_LT(forked, pages / 10) << "the fork allocated " << forked << " heap bytes for " << pages
                                  << " bytes of pages";
    EXPECT_EQ(static_cast<size_t>((*fork)->BytesHeld()), pages);
    auto copy = Create(text);
    before = HeapBytesInUse();
    ASSERT_TRUE(copy->Load(blob).ok());
    EXPECT_GT(HeapBytesInUse() - before, pages) << "a loaded copy holds its own pages";
  }
}

// A source and its fork share frozen pages but no mutable state: each runs on its own thread
// (the thread sanitizer pass runs this test too) and both give what a lone run gives.
TEST(StateTest, SourceAndForkRunOnTwoThreads) {
  const std::string text = SampleConfig("snapkv");
  auto source = Create(text);
  for (const Call& call : History()) RunCall(*source, call);
  auto twin = Create(text);
  ASSERT_TRUE(twin->Load(*source->Save()).ok());
  auto fork = source->Fork();
  ASSERT_TRUE(fork.ok());
  const auto a_calls = Continuation(), b_calls = MakeCalls(std::vector<int64_t>(40, 1), 23);
  std::vector<std::vector<at::Tensor>> a_out, b_out;
  std::thread a([&] {
    for (const Call& call : a_calls) a_out.push_back(RunCall(*source, call));
  });
  std::thread b([&] {
    for (const Call& call : b_calls) b_out.push_back(RunCall(**fork, call));
  });
  a.join();
  b.join();
  for (size_t i = 0; i < b_calls.size(); ++i) {
    const auto want = RunCall(*twin, b_calls[i]);
    for (int l = 0; l < kLayers; ++l) ASSERT_TRUE(at::equal(b_out[i][l], want[l])) << i;
  }
  EXPECT_EQ(a_out.size(), a_calls.size());
}

TEST(StateTest, TensorPathSessionRoundTrips) {
  // The device store's tensor path on the CPU: the arena's pages are saved and loaded by gather
  // and scatter as on a GPU.
  for (const char* name : {"full_cache", "snapkv"}) {
    SCOPED_TRACE(name);
    auto options =
        ParseSessionConfig(ReadFile(std::filesystem::path(ATTNKIT_SOURCE_DIR) / "samples/configs" /
                                    (std::string(name) + ".textproto")) +
                               kShape,
                           true);
    ASSERT_TRUE(options.ok()) << options.status();
    auto a = session::CreateTensorPathSessionForTesting(*options);
    auto b = session::CreateTensorPathSessionForTesting(*options);
    ASSERT_TRUE(a.ok() && b.ok());
    for (const Call& call : History()) RunCall(**a, call);
    auto blob = (*a)->Save();
    ASSERT_TRUE(blob.ok()) << blob.status();
    ASSERT_TRUE((*b)->Load(*blob).ok());
    auto fork = (*a)->Fork();
    ASSERT_TRUE(fork.ok()) << fork.status();
    for (const Call& call : Continuation()) {
      const auto want = RunCall(**a, call);
      const auto got = RunCall(**b, call);
      const auto forked = RunCall(**fork, call);
      for (int l = 0; l < kLayers; ++l) {
        ASSERT_TRUE(at::equal(got[l], want[l]));
        ASSERT_TRUE(at::equal(forked[l], want[l]));
      }
    }
    EXPECT_EQ(AllPositions(**b), AllPositions(**a));
  }
}

// Bad blobs: each a clear INVALID_ARGUMENT, the session exactly as it was (it saves the same
// bytes afterwards and goes on as its twin).
class BadBlobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    text_ = ReadFile(std::filesystem::path(ATTNKIT_SOURCE_DIR) /
                     "samples/configs/int4_pages.textproto") +
            "\neviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 4 "
            "intermediate_tokens: 60 window_size: 8 }" +
            kShape;
    auto source = Create(text_);
    for (const Call& call : History()) RunCall(*source, call);
    blob_ = *source->Save();
    target_ = Create(text_);
    for (const Call& call : MakeCalls({30, 1, 1}, 5)) RunCall(*target_, call);
    before_ = *target_->Save();
  }

  // Loads `blob` into the target: must fail naming `expect`, leaving it untouched.
  void ExpectRejected(const std::string& blob, const std::string& expect) {
    const absl::Status s = target_->Load(blob);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(expect), absl::string_view::npos) << s;
    EXPECT_TRUE(*target_->Save() == before_) << "the failed load changed the session";
  }

  static std::string WithCrc(std::string blob) {
    const uint32_t crc = util::Crc32c(absl::string_view(blob).substr(32));
    std::memcpy(&blob[28], &crc, 4);
    return blob;
  }

  std::string text_, blob_, before_;
  std::unique_ptr<Session> target_;
};

TEST_F(BadBlobTest, TruncatedAlteredOrForeign) {
  for (size_t cut : {size_t{0}, size_t{10}, size_t{31}, size_t{32}, size_t{100}, blob_.size() / 2,
                     blob_.size() - 1}) {
    ExpectRejected(blob_.substr(0, cut), "blob:");
  }
  ExpectRejected(blob_ + "x", "extra bytes");
  std::string flipped = blob_;
  flipped[blob_.size() / 3] ^= 0x10;
  ExpectRejected(flipped, "checksum");
  std::string version = blob_;
  version[16] = 9;
  ExpectRejected(version, "format version 9");
  std::string magic = blob_;
  magic[0] = 'X';
  ExpectRejected(magic, "not a saved attnkit session");
  // A session saved with another budget.
  std::string other = text_;
  other.replace(other.find("intermediate_tokens: 60"), 23, "intermediate_tokens: 61");
  auto source = Create(other);
  for (const Call& call : MakeCalls({20}, 1)) RunCall(*source, call);
  ExpectRejected(*source->Save(), "intermediate_tokens");
  // From a differently shaped model (2 kv heads).
  std::string shape = text_;
  shape.replace(shape.find("num_kv_heads: 4"), 15, "num_kv_heads: 2");
  auto narrow = Create(shape);
  ExpectRejected(*narrow->Save(), "num_kv_heads");
}

TEST_F(BadBlobTest, LyingContentsWithAValidChecksumNeverCrash) {
  // Every 8-byte field of the first 4 KiB (lengths, counts, sizes) and random bytes beyond, set
  // to large, negative or small values with the checksum recomputed: a status every time, OK
  // only for a blob that still makes sense, and the session untouched when it fails.
  std::mt19937_64 rng(1);
  const int64_t values[] = {-1, 0, 1, 3, 1 << 20, int64_t{1} << 40, INT64_MAX};
  int rejected = 0, tried = 0;
  for (size_t at = 32; at + 8 <= blob_.size() && at < 4096; at += 8) {
    std::string blob = blob_;
    const int64_t v = values[rng() % 7];
    std::memcpy(&blob[at], &v, 8);
    blob = WithCrc(blob);
    const absl::Status s = target_->Load(blob);
    ++tried;
    if (!s.ok()) {
      ++rejected;
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_TRUE(*target_->Save() == before_) << "at " << at << ": " << s;
    } else {
      target_ = Create(text_);  // loaded something else: start again from the same state
      for (const Call& call : MakeCalls({30, 1, 1}, 5)) RunCall(*target_, call);
      before_ = *target_->Save();  // its clocks differ
    }
  }
  EXPECT_GT(rejected, tried / 4);
}

// Every layer of a step takes the same tokens, so a blob whose layers disagree on how many tokens a
// sequence has appended is altered, even when every position it holds is within the count (the
// load fuzzer found such a blob accepted, and the next step refused).
TEST_F(BadBlobTest, LayersThatAppendedOtherCountsAreRefused) {
  // Each materialized layer of the store: a present flag (u32 1), then the tokens appended per
  // sequence (count 2, then 154 and 154: the history's 70 + 60 + 24 tokens).
  std::string pattern(4 + 3 * 8, '\0');
  const uint32_t present = 1;
  const int64_t fields[] = {kBatch, 154, 154};
  std::memcpy(&pattern[0], &present, 4);
  std::memcpy(&pattern[4], fields, sizeof fields);
  std::vector<size_t> at;
  for (size_t p = blob_.find(pattern); p != std::string::npos; p = blob_.find(pattern, p + 1)) {
    at.push_back(p);
  }
  ASSERT_EQ(at.size(), static_cast<size_t>(kLayers)) << "the blob's layout changed";
  const struct {
    int layer;
    int64_t count;
    const char* expect;
  } cases[] = {{0, 155, "layer 1 of sequence 1 has appended 154 tokens, layer 0 155"},
               {0, 1000000, "layer 0 1000000"},
               {2, 153, "layer 2 of sequence 1 has appended 153 tokens, layer 1 154"},
               {kLayers - 1, 155, "has appended 155 tokens, layer 3 154"},
               {3, -1, "outside the -1 tokens appended"}};  // the positions' check sees it first
  for (const auto& c : cases) {
    std::string blob = blob_;
    std::memcpy(&blob[at[c.layer] + 4 + 16], &c.count, 8);  // sequence 1
    ExpectRejected(WithCrc(blob), c.expect);
  }
  // The same blob unaltered loads, and the loaded session goes on.
  ASSERT_TRUE(target_->Load(blob_).ok());
  for (const Call& call : Continuation()) RunCall(*target_, call);
}

TEST(StateTest, Crc32cIsTheCastagnoliChecksum) {
  // The check value of CRC-32C ("123456789"), and the instruction path agrees with the tables on
  // every length and alignment of random bytes.
  EXPECT_EQ(util::Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(util::Crc32cPortable("123456789"), 0xE3069283u);
  std::mt19937_64 rng(4);
  std::string bytes(1000, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 500, 993}) {
      const absl::string_view part = absl::string_view(bytes).substr(start, n);
      EXPECT_EQ(util::Crc32c(part), util::Crc32cPortable(part)) << start << " " << n;
      EXPECT_EQ(util::Crc32c(part.substr(n / 2), util::Crc32c(part.substr(0, n / 2))),
                util::Crc32c(part));
    }
  }
}

TEST(StateTest, OptionsBuiltInCodeCannotBeSavedButCanBeForked) {
  SessionOptions o;
  o.num_layers = 1;
  o.num_heads = 2;
  o.num_kv_heads = 1;
  o.head_dim = 8;
  auto s = Session::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->Save().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*s)->Load("").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*s)->Fork().ok());
}

}  // namespace
}  // namespace attnkit
