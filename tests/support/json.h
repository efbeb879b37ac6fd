// A small, strict JSON reader for the headers the tests read (safetensors, conformance configs).
// Bounded nesting depth, no exceptions, every error with its byte offset. Test support
// (tests/support), not part of the library.
#ifndef ATTNKIT_TESTS_SUPPORT_JSON_H_
#define ATTNKIT_TESTS_SUPPORT_JSON_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnkit {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_bool() const { return type_ == Type::kBool; }

  bool bool_value() const { return bool_; }
  double number() const { return number_; }
  // The number's literal text, so integers beyond 2^53 stay exact.
  const std::string& number_text() const { return string_; }
  const std::string& string() const { return string_; }
  const std::vector<JsonValue>& array() const { return array_; }
  const std::map<std::string, JsonValue>& object() const { return object_; }
  // nullptr when absent or not an object.
  const JsonValue* Find(absl::string_view key) const;

  static absl::StatusOr<JsonValue> Parse(absl::string_view text);

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::map<std::string, JsonValue> object_;
};

// Integer value of a number with no fraction or exponent, exactly; error otherwise.
absl::StatusOr<int64_t> JsonInt(const JsonValue& value, absl::string_view what);

}  // namespace attnkit

#endif  // ATTNKIT_TESTS_SUPPORT_JSON_H_
