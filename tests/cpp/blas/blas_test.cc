// An optimized BLAS is the one libtorch loads: Debian's libtorch links libblas.so.3, which the
// update-alternatives link resolves to OpenBLAS (attnkit.sh deps sets it) or to the reference BLAS,
// 50x slower on this kind of machine. Checked by what /proc/self/maps says is mapped after a matmul
// (no timing assertion: machines differ and a busy one once failed a speed floor); the matmul's
// speed is printed for the log.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include "gtest/gtest.h"

namespace {

// Mapped files whose path mentions BLAS.
std::vector<std::string> MappedBlasLibraries() {
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string name = path.substr(path.rfind('/') + 1);
    if (name.rfind("lib", 0) == 0 && name.find("blas") != std::string::npos &&
        std::find(out.begin(), out.end(), path) == out.end()) {
      out.push_back(path);
    }
  }
  return out;
}

TEST(BlasTest, OpenBlasIsLoaded) {
  at::Tensor a = at::randn({64, 64});
  at::Tensor c = at::matmul(a, a);
  ASSERT_EQ(c.size(0), 64);
  const std::vector<std::string> libraries = MappedBlasLibraries();
  std::string listing;
  for (const std::string& path : libraries) listing += "\n  " + path;
  ASSERT_FALSE(libraries.empty()) << "no BLAS library is mapped";
  bool openblas = false;
  for (const std::string& path : libraries) {
    if (path.find("openblas") != std::string::npos) openblas = true;
    // Debian's reference BLAS lives in .../blas/libblas.so.3.
    EXPECT_EQ(path.find("/blas/libblas.so"), std::string::npos)
        << "the reference BLAS is loaded; run `./attnkit.sh deps` (sets the libblas.so.3 "
           "alternative to OpenBLAS). Mapped:"
        << listing;
  }
  EXPECT_TRUE(openblas) << "OpenBLAS is not loaded; run `./attnkit.sh deps`. Mapped:" << listing;
  std::printf("BLAS libraries mapped:%s\n", listing.c_str());
}

TEST(BlasTest, MatmulIsCorrect) {
  constexpr int64_t n = 1024;
  at::Tensor a = at::randn({n, n});
  at::Tensor b = at::randn({n, n});
  at::Tensor c = at::matmul(a, b);  // warm-up (thread pool, page faults)
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    c = at::matmul(a, b);
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double gflops = 2.0 * n * n * n / best / 1e9;
  // For the log only: the reference BLAS does about 5 GFLOP/s here, OpenBLAS on 2 cores 100-280.
  std::printf("1024^3 fp32 matmul: %.1f ms, %.1f GFLOP/s (%d threads)\n", best * 1e3, gflops,
              at::get_num_threads());
  EXPECT_TRUE(at::allclose(
      c.slice(0, 0, 8), at::mm(a.slice(0, 0, 8).to(at::kDouble), b.to(at::kDouble)).to(at::kFloat),
      1e-3, 1e-3));
}

}  // namespace
