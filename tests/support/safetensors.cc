#include "support/safetensors.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "support/json.h"

namespace attnkit {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100 * 1024 * 1024;  // the format's own limit
constexpr int kMaxRank = 16;

absl::StatusOr<SafetensorsDType> ParseDType(const std::string& name) {
  static const std::pair<const char*, SafetensorsDType> kNames[] = {
      {"F64", SafetensorsDType::kF64}, {"F32", SafetensorsDType::kF32},
      {"F16", SafetensorsDType::kF16}, {"BF16", SafetensorsDType::kBF16},
      {"I64", SafetensorsDType::kI64}, {"I32", SafetensorsDType::kI32},
      {"I16", SafetensorsDType::kI16}, {"I8", SafetensorsDType::kI8},
      {"U8", SafetensorsDType::kU8},   {"BOOL", SafetensorsDType::kBool}};
  for (const auto& [text, dtype] : kNames) {
    if (name == text) return dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name, "\""));
}

absl::Status TensorError(const std::string& name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors: tensor \"", name, "\": ", what));
}

}  // namespace

int SafetensorsDTypeSize(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::kF64:
    case SafetensorsDType::kI64:
      return 8;
    case SafetensorsDType::kF32:
    case SafetensorsDType::kI32:
      return 4;
    case SafetensorsDType::kF16:
    case SafetensorsDType::kBF16:
    case SafetensorsDType::kI16:
      return 2;
    case SafetensorsDType::kI8:
    case SafetensorsDType::kU8:
    case SafetensorsDType::kBool:
      return 1;
  }
  return 1;
}

const char* SafetensorsDTypeName(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::kF64:
      return "F64";
    case SafetensorsDType::kF32:
      return "F32";
    case SafetensorsDType::kF16:
      return "F16";
    case SafetensorsDType::kBF16:
      return "BF16";
    case SafetensorsDType::kI64:
      return "I64";
    case SafetensorsDType::kI32:
      return "I32";
    case SafetensorsDType::kI16:
      return "I16";
    case SafetensorsDType::kI8:
      return "I8";
    case SafetensorsDType::kU8:
      return "U8";
    case SafetensorsDType::kBool:
      return "BOOL";
  }
  return "?";
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string contents) {
  SafetensorsFile file;
  file.buffer_ = std::make_unique<std::string>(std::move(contents));
  const std::string& buf = *file.buffer_;
  if (buf.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors: file of ", buf.size(), " bytes is shorter than its 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(buf[i]);
  if (header_len > kMaxHeaderBytes || header_len > buf.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: header length ", header_len,
                                                   " runs past the end of the ", buf.size(),
                                                   "-byte file"));
  }
  auto header = JsonValue::Parse(absl::string_view(buf).substr(8, header_len));
  if (!header.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: header is not valid JSON: ", header.status().message()));
  }
  if (!header->is_object())
    return absl::InvalidArgumentError("safetensors: header is not an object");

  const absl::string_view data = absl::string_view(buf).substr(8 + header_len);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header->object()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        return absl::InvalidArgumentError("safetensors: __metadata__ is not an object");
      for (const auto& [key, value] : entry.object()) {
        if (!value.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("safetensors: __metadata__ value \"", key, "\" is not a string"));
        }
        file.metadata_[key] = value.string();
      }
      continue;
    }
    if (!entry.is_object()) return TensorError(name, "entry is not an object");
    const JsonValue* dtype = entry.Find("dtype");
    const JsonValue* shape = entry.Find("shape");
    const JsonValue* offsets = entry.Find("data_offsets");
    if (!dtype || !dtype->is_string()) return TensorError(name, "missing string \"dtype\"");
    if (!shape || !shape->is_array()) return TensorError(name, "missing array \"shape\"");
    if (!offsets || !offsets->is_array() || offsets->array().size() != 2) {
      return TensorError(name, "\"data_offsets\" must be [begin, end]");
    }
    SafetensorsEntry out;
    auto parsed_dtype = ParseDType(dtype->string());
    if (!parsed_dtype.ok()) return TensorError(name, parsed_dtype.status().message());
    out.dtype = *parsed_dtype;
    if (shape->array().size() > kMaxRank) return TensorError(name, "rank above 16");
    // Element count with overflow checks: a lying shape must not wrap around.
    uint64_t numel = 1;
    for (const JsonValue& d : shape->array()) {
      auto dim = JsonInt(d, "shape");
      if (!dim.ok() || *dim < 0)
        return TensorError(name, "shape entries must be non-negative integers");
      out.shape.push_back(*dim);
      if (*dim != 0 && numel > (uint64_t{1} << 62) / static_cast<uint64_t>(*dim)) {
        return TensorError(name, "shape is too large");
      }
      numel *= static_cast<uint64_t>(*dim);
    }
    auto begin = JsonInt(offsets->array()[0], "data_offsets");
    auto end = JsonInt(offsets->array()[1], "data_offsets");
    if (!begin.ok() || !end.ok() || *begin < 0 || *end < *begin) {
      return TensorError(name, "data_offsets must be integers with 0 <= begin <= end");
    }
    if (static_cast<uint64_t>(*end) > data.size()) {
      return TensorError(name, absl::StrCat("data_offsets [", *begin, ", ", *end, ") run past the ",
                                            data.size(), " data bytes"));
    }
    const uint64_t bytes = static_cast<uint64_t>(*end - *begin);
    // numel may be up to 2^62: numel * size could wrap to the byte count, so divide instead.
    const uint64_t element_size = SafetensorsDTypeSize(out.dtype);
    if (bytes % element_size != 0 || bytes / element_size != numel) {
      return TensorError(
          name,
          absl::StrCat("holds ", bytes, " bytes but its shape ", absl::StrJoin(out.shape, "x"),
                       " of ", SafetensorsDTypeName(out.dtype), " needs ", numel, " elements"));
    }
    out.data = data.substr(*begin, bytes);
    if (bytes > 0) ranges.emplace_back(*begin, *end);
    file.tensors_.emplace(name, std::move(out));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: data ranges overlap at byte ", ranges[i].first));
    }
  }
  return file;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  auto file = Parse(contents.str());
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat(path, ": ", file.status().message()));
  }
  return file;
}

absl::StatusOr<const SafetensorsEntry*> SafetensorsFile::Get(absl::string_view name) const {
  auto it = tensors_.find(std::string(name));
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("safetensors: no tensor named \"", name, "\""));
  }
  return &it->second;
}

absl::StatusOr<std::string> SafetensorsFile::Metadata(absl::string_view key) const {
  auto it = metadata_.find(std::string(key));
  if (it == metadata_.end()) {
    return absl::NotFoundError(absl::StrCat("safetensors: no metadata key \"", key, "\""));
  }
  return it->second;
}

}  // namespace attnkit
