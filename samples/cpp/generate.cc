// attnkit C++ sample: the C sample's generation loop over stories260k with the model in ATen and
// attention through attnkit::Session (the C++ API, which is not ABI-stable; the C sample shows the
// stable C ABI). Same flags and output as samples/c/generate.c.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "attnkit/config_parser.h"
#include "llama2c_model.h"

int main(int argc, char** argv) {
  const char* models = std::getenv("ATTNKIT_MODELS_DIR");
  std::string model_dir = models && *models
                              ? std::string(models) + "/stories260k"
                              : std::string(ATTNKIT_SOURCE_DIR) + "/../shared/models/stories260k";
  std::string config_path = std::string(ATTNKIT_SOURCE_DIR) + "/samples/configs/snapkv.textproto";
  int steps = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg == "--tokens" && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
      if (steps <= 0) {
        std::fprintf(stderr, "attnkit_generate_cpp: --tokens: expected a positive number\n");
        return 1;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--model DIR] [--config FILE] [--tokens N]\n", argv[0]);
      return 2;
    }
  }
  auto model = attnkit::samples::Llama2c::Load(model_dir);
  if (!model.ok()) {
    std::fprintf(stderr, "attnkit_generate_cpp: %s\n",
                 std::string(model.status().message()).c_str());
    return 1;
  }
  std::ifstream in(config_path);
  if (!in) {
    std::fprintf(stderr, "attnkit_generate_cpp: cannot open %s\n", config_path.c_str());
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  // The file's policies, then the model's shape (textproto: the shape fields must not be in the
  // file).
  const std::string config =
      text.str() + absl::StrCat("\nnum_layers: ", model->n_layers, " num_heads: ", model->n_heads,
                                " num_kv_heads: ", model->n_kv_heads,
                                " head_dim: ", model->head_dim(),
                                " rope { theta: 10000 interleaved: true }");
  auto options = attnkit::ParseSessionConfig(config, true);
  if (!options.ok()) {
    std::fprintf(stderr, "attnkit_generate_cpp: %s: %s\n", config_path.c_str(),
                 std::string(options.status().message()).c_str());
    return 1;
  }
  auto session = attnkit::Session::Create(*options);
  if (!session.ok()) {
    std::fprintf(stderr, "attnkit_generate_cpp: %s\n",
                 std::string(session.status().message()).c_str());
    return 1;
  }
  const std::string reference = model_dir + "/reference.json";
  const std::vector<int64_t> prompt = attnkit::samples::ReadJsonIds(reference, "prompt_ids");
  const std::vector<int64_t> expected =
      attnkit::samples::ReadJsonIds(reference, "greedy_ids_full_cache");
  if (prompt.empty() || static_cast<int>(prompt.size()) + steps > model->seq_len) {
    std::fprintf(stderr, "attnkit_generate_cpp: bad prompt or --tokens beyond the context\n");
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  auto generated = model->Generate(**session, prompt, steps);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!generated.ok()) {
    std::fprintf(stderr, "attnkit_generate_cpp: %s\n",
                 std::string(generated.status().message()).c_str());
    return 1;
  }
  std::printf("%s%s\n", model->Decode(prompt).c_str(), model->Decode(*generated).c_str());
  int compared = 0, agree = 0;
  for (int s = 0; s < steps && prompt.size() + s < expected.size(); ++s, ++compared) {
    agree += (*generated)[s] == expected[prompt.size() + s];
  }
  const attnkit::SessionStatsView stats = (*session)->Stats();
  std::printf("generated %d tokens in %.3f s: %.1f tokens/s\n", steps, seconds, steps / seconds);
  std::printf(
      "kv cache: %lld bytes held at the end (peak %lld), %zu tokens per kv head of layer 0\n",
      static_cast<long long>(stats.bytes_held), static_cast<long long>(stats.peak_bytes_held),
      (*session)->Positions(0, 0, 0)->size());
  std::printf("reference: %d of %d generated ids match the full-cache greedy run\n", agree,
              compared);
  return 0;
}
