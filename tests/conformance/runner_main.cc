// attnkit-conformance DIR...: runs every *.safetensors case found below the given folders through
// attnkit's public API, prints PASS/FAIL per case and "N passed, M failed"; exits non-zero when any
// case failed or none was found. An unknown kind or config value is a failure, never a skip.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "conformance.h"

namespace attnkit::conformance {

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
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR...\n", argv[0]);
    return 2;
  }
  std::vector<std::string> cases;
  for (int i = 1; i < argc; ++i) {
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
  for (const std::string& path : cases) {
    const std::string name = fs::path(path).stem().string();
    absl::Status status = attnkit::conformance::RunCase(path);
    if (status.ok()) {
      ++passed;
      std::printf("PASS %s\n", name.c_str());
    } else {
      ++failed;
      std::printf("FAIL %s: %s\n", name.c_str(), std::string(status.message()).c_str());
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  if (cases.empty()) {
    std::fprintf(stderr, "attnkit-conformance: no *.safetensors case found\n");
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
