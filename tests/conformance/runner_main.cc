// attnkit-conformance DIR...: runs every *.safetensors case found below the given folders through
// attnkit's public API, prints PASS/FAIL per case and "N passed, M failed"; exits non-zero when any
// case failed or none was found. An unknown kind or config value is a failure, never a skip.
//
//   attnkit-conformance [--device cpu|cuda|cuda:N] DIR...
// --device cuda hands every tensor to attnkit on that CUDA device (session-level cases create a
// CUDA session); it needs a build with CUDA and a GPU.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ops/empty.h>

#include "absl/strings/numbers.h"
#include "conformance.h"
#include "progress.h"

namespace attnkit::conformance {

namespace {
at::Device& MutableCaseDevice() {
  static at::Device device(at::kCPU);
  return device;
}
}  // namespace

at::Device CaseDevice() { return MutableCaseDevice(); }

at::Tensor OnCaseDevice(const at::Tensor& t) {
  return t.device() == CaseDevice() ? t : t.to(CaseDevice());
}

std::string SessionDeviceText() {
  if (!CaseDevice().is_cuda()) return "";
  return "device: CUDA device_index: " +
         std::to_string(CaseDevice().has_index() ? CaseDevice().index() : 0) + " ";
}

std::map<std::string, CaseRunner>& Registry() {
  static std::map<std::string, CaseRunner> registry;
  return registry;
}

absl::Status FromC(attnkit_status* status, absl::string_view what) {
  if (status == nullptr) return absl::OkStatus();
  std::string message = attnkit_status_get_message(status);
  if (!what.empty()) message = std::string(what) + ": " + message;
  absl::Status out(static_cast<absl::StatusCode>(attnkit_status_get_code(status)), message);
  attnkit_status_free(status);
  return out;
}

absl::StatusOr<std::vector<int64_t>> SessionPositions(attnkit_session* session, int layer,
                                                      int sequence, int kv_head) {
  attnkit_int64_array* positions = nullptr;
  if (absl::Status s = FromC(
          attnkit_session_positions(session, layer, sequence, kv_head, &positions), "positions");
      !s.ok()) {
    return s;
  }
  std::vector<int64_t> out(positions->data, positions->data + positions->size);
  attnkit_int64_array_free(positions);
  return out;
}

absl::StatusOr<double> ConfigNumber(const JsonValue& config, const char* key) {
  const JsonValue* v = config.Find(key);
  if (v == nullptr || !v->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", key, " must be a number"));
  }
  return v->number();
}

absl::StatusOr<SessionHandle> CreateSession(absl::string_view textproto) {
  attnkit_session* raw = nullptr;
  if (absl::Status s =
          FromC(attnkit_session_create_from_text(textproto.data(), textproto.size(), &raw),
                "session create");
      !s.ok()) {
    return s;
  }
  return SessionHandle(raw, attnkit_session_free);
}

absl::StatusOr<int64_t> MetadataInt(const SafetensorsFile& file, const std::string& key) {
  auto text = file.Metadata(key);
  if (!text.ok()) return text.status();
  int64_t value = 0;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(key + ": expected an integer, got \"" + *text + "\"");
  }
  return value;
}

bool RegisterKind(const std::string& kind, CaseRunner runner) {
  Registry()[kind] = std::move(runner);
  return true;
}

namespace {

absl::Status RunCase(const std::string& path) {
  auto file = SafetensorsFile::Read(path);
  if (!file.ok()) return file.status();
  auto kind = file->Metadata("kind");
  if (!kind.ok()) return kind.status();
  auto it = Registry().find(*kind);
  if (it == Registry().end()) {
    return absl::UnimplementedError("unknown case kind \"" + *kind + "\"");
  }
  auto config_text = file->Metadata("config");
  if (!config_text.ok()) return config_text.status();
  auto config = JsonValue::Parse(*config_text);
  if (!config.ok()) return config.status();
  return it->second(*file, *config);
}

}  // namespace
}  // namespace attnkit::conformance

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  int first = 1;
  if (argc > 2 && std::string(argv[1]) == "--device") {
    const std::string name = argv[2];
    if (name == "cpu") {
      attnkit::conformance::MutableCaseDevice() = at::Device(at::kCPU);
    } else if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
#ifdef ATTNKIT_WITH_CUDA
      const int index = name == "cuda" ? 0 : std::atoi(name.c_str() + 5);
      attnkit::conformance::MutableCaseDevice() =
          at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
      // Fails here, with the runtime's message, when no such device is visible.
      (void)at::empty({1}, at::TensorOptions().device(attnkit::conformance::CaseDevice()));
#else
      std::fprintf(stderr, "attnkit-conformance: --device %s needs a build with CUDA\n",
                   name.c_str());
      return 2;
#endif
    } else {
      std::fprintf(stderr, "attnkit-conformance: --device expects cpu, cuda or cuda:N, got %s\n",
                   name.c_str());
      return 2;
    }
    first = 3;
  }
  if (argc <= first) {
    std::fprintf(stderr, "usage: %s [--device cpu|cuda|cuda:N] DIR...\n", argv[0]);
    return 2;
  }
  std::printf("device: %s\n", attnkit::conformance::CaseDevice().str().c_str());
  std::vector<std::string> cases;
  for (int i = first; i < argc; ++i) {
    std::error_code ec;
    if (fs::is_regular_file(argv[i], ec)) {
      cases.push_back(argv[i]);
      continue;
    }
    if (!fs::is_directory(argv[i], ec)) {
      std::fprintf(stderr, "attnkit-conformance: %s is not a folder or file\n", argv[i]);
      return 2;
    }
    for (const auto& entry : fs::recursive_directory_iterator(argv[i], ec)) {
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
        cases.push_back(entry.path().string());
      }
    }
  }
  std::sort(cases.begin(), cases.end());
  int passed = 0, failed = 0;
  attnkit::tools::ProgressBar bar("conformance", static_cast<int64_t>(cases.size()));
  for (const std::string& path : cases) {
    const std::string name = fs::path(path).stem().string();
    bar.Update(passed + failed, name);
    absl::Status status = attnkit::conformance::RunCase(path);
    bar.Clear();
    if (status.ok()) {
      ++passed;
      std::printf("PASS %s\n", name.c_str());
    } else {
      ++failed;
      std::printf("FAIL %s: %s\n", name.c_str(), std::string(status.message()).c_str());
    }
    std::fflush(stdout);
  }
  bar.Update(passed + failed);
  bar.Finish();
  std::printf("%d passed, %d failed\n", passed, failed);
  if (cases.empty()) {
    std::fprintf(stderr, "attnkit-conformance: no *.safetensors case found\n");
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
