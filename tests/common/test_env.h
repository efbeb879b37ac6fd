// Where tests find ../shared: ATTNKIT_CONFORMANCE_DIR / ATTNKIT_MODELS_DIR, else
// $ATTNKIT_SHARED_DIR/{conformance,models} (set by ctest), else ../shared beside the source tree.
#ifndef ATTNKIT_TESTS_COMMON_TEST_ENV_H_
#define ATTNKIT_TESTS_COMMON_TEST_ENV_H_

#include <cstdlib>
#include <string>
#include <sys/stat.h>

namespace attnkit::testing {

inline std::string SharedSubdir(const char* env_override, const char* sub) {
  if (const char* v = std::getenv(env_override); v != nullptr && *v != '\0') return v;
  if (const char* v = std::getenv("ATTNKIT_SHARED_DIR"); v != nullptr && *v != '\0') {
    return std::string(v) + "/" + sub;
  }
#ifdef ATTNKIT_SOURCE_DIR
  return std::string(ATTNKIT_SOURCE_DIR) + "/../shared/" + sub;
#else
  return std::string("../shared/") + sub;
#endif
}

inline std::string ConformanceDir() {
  return SharedSubdir("ATTNKIT_CONFORMANCE_DIR", "conformance");
}
inline std::string ModelsDir() { return SharedSubdir("ATTNKIT_MODELS_DIR", "models"); }

inline bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace attnkit::testing

// Skips the current GoogleTest test, saying which dependency is absent.
#define ATTNKIT_SKIP_IF_MISSING(path)                                                 \
  do {                                                                                \
    if (!::attnkit::testing::PathExists(path))                                        \
      GTEST_SKIP() << "skipped: " << (path) << " is absent (set ATTNKIT_SHARED_DIR)"; \
  } while (0)

#endif  // ATTNKIT_TESTS_COMMON_TEST_ENV_H_
