// The HF Llama forward of attnkit-eval (tools/eval/hf_llama.h) on tinystories-656k with its
// attention through the session: the full cache must reproduce reference.json (a float64 forward):
// the first logits at the last prompt position and the greedy ids of 100 generated tokens.
#include <ATen/Functions.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "hf_llama.h"
#include "llama2c_model.h"  // ReadJsonIds
#include "test_env.h"

namespace attnkit {
namespace {

std::vector<double> ReadJsonNumbers(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::vector<double> values;
  size_t at = text.find("\"" + key + "\"");
  if (at == std::string::npos || (at = text.find('[', at)) == std::string::npos) return values;
  std::stringstream list(text.substr(at + 1, text.find(']', at) - at - 1));
  std::string item;
  while (std::getline(list, item, ',')) values.push_back(std::stod(item));
  return values;
}

TEST(HfLlamaTest, FullCacheMatchesReference) {
  const std::string dir = testing::ModelsDir() + "/tinystories-656k";
  ATTNKIT_SKIP_IF_MISSING(dir + "/model.safetensors");
  auto model = tools::HfLlama::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->n_layers, 2);
  EXPECT_EQ(model->n_kv_heads, 4);
  const std::string reference = dir + "/reference.json";
  const std::vector<int64_t> prompt = samples::ReadJsonIds(reference, "prompt_ids");
  const std::vector<int64_t> expected = samples::ReadJsonIds(reference, "greedy_ids_full_cache");
  const std::vector<double> logits8 =
      ReadJsonNumbers(reference, "logits_last_prompt_position_first8");
  ASSERT_FALSE(prompt.empty());
  ASSERT_GE(expected.size(), prompt.size() + 100);
  ASSERT_EQ(logits8.size(), 8u);

  auto options = ParseSessionConfig(
      absl::StrCat("num_layers: ", model->n_layers, " num_heads: ", model->n_heads,
                   " num_kv_heads: ", model->n_kv_heads, " head_dim: ", model->head_dim()),
      true);
  ASSERT_TRUE(options.ok()) << options.status();
  auto session = Session::Create(*options);
  ASSERT_TRUE(session.ok()) << session.status();
  auto logits = model->Forward(**session, prompt);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(1), model->vocab_size);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(logits->select(0, prompt.size() - 1)[i].item<double>(), logits8[i], 1e-3)
        << "logit " << i;
  }
  std::vector<int64_t> generated;
  for (int s = 0; s < 100; ++s) {
    generated.push_back(logits->select(0, logits->size(0) - 1).argmax().item<int64_t>());
    ASSERT_EQ(generated.back(), expected[prompt.size() + s]) << "generated token " << s;
    logits = model->Forward(**session, {generated.back()});
    ASSERT_TRUE(logits.ok()) << logits.status();
  }
}

}  // namespace
}  // namespace attnkit
