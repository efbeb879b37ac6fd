// libFuzzer target for the safetensors reader and the JSON reader beneath it. Built by clang++ with
// -fsanitize=fuzzer,address,undefined from tests/support/safetensors.cc + tests/support/json.cc and
// Abseil only (tests/fuzz/clang/CMakeLists.txt). Invariants checked beyond "no crash": errors are
// INVALID_ARGUMENT, and an accepted file's views hold exactly numel * dtype size bytes inside it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "support/safetensors.h"
#include "support/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  auto file = attnkit::SafetensorsFile::Parse(std::string(input));
  if (!file.ok()) {
    if (file.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  } else {
    uint64_t total = 0;
    for (const auto& [name, entry] : file->tensors()) {
      const int64_t numel = entry.numel();
      if (numel < 0) std::abort();
      // Divided, not multiplied: numel * size may wrap around to the byte count.
      const size_t element_size = attnkit::SafetensorsDTypeSize(entry.dtype);
      if (entry.data.size() % element_size != 0 ||
          entry.data.size() / element_size != static_cast<uint64_t>(numel)) {
        std::abort();
      }
      // Read every byte of the view: ASan reports a view that leaves the buffer.
      unsigned char sum = 0;
      for (char c : entry.data) sum += static_cast<unsigned char>(c);
      total += sum;
      if (!file->Get(name).ok()) std::abort();
    }
    for (const auto& [key, value] : file->metadata()) {
      if (!file->Metadata(key).ok()) std::abort();
      total += value.size();
    }
    if (total == UINT64_MAX) std::abort();  // keeps the reads from being optimized away
  }
  // The JSON reader on its own, on the same bytes.
  auto json = attnkit::JsonValue::Parse(input);
  if (!json.ok() && json.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (json.ok() && json->is_number()) (void)attnkit::JsonInt(*json, "n");
  return 0;
}
