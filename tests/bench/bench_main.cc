#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <ATen/Parallel.h>

#include "bench.h"

namespace attnkit::bench {
namespace {

struct Entry {
  std::string summary;
  BenchMain main;
};

std::map<std::string, Entry>& Registry() {
  static std::map<std::string, Entry> registry;
  return registry;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) >= 0x20) out.push_back(c);
  }
  return out;
}

}  // namespace

bool RegisterBench(const std::string& name, const std::string& summary, BenchMain main) {
  Registry()[name] = Entry{summary, std::move(main)};
  return true;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void Check(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, std::string(s.message()).c_str());
  std::exit(1);
}

std::string& MutableBenchLabel() {
  static std::string label = "attnkit-bench";
  return label;
}

const std::string& BenchLabel() { return MutableBenchLabel(); }

PhaseBar::PhaseBar(const std::string& phase, int64_t total)
    : bar_(phase.empty() ? BenchLabel() : BenchLabel() + ": " + phase, total) {
  bar_.Update(0);
}

double MedianMs(const std::function<void()>& fn, int reps, int warmup, const std::string& phase) {
  PhaseBar bar(phase, warmup + reps);
  for (int i = 0; i < warmup; ++i) {
    fn();
    bar.Update(i + 1);
  }
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    bar.Update(warmup + i + 1);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

BackgroundLoad::BackgroundLoad(int processes) {
  for (int i = 0; i < processes; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      // The child only spins (no library call after fork) until the parent kills it.
      for (volatile uint64_t n = 0;; n = n + 1) {
      }
    }
    if (pid > 0) children_.push_back(pid);
  }
  std::printf("background load: %zu busy process(es) started\n", children_.size());
  std::fflush(stdout);
  // Let the scheduler spread the load before anything is measured.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

BackgroundLoad::~BackgroundLoad() {
  for (int pid : children_) kill(pid, SIGKILL);
  for (int pid : children_) waitpid(pid, nullptr, 0);
  std::printf("background load: stopped\n");
  std::fflush(stdout);
}

void ResultJson::Add(const std::string& key, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", value);
  fields_.push_back("\"" + JsonEscape(key) + "\": " + buf);
}

void ResultJson::Add(const std::string& key, const std::string& value) {
  fields_.push_back("\"" + JsonEscape(key) + "\": \"" + JsonEscape(value) + "\"");
}

void ResultJson::Print() const {
  std::string out = "RESULT {";
  for (size_t i = 0; i < fields_.size(); ++i) out += (i ? ", " : "") + fields_[i];
  out += "}";
  std::printf("%s\n", out.c_str());
  std::fflush(stdout);
}

std::string MachineDescription() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::ostringstream out;
  out << model << ", " << std::thread::hardware_concurrency() << " hardware threads, "
      << at::get_num_threads() << " ATen threads";
  return out.str();
}

}  // namespace attnkit::bench

int main(int argc, char** argv) {
  auto& registry = attnkit::bench::Registry();
  if (argc < 2 || registry.count(argv[1]) == 0) {
    std::fprintf(stderr, "usage: %s BENCHMARK [args]\n", argv[0]);
    for (const auto& [name, entry] : registry) {
      std::fprintf(stderr, "  %-10s %s\n", name.c_str(), entry.summary.c_str());
    }
    return 2;
  }
  // Every contender (libtorch baselines and attnkit) runs with one intra-op thread per hardware
  // thread; ATen's own default on this kind of VM is 1. ATTNKIT_BENCH_THREADS overrides.
  const char* threads = std::getenv("ATTNKIT_BENCH_THREADS");
  at::set_num_threads(threads != nullptr ? std::atoi(threads)
                                         : static_cast<int>(std::thread::hardware_concurrency()));
  std::printf("machine: %s\n", attnkit::bench::MachineDescription().c_str());
  attnkit::bench::MutableBenchLabel() = std::string("attnkit-bench ") + argv[1];
  return registry[argv[1]].main(std::vector<std::string>(argv + 2, argv + argc));
}
