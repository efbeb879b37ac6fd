// A small binary archive for saved session state (Session::Save / Load, EvictionPolicy::SaveState):
// little-endian fixed-width integers and doubles, length-prefixed byte strings, vectors and
// tensors. The reader checks every length against the bytes that remain before it allocates, so
// a truncated blob or one with lying lengths fails with a status naming what was being read; it
// never reads past the end. Errors are sticky: after the first one every read returns a zero value
// and status() keeps the first error, so a caller checks status() before it acts on what it read.
#ifndef ATTNKIT_CORE_UTIL_ARCHIVE_H_
#define ATTNKIT_CORE_UTIL_ARCHIVE_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnkit::util {

// CRC-32C (Castagnoli) of `data`, continuing from `crc` (0 to start): the SSE4.2 instruction
// where the CPU has it, else Crc32cPortable (slicing-by-8 tables), which gives the same values.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);
uint32_t Crc32cPortable(absl::string_view data, uint32_t crc = 0);

class ArchiveWriter {
 public:
  void U32(uint32_t v) { Raw(&v, sizeof v); }
  void I64(int64_t v) { Raw(&v, sizeof v); }
  void F64(double v) { Raw(&v, sizeof v); }
  void Bool(bool v) { U32(v ? 1 : 0); }
  void Bytes(absl::string_view bytes);
  void Int64s(const std::vector<int64_t>& v);
  void Int32s(const std::vector<int32_t>& v);
  void Doubles(const std::vector<double>& v);
  // dtype, rank, sizes, then the elements of a contiguous host copy; an undefined tensor as
  // rank -1.
  void Tensor(const at::Tensor& t);
  // `n` raw bytes at `data` (a page's contents).
  void Raw(const void* data, size_t n) {
    if (n > 0) out_.append(static_cast<const char*>(data), n);
  }
  // Reserves `n` bytes at the end and returns where they start (filled by the caller).
  char* Extend(size_t n);
  // Makes room for `n` more bytes without writing them (one allocation for a large blob).
  void Reserve(size_t n);

  std::string& data() { return out_; }

 private:
  std::string out_;
};

class ArchiveReader {
 public:
  explicit ArchiveReader(absl::string_view data) : data_(data) {}

  uint32_t U32(const char* what);
  int64_t I64(const char* what);
  double F64(const char* what);
  bool Bool(const char* what);
  // A count of items of `item_bytes` each that must fit in the bytes that remain.
  int64_t Count(const char* what, int64_t item_bytes);
  std::string Bytes(const char* what);
  std::vector<int64_t> Int64s(const char* what);
  std::vector<int32_t> Int32s(const char* what);
  std::vector<double> Doubles(const char* what);
  // A tensor written by ArchiveWriter::Tensor (undefined for rank -1). Only float32, float64 and
  // int64 tensors of rank <= 4 are accepted.
  at::Tensor Tensor(const char* what);
  // The next `n` bytes (nullptr, with the error set, when fewer remain).
  const char* Raw(const char* what, int64_t n);

  // An error about the contents (not the framing), reported like the framing's.
  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
  }
  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  int64_t remaining() const { return static_cast<int64_t>(data_.size() - pos_); }

 private:
  template <typename T>
  T Fixed(const char* what);

  absl::string_view data_;
  size_t pos_ = 0;
  absl::Status status_;
};

}  // namespace attnkit::util

#endif  // ATTNKIT_CORE_UTIL_ARCHIVE_H_
