// attnkit-bench SUBCOMMAND: each benchmark registers itself by name. Every benchmark prints its
// figures and ends with one line "RESULT {json}" (times in ms, ratios, densities, bytes).
#ifndef ATTNKIT_TESTS_BENCH_BENCH_H_
#define ATTNKIT_TESTS_BENCH_BENCH_H_

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "progress.h"

namespace attnkit::bench {

// argv after the subcommand; returns the process exit code.
using BenchMain = std::function<int(const std::vector<std::string>& args)>;
bool RegisterBench(const std::string& name, const std::string& summary, BenchMain main);

// A progress bar on standard error for one phase of a benchmark ("attnkit-bench prefill: dense
// 16384 [#####.....] 2/4  50%  ETA 12s"), drawn only when standard error is a terminal and erased
// when the phase ends, so the figures printed on standard output stay plain. MedianMs draws one
// for its runs; the benchmarks draw their own over decode steps and repetitions.
class PhaseBar {
 public:
  PhaseBar(const std::string& phase, int64_t total);
  ~PhaseBar() { bar_.Clear(); }
  PhaseBar(const PhaseBar&) = delete;
  PhaseBar& operator=(const PhaseBar&) = delete;
  void Update(int64_t done) { bar_.Update(done); }

 private:
  tools::ProgressBar bar_;
};

// The benchmark running ("attnkit-bench prefill"), the label of every PhaseBar.
const std::string& BenchLabel();

// Median wall time in milliseconds of `reps` runs of `fn` after `warmup` runs (with a PhaseBar
// labelled `phase`).
double MedianMs(const std::function<void()>& fn, int reps, int warmup = 1,
                const std::string& phase = "");

// Milliseconds since `t0`.
double MsSince(std::chrono::steady_clock::time_point t0);

// Exits the benchmark (status 1) with `what` and the message when `s` is not OK.
void Check(const absl::Status& s, const char* what);

// Builds the RESULT line incrementally: Add("dense_ms", 12.5).
class ResultJson {
 public:
  void Add(const std::string& key, double value);
  void Add(const std::string& key, const std::string& value);
  // Prints "RESULT {...}".
  void Print() const;

 private:
  std::vector<std::string> fields_;
};

// A short description of the machine (CPU model, cores, threads used).
std::string MachineDescription();

// `--background-load`: a competing busy process (a child spinning on the CPU, what another
// program busy on one core looks like) from construction until destruction, for figures measured
// under load beside the quiet ones.
class BackgroundLoad {
 public:
  explicit BackgroundLoad(int processes = 1);
  ~BackgroundLoad();
  BackgroundLoad(const BackgroundLoad&) = delete;
  BackgroundLoad& operator=(const BackgroundLoad&) = delete;

 private:
  std::vector<int> children_;
};

}  // namespace attnkit::bench

#define ATTNKIT_BENCH(name, summary, fn)            \
  static const bool attnkit_bench_registered_##fn = \
      ::attnkit::bench::RegisterBench(name, summary, fn)

#endif  // ATTNKIT_TESTS_BENCH_BENCH_H_
