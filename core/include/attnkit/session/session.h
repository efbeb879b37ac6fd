// The attention-wrapping session: owns the KV cache of every layer in fixed-size pages, computes
// attention for prefill and decode, feeds the eviction policy what it needs in the same pass, and
// evicts (freeing pages) when a layer is over budget.
//
// Devices (SessionOptions::device): a CPU session keeps its pages in host memory (tensors on a
// CUDA device are copied to the host and the result back). A CUDA session keeps them in one arena
// on its device and computes there (see SessionConfig.device in session.proto); the results are
// the CPU session's within the storage dtype's precision, and the same tokens are kept.
#ifndef ATTNKIT_SESSION_SESSION_H_
#define ATTNKIT_SESSION_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "attnkit/config.h"
#include "attnkit/config_parser.h"

namespace attnkit {

class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Create(const SessionOptions& options);
  virtual ~Session() = default;

  virtual const SessionOptions& options() const = 0;

  // One attention call of `layer`: q [B, H, T, d], k and v [B, Hkv, T, d] (the T new tokens, any
  // strides, float32/float16/bfloat16, RoPE already applied by the host); writes softmax(q K^T *
  // scale) V over the cache plus the new tokens (causal, the new tokens being the last T) into
  // `out` [B, H, T, d] (any strides, floating dtype). Layers are called in order within a step.
  virtual absl::Status Attend(int layer, const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const at::Tensor& out) = 0;

  // A ragged call of `layer` (continuous batching): sequence b brings new_tokens[b] new tokens
  // (0 to T; 0: it sits this step out, its cache and policy untouched), the first new_tokens[b]
  // rows of its q [B, H, T, d] and k, v [B, Hkv, T, d]; the rows beyond are padding and never
  // read. So one sequence can prefill while others decode. `out` [B, H, T, d] gets each
  // sequence's attention in its first new_tokens[b] rows and zeros beyond. Every layer of a step
  // must take the same counts (layer 0's); every policy, budget, schedule and position is per
  // sequence. Attend is AttendRagged with every count T. new_tokens has batch_size entries.
  virtual absl::Status AttendRagged(int layer, const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v, const at::Tensor& out,
                                    absl::Span<const int64_t> new_tokens);
  // Retires sequence `sequence`: its tokens in every layer are dropped (the pages go back to the
  // pool for the other sequences), its policy state, schedule counters and positions restart;
  // the others are untouched. Its slot then takes a new sequence (whose first call is its
  // prompt). Between steps only (FAILED_PRECONDITION while a step or an observe pass is partway
  // through its layers).
  virtual absl::Status ResetSequence(int sequence);

  // An observe-only call of `layer`: the queries q [B, H, T, d] (T >= 1, any strides,
  // float32/float16/bfloat16) attend to the layer's cache as it is, each query seeing every cached
  // token (they are not part of the sequence: no causal offset), and feed the eviction policy's
  // scores as the queries of an Attend call would (docs/algorithms.md 1.6). Nothing is appended
  // and nothing is evicted: the next call that may evict (an Attend; with defer_eviction_to_decode
  // the first decode step) selects with the scores the observed queries added. `out` [B, H, T, d]
  // (any strides, floating dtype) receives softmax(q K^T * scale) V over the cache, or is left
  // undefined when the host needs no output. The host gives the queries the RoPE positions that
  // follow the sequence (NextPosition(sequence) + t). Observe passes run the layers in order from
  // 0, like steps, and only between steps (not while a step is partway through its layers). A
  // sequence that holds no token (a slot not started yet, or retired) sits the pass out: its rows
  // of q are not read, its rows of `out` get zeros; at least one sequence must hold tokens.
  virtual absl::Status Observe(int layer, const at::Tensor& q, const at::Tensor& out) = 0;

  // Original token positions (0 = first prompt token) held by (layer, sequence, kv head), in cache
  // order.
  virtual absl::StatusOr<std::vector<int64_t>> Positions(int layer, int sequence,
                                                         int kv_head) const = 0;
  // The RoPE position the host should give the next token of `sequence`: the number of tokens seen,
  // or, with rerotate_keys, the cache length (kept keys are re-rotated to stay contiguous).
  virtual absl::StatusOr<int64_t> NextPosition(int sequence) const = 0;

  virtual SessionStatsView Stats() const = 0;
  // Bytes of KV pages in use over every layer (Stats().bytes_held without building the stats).
  virtual int64_t BytesHeld() const = 0;
  // Drops every cached token and policy state (a new prompt); pages stay reserved for reuse.
  virtual void Reset() = 0;

  // The session's whole state as one versioned, checksummed blob (docs/algorithms.md 1.7): its
  // config, every layer's pages (in the page format), positions and step counters, and the
  // eviction policies' scores and counters. A session created with the same config that Load()s
  // it then computes exactly what this one would have (bit for bit). FAILED_PRECONDITION for a
  // session made from SessionOptions built in code (it has no config to save).
  virtual absl::StatusOr<std::string> Save() const;
  // Replaces this session's state with a Save() blob's. The blob must come from a session with
  // the same configuration (device and device_index aside); a blob that is truncated, altered,
  // of another format version or from another configuration is INVALID_ARGUMENT naming what is
  // wrong, and the session is left exactly as it was.
  virtual absl::Status Load(absl::string_view blob);
  // A new, independent session with this one's configuration and state: one compressed context,
  // several continuations. On the CPU the pages are shared copy-on-write (nothing is copied until
  // one side writes a page; the two may then run on different threads); a CUDA session's are
  // copied. Forking counts as a call on this session (one thread at a time).
  // (Session implementations other than attnkit's own, e.g. a host's wrapper, return UNIMPLEMENTED
  // from these three unless they override them.)
  virtual absl::StatusOr<std::unique_ptr<Session>> Fork() const;
};

}  // namespace attnkit

#endif  // ATTNKIT_SESSION_SESSION_H_
