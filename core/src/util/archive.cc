#include "util/archive.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"

namespace attnkit::util {
namespace {

// Slicing-by-8 tables of the reflected CRC-32C polynomial 0x82F63B78.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

const CrcTables& Tables() {
  static const CrcTables tables = [] {
    CrcTables t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
    return t;
  }();
  return tables;
}

// The element types a saved tensor may have, by code.
constexpr std::array<at::ScalarType, 3> kTensorTypes = {at::kFloat, at::kDouble, at::kLong};

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes the same CRC-32C, 8 bytes at a time.
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(const unsigned char* p, size_t n,
                                                       uint32_t crc) {
  uint64_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}
#endif

}  // namespace

uint32_t Crc32cPortable(absl::string_view data, uint32_t crc) {
  const CrcTables& t = Tables();
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t n = data.size();
  crc = ~crc;
  while (n >= 8) {
    uint32_t lo;
    uint32_t hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return ~crc;
}

uint32_t Crc32c(absl::string_view data, uint32_t crc) {
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) {
    return Crc32cSse42(reinterpret_cast<const unsigned char*>(data.data()), data.size(), crc);
  }
#endif
  return Crc32cPortable(data, crc);
}

void ArchiveWriter::Reserve(size_t n) { out_.reserve(out_.size() + n); }

void ArchiveWriter::Bytes(absl::string_view bytes) {
  I64(static_cast<int64_t>(bytes.size()));
  Raw(bytes.data(), bytes.size());
}

void ArchiveWriter::Int64s(const std::vector<int64_t>& v) {
  I64(static_cast<int64_t>(v.size()));
  Raw(v.data(), v.size() * sizeof(int64_t));
}

void ArchiveWriter::Int32s(const std::vector<int32_t>& v) {
  I64(static_cast<int64_t>(v.size()));
  Raw(v.data(), v.size() * sizeof(int32_t));
}

void ArchiveWriter::Doubles(const std::vector<double>& v) {
  I64(static_cast<int64_t>(v.size()));
  Raw(v.data(), v.size() * sizeof(double));
}

void ArchiveWriter::Tensor(const at::Tensor& t) {
  if (!t.defined()) {
    I64(-1);
    return;
  }
  I64(t.dim());
  uint32_t code = 0;
  while (code < kTensorTypes.size() && kTensorTypes[code] != t.scalar_type()) ++code;
  U32(code);  // an unlisted type is a bug of the writer; the reader rejects the code
  for (int64_t s : t.sizes()) I64(s);
  const at::Tensor host = t.to(at::kCPU).contiguous();
  Raw(host.data_ptr(), host.numel() * host.element_size());
}

char* ArchiveWriter::Extend(size_t n) {
  const size_t at = out_.size();
  out_.resize(at + n);
  return out_.data() + at;
}

template <typename T>
T ArchiveReader::Fixed(const char* what) {
  const char* p = Raw(what, sizeof(T));
  T v{};
  if (p != nullptr) std::memcpy(&v, p, sizeof(T));
  return v;
}

const char* ArchiveReader::Raw(const char* what, int64_t n) {
  if (!status_.ok()) return nullptr;
  if (n < 0 || n > remaining()) {
    status_ = absl::InvalidArgumentError(absl::StrCat("blob: truncated or altered: ", what,
                                                      " needs ", n, " bytes at offset ", pos_,
                                                      ", only ", remaining(), " remain"));
    return nullptr;
  }
  const char* p = data_.data() + pos_;
  pos_ += static_cast<size_t>(n);
  return p;
}

uint32_t ArchiveReader::U32(const char* what) { return Fixed<uint32_t>(what); }
int64_t ArchiveReader::I64(const char* what) { return Fixed<int64_t>(what); }
double ArchiveReader::F64(const char* what) { return Fixed<double>(what); }

bool ArchiveReader::Bool(const char* what) {
  const uint32_t v = U32(what);
  if (v > 1) Fail(absl::InvalidArgumentError(absl::StrCat("blob: ", what, " is ", v, ", not 0/1")));
  return v == 1;
}

int64_t ArchiveReader::Count(const char* what, int64_t item_bytes) {
  const int64_t n = I64(what);
  if (!status_.ok()) return 0;
  if (n < 0 || (item_bytes > 0 && n > remaining() / item_bytes)) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("blob: truncated or altered: ", what, " says ", n, " items of ", item_bytes,
                     " bytes, only ", remaining(), " bytes remain"));
    return 0;
  }
  return n;
}

std::string ArchiveReader::Bytes(const char* what) {
  const int64_t n = Count(what, 1);
  const char* p = Raw(what, n);
  return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
}

namespace {

template <typename T>
std::vector<T> ReadVector(ArchiveReader& r, const char* what) {
  const int64_t n = r.Count(what, sizeof(T));
  const char* p = r.Raw(what, n * static_cast<int64_t>(sizeof(T)));
  std::vector<T> v;
  if (p == nullptr || n == 0) return v;  // memcpy into an empty vector's null data() is UB
  v.resize(static_cast<size_t>(n));
  std::memcpy(v.data(), p, v.size() * sizeof(T));
  return v;
}

}  // namespace

std::vector<int64_t> ArchiveReader::Int64s(const char* what) {
  return ReadVector<int64_t>(*this, what);
}
std::vector<int32_t> ArchiveReader::Int32s(const char* what) {
  return ReadVector<int32_t>(*this, what);
}
std::vector<double> ArchiveReader::Doubles(const char* what) {
  return ReadVector<double>(*this, what);
}

at::Tensor ArchiveReader::Tensor(const char* what) {
  const int64_t rank = I64(what);
  if (!status_.ok() || rank == -1) return at::Tensor();
  if (rank < 0 || rank > 4) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("blob: ", what, " has rank ", rank, "; saved tensors have rank 0 to 4")));
    return at::Tensor();
  }
  const uint32_t code = U32(what);
  if (status_.ok() && code >= kTensorTypes.size()) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("blob: ", what, " has element type code ", code, ", not one attnkit saves")));
  }
  std::vector<int64_t> sizes(static_cast<size_t>(rank));
  int64_t numel = 1;
  for (int64_t& s : sizes) {
    s = I64(what);
    if (!status_.ok()) return at::Tensor();
    if (s < 0 || (s > 0 && numel > remaining() / s)) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("blob: truncated or altered: ", what, " claims a dimension of ", s)));
      return at::Tensor();
    }
    numel *= s;
  }
  if (!status_.ok()) return at::Tensor();
  const at::ScalarType type = kTensorTypes[code];
  const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(type));
  const char* p = Raw(what, bytes);
  if (p == nullptr) return at::Tensor();
  at::Tensor t = at::empty(sizes, at::TensorOptions(type));
  if (bytes > 0) std::memcpy(t.data_ptr(), p, static_cast<size_t>(bytes));
  return t;
}

}  // namespace attnkit::util
