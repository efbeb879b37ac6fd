// attnkit_set_num_threads(): the kernels of a computing call use the count set, and the calling
// thread's own OpenMP setting comes back afterwards. Proof without clocks: OpenMP creates its
// worker threads on the first parallel region that asks for more than one, so this binary (its own
// process, this test its first and only one) counts its threads in /proc/self/task: still one after
// calls under num_threads 1, more once a call runs under 2.
#include <dirent.h>
#include <omp.h>

#include <cstring>
#include <string>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "attnkit/attnkit.h"
#include "dlpack_util.h"

namespace {

using attnkit::testing::DLView;

int ThreadsOfThisProcess() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

std::string Message(attnkit_status* status) {
  std::string message = attnkit_status_get_message(status);
  attnkit_status_free(status);
  return message;
}

// A prefill of 256 tokens and 8 decode steps through a session with 8 kv heads (the paged decode
// runs its (sequence, kv head) groups on the call's threads).
void RunSession() {
  const char config[] = "num_layers: 1 num_heads: 8 num_kv_heads: 8 head_dim: 64";
  attnkit_session* session = nullptr;
  ASSERT_EQ(attnkit_session_create_from_text(config, std::strlen(config), &session), nullptr);
  at::Tensor q = at::randn({1, 8, 256, 64}), k = at::randn({1, 8, 256, 64});
  at::Tensor v = at::randn({1, 8, 256, 64}), out = at::empty({1, 8, 256, 64});
  DLView qv(q), kv(k), vv(v), ov(out);
  ASSERT_EQ(attnkit_session_attend(session, 0, qv, kv, vv, ov), nullptr);
  for (int step = 0; step < 8; ++step) {
    at::Tensor q1 = at::randn({1, 8, 1, 64}), k1 = at::randn({1, 8, 1, 64});
    at::Tensor v1 = at::randn({1, 8, 1, 64}), o1 = at::empty({1, 8, 1, 64});
    DLView q1v(q1), k1v(k1), v1v(v1), o1v(o1);
    ASSERT_EQ(attnkit_session_attend(session, 0, q1v, k1v, v1v, o1v), nullptr);
  }
  attnkit_session_free(session);
}

TEST(NumThreadsCapiTest, CallsRunOnTheThreadsSetAndTheCallerKeepsItsOwnSetting) {
  ASSERT_EQ(ThreadsOfThisProcess(), 1) << "a thread exists before the first call";
  EXPECT_EQ(attnkit_get_num_threads(), 0);

  attnkit_status* negative = attnkit_set_num_threads(-1);
  EXPECT_EQ(attnkit_status_get_code(negative), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_EQ(Message(negative), "num_threads: must be in [0, 1024], got -1");
  attnkit_status* huge = attnkit_set_num_threads(1025);
  EXPECT_EQ(attnkit_status_get_code(huge), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(Message(huge).find("num_threads"), std::string::npos);
  EXPECT_EQ(attnkit_get_num_threads(), 0);  // unchanged by the rejected calls

  // The host's own OpenMP setting on this thread: 3, whatever the machine has. (Through OpenMP:
  // at::set_num_threads() would also size ATen's pthreadpool, starting threads of its own.)
  at::get_num_threads();  // ATen's lazy per-thread init first, which would reset the count
  omp_set_num_threads(3);
  const int before = ThreadsOfThisProcess();
  ASSERT_EQ(before, 1);
  ASSERT_EQ(attnkit_set_num_threads(1), nullptr);
  EXPECT_EQ(attnkit_get_num_threads(), 1);
  RunSession();
  EXPECT_EQ(ThreadsOfThisProcess(), before) << "a call under num_threads 1 started worker threads";
  EXPECT_EQ(omp_get_max_threads(), 3) << "the caller's setting was not given back";

  ASSERT_EQ(attnkit_set_num_threads(2), nullptr);
  RunSession();
  EXPECT_GE(ThreadsOfThisProcess(), before + 1) << "a call under num_threads 2 ran on one thread";
  EXPECT_EQ(omp_get_max_threads(), 3);

  ASSERT_EQ(attnkit_set_num_threads(0), nullptr);
  EXPECT_EQ(attnkit_get_num_threads(), 0);
}

}  // namespace
