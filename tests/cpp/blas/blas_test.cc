// An optimized BLAS is the one libtorch loads: Debian's libtorch links libblas.so.3, which the
// update-alternatives link resolves to OpenBLAS (attnkit.sh deps sets it) or to the reference BLAS,
// 50x slower on this kind of machine. Checked two ways: what /proc/self/maps says is mapped after a
// matmul, and the speed of a 1024^3 fp32 matmul.
#include <algorithm>
#include <chrono>
#include <cstdlib>
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

TEST(BlasTest, MatmulIsFast) {
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
  // The reference BLAS does about 5 GFLOP/s here, OpenBLAS on 2 cores about 100-280: 15 leaves room
  // for a busy machine and still tells them apart. ATTNKIT_MIN_MATMUL_GFLOPS overrides it.
  double minimum = 15.0;
  if (const char* v = std::getenv("ATTNKIT_MIN_MATMUL_GFLOPS")) minimum = std::atof(v);
  std::printf("1024^3 fp32 matmul: %.1f ms, %.1f GFLOP/s (%d threads; minimum %.0f)\n", best * 1e3,
              gflops, at::get_num_threads(), minimum);
  EXPECT_GE(gflops, minimum) << "matmul runs at reference-BLAS speed; run `./attnkit.sh deps`";
  // The result is right, not just fast.
  EXPECT_TRUE(at::allclose(
      c.slice(0, 0, 8), at::mm(a.slice(0, 0, 8).to(at::kDouble), b.to(at::kDouble)).to(at::kFloat),
      1e-3, 1e-3));
}

}  // namespace
