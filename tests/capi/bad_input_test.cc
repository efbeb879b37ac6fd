// The bad-input matrix of the C ABI: every entry point that takes a tensor is called with each of
// its tensor arguments broken one way at a time (NULL, dtype, lanes, rank, shape, zero length, NULL
// shape or data, negative sizes or strides, element counts and byte extents past 2^63, huge
// byte_offset, devices, overlapping outputs, NaN and Inf where the policy needs finite values,
// non-contiguous views that must work), plus handle misuse (NULL handles and outputs, layers out of
// range or out of order, lengths that disagree with the tensors, overflowing sizes). Each case runs
// in a forked child, so a crash, an abort or a hang (alarm) is reported as that case's failure
// instead of ending the test. A case passes when the call returns an error status whose code is
// not INTERNAL and whose message contains every expected fragment (the argument's name and what was
// expected), or, for the inputs that must be accepted, an OK status.
//
// The parent process never calls the library (nor ATen), so forking is safe: no thread pool exists
// before the fork. ATTNKIT_BAD_INPUT_FILTER=<substring> runs only the cases whose label contains
// it.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attnkit.h"

namespace {

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int32_t kNoOverride = std::numeric_limits<int32_t>::min();

// What a tensor argument holds.
enum class Elem { kFloat, kMask };

// One tensor argument: its valid description, then whatever a case breaks. Owns its storage.
struct Arg {
  std::string name;
  std::vector<int64_t> shape;
  Elem elem = Elem::kFloat;
  bool output = false;
  bool optional = false;  // NULL is a valid value
  // NaN/Inf: rejected with "<name>: contains NaN or infinity" (the session's policy, and the
  // eviction policy's), rejected as non-finite by the pruner (visual), or computed through (sparse
  // attention and the descriptor check: the result is then non-finite, as for dense attention).
  enum class NonFinite { kAccepted, kRejected, kRejectedByPruner };
  NonFinite non_finite = NonFinite::kAccepted;
  int token_dim = -1;  // the dimension a zero-length case empties (-1: none)
  // The dimension a "shape off by one" case grows: one the entry point constrains (-2: none, the
  // call accepts any shape of this rank).
  int bump_dim = -1;  // -1: the last

  // Mutations.
  DLDataType dtype{kDLFloat, 32, 1};
  DLDevice device{kDLCPU, 0};
  std::vector<int64_t> strides;  // empty: NULL (compact)
  uint64_t byte_offset = 0;
  bool null_tensor = false, null_shape = false, null_data = false;
  int32_t ndim_override = kNoOverride;
  float poison = 0;  // NaN or Inf written into element 0 when non-zero
  bool has_poison = false;
  int64_t storage_limit = int64_t{1} << 24;  // bytes allocated at most (huge shapes: a stub)

  std::vector<uint8_t> storage;
  DLTensor dl{};

  DLTensor* Get() {
    if (null_tensor) return nullptr;
    // Compact strides for the fill (and the caller's when not broken).
    int64_t numel = 1;
    bool sane = true;
    for (int64_t s : shape) {
      if (s < 0 || (s > 0 && numel > storage_limit / s)) {
        sane = false;
        break;
      }
      numel *= s;
    }
    const int64_t item = std::max<int64_t>(dtype.bits / 8, 1) * std::max<int64_t>(dtype.lanes, 1);
    int64_t bytes = 64;
    if (sane) {
      int64_t span = 1;  // elements reachable with the strides
      if (!strides.empty()) {
        for (size_t i = 0; i < shape.size(); ++i) {
          if (shape[i] == 0) {
            span = 0;
            break;
          }
          if (strides[i] < 0 || strides[i] > storage_limit) {
            span = -1;
            break;
          }
          span += (shape[i] - 1) * strides[i];
        }
      } else {
        span = numel;
      }
      if (span >= 0 && span * item < storage_limit) bytes = std::max<int64_t>(64, span * item);
    }
    storage.assign(static_cast<size_t>(bytes) + 64, 0);
    if (elem == Elem::kMask) {
      std::memset(storage.data(), 1, storage.size());
    } else if (dtype.code == kDLFloat && dtype.bits == 32) {
      float* f = reinterpret_cast<float*>(storage.data());
      for (size_t i = 0; i < storage.size() / 4; ++i)
        f[i] = std::sin(0.37f * static_cast<float>(i));
      if (has_poison) f[0] = poison;
    }
    dl.data = null_data ? nullptr : storage.data();
    dl.device = device;
    if (ndim_override > static_cast<int32_t>(shape.size())) shape.resize(ndim_override, 1);
    dl.ndim = ndim_override != kNoOverride ? ndim_override : static_cast<int32_t>(shape.size());
    dl.dtype = dtype;
    dl.shape = null_shape ? nullptr : shape.data();
    dl.strides = strides.empty() ? nullptr : strides.data();
    dl.byte_offset = byte_offset;
    return &dl;
  }
};

using Args = std::vector<Arg>;
using Tensors = std::vector<DLTensor*>;

enum class Want { kError, kOk, kNoCrash };

struct Expect {
  Want want = Want::kError;
  std::vector<std::string> fragments;                   // every one in the message
  attnkit_status_code code = ATTNKIT_INVALID_ARGUMENT;  // ATTNKIT_UNKNOWN: any code but INTERNAL
};

Expect Error(std::vector<std::string> fragments,
             attnkit_status_code code = ATTNKIT_INVALID_ARGUMENT) {
  return Expect{Want::kError, std::move(fragments), code};
}
Expect Ok() { return Expect{Want::kOk, {}, ATTNKIT_OK}; }
// Either OK, or an error with a message that is not INTERNAL (zero-length and non-finite inputs
// where attnkit defines a result; the error may name another argument that no longer matches).
Expect NoCrash() { return Expect{Want::kNoCrash, {}, ATTNKIT_OK}; }

struct Case {
  std::string label;
  std::function<attnkit_status*()> run;  // runs in the child
  Expect expect;
};

// ----- Objects the calls need (created in the child) -----

const char kSessionConfig[] =
    "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 8 "
    "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
    "intermediate_tokens: 2 recent_tokens: 1 }";

attnkit_session* NewSession() {
  attnkit_session* s = nullptr;
  attnkit_status* st = attnkit_session_create_from_text(kSessionConfig, strlen(kSessionConfig), &s);
  if (st != nullptr) {
    std::fprintf(stderr, "session: %s\n", attnkit_status_get_message(st));
    std::_Exit(3);
  }
  return s;
}

// A session whose two layers hold a 3-token prompt (what an observe call attends to).
attnkit_session* NewSessionWithPrompt() {
  attnkit_session* s = NewSession();
  std::vector<float> q(4 * 3 * 8, 0.25f), kv(2 * 3 * 8, 0.5f), out(4 * 3 * 8);
  int64_t q_shape[] = {1, 4, 3, 8}, kv_shape[] = {1, 2, 3, 8};
  auto view = [](float* data, int64_t* shape) {
    DLTensor t{};
    t.data = data;
    t.device = {kDLCPU, 0};
    t.ndim = 4;
    t.dtype = {kDLFloat, 32, 1};
    t.shape = shape;
    return t;
  };
  DLTensor qt = view(q.data(), q_shape), kt = view(kv.data(), kv_shape),
           ot = view(out.data(), q_shape);
  for (int layer = 0; layer < 2; ++layer) {
    attnkit_status* st = attnkit_session_attend(s, layer, &qt, &kt, &kt, &ot);
    if (st != nullptr) {
      std::fprintf(stderr, "prompt: %s\n", attnkit_status_get_message(st));
      std::_Exit(3);
    }
  }
  return s;
}

attnkit_eviction_policy* NewPolicy(const char* config) {
  attnkit_eviction_policy* p = nullptr;
  attnkit_status* st =
      attnkit_eviction_policy_create_from_text(config, strlen(config), 2, 4, 2, &p);
  if (st != nullptr) {
    std::fprintf(stderr, "policy: %s\n", attnkit_status_get_message(st));
    std::_Exit(3);
  }
  return p;
}

const char kH2O[] =
    "algorithm: H2O granularity: PER_TOKEN start_tokens: 1 intermediate_tokens: 2 recent_tokens: 1";
const char kKNorm[] =
    "algorithm: KNORM granularity: PER_TOKEN per_head: true start_tokens: 1 intermediate_tokens: 2 "
    "recent_tokens: 1";
const char kSnapKV[] =
    "algorithm: SNAPKV granularity: PER_TOKEN window_size: 2 start_tokens: 1 intermediate_tokens: "
    "2 recent_tokens: 1";

attnkit_sparse_attention* NewSparse(const char* config) {
  attnkit_sparse_attention* p = nullptr;
  attnkit_status* st = attnkit_sparse_attention_create_from_text(config, strlen(config), &p);
  if (st != nullptr) {
    std::fprintf(stderr, "sparse: %s\n", attnkit_status_get_message(st));
    std::_Exit(3);
  }
  return p;
}

const char kSparseDense[] = "mode: DENSE block_size: 4";
const char kSparseTri[] = "mode: TRI_SHAPE block_size: 4 recent_size: 4";

attnkit_visual_pruner* NewPruner() {
  const char config[] = "method: CDPRUNER num_keep_tokens: 2 theta: 0.5";
  attnkit_visual_pruner* p = nullptr;
  attnkit_status* st = attnkit_visual_pruner_create_from_text(config, strlen(config), &p);
  if (st != nullptr) {
    std::fprintf(stderr, "visual: %s\n", attnkit_status_get_message(st));
    std::_Exit(3);
  }
  return p;
}

Arg Float(std::string name, std::vector<int64_t> shape, int token_dim = -1) {
  Arg a;
  a.name = std::move(name);
  a.shape = std::move(shape);
  a.token_dim = token_dim;
  return a;
}

// One tensor-taking entry point: its valid arguments and the call.
struct EntryPoint {
  std::string name;
  std::function<Args()> args;
  std::function<attnkit_status*(Tensors&)> call;
};

Tensors Realize(Args& args) {
  Tensors out;
  for (Arg& a : args) out.push_back(a.Get());
  return out;
}

std::vector<EntryPoint> EntryPoints() {
  std::vector<EntryPoint> e;
  e.push_back({"attnkit_tensor_check",
               [] {
                 Args a{Float("t", {3, 4})};
                 a[0].bump_dim = -2;  // only the rank is checked
                 return a;
               },
               [](Tensors& t) { return attnkit_tensor_check(t[0], "t", 2, 0); }});
  e.push_back({"attnkit_session_attend",
               [] {
                 Args a{Float("q", {1, 4, 3, 8}, 2), Float("k", {1, 2, 3, 8}, 2),
                        Float("v", {1, 2, 3, 8}, 2), Float("out", {1, 4, 3, 8}, 2)};
                 for (int i = 0; i < 3; ++i) a[i].non_finite = Arg::NonFinite::kRejected;
                 a[3].output = true;
                 return a;
               },
               [](Tensors& t) {
                 attnkit_session* s = NewSession();
                 return attnkit_session_attend(s, 0, t[0], t[1], t[2], t[3]);
               }});
  e.push_back({"attnkit_session_attend_ragged",
               [] {
                 Args a{Float("q", {1, 4, 3, 8}, 2), Float("k", {1, 2, 3, 8}, 2),
                        Float("v", {1, 2, 3, 8}, 2), Float("out", {1, 4, 3, 8}, 2)};
                 for (int i = 0; i < 3; ++i) a[i].non_finite = Arg::NonFinite::kRejected;
                 a[3].output = true;
                 return a;
               },
               [](Tensors& t) {
                 attnkit_session* s = NewSession();
                 const int64_t counts[] = {3};
                 return attnkit_session_attend_ragged(s, 0, t[0], t[1], t[2], t[3], counts, 1);
               }});
  e.push_back({"attnkit_session_observe",
               [] {
                 Args a{Float("q", {1, 4, 2, 8}, 2), Float("out", {1, 4, 2, 8}, 2)};
                 a[0].non_finite = Arg::NonFinite::kRejected;
                 a[1].output = true;
                 a[1].optional = true;  // NULL: no output wanted
                 return a;
               },
               [](Tensors& t) {
                 attnkit_session* s = NewSessionWithPrompt();
                 return attnkit_session_observe(s, 0, t[0], t[1]);
               }});
  e.push_back({"attnkit_eviction_policy_observe",
               [] {
                 Args a{Float("attention", {1, 4, 2, 6}, 3)};
                 a[0].non_finite = Arg::NonFinite::kRejected;
                 a[0].bump_dim = 1;  // heads (more cache tokens than lengths is fine)
                 return a;
               },
               [](Tensors& t) {
                 attnkit_eviction_policy* p = NewPolicy(kH2O);
                 const int64_t lengths[] = {6};
                 return attnkit_eviction_policy_observe(p, 0, t[0], lengths, 1);
               }});
  e.push_back({"attnkit_eviction_policy_select",
               [] {
                 Args a{Float("keys", {2, 6, 8}, 1)};
                 a[0].non_finite = Arg::NonFinite::kRejected;
                 a[0].bump_dim = 0;     // kv heads (any head_dim, and more tokens than lengths)
                 a[0].optional = true;  // NULL: misuse case "KNORM without keys"
                 return a;
               },
               [](Tensors& t) {
                 attnkit_eviction_policy* p = NewPolicy(kKNorm);
                 const int64_t lengths[] = {6};
                 attnkit_kept_positions* kept = nullptr;
                 attnkit_status* st = attnkit_eviction_policy_select(p, 0, t[0], lengths, 1, &kept);
                 attnkit_kept_positions_free(kept);
                 return st;
               }});
  e.push_back({"attnkit_sparse_attention_build_mask",
               [] {
                 Args a{Float("q", {1, 4, 8, 8}, 2), Float("k", {1, 2, 8, 8}, 2),
                        Float("mask_out", {1, 1, 2, 2})};
                 a[2].elem = Elem::kMask;
                 a[2].dtype = {kDLUInt, 8, 1};
                 a[2].output = true;
                 return a;
               },
               [](Tensors& t) {
                 return attnkit_sparse_attention_build_mask(NewSparse(kSparseTri), t[0], t[1],
                                                            t[2]);
               }});
  e.push_back({"attnkit_sparse_attention_attention",
               [] {
                 Args a{Float("q", {1, 4, 8, 8}, 2), Float("k", {1, 2, 8, 8}, 2),
                        Float("v", {1, 2, 8, 8}, 2), Float("mask", {1, 1, 2, 2}),
                        Float("out", {1, 4, 8, 8}, 2)};
                 a[3].elem = Elem::kMask;
                 a[3].dtype = {kDLUInt, 8, 1};
                 a[4].output = true;
                 return a;
               },
               [](Tensors& t) {
                 return attnkit_sparse_attention_attention(NewSparse(kSparseDense), t[0], t[1],
                                                           t[2], t[3], 0.0, t[4]);
               }});
  e.push_back({"attnkit_sparse_attention_prefill",
               [] {
                 Args a{Float("q", {1, 4, 8, 8}, 2), Float("k", {1, 2, 8, 8}, 2),
                        Float("v", {1, 2, 8, 8}, 2), Float("out", {1, 4, 8, 8}, 2)};
                 a[3].output = true;
                 return a;
               },
               [](Tensors& t) {
                 double density = 0;
                 return attnkit_sparse_attention_prefill(NewSparse(kSparseTri), t[0], t[1], t[2],
                                                         0.0, t[3], &density);
               }});
  e.push_back({"attnkit_visual_pruner_select",
               [] {
                 Args a{Float("image_embeds", {6, 4}, 0), Float("image_features", {6, 8}, 0),
                        Float("text_embeds", {3, 4}, 0)};
                 a[0].optional = a[2].optional = true;  // NULL: misuse cases
                 a[1].bump_dim = 0;                     // N (any Dv)
                 for (Arg& x : a) x.non_finite = Arg::NonFinite::kRejectedByPruner;
                 return a;
               },
               [](Tensors& t) {
                 attnkit_visual_selection* sel = nullptr;
                 attnkit_status* st =
                     attnkit_visual_pruner_select(NewPruner(), t[0], t[1], t[2], &sel);
                 attnkit_visual_selection_free(sel);
                 return st;
               }});
  e.push_back({"attnkit_visual_pruner_select_ragged",
               [] {
                 Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
                        Float("text_embeds", {3, 4}, 0)};
                 a[0].optional = a[2].optional = true;
                 a[1].bump_dim = 0;  // N (any Dv)
                 for (Arg& x : a) x.non_finite = Arg::NonFinite::kRejectedByPruner;
                 return a;
               },
               [](Tensors& t) {
                 const int64_t sizes[] = {2, 4};
                 attnkit_visual_selection* sel = nullptr;
                 attnkit_status* st = attnkit_visual_pruner_select_ragged(NewPruner(), t[0], t[1],
                                                                          sizes, 2, t[2], &sel);
                 attnkit_visual_selection_free(sel);
                 return st;
               }});
  return e;
}

// The dimension a shape case changes so that the error is about this argument.
int BumpDim(const Arg& a) {
  return a.bump_dim == -1 ? static_cast<int>(a.shape.size()) - 1 : a.bump_dim;
}

// A dimension of size >= 2 (a huge stride there reaches past 2^63 bytes), or -1.
int WideDim(const Arg& a) {
  for (size_t i = 0; i < a.shape.size(); ++i)
    if (a.shape[i] >= 2) return static_cast<int>(i);
  return -1;
}

// The tensor-argument cases of one entry point.
void AddTensorCases(const EntryPoint& ep, std::vector<Case>* cases) {
  const Args valid = ep.args();
  auto add = [&](size_t index, const std::string& what, std::function<void(Arg&)> mutate,
                 Expect expect) {
    Case c;
    c.label = ep.name + " " + valid[index].name + ": " + what;
    auto args_fn = ep.args;
    auto call = ep.call;
    c.run = [args_fn, call, index, mutate]() {
      Args args = args_fn();
      mutate(args[index]);
      Tensors t = Realize(args);
      return call(t);
    };
    c.expect = std::move(expect);
    cases->push_back(std::move(c));
  };
  {
    Case c;
    c.label = ep.name + ": valid arguments";
    auto args_fn = ep.args;
    auto call = ep.call;
    c.run = [args_fn, call]() {
      Args args = args_fn();
      Tensors t = Realize(args);
      return call(t);
    };
    c.expect = Ok();
    cases->push_back(std::move(c));
  }
  for (size_t i = 0; i < valid.size(); ++i) {
    const Arg& a = valid[i];
    const std::string n = a.name;
    const std::string named = n + ":";
    const bool mask = a.elem == Elem::kMask;
    if (!a.optional) {
      add(
          i, "NULL", [](Arg& x) { x.null_tensor = true; }, Error({n, "NULL"}, ATTNKIT_UNKNOWN));
    }
    add(
        i, "float64",
        [](Arg& x) {
          x.dtype = {kDLFloat, 64, 1};
        },
        Error({named, "float64", mask ? "uint8" : "float32"}));
    add(
        i, "int32",
        [](Arg& x) {
          x.dtype = {kDLInt, 32, 1};
        },
        Error({named, "int32", mask ? "uint8" : "float32"}));
    if (mask) {
      add(
          i, "float32 mask",
          [](Arg& x) {
            x.dtype = {kDLFloat, 32, 1};
            x.elem = Elem::kFloat;
          },
          Error({named, "float32", "uint8"}));
    } else {
      add(
          i, "uint8",
          [](Arg& x) {
            x.dtype = {kDLUInt, 8, 1};
          },
          Error({named, "uint8", "float32"}));
    }
    add(
        i, "lanes 2", [](Arg& x) { x.dtype.lanes = 2; }, Error({named, "lanes"}));
    add(
        i, "rank 9", [](Arg& x) { x.ndim_override = 9; }, Error({named, "rank"}));
    add(
        i, "rank - 1", [](Arg& x) { x.shape.pop_back(); }, Error({n}, ATTNKIT_UNKNOWN));
    add(
        i, "rank + 1", [](Arg& x) { x.shape.push_back(1); }, Error({n}, ATTNKIT_UNKNOWN));
    add(
        i, "rank -1", [](Arg& x) { x.ndim_override = -1; }, Error({named, "rank -1"}));
    const int bump = BumpDim(a);
    if (bump >= 0)
      add(
          i, "shape off by one", [bump](Arg& x) { x.shape[bump] += 1; },
          Error({n}, ATTNKIT_UNKNOWN));
    if (a.token_dim >= 0) {
      const int d = a.token_dim;
      add(
          i, "zero length", [d](Arg& x) { x.shape[d] = 0; }, NoCrash());
    }
    add(
        i, "NULL shape", [](Arg& x) { x.null_shape = true; }, Error({named, "shape", "NULL"}));
    add(
        i, "NULL data", [](Arg& x) { x.null_data = true; }, Error({named, "data", "NULL"}));
    add(
        i, "negative size", [](Arg& x) { x.shape[0] = -3; }, Error({named, "negative size"}));
    add(
        i, "negative stride",
        [](Arg& x) {
          x.strides.assign(x.shape.size(), 1);
          x.strides[0] = -1;
        },
        Error({named, "negative stride"}));
    add(
        i, "element count past 2^63",
        [](Arg& x) {
          x.shape[0] = int64_t{1} << 32;
          x.shape[1] = int64_t{1} << 32;
        },
        Error({named, "too many elements"}));
    add(
        i, "byte extent past 2^63 (sizes)",
        [](Arg& x) {
          x.shape[0] = int64_t{1} << 31;
          x.shape[1] = int64_t{1} << 31;
        },
        Error({named, "2^63"}));
    const int wide = WideDim(a);
    if (wide >= 0) {
      add(
          i, "byte extent past 2^63 (stride)",
          [wide](Arg& x) {
            x.strides.assign(x.shape.size(), 1);
            int64_t s = 1;
            for (int d = static_cast<int>(x.shape.size()) - 1; d >= 0; --d) {
              x.strides[d] = s;
              s *= x.shape[d];
            }
            x.strides[wide] = kI64Max;  // (2 - 1) * stride + 1 overflows for any item size
          },
          Error({named, "2^63"}));
    }
    add(
        i, "byte_offset 2^63", [](Arg& x) { x.byte_offset = uint64_t{1} << 63; },
        Error({named, "byte_offset"}));
    add(
        i, "byte_offset near 2^63", [](Arg& x) { x.byte_offset = kI64Max - 1; },
        Error({named, "2^63"}));
    add(
        i, "CUDA device, host memory (CPU build: no CUDA; CUDA build: not device memory)",
        [](Arg& x) {
          x.device = {kDLCUDA, 0};
        },
        Error({named, "CUDA"}));
    add(
        i, "device type 8",
        [](Arg& x) {
          x.device = {static_cast<DLDeviceType>(8), 0};
        },
        Error({named, "device type 8"}));
    add(
        i, "device type 1000 (outside the enum)",
        [](Arg& x) {
          const int32_t raw = 1000;  // as a C caller may pass; memcpy: no C++ enum value formed
          std::memcpy(&x.device.device_type, &raw, sizeof(raw));
        },
        Error({named, "device type 1000"}));
    if (a.output && wide >= 0) {
      add(
          i, "overlapping output (stride 0)",
          [wide](Arg& x) {
            x.strides.assign(x.shape.size(), 0);
            int64_t s = 1;
            for (int d = static_cast<int>(x.shape.size()) - 1; d >= 0; --d) {
              x.strides[d] = s;
              s *= x.shape[d];
            }
            x.strides[wide] = 0;
          },
          Error({named, "overlap"}));
    }
    if (!mask && wide >= 0) {
      // Every element twice as far apart as compact: a valid strided view that must work.
      add(
          i, "non-contiguous (strides x2)",
          [](Arg& x) {
            x.strides.assign(x.shape.size(), 1);
            int64_t s = 2;
            for (int d = static_cast<int>(x.shape.size()) - 1; d >= 0; --d) {
              x.strides[d] = s;
              s *= x.shape[d];
            }
          },
          Ok());
    }
    if (!mask && !a.output) {
      for (const auto& [label, value] : {std::pair<const char*, float>{"NaN", std::nanf("")},
                                         {"+Inf", std::numeric_limits<float>::infinity()},
                                         {"-Inf", -std::numeric_limits<float>::infinity()}}) {
        const float v = value;
        add(
            i, label,
            [v](Arg& x) {
              x.poison = v;
              x.has_poison = true;
            },
            a.non_finite == Arg::NonFinite::kRejected           ? Error({named, "NaN or infinity"})
            : a.non_finite == Arg::NonFinite::kRejectedByPruner ? Error({n, "non-finite"})
                                                                : Ok());
      }
    }
  }
}

// ----- Handle misuse and scalar arguments -----

attnkit_status* Fail(const char* what) {
  std::fprintf(stderr, "%s\n", what);
  std::_Exit(4);
}

// Handles used after their free, freed twice, or of another kind: INVALID_ARGUMENT naming the
// argument, or the getters' empty values, and a second free is a no-op (the child would abort or
// crash on a real double free with glibc's checks).
void AddStaleHandleCases(std::vector<Case>* cases) {
  auto add = [&](std::string label, std::function<attnkit_status*()> run, Expect expect) {
    cases->push_back(Case{std::move(label), std::move(run), std::move(expect)});
  };
  const auto ok = [] { return static_cast<attnkit_status*>(nullptr); };
  add(
      "session_attend: freed session",
      [] {
        attnkit_session* s = NewSession();
        attnkit_session_free(s);
        Args a{Float("q", {1, 4, 3, 8}), Float("k", {1, 2, 3, 8}), Float("v", {1, 2, 3, 8}),
               Float("out", {1, 4, 3, 8})};
        Tensors t = Realize(a);
        return attnkit_session_attend(s, 0, t[0], t[1], t[2], t[3]);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_observe: freed session",
      [] {
        attnkit_session* s = NewSessionWithPrompt();
        attnkit_session_free(s);
        Args a{Float("q", {1, 4, 2, 8})};
        Tensors t = Realize(a);
        return attnkit_session_observe(s, 0, t[0], nullptr);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_free twice, then bytes_held of it",
      [] {
        attnkit_session* s = NewSession();
        attnkit_session_free(s);
        attnkit_session_free(s);
        int64_t bytes = 0;
        return attnkit_session_bytes_held(s, &bytes);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_reset_sequence: freed session",
      [] {
        attnkit_session* s = NewSessionWithPrompt();
        attnkit_session_free(s);
        return attnkit_session_reset_sequence(s, 0);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_reset_sequence: sequence out of range",
      [] {
        attnkit_session* s = NewSessionWithPrompt();
        return attnkit_session_reset_sequence(s, 1);
      },
      Error({"sequence: must be in [0, 1), got 1"}));
  add(
      "session_attend_ragged: counts past the call's tokens",
      [] {
        attnkit_session* s = NewSession();
        Args a{Float("q", {1, 4, 3, 8}), Float("k", {1, 2, 3, 8}), Float("v", {1, 2, 3, 8}),
               Float("out", {1, 4, 3, 8})};
        Tensors t = Realize(a);
        const int64_t counts[] = {4};
        return attnkit_session_attend_ragged(s, 0, t[0], t[1], t[2], t[3], counts, 1);
      },
      Error({"new_tokens: sequence 0 brings 4 tokens; expected 0 to 3"}));
  add(
      "session_fork: freed session",
      [] {
        attnkit_session* s = NewSessionWithPrompt();
        attnkit_session_free(s);
        attnkit_session* fork = nullptr;
        return attnkit_session_fork(s, &fork);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_save: freed session",
      [] {
        attnkit_session* s = NewSessionWithPrompt();
        attnkit_session_free(s);
        attnkit_buffer* blob = nullptr;
        return attnkit_session_save(s, &blob);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_load: a blob of another config (2 layers vs 1)",
      [] {
        attnkit_session* two = NewSessionWithPrompt();  // 2 layers
        attnkit_buffer* blob = nullptr;
        attnkit_status_free(attnkit_session_save(two, &blob));
        const char one[] = "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8";
        attnkit_session* s = nullptr;
        attnkit_status_free(attnkit_session_create_from_text(one, sizeof(one) - 1, &s));
        return attnkit_session_load(s, blob->data, blob->size);
      },
      Error({"blob: saved from a session with another configuration", "num_layers"}));
  add(
      "session_load: not a blob",
      [] {
        attnkit_session* s = NewSession();
        const char text[] = "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 1234567890";
        return attnkit_session_load(s, text, sizeof(text));
      },
      Error({"blob: not a saved attnkit session"}));
  add(
      "session_reset: an eviction policy passed as the session",
      [] { return attnkit_session_reset(reinterpret_cast<attnkit_session*>(NewPolicy(kH2O))); },
      Error({"session", "not a live attnkit_session"}));
  add(
      "session_stats: a pointer attnkit never returned",
      [] {
        static int64_t not_a_session[64] = {};
        attnkit_buffer* b = nullptr;
        return attnkit_session_stats(reinterpret_cast<attnkit_session*>(not_a_session), &b);
      },
      Error({"session", "not a live attnkit_session"}));
  add(
      "eviction_policy_reset: freed policy",
      [] {
        attnkit_eviction_policy* p = NewPolicy(kH2O);
        attnkit_eviction_policy_free(p);
        attnkit_eviction_policy_free(p);
        return attnkit_eviction_policy_reset(p);
      },
      Error({"policy", "not a live attnkit_eviction_policy"}));
  add(
      "eviction_policy_needs_keys / per_head: freed policy gives 0",
      [ok] {
        attnkit_eviction_policy* p = NewPolicy(kKNorm);
        if (attnkit_eviction_policy_needs_keys(p) != 1) return Fail("KNORM needs keys");
        attnkit_eviction_policy_free(p);
        if (attnkit_eviction_policy_needs_keys(p) != 0 || attnkit_eviction_policy_per_head(p) != 0)
          return Fail("a freed policy answered");
        return ok();
      },
      Ok());
  add(
      "kept_positions getters: freed kept positions give 0 and NULL",
      [ok] {
        attnkit_eviction_policy* p = NewPolicy(kKNorm);
        Args a{Float("keys", {2, 6, 8})};
        Tensors t = Realize(a);
        const int64_t lengths[] = {6};
        attnkit_kept_positions* kept = nullptr;
        if (attnkit_eviction_policy_select(p, 0, t[0], lengths, 1, &kept) != nullptr)
          return Fail("select failed");
        if (attnkit_kept_positions_num_rows(kept) == 0) return Fail("no rows");
        attnkit_kept_positions_free(kept);
        size_t size = 7;
        if (attnkit_kept_positions_num_rows(kept) != 0 ||
            attnkit_kept_positions_row(kept, 0, &size) != nullptr || size != 0)
          return Fail("freed kept positions answered");
        attnkit_kept_positions_free(kept);
        return ok();
      },
      Ok());
  add(
      "sparse_attention_mask_shape: freed sparse attention",
      [] {
        attnkit_sparse_attention* sp = NewSparse(kSparseTri);
        attnkit_sparse_attention_free(sp);
        attnkit_sparse_attention_free(sp);
        int64_t h = 0, qb = 0, kb = 0;
        return attnkit_sparse_attention_mask_shape(sp, 4, 16, 16, &h, &qb, &kb);
      },
      Error({"sparse", "not a live attnkit_sparse_attention"}));
  add(
      "visual_select: freed pruner",
      [] {
        attnkit_visual_pruner* pr = NewPruner();
        attnkit_visual_pruner_free(pr);
        attnkit_visual_pruner_free(pr);
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
               Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        attnkit_visual_selection* sel = nullptr;
        return attnkit_visual_pruner_select(pr, t[0], t[1], t[2], &sel);
      },
      Error({"pruner", "not a live attnkit_visual_pruner"}));
  add(
      "visual_selection_flat_indices: freed selection",
      [] {
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
               Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        attnkit_visual_selection* sel = nullptr;
        if (attnkit_visual_pruner_select(NewPruner(), t[0], t[1], t[2], &sel) != nullptr)
          return Fail("select failed");
        attnkit_visual_selection_free(sel);
        attnkit_visual_selection_free(sel);
        if (attnkit_visual_selection_num_images(sel) != 0 ||
            attnkit_visual_selection_indices(sel, 0) != nullptr)
          return Fail("a freed selection answered");
        attnkit_int64_array* flat = nullptr;
        return attnkit_visual_selection_flat_indices(sel, &flat);
      },
      Error({"selection", "not a live attnkit_visual_selection"}));
  add(
      "status, buffer and array: freed twice, a freed status reads as UNKNOWN",
      [ok] {
        attnkit_session* s = nullptr;
        attnkit_status* st = attnkit_session_create(nullptr, 3, &s);
        if (attnkit_status_get_code(st) != ATTNKIT_INVALID_ARGUMENT) return Fail("no error");
        attnkit_status_free(st);
        if (attnkit_status_get_code(st) != ATTNKIT_UNKNOWN ||
            std::strstr(attnkit_status_get_message(st), "not a live attnkit_status") == nullptr)
          return Fail("a freed status answered");
        attnkit_status_free(st);
        attnkit_buffer* b = nullptr;
        if (attnkit_session_stats(NewSession(), &b) != nullptr) return Fail("stats failed");
        attnkit_buffer_free(b);
        attnkit_buffer_free(b);
        attnkit_int64_array* positions = nullptr;
        if (attnkit_session_positions(NewSession(), 0, 0, 0, &positions) != nullptr)
          return Fail("positions failed");
        attnkit_int64_array_free(positions);
        attnkit_int64_array_free(positions);
        return ok();
      },
      Ok());
}

void AddMisuseCases(std::vector<Case>* cases) {
  auto add = [&](std::string label, std::function<attnkit_status*()> run, Expect expect) {
    cases->push_back(Case{std::move(label), std::move(run), std::move(expect)});
  };
  // Session.
  add(
      "session_create: NULL out",
      [] {
        return attnkit_session_create_from_text(kSessionConfig, strlen(kSessionConfig), nullptr);
      },
      Error({"out", "NULL"}));
  add(
      "session_create: NULL config, size 3",
      [] {
        attnkit_session* s;
        return attnkit_session_create(nullptr, 3, &s);
      },
      Error({"config", "NULL"}));
  add(
      "session_create: garbage bytes",
      [] {
        attnkit_session* s;
        const char bytes[] = "\xff\xff\xff\xff\x0f";
        return attnkit_session_create(bytes, 5, &s);
      },
      Error({}, ATTNKIT_UNKNOWN));
  for (const char* field : {"num_layers", "num_heads", "num_kv_heads", "batch_size"}) {
    const std::string f = field;
    add(
        "session_create: " + f + " 100000000",
        [f] {
          std::string text = "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8";
          const size_t at = text.find(f + ": ");
          if (at != std::string::npos) {
            text.replace(at, text.find(' ', at + f.size() + 2) - at, f + ": 100000000");
          } else {
            text += " " + f + ": 100000000";
          }
          attnkit_session* s = nullptr;
          return attnkit_session_create_from_text(text.data(), text.size(), &s);
        },
        f == "num_kv_heads" ? Error({f, "must divide num_heads"}) : Error({f, "at most"}));
  }
  add(
      "session_attend: NULL session",
      [] { return attnkit_session_attend(nullptr, 0, nullptr, nullptr, nullptr, nullptr); },
      Error({"session", "NULL"}));
  auto attend = [](attnkit_session* s, int layer, int64_t tokens) {
    Args a{Float("q", {1, 4, tokens, 8}), Float("k", {1, 2, tokens, 8}),
           Float("v", {1, 2, tokens, 8}), Float("out", {1, 4, tokens, 8})};
    Tensors t = Realize(a);
    return attnkit_session_attend(s, layer, t[0], t[1], t[2], t[3]);
  };
  add(
      "session_attend: layer 2 of 2", [attend] { return attend(NewSession(), 2, 3); },
      Error({"layer", "[0, 2)", "2"}));
  add(
      "session_attend: layer -1", [attend] { return attend(NewSession(), -1, 3); },
      Error({"layer", "[0, 2)", "-1"}));
  add(
      "session_attend: layer 1 before layer 0 (step 0)",
      [attend] { return attend(NewSession(), 1, 3); },
      Error({"layer 1", "step 0", "before layer 0"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_attend: layer 0 twice (step 1 before layer 1 finished step 0)",
      [attend] {
        attnkit_session* s = NewSession();
        if (attend(s, 0, 3) != nullptr) return Fail("first call failed");
        return attend(s, 0, 1);
      },
      Error({"layer 0", "step 1", "layer 1", "finished step 0"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_attend: decode step first (one token, no prompt)",
      [attend] {
        attnkit_session* s = NewSession();
        if (attend(s, 0, 1) != nullptr) return Fail("layer 0 failed");
        return attend(s, 1, 1);
      },
      Ok());
  add(
      "session_attend: after reset, layer 1 first",
      [attend] {
        attnkit_session* s = NewSession();
        if (attend(s, 0, 3) != nullptr || attend(s, 1, 3) != nullptr) return Fail("step failed");
        if (attnkit_session_reset(s) != nullptr) return Fail("reset failed");
        return attend(s, 1, 1);
      },
      Error({"layer 1", "step 0", "before layer 0"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_observe: NULL session",
      [] { return attnkit_session_observe(nullptr, 0, nullptr, nullptr); },
      Error({"session", "NULL"}));
  auto observe_session = [](attnkit_session* s, int layer, int64_t tokens, int64_t heads = 4,
                            int64_t out_tokens = -1) {
    Args a{Float("q", {1, heads, tokens, 8}),
           Float("out", {1, heads, out_tokens < 0 ? tokens : out_tokens, 8})};
    Tensors t = Realize(a);
    return attnkit_session_observe(s, layer, t[0], t[1]);
  };
  add(
      "session_observe: NULL out (no output wanted)",
      [] {
        Args a{Float("q", {1, 4, 2, 8})};
        Tensors t = Realize(a);
        return attnkit_session_observe(NewSessionWithPrompt(), 0, t[0], nullptr);
      },
      Ok());
  add(
      "session_observe: layer 2 of 2",
      [observe_session] { return observe_session(NewSessionWithPrompt(), 2, 2); },
      Error({"layer", "[0, 2)", "2"}));
  add(
      "session_observe: layer -1",
      [observe_session] { return observe_session(NewSessionWithPrompt(), -1, 2); },
      Error({"layer", "[0, 2)", "-1"}));
  add(
      "session_observe: layer 1 before layer 0 (pass 0)",
      [observe_session] { return observe_session(NewSessionWithPrompt(), 1, 2); },
      Error({"layer 1", "observe pass 0", "before layer 0"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_observe: layer 0 twice (pass 1 before layer 1 finished pass 0)",
      [observe_session] {
        attnkit_session* s = NewSessionWithPrompt();
        if (observe_session(s, 0, 2) != nullptr) return Fail("first observe failed");
        return observe_session(s, 0, 2);
      },
      Error({"layer 0", "observe pass 1", "layer 1", "finished observe pass 0"},
            ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_observe: during a step (layer 0 attended, layer 1 not)",
      [observe_session, attend] {
        attnkit_session* s = NewSessionWithPrompt();
        if (attend(s, 0, 1) != nullptr) return Fail("attend failed");
        return observe_session(s, 0, 2);
      },
      Error({"layer", "partway", "observe between steps"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_attend: during an observe pass",
      [observe_session, attend] {
        attnkit_session* s = NewSessionWithPrompt();
        if (observe_session(s, 0, 2) != nullptr) return Fail("observe failed");
        return attend(s, 0, 1);
      },
      Error({"layer", "observe pass 0", "partway"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_observe: empty cache (no prompt)",
      [observe_session] { return observe_session(NewSession(), 0, 2); },
      Error({"layer", "holds no token", "attend a prompt first"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "session_observe: q with 3 heads",
      [observe_session] { return observe_session(NewSessionWithPrompt(), 0, 2, 3); },
      Error({"q:", "num_heads=4"}));
  add(
      "session_observe: out of 3 tokens for q of 2",
      [observe_session] { return observe_session(NewSessionWithPrompt(), 0, 2, 4, 3); },
      Error({"out:", "[1, 4, 2, 8]", "the shape of q"}));
  add(
      "session_stats: NULL session",
      [] {
        attnkit_buffer* b;
        return attnkit_session_stats(nullptr, &b);
      },
      Error({"session", "NULL"}));
  add(
      "session_stats: NULL out", [] { return attnkit_session_stats(NewSession(), nullptr); },
      Error({"out", "NULL"}));
  add(
      "session_bytes_held: NULL session",
      [] {
        int64_t b;
        return attnkit_session_bytes_held(nullptr, &b);
      },
      Error({"session", "NULL"}));
  add(
      "session_bytes_held: NULL out",
      [] { return attnkit_session_bytes_held(NewSession(), nullptr); }, Error({"out", "NULL"}));
  add(
      "session_positions: NULL session",
      [] {
        attnkit_int64_array* a;
        return attnkit_session_positions(nullptr, 0, 0, 0, &a);
      },
      Error({"session", "NULL"}));
  for (const auto& [label, layer, seq, head, field] :
       {std::tuple<const char*, int, int, int, const char*>{"layer 2", 2, 0, 0, "layer"},
        {"layer -1", -1, 0, 0, "layer"},
        {"sequence 1", 0, 1, 0, "sequence"},
        {"kv_head 2", 0, 0, 2, "kv_head"},
        {"kv_head -1", 0, 0, -1, "kv_head"}}) {
    const int l = layer, s = seq, h = head;
    add(
        std::string("session_positions: ") + label,
        [l, s, h] {
          attnkit_int64_array* a = nullptr;
          return attnkit_session_positions(NewSession(), l, s, h, &a);
        },
        Error({field}));
  }
  add(
      "session_next_position: sequence 1 of 1",
      [] {
        int64_t p;
        return attnkit_session_next_position(NewSession(), 1, &p);
      },
      Error({"sequence"}));
  add(
      "session_next_position: NULL out",
      [] { return attnkit_session_next_position(NewSession(), 0, nullptr); },
      Error({"out", "NULL"}));
  add(
      "session_reset: NULL session", [] { return attnkit_session_reset(nullptr); },
      Error({"session", "NULL"}));

  // Eviction policy.
  add(
      "eviction_policy_create: num_layers 100000000",
      [] {
        attnkit_eviction_policy* p = nullptr;
        return attnkit_eviction_policy_create_from_text(kH2O, strlen(kH2O), 100000000, 4, 2, &p);
      },
      Error({"num_layers", "at most"}));
  add(
      "eviction_policy_create: num_heads 100000000",
      [] {
        attnkit_eviction_policy* p = nullptr;
        return attnkit_eviction_policy_create_from_text(kH2O, strlen(kH2O), 2, 100000000, 2, &p);
      },
      Error({"num_heads", "at most"}));
  add(
      "eviction_policy_create: cache_merging needs a session",
      [] {
        const std::string text = std::string(kH2O) + " cache_merging { merge_budget: 4 }";
        attnkit_eviction_policy* p = nullptr;
        return attnkit_eviction_policy_create_from_text(text.data(), text.size(), 2, 4, 2, &p);
      },
      Error({"cache_merging", "session"}));
  add(
      "eviction_policy_create: NULL out",
      [] { return attnkit_eviction_policy_create_from_text(kH2O, strlen(kH2O), 2, 4, 2, nullptr); },
      Error({"out", "NULL"}));
  add(
      "eviction_policy_observe: NULL policy",
      [] { return attnkit_eviction_policy_observe(nullptr, 0, nullptr, nullptr, 0); },
      Error({"policy", "NULL"}));
  auto observe = [](attnkit_eviction_policy* p, int layer, std::vector<int64_t> lengths,
                    int64_t keys) {
    Args a{Float("attention", {1, 4, 2, keys})};
    Tensors t = Realize(a);
    return attnkit_eviction_policy_observe(p, layer, t[0], lengths.data(), lengths.size());
  };
  add(
      "eviction_policy_observe: layer 2 of 2",
      [observe] { return observe(NewPolicy(kH2O), 2, {6}, 6); }, Error({"layer", "[0, 2)"}));
  add(
      "eviction_policy_observe: lengths NULL with num_lengths 1",
      [] {
        Args a{Float("attention", {1, 4, 2, 6})};
        Tensors t = Realize(a);
        return attnkit_eviction_policy_observe(NewPolicy(kH2O), 0, t[0], nullptr, 1);
      },
      Error({"lengths", "NULL"}));
  add(
      "eviction_policy_observe: length 100 > 6 cache tokens of attention",
      [observe] { return observe(NewPolicy(kH2O), 0, {100}, 6); }, Error({"lengths", "100", "6"}));
  add(
      "eviction_policy_observe: negative length",
      [observe] { return observe(NewPolicy(kH2O), 0, {-1}, 6); }, Error({"lengths"}));
  // Attention of `shape` observed by a fresh H2O policy (layer 0) with the first `count` lengths.
  auto observe_shaped = [](std::vector<int64_t> shape, std::vector<int64_t> lengths, size_t count) {
    Args a{Float("attention", std::move(shape))};
    Tensors t = Realize(a);
    return attnkit_eviction_policy_observe(NewPolicy(kH2O), 0, t[0], lengths.data(), count);
  };
  add(
      "eviction_policy_observe: heads 3 (num_heads 4)",
      [observe_shaped] {
        return observe_shaped({1, 3, 2, 6}, {6}, 1);
      },
      Error({"attention", "4"}));
  // Found by an independent re-run of the check: a count past the lengths array reached a
  // std::vector allocation (INTERNAL), zero cache tokens or a zero head_dim were accepted, and keys
  // of the wrong kv-head count were read (copied, or past a short buffer) before being checked.
  const size_t kHugeCount = std::numeric_limits<size_t>::max();
  add(
      "eviction_policy_observe: num_lengths SIZE_MAX",
      [observe_shaped] {
        return observe_shaped({1, 4, 2, 6}, {6, 6}, kHugeCount);
      },
      Error({"lengths: expected 1 or num_kv_heads (2) entries, got 18446744073709551615"}));
  add(
      "eviction_policy_select: num_lengths SIZE_MAX",
      [] {
        attnkit_kept_positions* k = nullptr;
        const int64_t lengths[] = {6, 6};
        return attnkit_eviction_policy_select(NewPolicy(kH2O), 0, nullptr, lengths, kHugeCount, &k);
      },
      Error({"lengths: expected 1 or num_kv_heads (2) entries"}));
  add(
      "eviction_policy_observe: zero cache tokens",
      [observe_shaped] {
        return observe_shaped({1, 4, 6, 0}, {0}, 1);
      },
      Error({"attention", "cache tokens >= 1", "[1, 4, 6, 0]"}));
  add(
      "eviction_policy_select: KNORM keys with head_dim 0",
      [] {
        Args a{Float("keys", {2, 6, 0})};
        Tensors t = Realize(a);
        const int64_t len = 6;
        attnkit_kept_positions* k = nullptr;
        return attnkit_eviction_policy_select(NewPolicy(kKNorm), 0, t[0], &len, 1, &k);
      },
      Error({"keys", "head_dim >= 1", "[2, 6, 0]"}));
  add(
      "eviction_policy_select: keys of 2^40 kv heads refused before a copy",
      [] {
        Args a{Float("keys", {int64_t{1} << 40, 6, 8})};
        Tensors t = Realize(a);
        const int64_t len = 6;
        attnkit_kept_positions* k = nullptr;
        return attnkit_eviction_policy_select(NewPolicy(kKNorm), 0, t[0], &len, 1, &k);
      },
      Error({"keys", "num_kv_heads=2"}, ATTNKIT_INVALID_ARGUMENT));
  add(
      "eviction_policy_select: keys with room for more tokens than the lengths",
      [] {
        // [2, 10, 8] with tokens 6..9 NaN: only the 6 tokens the length covers are read.
        Args a{Float("keys", {2, 10, 8})};
        Tensors t = Realize(a);
        float* data = static_cast<float*>(t[0]->data);
        for (int h = 0; h < 2; ++h) {
          for (int i = 6 * 8; i < 10 * 8; ++i) data[h * 80 + i] = std::nanf("");
        }
        const int64_t len = 6;
        attnkit_kept_positions* k = nullptr;
        attnkit_eviction_policy* p = NewPolicy(kKNorm);
        attnkit_status* st = attnkit_eviction_policy_select(p, 0, t[0], &len, 1, &k);
        if (st != nullptr) return st;
        size_t kept = 0;
        const int64_t* row = attnkit_kept_positions_row(k, 0, &kept);
        const bool evicted = row != nullptr && kept == 4;
        attnkit_kept_positions_free(k);
        return evicted ? st : Fail("expected 4 of 6 tokens kept");
      },
      Ok());
  add(
      "eviction_policy_select: NULL policy",
      [] {
        attnkit_kept_positions* k;
        const int64_t len = 6;
        return attnkit_eviction_policy_select(nullptr, 0, nullptr, &len, 1, &k);
      },
      Error({"policy", "NULL"}));
  add(
      "eviction_policy_select: NULL out",
      [] {
        const int64_t len = 6;
        return attnkit_eviction_policy_select(NewPolicy(kH2O), 0, nullptr, &len, 1, nullptr);
      },
      Error({"out", "NULL"}));
  add(
      "eviction_policy_select: before any observe (over budget)",
      [] {
        attnkit_kept_positions* k = nullptr;
        const int64_t len = 6;
        return attnkit_eviction_policy_select(NewPolicy(kSnapKV), 0, nullptr, &len, 1, &k);
      },
      Error({"observe"}, ATTNKIT_FAILED_PRECONDITION));
  add(
      "eviction_policy_select: observed 6 tokens, select 9",
      [observe] {
        attnkit_eviction_policy* p = NewPolicy(kH2O);
        if (observe(p, 0, {6}, 6) != nullptr) return Fail("observe failed");
        attnkit_kept_positions* k = nullptr;
        const int64_t len = 9;
        return attnkit_eviction_policy_select(p, 0, nullptr, &len, 1, &k);
      },
      Error({"lengths", "9"}, ATTNKIT_UNKNOWN));
  add(
      "eviction_policy_select: keys shorter than lengths",
      [] {
        Args a{Float("keys", {2, 4, 8})};
        Tensors t = Realize(a);
        attnkit_kept_positions* k = nullptr;
        const int64_t len = 6;
        return attnkit_eviction_policy_select(NewPolicy(kKNorm), 0, t[0], &len, 1, &k);
      },
      Error({"keys"}));
  add(
      "eviction_policy_select: KNORM without keys",
      [] {
        attnkit_kept_positions* k = nullptr;
        const int64_t len = 6;
        return attnkit_eviction_policy_select(NewPolicy(kKNorm), 0, nullptr, &len, 1, &k);
      },
      Error({"keys"}));
  add(
      "eviction_policy_layer_budget: layer 5",
      [] {
        int64_t b;
        return attnkit_eviction_policy_layer_budget(NewPolicy(kH2O), 5, &b);
      },
      Error({"layer", "[0, 2)"}));
  add(
      "eviction_policy_layer_budget: NULL policy",
      [] {
        int64_t b;
        return attnkit_eviction_policy_layer_budget(nullptr, 0, &b);
      },
      Error({"policy", "NULL"}));
  add(
      "eviction_policy_reset: NULL policy", [] { return attnkit_eviction_policy_reset(nullptr); },
      Error({"policy", "NULL"}));
  add(
      "eviction getters: NULL handles give 0 / NULL",
      [] {
        size_t size = 7;
        if (attnkit_eviction_policy_needs_keys(nullptr) != 0 ||
            attnkit_eviction_policy_per_head(nullptr) != 0 ||
            attnkit_kept_positions_num_rows(nullptr) != 0 ||
            attnkit_kept_positions_row(nullptr, 0, &size) != nullptr || size != 0) {
          return Fail("a getter on NULL returned something");
        }
        attnkit_kept_positions_free(nullptr);
        attnkit_eviction_policy_free(nullptr);
        return static_cast<attnkit_status*>(nullptr);
      },
      Ok());

  // Sparse attention.
  add(
      "sparse_mask_shape: NULL sparse",
      [] {
        int64_t a, b, c;
        return attnkit_sparse_attention_mask_shape(nullptr, 4, 8, 8, &a, &b, &c);
      },
      Error({"sparse", "NULL"}));
  add(
      "sparse_mask_shape: NULL outputs",
      [] {
        return attnkit_sparse_attention_mask_shape(NewSparse(kSparseDense), 4, 8, 8, nullptr,
                                                   nullptr, nullptr);
      },
      Error({"mask_heads", "NULL"}));
  for (const auto& [label, heads, q, k, frag] :
       {std::tuple<const char*, int64_t, int64_t, int64_t, const char*>{"num_heads 0", 0, 8, 8,
                                                                        "num_heads"},
        {"q_len > k_len", 4, 9, 8, "q_len"},
        {"negative k_len", 4, 0, -8, "k_len"},
        {"q_len = k_len = 2^63-1", 4, kI64Max, kI64Max, "mask"},
        {"num_heads 2^62 (XATTENTION per-head mask)", int64_t{1} << 62, 1 << 20, 1 << 20,
         "num_heads: 4611686018427387904 gives a mask"}}) {
    const int64_t h = heads, ql = q, kl = k;
    add(
        std::string("sparse_mask_shape: ") + label,
        [h, ql, kl] {
          const char per_head[] =
              "mode: XATTENTION block_size: 4 xattention { stride: 2 head_aggregation: PER_HEAD }";
          int64_t a = 0, b = 0, c = 0;
          return attnkit_sparse_attention_mask_shape(NewSparse(per_head), h, ql, kl, &a, &b, &c);
        },
        Error({frag}));
  }
  add(
      "sparse_mask_shape: k_len 2^63-1 gives exact block counts",
      [] {
        int64_t heads = 0, q_blocks = 0, k_blocks = 0;
        attnkit_status* st = attnkit_sparse_attention_mask_shape(
            NewSparse(kSparseDense), 4, 1, kI64Max, &heads, &q_blocks, &k_blocks);
        if (st != nullptr) return st;
        if (heads != 1 || q_blocks != 1 || k_blocks != kI64Max / 4 + 1) {
          return Fail("wrong block counts");
        }
        return st;
      },
      Ok());
  add(
      "sparse_attention: out aliases q",
      [] {
        Args a{Float("q", {1, 4, 8, 8}), Float("k", {1, 2, 8, 8}), Float("v", {1, 2, 8, 8}),
               Float("mask", {1, 1, 2, 2})};
        a[3].elem = Elem::kMask;
        a[3].dtype = {kDLUInt, 8, 1};
        Tensors t = Realize(a);
        return attnkit_sparse_attention_attention(NewSparse(kSparseDense), t[0], t[1], t[2], t[3],
                                                  0.0, t[0]);
      },
      Error({"out", "share memory"}));
  add(
      "sparse_prefill: scale NaN",
      [] {
        Args a{Float("q", {1, 4, 8, 8}), Float("k", {1, 2, 8, 8}), Float("v", {1, 2, 8, 8}),
               Float("out", {1, 4, 8, 8})};
        Tensors t = Realize(a);
        return attnkit_sparse_attention_prefill(NewSparse(kSparseDense), t[0], t[1], t[2],
                                                std::nan(""), t[3], nullptr);
      },
      Error({"scale", "finite"}));
  add(
      "sparse_prefill: NULL sparse",
      [] {
        return attnkit_sparse_attention_prefill(nullptr, nullptr, nullptr, nullptr, 0, nullptr,
                                                nullptr);
      },
      Error({"sparse", "NULL"}));
  add(
      "sparse_build_mask: NULL sparse",
      [] { return attnkit_sparse_attention_build_mask(nullptr, nullptr, nullptr, nullptr); },
      Error({"sparse", "NULL"}));
  add(
      "sparse_attention: NULL sparse",
      [] {
        return attnkit_sparse_attention_attention(nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                                                  nullptr);
      },
      Error({"sparse", "NULL"}));
  add(
      "sparse_create: NULL out",
      [] {
        return attnkit_sparse_attention_create_from_text(kSparseDense, strlen(kSparseDense),
                                                         nullptr);
      },
      Error({"out", "NULL"}));

  // Visual pruning.
  add(
      "visual_select: NULL pruner",
      [] {
        attnkit_visual_selection* s;
        return attnkit_visual_pruner_select(nullptr, nullptr, nullptr, nullptr, &s);
      },
      Error({"pruner", "NULL"}));
  add(
      "visual_select: NULL out",
      [] {
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
               Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        return attnkit_visual_pruner_select(NewPruner(), t[0], t[1], t[2], nullptr);
      },
      Error({"out", "NULL"}));
  auto ragged = [](std::vector<int64_t> sizes, bool null_sizes) {
    Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
           Float("text_embeds", {3, 4})};
    Tensors t = Realize(a);
    attnkit_visual_selection* sel = nullptr;
    attnkit_status* st = attnkit_visual_pruner_select_ragged(
        NewPruner(), t[0], t[1], null_sizes ? nullptr : (sizes.empty() ? &kI64Max : sizes.data()),
        sizes.size(), t[2], &sel);
    attnkit_visual_selection_free(sel);
    return st;
  };
  add(
      "visual_select_ragged: num_images SIZE_MAX (two sizes given)",
      [] {
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
               Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        const int64_t sizes[] = {2, 4};
        attnkit_visual_selection* sel = nullptr;
        return attnkit_visual_pruner_select_ragged(NewPruner(), t[0], t[1], sizes,
                                                   std::numeric_limits<size_t>::max(), t[2], &sel);
      },
      Error({"num_images: 18446744073709551615 images cannot split the 6 rows of image_features"}));
  add(
      "visual_select_ragged: image_sizes NULL",
      [ragged] {
        return ragged({2, 4}, true);
      },
      Error({"image_sizes", "NULL"}));
  add(
      "visual_select_ragged: num_images 0", [ragged] { return ragged({}, false); },
      Error({"num_images"}));
  add(
      "visual_select_ragged: sizes sum to 5, 6 rows",
      [ragged] {
        return ragged({2, 3}, false);
      },
      Error({"image_sizes", "6"}));
  add(
      "visual_select_ragged: size 0",
      [ragged] {
        return ragged({6, 0}, false);
      },
      Error({"image_sizes[1]", ">= 1"}));
  add(
      "visual_select_ragged: sizes wrap int64 (2^63-1 + 7)",
      [ragged] {
        return ragged({kI64Max, 7}, false);
      },
      Error({"image_sizes"}));
  add(
      "visual_select: CDPRUNER without image_embeds",
      [] {
        Args a{Float("image_features", {6, 8}), Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        attnkit_visual_selection* sel = nullptr;
        return attnkit_visual_pruner_select(NewPruner(), nullptr, t[0], t[1], &sel);
      },
      Error({"image_embeds", "CDPRUNER"}));
  add(
      "visual_select: CDPRUNER without text_embeds",
      [] {
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8})};
        Tensors t = Realize(a);
        attnkit_visual_selection* sel = nullptr;
        return attnkit_visual_pruner_select(NewPruner(), t[0], t[1], nullptr, &sel);
      },
      Error({"text_embeds", "CDPRUNER"}));
  add(
      "visual getters: NULL handles give 0 / NULL",
      [] {
        if (attnkit_visual_selection_num_images(nullptr) != 0 ||
            attnkit_visual_selection_image_size(nullptr, 0) != 0 ||
            attnkit_visual_selection_num_kept(nullptr, 0) != 0 ||
            attnkit_visual_selection_indices(nullptr, 0) != nullptr) {
          return Fail("a getter on NULL returned something");
        }
        attnkit_visual_selection_free(nullptr);
        attnkit_visual_pruner_free(nullptr);
        return static_cast<attnkit_status*>(nullptr);
      },
      Ok());
  add(
      "visual_selection_flat_indices: NULL selection",
      [] {
        attnkit_int64_array* a;
        return attnkit_visual_selection_flat_indices(nullptr, &a);
      },
      Error({"selection", "NULL"}));
  add(
      "visual_selection_kept_positions: NULL selection",
      [] {
        attnkit_int64_array* a;
        const uint8_t mask[] = {1};
        return attnkit_visual_selection_kept_positions(nullptr, mask, 1, &a);
      },
      Error({"selection", "NULL"}));
  add(
      "visual_selection_kept_positions: NULL mask, prompt_length 6",
      [] {
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
               Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        attnkit_visual_selection* sel = nullptr;
        if (attnkit_visual_pruner_select(NewPruner(), t[0], t[1], t[2], &sel) != nullptr)
          return Fail("select failed");
        attnkit_int64_array* arr = nullptr;
        return attnkit_visual_selection_kept_positions(sel, nullptr, 6, &arr);
      },
      Error({"image_token_mask", "NULL"}));
  add(
      "visual_selection_kept_positions: 5 image tokens in the mask, 6 in the selection",
      [] {
        Args a{Float("image_embeds", {6, 4}), Float("image_features", {6, 8}),
               Float("text_embeds", {3, 4})};
        Tensors t = Realize(a);
        attnkit_visual_selection* sel = nullptr;
        if (attnkit_visual_pruner_select(NewPruner(), t[0], t[1], t[2], &sel) != nullptr)
          return Fail("select failed");
        const uint8_t mask[] = {0, 1, 1, 1, 1, 1, 0};
        attnkit_int64_array* arr = nullptr;
        return attnkit_visual_selection_kept_positions(sel, mask, 7, &arr);
      },
      Error({"image_token_mask", "6"}));

  // Config.
  add(
      "config_validate: kind 99",
      [] { return attnkit_config_validate(static_cast<attnkit_config_kind>(99), "", 0); },
      Error({"kind", "99"}));
  add(
      "config_validate: NULL data, size 4",
      [] { return attnkit_config_validate(ATTNKIT_CONFIG_SESSION, nullptr, 4); },
      Error({"data", "NULL"}));
  add(
      "config_text_to_binary: NULL out",
      [] { return attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, "", 0, nullptr); },
      Error({"out", "NULL"}));
  add(
      "config_binary_to_text: garbage",
      [] {
        attnkit_buffer* b = nullptr;
        return attnkit_config_binary_to_text(ATTNKIT_CONFIG_EVICTION, "\xff\xff\xff", 3, &b);
      },
      Error({}, ATTNKIT_UNKNOWN));
  add(
      "config_validate_text: num_layers 5000",
      [] {
        const char t[] = "num_layers: 5000 num_heads: 4 num_kv_heads: 2 head_dim: 8";
        return attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, t, strlen(t));
      },
      Error({"num_layers", "at most 1024", "5000"}));
  add(
      "config_validate_text: batch_size 5000",
      [] {
        const char t[] = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 8 batch_size: 5000";
        return attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, t, strlen(t));
      },
      Error({"batch_size", "at most 4096", "5000"}));
  add(
      "tensor_check: NULL name and tensor",
      [] { return attnkit_tensor_check(nullptr, nullptr, 2, 0); }, Error({"tensor", "NULL"}));
  add(
      "status getters: NULL status",
      [] {
        if (attnkit_status_get_code(nullptr) != ATTNKIT_OK ||
            std::strcmp(attnkit_status_get_message(nullptr), "") != 0) {
          return Fail("NULL status is not OK/\"\"");
        }
        attnkit_status_free(nullptr);
        attnkit_buffer_free(nullptr);
        attnkit_int64_array_free(nullptr);
        return static_cast<attnkit_status*>(nullptr);
      },
      Ok());
  AddStaleHandleCases(cases);
}

struct Outcome {
  bool passed = false;
  std::string detail;
};

// Runs one case in a child process; the child reports the status through a pipe.
// Runs `child` in a forked child (with a 60 s alarm: a hang is a failure too) and returns what it
// wrote through the pipe, with the child's wait status. The parent calls nothing of the library.
struct ChildRun {
  bool started = false;
  std::string report;
  int wstatus = 0;
};
ChildRun RunInChild(const std::function<std::string()>& child) {
  ChildRun run;
  int fds[2];
  if (pipe(fds) != 0) return run;
  const pid_t pid = fork();
  if (pid < 0) return run;
  if (pid == 0) {
    close(fds[0]);
    alarm(60);
    const std::string report = child();
    ssize_t ignored = write(fds[1], report.data(), report.size());
    (void)ignored;
    close(fds[1]);
    std::_Exit(0);
  }
  close(fds[1]);
  char buffer[4096];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) run.report.append(buffer, n);
  close(fds[0]);
  waitpid(pid, &run.wstatus, 0);
  run.started = true;
  return run;
}

Outcome RunIsolated(const Case& c) {
  const ChildRun run = RunInChild([&c] {
    attnkit_status* st = c.run();
    const attnkit_status_code code = attnkit_status_get_code(st);
    return std::to_string(static_cast<int>(code)) + " " + attnkit_status_get_message(st);
  });
  if (!run.started) return {false, "pipe or fork failed"};
  const std::string& report = run.report;
  const int wstatus = run.wstatus;
  if (WIFSIGNALED(wstatus)) {
    return {false, std::string("child died of signal ") + strsignal(WTERMSIG(wstatus)) +
                       (WTERMSIG(wstatus) == SIGALRM ? " (hang)" : "")};
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return {false, "child exited with " + std::to_string(WEXITSTATUS(wstatus)) +
                       " (setup failed, see stderr)"};
  }
  const size_t space = report.find(' ');
  const int code = std::atoi(report.substr(0, space).c_str());
  const std::string message = space == std::string::npos ? "" : report.substr(space + 1);
  const std::string got = "code " + std::to_string(code) + ": \"" + message + "\"";
  const Expect& e = c.expect;
  if (e.want == Want::kOk) return {code == ATTNKIT_OK, got};
  if (e.want == Want::kNoCrash) {
    if (code == ATTNKIT_OK) return {true, got};
    return {code != ATTNKIT_INTERNAL && !message.empty(), got};
  }
  if (code == ATTNKIT_OK || code == ATTNKIT_INTERNAL) return {false, got};
  if (e.code != ATTNKIT_UNKNOWN && code != e.code) return {false, got + " (wrong code)"};
  for (const std::string& f : e.fragments) {
    if (message.find(f) == std::string::npos) return {false, got + " (missing \"" + f + "\")"};
  }
  return {true, got};
}

// The address space this process maps now, from /proc/self/statm (0 when unreadable).
int64_t MappedBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0;
  if (!(statm >> pages)) return 0;
  return pages * sysconf(_SC_PAGESIZE);
}

// Out of memory inside ATen: in a forked child whose address space is limited (RLIMIT_AS) to what
// it maps plus 4 MiB, an eviction policy observes attention weights of 64 MiB, whose finiteness
// check and head sum need ATen allocations of 16 MiB each. The call must return
// RESOURCE_EXHAUSTED naming the entry point (it was INTERNAL with ATen's allocator message), and
// once the limit is lifted the same call on the same policy succeeds (the failed one changed
// nothing). The thread pool is created by a small call before the limit.
TEST(BadInputMatrix, AtenOutOfMemoryIsResourceExhausted) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's allocator does not return failed allocations under RLIMIT_AS";
#else
  const ChildRun run = RunInChild([] {
    std::string report;
    auto status_text = [](attnkit_status* st) {
      std::string text = std::to_string(static_cast<int>(attnkit_status_get_code(st))) + " " +
                         attnkit_status_get_message(st);
      attnkit_status_free(st);
      return text;
    };
    attnkit_eviction_policy* warm = NewPolicy(kH2O);
    attnkit_eviction_policy* policy = NewPolicy(kH2O);
    std::vector<float> small(4 * 4, 0.25f);
    int64_t small_shape[] = {1, 4, 1, 4};
    DLTensor small_t{small.data(), {kDLCPU, 0}, 4, {kDLFloat, 32, 1}, small_shape, nullptr, 0};
    const int64_t small_len[] = {4};
    report +=
        "warm " + status_text(attnkit_eviction_policy_observe(warm, 0, &small_t, small_len, 1));
    const int64_t n = int64_t{1} << 22;
    std::vector<float> big(static_cast<size_t>(4 * n), 1.0f / static_cast<float>(n));
    int64_t big_shape[] = {1, 4, 1, n};
    DLTensor big_t{big.data(), {kDLCPU, 0}, 4, {kDLFloat, 32, 1}, big_shape, nullptr, 0};
    const int64_t big_len[] = {n};
    rlimit old_limit{};
    getrlimit(RLIMIT_AS, &old_limit);
    rlimit tight = old_limit;
    tight.rlim_cur = static_cast<rlim_t>(MappedBytes() + (int64_t{4} << 20));
    setrlimit(RLIMIT_AS, &tight);
    report +=
        "\nlimited " + status_text(attnkit_eviction_policy_observe(policy, 0, &big_t, big_len, 1));
    setrlimit(RLIMIT_AS, &old_limit);
    report +=
        "\nlifted " + status_text(attnkit_eviction_policy_observe(policy, 0, &big_t, big_len, 1));
    return report;
  });
  ASSERT_TRUE(run.started) << "pipe or fork failed";
  const std::string& report = run.report;
  ASSERT_TRUE(WIFEXITED(run.wstatus) && WEXITSTATUS(run.wstatus) == 0)
      << "the child crashed, hung or failed its setup; it reported:\n"
      << report;
  std::printf("%s\n", report.c_str());
  const std::string limited = std::to_string(static_cast<int>(ATTNKIT_RESOURCE_EXHAUSTED)) +
                              " attnkit_eviction_policy_observe: out of memory";
  EXPECT_NE(report.find("warm 0 "), std::string::npos) << report;
  EXPECT_NE(report.find("\nlimited " + limited), std::string::npos) << report;
  EXPECT_NE(report.find("\nlifted 0 "), std::string::npos) << report;
#endif
}

TEST(BadInputMatrix, EveryCaseReturnsAStatusNamingTheArgument) {
  std::vector<Case> cases;
  for (const EntryPoint& ep : EntryPoints()) AddTensorCases(ep, &cases);
  const size_t tensor_cases = cases.size();
  AddMisuseCases(&cases);
  const char* filter = std::getenv("ATTNKIT_BAD_INPUT_FILTER");
  const bool verbose = std::getenv("ATTNKIT_BAD_INPUT_VERBOSE") != nullptr;
  int run = 0, failed = 0, crashed = 0;
  for (const Case& c : cases) {
    if (filter != nullptr && c.label.find(filter) == std::string::npos) continue;
    ++run;
    const Outcome o = RunIsolated(c);
    if (!o.passed) {
      ++failed;
      if (o.detail.rfind("child", 0) == 0) ++crashed;
      ADD_FAILURE() << c.label << ": " << o.detail;
    } else if (verbose) {
      std::printf("ok   %s: %s\n", c.label.c_str(), o.detail.c_str());
    }
  }
  std::printf(
      "bad-input matrix: %d cases run (%zu tensor-argument, %zu misuse), %d failed, "
      "%d of them crashed or hung\n",
      run, tensor_cases, cases.size() - tensor_cases, failed, crashed);
  EXPECT_GT(run, 0);
}

}  // namespace
