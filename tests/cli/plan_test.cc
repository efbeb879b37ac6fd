// `attnkit plan` against real sessions: for every sample SessionConfig, with a small shape and
// prompts of 1, 100 and 1000 tokens, the planned bytes (PlanKvBytes, which the command prints)
// equal what a CPU session holds after attending that prompt on every layer, byte for byte where
// the plan says it is exact, and bound it where the plan says the scores decide. The full-cache
// bytes are checked the same way on the config with eviction and the head split taken out. One
// case runs the command itself and reads its JSON total.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "config/kv_plan.h"

namespace attnkit {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

// The file's options with `shape` (L,H,KVH,D) and stories260k's RoPE added, as `attnkit plan
// --shape` does for a file without a model shape.
absl::StatusOr<SessionOptions> WithShape(const std::string& text, const int shape[4]) {
  std::ostringstream extra;
  extra << text << "\nnum_layers: " << shape[0] << " num_heads: " << shape[1]
        << " num_kv_heads: " << shape[2] << " head_dim: " << shape[3] << "\n";
  if (!std::regex_search(text, std::regex("(^|\n)\\s*rope\\s*[{:]"))) {
    extra << "rope { theta: 10000 interleaved: true }\n";
  }
  return ParseSessionConfig(extra.str(), /*text=*/true);
}

// Bytes a CPU session holds after one prompt of `tokens` random tokens on every layer.
absl::StatusOr<int64_t> SessionBytes(const SessionOptions& options, int64_t tokens) {
  auto session = Session::Create(options);
  if (!session.ok()) return session.status();
  at::manual_seed(7);
  const int64_t B = options.batch_size, H = options.num_heads, KVH = options.num_kv_heads,
                d = options.head_dim;
  for (int layer = 0; layer < options.num_layers; ++layer) {
    const at::Tensor q = at::randn({B, H, tokens, d});
    const at::Tensor k = at::randn({B, KVH, tokens, d});
    const at::Tensor v = at::randn({B, KVH, tokens, d});
    at::Tensor out = at::empty({B, H, tokens, d});
    if (absl::Status s = (*session)->Attend(layer, q, k, v, out); !s.ok()) return s;
  }
  return (*session)->BytesHeld();
}

TEST(CliPlan, MatchesSessionsOnEverySampleConfig) {
  const std::string dir = std::string(ATTNKIT_SOURCE_DIR) + "/samples/configs";
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".textproto") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_FALSE(files.empty());
  const int small[4] = {2, 4, 2, 64}, stories[4] = {5, 8, 4, 8};
  int configs = 0, exact = 0, bounded = 0;
  std::map<std::string, int64_t> full_held;
  for (const std::string& path : files) {
    const std::string text = ReadText(path);
    if (text.rfind("# attnkit.v1.SessionConfig", 0) != 0) continue;
    // The small shape, else stories260k's (head_split labels are per its layers and kv heads).
    absl::StatusOr<SessionOptions> options = WithShape(text, small);
    if (!options.ok() || !Session::Create(*options).ok()) options = WithShape(text, stories);
    if (!options.ok() || !Session::Create(*options).ok()) {
      std::printf(
          "skipped %s: %s\n", path.c_str(),
          options.ok() ? "no CPU session" : std::string(options.status().message()).c_str());
      continue;
    }
    ++configs;
    SessionOptions full_options = *options;
    full_options.eviction.enabled = false;
    full_options.head_split = HeadSplitOptions();
    for (int64_t tokens : {1, 100, 1000}) {
      SCOPED_TRACE(path + ", " + std::to_string(tokens) + " tokens");
      auto plan = PlanKvBytes(*options, tokens);
      ASSERT_TRUE(plan.ok()) << plan.status();
      auto held = SessionBytes(*options, tokens);
      ASSERT_TRUE(held.ok()) << held.status();
      // The full cache's bytes depend on the shape and the page format only: one session each.
      const std::string format_key = absl::StrCat(
          full_options.num_layers, ",", full_options.num_kv_heads, ",", full_options.head_dim, ",",
          static_cast<int>(full_options.dtype), ",", full_options.page_size, ",",
          static_cast<int>(full_options.key_type()), ",",
          static_cast<int>(full_options.value_type()), ",", full_options.kv_format.residual_tokens,
          ",", full_options.kv_format.group_size, ",", tokens);
      if (full_held.count(format_key) == 0) {
        auto full = SessionBytes(full_options, tokens);
        ASSERT_TRUE(full.ok()) << full.status();
        full_held[format_key] = *full;
      }
      const int64_t* full = &full_held[format_key];
      EXPECT_EQ(plan->full_bytes, *full);
      int64_t layers_sum = 0;
      for (const auto& layer : plan->layers) layers_sum += layer.config_bytes;
      EXPECT_EQ(layers_sum, plan->config_bytes);
      if (plan->exact) {
        EXPECT_EQ(plan->config_bytes, *held);
        ++exact;
      } else {
        EXPECT_GE(plan->config_bytes, *held);
        ++bounded;
      }
      std::printf("%-40s N=%-5lld full %9lld config %9lld held %9lld %s\n",
                  std::filesystem::path(path).filename().c_str(), static_cast<long long>(tokens),
                  static_cast<long long>(plan->full_bytes),
                  static_cast<long long>(plan->config_bytes), static_cast<long long>(*held),
                  plan->exact ? "exact" : "bound");
    }
  }
  std::printf("%d configs x 3 token counts: %d exact, %d upper bounds\n", configs, exact, bounded);
  EXPECT_EQ(configs, 21);  // every SessionConfig of samples/configs
}

// The eviction samples again with compressed page formats and residual windows (and two
// sequences): the main pages, the window and the eviction's compaction between them.
TEST(CliPlan, MatchesSessionsWithCompressedPages) {
  const std::string dir = std::string(ATTNKIT_SOURCE_DIR) + "/samples/configs/";
  const int small[4] = {2, 4, 2, 64}, stories[4] = {5, 8, 4, 8};
  int cases = 0, exact = 0;
  for (const char* name :
       {"snapkv", "streaming_llm", "snapkv_ratio", "head_split", "threshold", "adakv"}) {
    for (const char* format :
         {"keys: INT8 values: INT8", "keys: INT4 values: INT4 residual_tokens: 16",
          "keys: INT8 values: INT2 residual_tokens: 40", "keys: FP16 values: FP32"}) {
      const std::string text =
          ReadText(dir + name + ".textproto") + "\nkv_format { " + format + " }\nbatch_size: 2\n";
      absl::StatusOr<SessionOptions> options = WithShape(text, small);
      if (!options.ok() || !Session::Create(*options).ok()) options = WithShape(text, stories);
      if (!options.ok() || !Session::Create(*options).ok()) {
        std::printf(
            "skipped %s with %s: %s\n", name, format,
            options.ok() ? "no CPU session" : std::string(options.status().message()).c_str());
        continue;
      }
      for (int64_t tokens : {100, 300}) {
        SCOPED_TRACE(std::string(name) + " with " + format + ", " + std::to_string(tokens));
        auto plan = PlanKvBytes(*options, tokens);
        ASSERT_TRUE(plan.ok()) << plan.status();
        auto held = SessionBytes(*options, tokens);
        ASSERT_TRUE(held.ok()) << held.status();
        ++cases;
        if (plan->exact) {
          EXPECT_EQ(plan->config_bytes, *held);
          ++exact;
        } else {
          EXPECT_GE(plan->config_bytes, *held);
        }
      }
    }
  }
  std::printf("%d cases with compressed pages: %d exact, %d upper bounds\n", cases, exact,
              cases - exact);
  EXPECT_GE(cases, 40);
}

TEST(CliPlan, CommandPrintsThePlansJsonTotal) {
  const std::string path = std::string(ATTNKIT_SOURCE_DIR) + "/samples/configs/snapkv.textproto";
  const std::string command = std::string(ATTNKIT_CLI) + " plan --config " + path +
                              " --shape 2,4,2,64 --batch 2 --tokens 300 --json";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  ASSERT_EQ(pclose(pipe), 0) << output;
  std::smatch config, full;
  ASSERT_TRUE(std::regex_search(output, config, std::regex("\"config_bytes\": ([0-9]+)")))
      << output;
  ASSERT_TRUE(std::regex_search(output, full, std::regex("\"full_bytes\": ([0-9]+)"))) << output;
  const int shape[4] = {2, 4, 2, 64};
  auto options = WithShape(ReadText(path), shape);
  ASSERT_TRUE(options.ok()) << options.status();
  options->batch_size = 2;
  auto held = SessionBytes(*options, 300);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(std::stoll(config[1]), *held);
  auto plan = PlanKvBytes(*options, 300);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(std::stoll(full[1]), plan->full_bytes);
  EXPECT_TRUE(plan->exact);
}

}  // namespace
}  // namespace attnkit
