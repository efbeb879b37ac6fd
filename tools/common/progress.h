// A one-line progress bar on standard error for the tools' long runs (attnkit-eval,
// attnkit-conformance): "label [#########.........] 12/40  30%  ETA 1m20s  detail", redrawn in
// place. Drawn only when standard error is a terminal, so logs, pipes and ctest output stay plain
// (the tools print their own per-item lines either way). Header-only; not thread-safe: callers
// serialize Update() (eval does, under its output lock).
#ifndef ATTNKIT_TOOLS_COMMON_PROGRESS_H_
#define ATTNKIT_TOOLS_COMMON_PROGRESS_H_

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace attnkit::tools {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total)
      : label_(std::move(label)),
        total_(std::max<int64_t>(total, 1)),
        enabled_(isatty(STDERR_FILENO) == 1),
        start_(std::chrono::steady_clock::now()) {}
  ~ProgressBar() { Finish(); }

  bool enabled() const { return enabled_; }

  // Redraws the bar at `done` of the total.
  void Update(int64_t done, const std::string& detail = "") {
    if (!enabled_) return;
    done = std::clamp<int64_t>(done, 0, total_);
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total_);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kWidth - filled), '.');
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::string eta = "--";
    if (done > 0 && done < total_) eta = Duration(elapsed / done * (total_ - done));
    if (done == total_) eta = "done in " + Duration(elapsed);
    std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %3d%%  ETA %s  %s", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_),
                 static_cast<int>(100 * done / total_), eta.c_str(), detail.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }

  // Clears the bar's line, so a log line can be printed; the next Update() draws it again.
  void Clear() {
    if (!enabled_ || !drawn_) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }

  // Ends the bar's line (once).
  void Finish() {
    if (!enabled_ || finished_) return;
    finished_ = true;
    if (drawn_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  static std::string Duration(double seconds) {
    const long s = static_cast<long>(seconds + 0.5);
    char text[32];
    if (s >= 3600) {
      std::snprintf(text, sizeof(text), "%ldh%02ldm", s / 3600, s / 60 % 60);
    } else if (s >= 60) {
      std::snprintf(text, sizeof(text), "%ldm%02lds", s / 60, s % 60);
    } else {
      std::snprintf(text, sizeof(text), "%lds", s);
    }
    return text;
  }

  std::string label_;
  int64_t total_;
  bool enabled_;
  bool drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace attnkit::tools

#endif  // ATTNKIT_TOOLS_COMMON_PROGRESS_H_
