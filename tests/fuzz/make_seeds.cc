// Writes the seed corpus of safetensors_fuzzer into a folder: small valid files covering every
// dtype, metadata, empty and rank-0 tensors, escapes and padding, plus a few near-misses. Generated
// at build time so no binary data is committed.
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

std::string File(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  int begin, int end) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape +
         ", \"data_offsets\": [" + std::to_string(begin) + ", " + std::to_string(end) + "]}";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<std::string> seeds;
  const struct {
    const char* dtype;
    int size;
  } dtypes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
  for (const auto& d : dtypes) {
    seeds.push_back(File("{" + Entry("t", d.dtype, "[2, 3]", 0, 6 * d.size) + "}",
                         std::string(6 * d.size, '\x01')));
  }
  seeds.push_back(
      File("{\"__metadata__\": {\"kind\": \"eviction\", \"config\": "
           "\"{\\\"algorithm\\\": \\\"snapkv\\\", \\\"window_size\\\": null}\"}, " +
               Entry("prefill.q", "F32", "[1, 2, 2, 2]", 0, 32) + ", " +
               Entry("kept.prefill", "I64", "[2]", 32, 48) + ", " +
               Entry("mask", "BOOL", "[2, 2]", 48, 52) + "}",
           std::string(52, '\x3f')));
  seeds.push_back(File("{" + Entry("scalar", "F32", "[]", 0, 4) + ", " +
                           Entry("empty", "F16", "[0, 7]", 4, 4) + "}        ",
                       std::string(4, '\0')));
  seeds.push_back(File("{" + Entry("n\\u00e9\\ud83d\\ude00\\n", "U8", "[1]", 0, 1) + "}", "x"));
  seeds.push_back(File("{}", ""));
  seeds.push_back(File("{\"__metadata__\": {}}", ""));
  seeds.push_back(File("{\"a\": [1, -2.5e3, true, false, null, {\"b\": []}]}", ""));
  // Near-misses: the fuzzer mutates toward both sides of each check.
  seeds.push_back(
      File("{" + Entry("a", "F32", "[4]", 0, 16) + ", " + Entry("b", "F32", "[4]", 8, 24) + "}",
           std::string(24, 'x')));
  seeds.push_back(File("{" + Entry("t", "F32", "[3]", 0, 8) + "}", std::string(8, 'x')));
  seeds.push_back(File("{" + Entry("t", "F8", "[3]", 0, 3) + "}", "xyz"));
  seeds.push_back(File("{" + Entry("t", "F32", "[4611686018427387904, 2]", 0, 0) + "}", ""));
  for (size_t i = 0; i < seeds.size(); ++i) {
    const std::string path = dir + "/seed_" + std::to_string(i) + ".safetensors";
    std::ofstream out(path, std::ios::binary);
    out << seeds[i];
    if (!out) {
      std::cerr << "cannot write " << path << "\n";
      return 1;
    }
  }
  std::cout << "wrote " << seeds.size() << " seeds to " << dir << "\n";
  return 0;
}
