// Writes the seed corpus of dlpack_fuzzer into a folder: descriptors in the fuzzer's input layout
// for compact, strided, empty, rank-0 and output tensors of each dtype, and near-misses (a huge
// dimension, a huge stride, a byte offset near 2^63). Generated at build time: no binary data is
// committed.
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Seed {
  std::string name;
  int8_t ndim;
  uint8_t code, bits, lanes, device, flags;
  uint64_t byte_offset;
  int64_t address;
  std::vector<int64_t> shape, strides;
};

void Put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string Encode(const Seed& s) {
  std::string out;
  out.push_back(static_cast<char>(s.ndim));
  out.push_back(static_cast<char>(s.code));
  out.push_back(static_cast<char>(s.bits));
  out.push_back(static_cast<char>(s.lanes));
  out.push_back(static_cast<char>(s.device));
  out.push_back(static_cast<char>(s.flags));
  Put64(out, s.byte_offset);
  Put64(out, static_cast<uint64_t>(s.address));
  for (int i = 0; i < 8; ++i) Put64(out, i < static_cast<int>(s.shape.size()) ? s.shape[i] : 0);
  for (int i = 0; i < 8; ++i) {
    Put64(out, i < static_cast<int>(s.strides.size()) ? s.strides[i] : 0);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR\n";
    return 2;
  }
  const int64_t a = 0x10000;  // a plausible data address
  const std::vector<Seed> seeds = {
      {"compact_f32", 4, 2, 32, 1, 0, 2, 0, a, {1, 4, 3, 8}, {}},
      {"strided_f32", 4, 2, 32, 1, 0, 0, 0, a, {1, 4, 3, 8}, {192, 48, 16, 2}},
      {"output_f16", 4, 2, 16, 1, 0, 8, 0, a, {2, 4, 3, 8}, {96, 24, 8, 1}},
      {"output_overlap", 3, 2, 32, 1, 0, 8, 0, a, {2, 3, 4}, {4, 0, 1}},
      {"bf16", 2, 4, 16, 1, 0, 2, 8, a, {6, 4}, {}},
      {"mask_u8", 4, 1, 8, 1, 0, 16 | 2, 0, a, {1, 1, 2, 2}, {}},
      {"int64", 1, 0, 64, 1, 0, 32 | 64 | 2, 0, a, {5}, {}},
      {"empty", 3, 2, 32, 1, 0, 2, 0, 0, {0, 4, 8}, {}},
      {"rank0", 0, 2, 32, 1, 0, 2, 0, a, {}, {}},
      {"huge_dims", 2, 2, 32, 1, 0, 2, 0, a, {int64_t{1} << 31, int64_t{1} << 31}, {}},
      {"huge_stride", 2, 2, 32, 1, 0, 0, 0, a, {2, 3}, {int64_t{1} << 62, 1}},
      {"offset_2_63", 1, 2, 32, 1, 0, 2, (uint64_t{1} << 63) - 8, a, {4}, {}},
      {"cuda", 2, 2, 32, 1, 2 | 0x80, 2, 0, a, {3, 4}, {}},
  };
  for (const Seed& s : seeds) {
    std::ofstream f(std::string(argv[1]) + "/" + s.name, std::ios::binary);
    const std::string bytes = Encode(s);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::cerr << "cannot write " << s.name << "\n";
      return 1;
    }
  }
  return 0;
}
