// The C ABI basics through libattnkit only: status objects, versions, buffers, the DLPack checks
// every entry point applies (attnkit_tensor_check), and the config functions of attnkit_config.h.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <ATen/Functions.h>

#include "attnkit/attnkit.h"
#include "dlpack_util.h"
#include "gtest/gtest.h"

namespace {

using attnkit::testing::DLView;

// Owns a status and exposes its code and message.
class Status {
 public:
  explicit Status(attnkit_status* status) : status_(status) {}
  ~Status() { attnkit_status_free(status_); }
  Status(const Status&) = delete;
  Status& operator=(const Status&) = delete;
  bool ok() const { return status_ == nullptr; }
  attnkit_status_code code() const { return attnkit_status_get_code(status_); }
  std::string message() const { return attnkit_status_get_message(status_); }

 private:
  attnkit_status* status_;
};

#define EXPECT_OK(expr)                                    \
  do {                                                     \
    Status s_(expr);                                       \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_.message(); \
  } while (0)

// INVALID_ARGUMENT whose message contains every one of `parts`.
void ExpectInvalid(attnkit_status* raw, const std::vector<std::string>& parts) {
  Status status(raw);
  ASSERT_FALSE(status.ok()) << "accepted, expected an error containing " << parts.front();
  EXPECT_EQ(status.code(), ATTNKIT_INVALID_ARGUMENT) << status.message();
  for (const std::string& part : parts) {
    EXPECT_NE(status.message().find(part), std::string::npos)
        << "message \"" << status.message() << "\" lacks \"" << part << "\"";
  }
}

// ---------------------------------------------------------------------------------------------
// Status, versions, buffers

TEST(StatusTest, NullIsOk) {
  EXPECT_EQ(attnkit_status_get_code(nullptr), ATTNKIT_OK);
  ASSERT_NE(attnkit_status_get_message(nullptr), nullptr);
  EXPECT_STREQ(attnkit_status_get_message(nullptr), "");
  attnkit_status_free(nullptr);  // no-op
}

TEST(StatusTest, ErrorCarriesCodeAndMessage) {
  attnkit_status* status = attnkit_tensor_check(nullptr, "queries", 4, 0);
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(attnkit_status_get_code(status), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_STREQ(attnkit_status_get_message(status), "queries: must not be NULL");
  attnkit_status_free(status);
}

TEST(StatusTest, CodesNumberedLikeAbsl) {
  EXPECT_EQ(ATTNKIT_INVALID_ARGUMENT, 3);
  EXPECT_EQ(ATTNKIT_NOT_FOUND, 5);
  EXPECT_EQ(ATTNKIT_RESOURCE_EXHAUSTED, 8);
  EXPECT_EQ(ATTNKIT_INTERNAL, 13);
  EXPECT_EQ(ATTNKIT_UNAUTHENTICATED, 16);
}

TEST(VersionTest, AbiAndVersionString) {
  EXPECT_EQ(attnkit_abi_version(), ATTNKIT_ABI_VERSION);
  const char* version = attnkit_version_string();
  ASSERT_NE(version, nullptr);
  EXPECT_EQ(version, attnkit_version_string());  // a static string
  // "MAJOR.MINOR.PATCH", digits and two dots.
  int dots = 0;
  for (const char* p = version; *p != '\0'; ++p) {
    if (*p == '.') {
      ++dots;
    } else {
      EXPECT_TRUE(*p >= '0' && *p <= '9') << version;
    }
  }
  EXPECT_EQ(dots, 2) << version;
}

TEST(BufferTest, FreeNullIsNoOp) {
  attnkit_buffer_free(nullptr);
  attnkit_int64_array_free(nullptr);
}

// ---------------------------------------------------------------------------------------------
// attnkit_tensor_check: every DLPack rule

at::Tensor Floats(std::vector<int64_t> shape) { return at::randn(shape, at::kFloat); }

TEST(TensorCheckTest, NullTensor) {
  ExpectInvalid(attnkit_tensor_check(nullptr, "keys", -1, 0), {"keys", "must not be NULL"});
  // A NULL name still gives a message.
  ExpectInvalid(attnkit_tensor_check(nullptr, nullptr, -1, 0), {"tensor", "must not be NULL"});
}

TEST(TensorCheckTest, NullData) {
  at::Tensor t = Floats({2, 3});
  DLView view(t);
  view.get()->data = nullptr;
  ExpectInvalid(attnkit_tensor_check(view, "values", 2, 0), {"values", "data must not be NULL"});
}

TEST(TensorCheckTest, EmptyTensorMayHaveNullData) {
  at::Tensor t = at::empty({0, 4}, at::kFloat);
  DLView view(t);
  view.get()->data = nullptr;
  EXPECT_OK(attnkit_tensor_check(view, "empty", 2, 0));
  EXPECT_OK(attnkit_tensor_check(view, "empty", 2, 1));
}

TEST(TensorCheckTest, NullShape) {
  at::Tensor t = Floats({2, 3});
  DLView view(t);
  view.get()->shape = nullptr;
  ExpectInvalid(attnkit_tensor_check(view, "q", -1, 0), {"q", "shape must not be NULL"});
}

TEST(TensorCheckTest, WrongDType) {
  const struct {
    at::ScalarType type;
    const char* got;
  } cases[] = {
      {at::kDouble, "float64"}, {at::kLong, "int64"}, {at::kInt, "int32"}, {at::kBool, "uint8"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.got);
    at::Tensor t = at::zeros({2, 2}, at::TensorOptions().dtype(c.type));
    DLView view(t);
    ExpectInvalid(attnkit_tensor_check(view, "scores", 2, 0),
                  {"scores", "expected float32, float16 or bfloat16", std::string("got ") + c.got});
  }
  at::Tensor t = Floats({2, 2});
  DLView vector_dtype(t);
  vector_dtype.get()->dtype.lanes = 4;
  ExpectInvalid(attnkit_tensor_check(vector_dtype, "q", 2, 0), {"q", "lanes"});
  DLView odd_bits(t);
  odd_bits.get()->dtype = {kDLFloat, 8, 1};
  ExpectInvalid(attnkit_tensor_check(odd_bits, "q", 2, 0), {"q", "unsupported dtype"});
}

TEST(TensorCheckTest, SupportedDTypes) {
  for (at::ScalarType type : {at::kFloat, at::kHalf, at::kBFloat16}) {
    at::Tensor t = at::ones({3, 5}, at::TensorOptions().dtype(type));
    DLView view(t);
    EXPECT_OK(attnkit_tensor_check(view, "q", 2, 0));
  }
}

TEST(TensorCheckTest, WrongDevice) {
  at::Tensor t = Floats({2, 2});
  DLView opencl(t);
  opencl.get()->device = {kDLOpenCL, 0};
  ExpectInvalid(
      attnkit_tensor_check(opencl, "k", 2, 0),
      {"k", "device type " + std::to_string(static_cast<int>(kDLOpenCL)), "is not supported"});
  DLView cuda_host(t);
  cuda_host.get()->device = {kDLCUDAHost, 0};
  ExpectInvalid(attnkit_tensor_check(cuda_host, "k", 2, 0), {"k", "not supported"});
  // Without CUDA in this Torch, CUDA tensors are refused with a message that says why. (With CUDA
  // the pointer would be taken as a device pointer, so this case is CPU-build only.)
  if (!at::hasCUDA()) {
    DLView cuda(t);
    cuda.get()->device = {kDLCUDA, 0};
    ExpectInvalid(attnkit_tensor_check(cuda, "k", 2, 0), {"k", "CUDA"});
  }
}

TEST(TensorCheckTest, WrongRank) {
  at::Tensor t = Floats({1, 2, 3});
  DLView view(t);
  ExpectInvalid(attnkit_tensor_check(view, "attn", 4, 0), {"attn", "expected rank 4, got rank 3"});
  EXPECT_OK(attnkit_tensor_check(view, "attn", 3, 0));
  EXPECT_OK(attnkit_tensor_check(view, "attn", -1, 0));
  at::Tensor big = at::zeros(std::vector<int64_t>(9, 1), at::kFloat);
  DLView rank9(big);
  ExpectInvalid(attnkit_tensor_check(rank9, "x", -1, 0), {"x", "rank 9 is not supported"});
  DLView negative(t);
  negative.get()->ndim = -1;
  ExpectInvalid(attnkit_tensor_check(negative, "x", -1, 0), {"x", "rank -1"});
}

TEST(TensorCheckTest, WrongShapeOrStrides) {
  at::Tensor t = Floats({2, 3});
  DLView negative_size(t);
  negative_size.get()->shape[1] = -3;
  ExpectInvalid(attnkit_tensor_check(negative_size, "v", 2, 0),
                {"v", "negative size -3 in dimension 1"});
  DLView negative_stride(t);
  negative_stride.get()->strides[0] = -3;
  ExpectInvalid(attnkit_tensor_check(negative_stride, "v", 2, 0),
                {"v", "negative stride -3 in dimension 0"});
  // Sizes whose product overflows int64 must be an error, not undefined behaviour.
  DLView huge(t);
  huge.get()->shape[0] = int64_t{1} << 40;
  huge.get()->shape[1] = int64_t{1} << 40;
  ExpectInvalid(attnkit_tensor_check(huge, "v", 2, 0), {"v", "too many elements"});
  at::Tensor three = Floats({1, 1, 1});
  DLView hidden_overflow(three);  // an empty tensor whose compact strides would overflow
  hidden_overflow.get()->shape[0] = 0;
  hidden_overflow.get()->shape[1] = int64_t{1} << 40;
  hidden_overflow.get()->shape[2] = int64_t{1} << 40;
  hidden_overflow.get()->strides = nullptr;
  ExpectInvalid(attnkit_tensor_check(hidden_overflow, "v", 3, 0), {"v", "too many elements"});
}

TEST(TensorCheckTest, OverlappingOutputRejected) {
  // Broadcast (zero stride) output: every row is the same memory.
  at::Tensor row = Floats({1, 4});
  at::Tensor broadcast = row.expand({3, 4});
  DLView view(broadcast);
  ExpectInvalid(attnkit_tensor_check(view, "out", 2, 1), {"out", "overlap", "[0, 1]", "[3, 4]"});
  // ...but fine as an input.
  EXPECT_OK(attnkit_tensor_check(view, "in", 2, 0));

  // Strides that step back into earlier rows: shape [2, 3], strides [2, 1] (element (0,2) ==
  // element (1,0)).
  at::Tensor storage = Floats({8});
  at::Tensor overlapping = storage.as_strided({2, 3}, {2, 1});
  DLView overlap(overlapping);
  ExpectInvalid(attnkit_tensor_check(overlap, "out", 2, 1), {"out", "overlap"});
  EXPECT_OK(attnkit_tensor_check(overlap, "in", 2, 0));

  // Overlap hidden in a middle dimension of a rank-3 output.
  at::Tensor big = Floats({64});
  at::Tensor hidden = big.as_strided({2, 3, 4}, {12, 2, 1});
  DLView hidden_view(hidden);
  ExpectInvalid(attnkit_tensor_check(hidden_view, "out", 3, 1), {"out", "overlap"});

  // Equal strides: shape [2, 2], strides [2, 2] reach offsets 0, 2, 2, 4.
  at::Tensor same = storage.as_strided({2, 2}, {2, 2});
  DLView same_view(same);
  ExpectInvalid(attnkit_tensor_check(same_view, "out", 2, 1), {"out", "overlap"});
}

// Interleaved layouts whose strides do not nest as products of sizes but never reach one element
// twice (found refused by an independent check: the test compared each stride with the product of
// the smaller ones' strides and sizes, not with the largest offset they reach).
TEST(TensorCheckTest, InterleavedOutputsAccepted) {
  at::Tensor storage = Floats({64});
  // [2, 2] with strides [3, 2]: offsets 0, 2, 3, 5.
  at::Tensor interleaved = storage.as_strided({2, 2}, {3, 2});
  DLView view(interleaved);
  EXPECT_OK(attnkit_tensor_check(view, "out", 2, 1));
  // [2, 2, 3] with strides [7, 3, 1]: rows of 3 at 0, 3, 7, 10.
  at::Tensor gapped = storage.as_strided({2, 2, 3}, {7, 3, 1});
  DLView gapped_view(gapped);
  EXPECT_OK(attnkit_tensor_check(gapped_view, "out", 3, 1));
  // Brute force over small shapes and strides: every accepted layout reaches each offset once;
  // every layout whose sorted strides each step past what the smaller ones reach is accepted
  // (other non-overlapping layouts, e.g. [2, 3] with strides [3, 2], are refused: the rule is
  // sufficient, not necessary, and the message says what it requires).
  for (int64_t s0 = 0; s0 <= 7; ++s0) {
    for (int64_t s1 = 0; s1 <= 7; ++s1) {
      at::Tensor t = storage.as_strided({2, 3}, {s0, s1});
      std::vector<int64_t> offsets;
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t j = 0; j < 3; ++j) offsets.push_back(i * s0 + j * s1);
      std::sort(offsets.begin(), offsets.end());
      const bool distinct = std::adjacent_find(offsets.begin(), offsets.end()) == offsets.end();
      const bool nested =
          (s1 <= s0 && s1 >= 1 && s0 >= 1 + 2 * s1) || (s0 < s1 && s0 >= 1 && s1 >= 1 + s0);
      DLView v(t);
      attnkit_status* st = attnkit_tensor_check(v, "out", 2, 1);
      if (st == nullptr) {
        EXPECT_TRUE(distinct) << "strides [" << s0 << ", " << s1 << "]";
      }
      if (nested) {
        EXPECT_EQ(st, nullptr) << "strides [" << s0 << ", " << s1 << "]";
      }
      attnkit_status_free(st);
    }
  }
}

TEST(TensorCheckTest, LegalLayoutsAccepted) {
  at::Tensor base = Floats({4, 6, 8});
  const std::vector<at::Tensor> layouts = {
      base,                                  // contiguous
      base.transpose(0, 2),                  // transposed
      base.permute({1, 2, 0}),               // permuted
      base.slice(1, 1, 5),                   // sliced rows
      base.slice(2, 0, 8, 2),                // every other column (stride 2)
      base.select(0, 3).unsqueeze(0),        // a size-1 dimension
      base.narrow(0, 1, 2).transpose(1, 2),  // sliced and transposed
  };
  for (size_t i = 0; i < layouts.size(); ++i) {
    SCOPED_TRACE(i);
    DLView view(layouts[i]);
    EXPECT_OK(attnkit_tensor_check(view, "in", 3, 0));
    EXPECT_OK(attnkit_tensor_check(view, "out", 3, 1));  // none of these overlap
  }
  // Zero-stride broadcast inputs of several shapes.
  at::Tensor scalar = Floats({1});
  at::Tensor broadcast = scalar.expand({2, 3, 5});
  DLView b(broadcast);
  EXPECT_OK(attnkit_tensor_check(b, "in", 3, 0));
  at::Tensor column = Floats({4, 1}).expand({4, 7});
  DLView c(column);
  EXPECT_OK(attnkit_tensor_check(c, "in", 2, 0));
  // Zero-stride dimension of size 1 in an output is not an overlap.
  at::Tensor single = Floats({5}).unsqueeze(0);
  DLView s(single);
  s.get()->strides[0] = 0;
  EXPECT_OK(attnkit_tensor_check(s, "out", 2, 1));
  // strides == NULL means compact row-major.
  at::Tensor compact = Floats({3, 4});
  DLView n(compact);
  n.get()->strides = nullptr;
  EXPECT_OK(attnkit_tensor_check(n, "out", 2, 1));
  // A rank-0 tensor and a single element.
  at::Tensor zero_d = at::scalar_tensor(1.0, at::kFloat);
  DLView z(zero_d);
  EXPECT_OK(attnkit_tensor_check(z, "scalar", 0, 1));
  // byte_offset into a larger allocation.
  at::Tensor whole = Floats({10});
  DLView offset(whole);
  offset.get()->byte_offset = 4 * sizeof(float);
  offset.get()->shape[0] = 6;
  EXPECT_OK(attnkit_tensor_check(offset, "in", 1, 0));
}

// ---------------------------------------------------------------------------------------------
// Config functions

const char kSessionText[] =
    "num_layers: 2 num_heads: 8 num_kv_heads: 4 head_dim: 16 "
    "eviction { enabled: true algorithm: SNAPKV start_tokens: 32 recent_tokens: 128 "
    "intermediate_tokens: 512 } sparse_attention { mode: TRI_SHAPE recent_size: 256 }";

std::string ToBinary(attnkit_config_kind kind, const std::string& text) {
  attnkit_buffer* out = nullptr;
  Status status(attnkit_config_text_to_binary(kind, text.data(), text.size(), &out));
  EXPECT_TRUE(status.ok()) << status.message();
  if (out == nullptr) return "";
  std::string bytes(reinterpret_cast<const char*>(out->data), out->size);
  attnkit_buffer_free(out);
  return bytes;
}

TEST(ConfigTest, ValidateTextAndBinary) {
  const std::string text = kSessionText;
  EXPECT_OK(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, text.data(), text.size()));
  const std::string bytes = ToBinary(ATTNKIT_CONFIG_SESSION, text);
  ASSERT_FALSE(bytes.empty());
  EXPECT_OK(attnkit_config_validate(ATTNKIT_CONFIG_SESSION, bytes.data(), bytes.size()));
  // Text need not be NUL-terminated: only `size` bytes are read.
  std::vector<char> unterminated(text.begin(), text.end());
  EXPECT_OK(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, unterminated.data(),
                                         unterminated.size()));
  // Empty configs of kinds whose every field has a default.
  EXPECT_OK(attnkit_config_validate(ATTNKIT_CONFIG_SPARSE_ATTENTION, nullptr, 0));
  EXPECT_OK(attnkit_config_validate_text(ATTNKIT_CONFIG_SPARSE_ATTENTION, "", 0));
}

TEST(ConfigTest, InvalidConfigNamesTheField) {
  const std::string text = "num_layers: 2 num_heads: 8 num_kv_heads: 3 head_dim: 16";
  ExpectInvalid(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, text.data(), text.size()),
                {"num_kv_heads: must divide num_heads (8), got 3"});
  const std::string bytes = ToBinary(ATTNKIT_CONFIG_SESSION, text);  // parsed, not validated
  ASSERT_FALSE(bytes.empty());
  ExpectInvalid(attnkit_config_validate(ATTNKIT_CONFIG_SESSION, bytes.data(), bytes.size()),
                {"num_kv_heads: must divide num_heads (8), got 3"});
  const std::string nested =
      "num_layers: 2 num_heads: 8 num_kv_heads: 4 head_dim: 16 eviction { start_tokens: -1 }";
  ExpectInvalid(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, nested.data(), nested.size()),
                {"eviction.start_tokens: must be non-negative, got -1"});
  const std::string visual = "keep_ratio: 1.5";
  ExpectInvalid(
      attnkit_config_validate_text(ATTNKIT_CONFIG_VISUAL_PRUNING, visual.data(), visual.size()),
      {"keep_ratio: must be in (0, 1], got 1.5"});
  const std::string eviction = "algorithm: H2O window_size: 8 recent_tokens: 32";
  ExpectInvalid(
      attnkit_config_validate_text(ATTNKIT_CONFIG_EVICTION, eviction.data(), eviction.size()),
      {"window_size: is only supported by SNAPKV, RKV and CAKE, not H2O"});
}

TEST(ConfigTest, GarbageRejectedNeverCrashes) {
  const std::string text = "num_layers: {{{";
  ExpectInvalid(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, text.data(), text.size()),
                {"config: not a valid textproto attnkit.v1.SessionConfig", "line 1 column"});
  const char bytes[] = {'\x5a', '\x7f', '\x01'};  // sub-message running past the end
  ExpectInvalid(attnkit_config_validate(ATTNKIT_CONFIG_SESSION, bytes, sizeof(bytes)),
                {"config: not a valid serialized attnkit.v1.SessionConfig (3 bytes)"});
  uint32_t state = 7;
  for (int i = 0; i < 500; ++i) {
    std::string data(i % 40, '\0');
    for (char& c : data) c = static_cast<char>((state = state * 1664525u + 1013904223u) >> 24);
    const auto kind = static_cast<attnkit_config_kind>(i % 4);
    Status binary(attnkit_config_validate(kind, data.data(), data.size()));
    EXPECT_TRUE(binary.ok() || binary.code() == ATTNKIT_INVALID_ARGUMENT) << binary.message();
    Status as_text(attnkit_config_validate_text(kind, data.data(), data.size()));
    EXPECT_TRUE(as_text.ok() || as_text.code() == ATTNKIT_INVALID_ARGUMENT) << as_text.message();
  }
}

TEST(ConfigTest, RoundTrip) {
  const std::string bytes = ToBinary(ATTNKIT_CONFIG_SESSION, kSessionText);
  attnkit_buffer* text = nullptr;
  EXPECT_OK(
      attnkit_config_binary_to_text(ATTNKIT_CONFIG_SESSION, bytes.data(), bytes.size(), &text));
  ASSERT_NE(text, nullptr);
  const std::string printed(reinterpret_cast<const char*>(text->data), text->size);
  attnkit_buffer_free(text);
  EXPECT_NE(printed.find("algorithm: SNAPKV"), std::string::npos) << printed;
  EXPECT_NE(printed.find("mode: TRI_SHAPE"), std::string::npos) << printed;
  EXPECT_EQ(ToBinary(ATTNKIT_CONFIG_SESSION, printed), bytes);

  // An empty message converts to an empty buffer (size 0, data still freeable).
  attnkit_buffer* empty = nullptr;
  EXPECT_OK(attnkit_config_text_to_binary(ATTNKIT_CONFIG_EVICTION, "", 0, &empty));
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->size, 0u);
  attnkit_buffer_free(empty);
}

TEST(ConfigTest, ConversionErrorsLeaveOutNull) {
  attnkit_buffer* out = reinterpret_cast<attnkit_buffer*>(0x1);  // must be overwritten
  const std::string text = "no_such_field: 1";
  ExpectInvalid(
      attnkit_config_text_to_binary(ATTNKIT_CONFIG_EVICTION, text.data(), text.size(), &out),
      {"config: not a valid textproto attnkit.v1.EvictionConfig", "no_such_field"});
  EXPECT_EQ(out, nullptr);
  out = reinterpret_cast<attnkit_buffer*>(0x1);
  const char bytes[] = {'\x08'};
  ExpectInvalid(attnkit_config_binary_to_text(ATTNKIT_CONFIG_EVICTION, bytes, 1, &out),
                {"config: not a valid serialized attnkit.v1.EvictionConfig"});
  EXPECT_EQ(out, nullptr);
}

TEST(ConfigTest, BadKindAndNullArguments) {
  const auto bad_kind = static_cast<attnkit_config_kind>(42);
  const std::string text = "num_layers: 1";
  ExpectInvalid(attnkit_config_validate(bad_kind, text.data(), text.size()),
                {"kind: unknown config kind 42"});
  ExpectInvalid(attnkit_config_validate_text(bad_kind, text.data(), text.size()),
                {"kind: unknown config kind 42"});
  attnkit_buffer* out = nullptr;
  ExpectInvalid(attnkit_config_text_to_binary(bad_kind, text.data(), text.size(), &out),
                {"kind: unknown config kind 42"});
  EXPECT_EQ(out, nullptr);
  ExpectInvalid(attnkit_config_binary_to_text(static_cast<attnkit_config_kind>(-1), "", 0, &out),
                {"kind: unknown config kind -1"});

  ExpectInvalid(attnkit_config_validate(ATTNKIT_CONFIG_SESSION, nullptr, 4),
                {"data: must not be NULL"});
  // The text entry points name their parameter `text` (an independent bad-input check found
  // them saying "data").
  ExpectInvalid(attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, nullptr, 4),
                {"text: must not be NULL"});
  ExpectInvalid(attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, nullptr, 4, &out),
                {"text: must not be NULL"});
  attnkit_sparse_attention* sparse = nullptr;
  ExpectInvalid(attnkit_sparse_attention_create_from_text(nullptr, 4, &sparse),
                {"text: must not be NULL"});
  ExpectInvalid(attnkit_config_binary_to_text(ATTNKIT_CONFIG_SESSION, nullptr, 4, &out),
                {"data: must not be NULL"});
  ExpectInvalid(
      attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, text.data(), text.size(), nullptr),
      {"out: must not be NULL"});
  ExpectInvalid(attnkit_config_binary_to_text(ATTNKIT_CONFIG_SESSION, "", 0, nullptr),
                {"out: must not be NULL"});
}

}  // namespace
