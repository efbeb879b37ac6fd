// libFuzzer target for the C ABI's DLTensor descriptor checks (capi/src/dlpack_check.cc, the code
// every tensor argument of every entry point goes through before ATen sees it), built by clang++
// with -fsanitize=fuzzer,address,undefined and Abseil only (tests/fuzz/clang). The input is a
// descriptor: ndim, dtype, device, flags (NULL shape/strides/data, output, mask, int64), byte
// offset, a data address, then up to 8 sizes and 8 strides as little-endian int64s. Invariants
// beyond "no crash, no UB": errors name the argument; an accepted descriptor's element count,
// compact byte size and byte extent, recomputed in 128-bit arithmetic, are within 2^63 - 1 and
// the address space, the reported extent is exact, and an accepted output of up to 4096 elements
// has no two elements at the same offset (enumerated).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "dlpack_check.h"

namespace {

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  int64_t Int64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(Byte()) << (8 * i);
    return static_cast<int64_t>(v);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

using i128 = __int128;
constexpr i128 kMax = std::numeric_limits<int64_t>::max();

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  const int32_t ndim = static_cast<int32_t>(static_cast<int8_t>(in.Byte()));
  DLDataType dtype{in.Byte(), in.Byte(), 1};
  dtype.lanes = static_cast<uint16_t>(in.Byte() % 3);
  const uint8_t device = in.Byte();
  const uint8_t flags = in.Byte();
  const uint64_t byte_offset = static_cast<uint64_t>(in.Int64());
  const int64_t address = in.Int64();
  std::vector<int64_t> shape(8), strides(8);
  for (int64_t& s : shape) s = in.Int64();
  for (int64_t& s : strides) s = in.Int64();

  DLTensor t{};
  t.ndim = ndim;
  t.dtype = dtype;
  // Any int, as a C caller may pass: written through memcpy (an out-of-range enum value may not be
  // formed in C++).
  const int32_t device_type = device % 4 == 0 ? static_cast<int32_t>(kDLCPU) : device;
  std::memcpy(&t.device.device_type, &device_type, sizeof(device_type));
  t.shape = (flags & 1) ? nullptr : shape.data();
  t.strides = (flags & 2) ? nullptr : strides.data();
  t.byte_offset = byte_offset;
  // Never dereferenced by the checks: any address, NULL included.
  t.data = (flags & 4) ? nullptr : reinterpret_cast<void*>(static_cast<uintptr_t>(address));
  attnkit::capi::TensorSpec spec{"x"};
  spec.is_output = (flags & 8) != 0;
  spec.mask = (flags & 16) != 0;
  spec.allow_int64 = (flags & 32) != 0;
  spec.float_only = (flags & 64) == 0;
  spec.rank = (flags & 128) ? ndim : -1;
  const bool cuda = (device & 0x80) != 0;

  auto checked = attnkit::capi::CheckDLTensor(&t, spec, cuda);
  if (!checked.ok()) {
    if (checked.status().message().substr(0, 3) != "x: ") std::abort();
    return 0;
  }
  const attnkit::capi::CheckedTensor& c = *checked;
  if (ndim < 0 || ndim > 8 || c.sizes.size() != static_cast<size_t>(ndim) ||
      c.strides.size() != c.sizes.size()) {
    std::abort();
  }
  i128 numel = 1, compact = c.item_size, last = 0;
  bool empty = false;
  for (int i = 0; i < ndim; ++i) {
    if (c.sizes[i] < 0 || c.strides[i] < 0) std::abort();
    numel *= c.sizes[i];
    compact *= c.sizes[i] > 1 ? c.sizes[i] : 1;
    if (numel > kMax || compact > kMax) std::abort();
    if (c.sizes[i] == 0) empty = true;
    last += static_cast<i128>(c.sizes[i] - 1) * c.strides[i];
  }
  if (numel != c.numel) std::abort();
  if (empty) {
    if (c.extent_bytes != 0) std::abort();
  } else {
    const i128 extent = (last + 1) * c.item_size + static_cast<i128>(byte_offset);
    if (extent > kMax || extent != c.extent_bytes) std::abort();
    const i128 end = static_cast<i128>(reinterpret_cast<uintptr_t>(t.data)) + extent;
    if (end > static_cast<i128>(std::numeric_limits<uintptr_t>::max())) std::abort();
    if (t.data == nullptr) std::abort();
  }
  if (spec.is_output && c.numel > 1 && c.numel <= 4096) {
    std::set<int64_t> offsets;
    std::vector<int64_t> index(ndim, 0);
    for (int64_t n = 0; n < c.numel; ++n) {
      int64_t offset = 0;
      for (int i = 0; i < ndim; ++i) offset += index[i] * c.strides[i];
      if (!offsets.insert(offset).second) std::abort();  // two elements share memory
      for (int i = ndim - 1; i >= 0; --i) {
        if (++index[i] < c.sizes[i]) break;
        index[i] = 0;
      }
    }
  }
  return 0;
}
