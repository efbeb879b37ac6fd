// A bounds-checked reader of the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the data.
// Every malformed input (truncated file, lying lengths, offsets out of range or overlapping,
// unknown dtype, shape that does not match the byte count) is an error, never a crash.
// No Torch here: tensors are byte views; tensor_io.h beside this file turns them into at::Tensor.
// Test support (tests/support): the conformance runner, the tests and the fuzzer read files with
// it; the library itself reads none.
#ifndef ATTNKIT_TESTS_SUPPORT_SAFETENSORS_H_
#define ATTNKIT_TESTS_SUPPORT_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnkit {

enum class SafetensorsDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element of a dtype.
int SafetensorsDTypeSize(SafetensorsDType dtype);
const char* SafetensorsDTypeName(SafetensorsDType dtype);

struct SafetensorsEntry {
  SafetensorsDType dtype;
  std::vector<int64_t> shape;
  // View into the owning SafetensorsFile's buffer; valid while it lives.
  absl::string_view data;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Parses a whole file held in memory; the file keeps its own copy.
  static absl::StatusOr<SafetensorsFile> Parse(std::string contents);
  static absl::StatusOr<SafetensorsFile> Read(const std::string& path);

  const std::map<std::string, SafetensorsEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // NotFoundError naming the tensor when absent.
  absl::StatusOr<const SafetensorsEntry*> Get(absl::string_view name) const;
  bool Has(absl::string_view name) const { return tensors_.count(std::string(name)) > 0; }
  // Metadata value or NotFoundError naming the key.
  absl::StatusOr<std::string> Metadata(absl::string_view key) const;

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;

 private:
  SafetensorsFile() = default;
  // Heap-allocated so string_views stay valid when the file object moves.
  std::unique_ptr<std::string> buffer_;
  std::map<std::string, SafetensorsEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace attnkit

#endif  // ATTNKIT_TESTS_SUPPORT_SAFETENSORS_H_
