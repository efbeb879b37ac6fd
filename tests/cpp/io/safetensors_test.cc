// The safetensors reader: every file of ../shared/conformance and ../shared/models reads; corrupted
// files (truncated, lying lengths, offsets out of range or overlapping, unknown dtype, shape/bytes
// mismatch, non-object header, bad JSON, deep nesting) are errors with a message, never a crash.
#include "support/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_env.h"
#include "support/json.h"

namespace attnkit {
namespace {

using ::testing::HasSubstr;

// An 8-byte little-endian header length, the header, then the data.
std::string File(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A valid two-tensor file with metadata.
std::string ValidFile() {
  return File(R"({"__metadata__": {"kind": "test", "config": "{\"a\": 1}"},)"
              R"( "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},)"
              R"( "ids": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}})",
              FloatBytes({1, 2, 3, 4, 5, 6}) +
                  std::string("\x07\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 16));
}

void ExpectCorrupt(const std::string& contents, const std::string& message_part) {
  auto file = SafetensorsFile::Parse(contents);
  ASSERT_FALSE(file.ok()) << "accepted a file that should fail with \"" << message_part << "\"";
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(message_part));
}

std::string Tensor(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"t": {"dtype": ")" + dtype + R"(", "shape": )" + shape + R"(, "data_offsets": )" +
         offsets + "}}";
}

TEST(SafetensorsTest, ReadsValidFile) {
  auto file = SafetensorsFile::Parse(ValidFile());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().size(), 2u);
  auto w = file->Get("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->dtype, SafetensorsDType::kF32);
  EXPECT_EQ((*w)->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*w)->numel(), 6);
  ASSERT_EQ((*w)->data.size(), 24u);
  float values[6];
  std::memcpy(values, (*w)->data.data(), sizeof(values));
  EXPECT_EQ(values[5], 6.0f);
  auto ids = file->Get("ids");
  ASSERT_TRUE(ids.ok());
  int64_t id[2];
  std::memcpy(id, (*ids)->data.data(), sizeof(id));
  EXPECT_EQ(id[0], 7);
  EXPECT_EQ(id[1], -1);
  EXPECT_TRUE(file->Has("w"));
  EXPECT_FALSE(file->Has("v"));
  EXPECT_EQ(file->Get("v").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file->Get("v").status().message()), HasSubstr("\"v\""));
  EXPECT_EQ(*file->Metadata("kind"), "test");
  EXPECT_EQ(*file->Metadata("config"), "{\"a\": 1}");
  EXPECT_EQ(file->Metadata("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(file->metadata().size(), 2u);

  // Views stay valid when the file object moves (the buffer is on the heap).
  SafetensorsFile moved = std::move(*file);
  EXPECT_EQ((*moved.Get("w"))->data.substr(0, 4), FloatBytes({1}));
}

TEST(SafetensorsTest, EveryDTypeAndEdgeShapes) {
  const struct {
    const char* name;
    SafetensorsDType dtype;
    int size;
  } dtypes[] = {{"F64", SafetensorsDType::kF64, 8}, {"F32", SafetensorsDType::kF32, 4},
                {"F16", SafetensorsDType::kF16, 2}, {"BF16", SafetensorsDType::kBF16, 2},
                {"I64", SafetensorsDType::kI64, 8}, {"I32", SafetensorsDType::kI32, 4},
                {"I16", SafetensorsDType::kI16, 2}, {"I8", SafetensorsDType::kI8, 1},
                {"U8", SafetensorsDType::kU8, 1},   {"BOOL", SafetensorsDType::kBool, 1}};
  for (const auto& d : dtypes) {
    SCOPED_TRACE(d.name);
    EXPECT_EQ(SafetensorsDTypeSize(d.dtype), d.size);
    EXPECT_STREQ(SafetensorsDTypeName(d.dtype), d.name);
    const int bytes = 3 * d.size;
    auto file = SafetensorsFile::Parse(
        File(Tensor(d.name, "[3]", "[0, " + std::to_string(bytes) + "]"), std::string(bytes, 'x')));
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file->Get("t"))->dtype, d.dtype);
  }
  // Scalars (rank 0) hold one element; empty tensors hold none and may sit anywhere.
  EXPECT_TRUE(SafetensorsFile::Parse(File(Tensor("F32", "[]", "[0, 4]"), "abcd")).ok());
  auto empty = SafetensorsFile::Parse(File(Tensor("F32", "[4, 0]", "[2, 2]"), "abcd"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ((*empty->Get("t"))->numel(), 0);
  // No tensors at all, trailing header padding (the format pads with spaces), unused data.
  EXPECT_TRUE(SafetensorsFile::Parse(File("{}")).ok());
  EXPECT_TRUE(SafetensorsFile::Parse(File(Tensor("U8", "[2]", "[0, 2]") + "    ", "ab")).ok());
  EXPECT_TRUE(SafetensorsFile::Parse(File(Tensor("U8", "[2]", "[2, 4]"), "abcdefgh")).ok());
  // Adjacent ranges do not overlap.
  EXPECT_TRUE(
      SafetensorsFile::Parse(File(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},)"
                                  R"( "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
                                  "abcd"))
          .ok());
}

TEST(SafetensorsTest, TruncatedFiles) {
  ExpectCorrupt("", "shorter than its 8-byte header length");
  ExpectCorrupt(std::string("\x10\0\0\0\0\0\0", 7), "shorter than its 8-byte header length");
  const std::string valid = ValidFile();
  // Every prefix of a valid file is an error (the header or the last tensor no longer fits).
  for (size_t n = 0; n < valid.size(); ++n) {
    auto file = SafetensorsFile::Parse(valid.substr(0, n));
    EXPECT_FALSE(file.ok()) << "prefix of " << n << " bytes accepted";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  }
  ExpectCorrupt(valid.substr(0, valid.size() - 1), "run past the 39 data bytes");
}

TEST(SafetensorsTest, HeaderLengthPastEnd) {
  std::string file = File("{}");
  file[0] = 3;  // 3 > 2 header bytes present
  ExpectCorrupt(file, "header length 3 runs past the end of the 10-byte file");
  std::string huge = File("{}");
  for (int i = 0; i < 8; ++i) huge[i] = '\xff';  // 2^64 - 1: must not wrap around
  ExpectCorrupt(huge, "runs past the end");
  std::string over_limit = File("{}");
  over_limit[7] = 0x01;  // 2^56
  ExpectCorrupt(over_limit, "runs past the end");
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  ExpectCorrupt(File(Tensor("F32", "[2]", "[0, 8]"), "abcd"), "run past the 4 data bytes");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[8, 4]"), "abcdefgh"), "0 <= begin <= end");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[-4, 0]"), "abcd"), "0 <= begin <= end");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[0, 1.5]"), "abcd"), "data_offsets must be integers");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[0, 4e0]"), "abcd"), "data_offsets must be integers");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[\"0\", 4]"), "abcd"), "data_offsets must be integers");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[0, 99999999999999999999]"), "abcd"),
                "data_offsets must be integers");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[0, 4, 8]"), "abcdefgh"), "must be [begin, end]");
  ExpectCorrupt(File(Tensor("F32", "[1]", "[0]"), "abcd"), "must be [begin, end]");
  ExpectCorrupt(File(Tensor("F32", "[1]", "{}"), "abcd"), "must be [begin, end]");
}

TEST(SafetensorsTest, OverlappingRanges) {
  ExpectCorrupt(File(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                     R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
                     std::string(24, 'x')),
                "data ranges overlap at byte 8");
  ExpectCorrupt(File(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
                     R"( "b": {"dtype": "U8", "shape": [2], "data_offsets": [3, 5]}})",
                     std::string(8, 'x')),
                "overlap");
  ExpectCorrupt(File(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                     R"( "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})",
                     std::string(4, 'x')),
                "overlap");
}

TEST(SafetensorsTest, UnknownDType) {
  ExpectCorrupt(File(Tensor("F8", "[1]", "[0, 1]"), "a"), "tensor \"t\": unknown dtype \"F8\"");
  ExpectCorrupt(File(Tensor("f32", "[1]", "[0, 4]"), "abcd"), "unknown dtype \"f32\"");
  ExpectCorrupt(File(Tensor("", "[1]", "[0, 1]"), "a"), "unknown dtype");
  ExpectCorrupt(File(R"({"t": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", "abcd"),
                "missing string \"dtype\"");
}

TEST(SafetensorsTest, ShapeBytesMismatch) {
  ExpectCorrupt(File(Tensor("F32", "[2, 3]", "[0, 20]"), std::string(24, 'x')),
                "tensor \"t\": holds 20 bytes");
  ExpectCorrupt(File(Tensor("F16", "[3]", "[0, 5]"), std::string(6, 'x')), "holds 5 bytes");
  ExpectCorrupt(File(Tensor("F32", "[0]", "[0, 4]"), "abcd"), "holds 4 bytes");
  ExpectCorrupt(File(Tensor("F32", "[-1]", "[0, 4]"), "abcd"), "non-negative integers");
  ExpectCorrupt(File(Tensor("F32", "[1.0]", "[0, 4]"), "abcd"), "non-negative integers");
  ExpectCorrupt(File(Tensor("F32", "[4611686018427387904, 4]", "[0, 4]"), "abcd"),
                "shape is too large");
  // 2^61 F64 elements are 2^64 bytes: the product must not wrap around to 0 bytes.
  ExpectCorrupt(File(Tensor("F64", "[2305843009213693952]", "[0, 0]")), "holds 0 bytes");
  ExpectCorrupt(File(Tensor("I32", "[1073741824, 4]", "[0, 0]")), "holds 0 bytes");
  std::string rank17 = "[1";
  for (int i = 1; i < 17; ++i) rank17 += ", 1";
  ExpectCorrupt(File(Tensor("F32", rank17 + "]", "[0, 4]"), "abcd"), "rank above 16");
  ExpectCorrupt(File(R"({"t": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}})", "abcd"),
                "missing array \"shape\"");
}

TEST(SafetensorsTest, HeaderNotAnObject) {
  ExpectCorrupt(File("[]"), "header is not an object");
  ExpectCorrupt(File("\"text\""), "header is not an object");
  ExpectCorrupt(File("17"), "header is not an object");
  ExpectCorrupt(File("null"), "header is not an object");
  ExpectCorrupt(File(R"({"t": [1, 2]})"), "tensor \"t\": entry is not an object");
  ExpectCorrupt(File(R"({"__metadata__": []})"), "__metadata__ is not an object");
  ExpectCorrupt(File(R"({"__metadata__": {"k": 1}})"), "__metadata__ value \"k\" is not a string");
}

TEST(SafetensorsTest, BadJson) {
  const char* headers[] = {
      "",
      "{",
      R"({"a": )",
      R"({"a" 1})",
      R"({"a": 1,})",
      "{} x",
      "{'a': 1}",
      R"({"a": tru})",
      R"({"a": "\q"})",
      R"({"a": "\u12"})",
      R"({"a": 01})",
      R"({"a": +1})",
      R"({"a": 1.})",
      R"({"a": .5})",
      R"({"a": nan})",
      R"({"a": 1e})",
      R"({"a": -})",
      R"({"a": 1e999})",
      R"({"a": 1, "a": 2})",
      "{\"a\": \"tab\there\"}",
      R"({"a": "\udc00"})",
      R"({"a": "\ud800x"})",
  };
  for (const char* header : headers) {
    SCOPED_TRACE(header);
    ExpectCorrupt(File(header), "safetensors: header is not valid JSON: JSON at byte");
  }
}

TEST(SafetensorsTest, DeepNestingRejected) {
  std::string deep =
      R"({"__metadata__": {"k": )" + std::string(5000, '[') + std::string(5000, ']') + "}}";
  ExpectCorrupt(File(deep), "nested too deeply");
  std::string objects = "{\"a\":";
  for (int i = 0; i < 1000; ++i) objects += "{\"a\":";
  ExpectCorrupt(File(objects + "1" + std::string(1001, '}')), "nested too deeply");
}

TEST(SafetensorsTest, RandomCorruptionNeverCrashes) {
  const std::string valid = ValidFile();
  std::mt19937 rng(99);
  int accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string mutated = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      mutated[rng() % mutated.size()] = static_cast<char>(rng());
    }
    if (rng() % 4 == 0) mutated.resize(rng() % mutated.size());
    auto file = SafetensorsFile::Parse(mutated);
    if (file.ok()) {
      ++accepted;
      for (const auto& [name, entry] : file->tensors()) {
        EXPECT_EQ(static_cast<int64_t>(entry.data.size()),
                  entry.numel() * SafetensorsDTypeSize(entry.dtype));
      }
    } else {
      EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_LT(accepted, 5000);
}

TEST(SafetensorsTest, ReadMissingFile) {
  auto file = SafetensorsFile::Read("/nonexistent/attnkit/x.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()),
              HasSubstr("/nonexistent/attnkit/x.safetensors"));
}

TEST(SafetensorsTest, ReadErrorNamesThePath) {
  const std::string path = ::testing::TempDir() + "/attnkit_corrupt.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    out << File("[]");
  }
  auto file = SafetensorsFile::Read(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path + ": safetensors: header"));
  std::filesystem::remove(path);
}

// ---------------------------------------------------------------------------------------------
// Every shared file

std::vector<std::string> FilesUnder(const std::string& dir, const std::string& extension) {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == extension) {
      out.push_back(entry.path().string());
    }
  }
  return out;
}

void CheckConsistent(const std::string& path, const SafetensorsFile& file) {
  EXPECT_FALSE(file.tensors().empty()) << path;
  for (const auto& [name, entry] : file.tensors()) {
    EXPECT_EQ(static_cast<int64_t>(entry.data.size()),
              entry.numel() * SafetensorsDTypeSize(entry.dtype))
        << path << ": " << name;
  }
}

TEST(SharedFilesTest, EveryConformanceCaseReads) {
  const std::string dir = testing::ConformanceDir();
  ATTNKIT_SKIP_IF_MISSING(dir);
  const std::vector<std::string> paths = FilesUnder(dir, ".safetensors");
  EXPECT_GE(paths.size(), 100u) << dir;
  for (const std::string& path : paths) {
    auto file = SafetensorsFile::Read(path);
    ASSERT_TRUE(file.ok()) << file.status();
    CheckConsistent(path, *file);
    // Every case says what it is and carries its config as a JSON object.
    auto kind = file->Metadata("kind");
    ASSERT_TRUE(kind.ok()) << path << ": " << kind.status();
    auto config_text = file->Metadata("config");
    ASSERT_TRUE(config_text.ok()) << path << ": " << config_text.status();
    auto config = JsonValue::Parse(*config_text);
    ASSERT_TRUE(config.ok()) << path << ": " << config.status();
    EXPECT_TRUE(config->is_object()) << path;
  }
}

TEST(SharedFilesTest, EveryModelFileReads) {
  const std::string dir = testing::ModelsDir();
  ATTNKIT_SKIP_IF_MISSING(dir);
  const std::vector<std::string> paths = FilesUnder(dir, ".safetensors");
  ASSERT_FALSE(paths.empty()) << "no .safetensors under " << dir;
  for (const std::string& path : paths) {
    auto file = SafetensorsFile::Read(path);
    ASSERT_TRUE(file.ok()) << file.status();
    CheckConsistent(path, *file);
  }
  const std::string tiny = dir + "/tinystories-656k/model.safetensors";
  if (testing::PathExists(tiny)) {
    auto file = SafetensorsFile::Read(tiny);
    ASSERT_TRUE(file.ok()) << file.status();
    auto norm = file->Get("model.norm.weight");
    ASSERT_TRUE(norm.ok()) << norm.status();
    EXPECT_EQ((*norm)->dtype, SafetensorsDType::kF32);
    EXPECT_EQ((*norm)->shape, (std::vector<int64_t>{128}));
    auto q = file->Get("model.layers.1.self_attn.q_proj.weight");
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ((*q)->shape, (std::vector<int64_t>{128, 128}));
  }
}

}  // namespace
}  // namespace attnkit
