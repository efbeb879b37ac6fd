// Every ready-made configuration in samples/configs parses and validates (session configs with a
// model shape added, as the samples do).
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "attnkit/config_parser.h"

namespace attnkit {
namespace {

TEST(SampleConfigsTest, EveryConfigValidates) {
  const std::filesystem::path dir =
      std::filesystem::path(ATTNKIT_SOURCE_DIR) / "samples" / "configs";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".textproto") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    absl::Status status;
    if (text.str().find("method:") != std::string::npos) {
      status = ParseVisualPruningConfig(text.str(), true).status();
    } else if (text.str().find("head_split") != std::string::npos) {
      // Labels per (layer, kv head) of the samples' model, stories260k.
      status = ParseSessionConfig(
                   text.str() + "\nnum_layers: 5 num_heads: 8 num_kv_heads: 4 head_dim: 8", true)
                   .status();
    } else {
      status = ParseSessionConfig(text.str() +
                                      "\nnum_layers: 2 num_heads: 8 num_kv_heads: 4 head_dim: 64 "
                                      "rope { theta: 10000 }",
                                  true)
                   .status();
    }
    EXPECT_TRUE(status.ok()) << entry.path() << ": " << status;
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

}  // namespace
}  // namespace attnkit
