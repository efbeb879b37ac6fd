// Worker fan-out for the sparse-attention CPU kernels. at::parallel_for is an inline template that
// only runs in parallel when the calling translation unit is compiled with OpenMP (ATen defines
// INTRA_OP_PARALLEL under _OPENMP); without it, it runs the whole range on the caller. RunWorkers
// uses at::parallel_for when that is available and std::thread otherwise, so the kernels use
// at::get_num_threads() workers either way. Header-only and internal.
#ifndef ATTNKIT_CORE_KERNELS_CPU_SPARSE_PARALLEL_H_
#define ATTNKIT_CORE_KERNELS_CPU_SPARSE_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>

namespace attnkit::kernels::sparse_parallel {

// The number of workers for `tasks` independent tasks: at::get_num_threads(), at most `tasks`, and
// 1 inside an ATen parallel region (no nested parallelism).
inline int64_t Workers(int64_t tasks) {
  if (at::in_parallel_region()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
}

// Runs fn(worker) for worker in [0, workers) concurrently and waits; rethrows the first exception.
template <typename F>
void RunWorkers(int64_t workers, const F& fn) {
  if (workers <= 1) {
    fn(int64_t{0});
    return;
  }
#ifdef INTRA_OP_PARALLEL
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) fn(w);
  });
#else
  std::vector<std::exception_ptr> errors(workers);
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  auto guarded = [&](int64_t w) {
    try {
      fn(w);
    } catch (...) {
      errors[w] = std::current_exception();
    }
  };
  for (int64_t w = 1; w < workers; ++w) threads.emplace_back(guarded, w);
  guarded(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
#endif
}

}  // namespace attnkit::kernels::sparse_parallel

#endif  // ATTNKIT_CORE_KERNELS_CPU_SPARSE_PARALLEL_H_
