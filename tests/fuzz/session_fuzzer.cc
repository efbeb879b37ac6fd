// libFuzzer target for the session's calls through the C ABI (issue 23: "the session's attend on
// fuzzed shapes"): a clang++ harness (-fsanitize=fuzzer,address,undefined) linking the libattnkit
// the main g++ build made, like session_load_fuzzer. An input picks one of a few sessions (full
// cache, H2O in groups, SnapKV on a decode schedule, int4 KIVI pages with StreamingLLM re-rotation,
// ratio mode, XAttention sparse prefill, int8 pages with TOVA; two layers, 4 heads over 2 kv heads,
// head_dim 8, one or two sequences) and then runs up to 32 operations on it:
//   attend / observe with a fuzzed layer (out of range and out of order included), token count,
//   dtype (float32/16, bfloat16, float64, int64), a broken tensor (rank, one dimension, a
//   transposed or padded layout, NULL, CUDA device), an output that is missing, aliases q or
//   differs in dtype, NaN/Inf in the data; reset; save then load; fork (going on in the fork);
//   stats, bytes held, positions and next position with fuzzed indices.
// Every buffer covers its descriptor's whole extent, so whatever the library accepts it may read.
// Invariants beyond "no crash, no sanitizer report in the harness": no call returns INTERNAL or
// UNKNOWN (an unchecked case reaching ATen or the STL), every error has a message, and a refused
// attend/observe leaves the session exactly as it was (its saved blob unchanged byte for byte).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/attnkit.h"

namespace {

constexpr int kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 8;
const char kModel[] = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 8 page_size: 4 ";
const char* const kConfigs[] = {
    "batch_size: 1",
    "batch_size: 2 eviction { enabled: true algorithm: H2O granularity: PER_GROUP group_size: 2 "
    "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 4 normalize_scores: true }",
    "batch_size: 1 eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN "
    "start_tokens: 1 intermediate_tokens: 6 recent_tokens: 2 window_size: 2 "
    "schedule { interval_steps: 3 } }",
    "batch_size: 1 rope { theta: 10000 } kv_format { keys: INT4 values: INT4 residual_tokens: 4 } "
    "eviction { enabled: true algorithm: STREAMING_LLM granularity: PER_TOKEN start_tokens: 2 "
    "intermediate_tokens: 0 recent_tokens: 6 rerotate_keys: true }",
    "batch_size: 2 eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN "
    "start_tokens: 1 intermediate_tokens: 0 recent_tokens: 2 window_size: 2 "
    "schedule { compression_ratio: 0.5 } }",
    "batch_size: 1 sparse_attention { mode: XATTENTION block_size: 16 last_query_size: 8 "
    "min_sparse_length: 16 xattention { threshold: 0.9 stride: 4 head_aggregation: SUM } }",
    "batch_size: 1 kv_format { keys: INT8 values: INT8 residual_tokens: 4 } "
    "eviction { enabled: true algorithm: TOVA granularity: PER_TOKEN start_tokens: 0 "
    "intermediate_tokens: 8 recent_tokens: 0 }",
};
constexpr int kNumConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);
const int kBatch[kNumConfigs] = {1, 2, 1, 1, 2, 1, 1};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "session_fuzzer: %s\n", what.c_str());
  std::abort();
}

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool empty() const { return pos_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Accepts OK; for an error, checks its code and message and frees it. Returns whether it was OK.
// SESSION_FUZZER_VERBOSE=1 prints every call's outcome (to read what an input does).
bool Ok(attnkit_status* status, const char* call) {
  static const bool verbose = std::getenv("SESSION_FUZZER_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "  %s: %s\n", call,
                 status == nullptr ? "ok" : attnkit_status_get_message(status));
  }
  if (status == nullptr) return true;
  const attnkit_status_code code = attnkit_status_get_code(status);
  const char* message = attnkit_status_get_message(status);
  if (code == ATTNKIT_INTERNAL || code == ATTNKIT_UNKNOWN || code == ATTNKIT_OK ||
      message == nullptr || message[0] == '\0') {
    Fail(std::string(call) + ": status " + std::to_string(static_cast<int>(code)) + ": " +
         (message != nullptr ? message : "(null)"));
  }
  attnkit_status_free(status);
  return false;
}

std::string Save(const attnkit_session* session) {
  attnkit_buffer* buffer = nullptr;
  if (!Ok(attnkit_session_save(session, &buffer), "save")) Fail("save of a live session failed");
  std::string blob(reinterpret_cast<const char*>(buffer->data), buffer->size);
  attnkit_buffer_free(buffer);
  return blob;
}

// One tensor argument: its descriptor and a buffer covering the descriptor's extent.
struct Tensor {
  std::vector<int64_t> shape, strides;
  std::vector<uint64_t> storage;  // 8-byte aligned for every dtype
  DLTensor t{};
};

size_t ElementBytes(const DLDataType& type) { return type.bits / 8; }

void Fill(Tensor& x, const DLDataType& type, Input& in, bool poison) {
  int64_t extent = 1;  // elements spanned: 1 + sum (size - 1) * stride, 0 when empty
  bool empty = false;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    if (x.shape[i] == 0) empty = true;
    extent += (x.shape[i] - 1) * x.strides[i];
  }
  if (empty) extent = 0;
  const size_t bytes = static_cast<size_t>(extent) * ElementBytes(type);
  x.storage.assign((bytes + 7) / 8 + 1, 0);
  unsigned char* p = reinterpret_cast<unsigned char*>(x.storage.data());
  const size_t n = static_cast<size_t>(extent);
  uint32_t seed = in.Byte() * 2654435761u + 1u;
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    const float v = static_cast<float>(static_cast<int32_t>(seed >> 9) % 4000) / 1000.0f - 2.0f;
    if (type.code == kDLFloat && type.bits == 32) {
      std::memcpy(p + 4 * i, &v, 4);
    } else if (type.code == kDLFloat && type.bits == 64) {
      const double d = v;
      std::memcpy(p + 8 * i, &d, 8);
    } else if (type.bits == 16) {  // float16 or bfloat16: any bit pattern (NaN/Inf included)
      const uint16_t h = static_cast<uint16_t>(seed >> 7) & 0x3fff;  // mostly finite, small
      std::memcpy(p + 2 * i, &h, 2);
    } else {
      const int64_t k = static_cast<int64_t>(seed % 7);
      std::memcpy(p + 8 * i, &k, 8);
    }
  }
  if (poison && n > 0 && type.code == kDLFloat && type.bits == 32) {
    const float bad = (seed & 1) ? NAN : INFINITY;
    std::memcpy(p + 4 * (seed % n), &bad, 4);
  }
  x.t.data = x.storage.data();
  x.t.ndim = static_cast<int32_t>(x.shape.size());
  x.t.shape = x.shape.data();
  x.t.strides = x.strides.data();
  x.t.dtype = type;
  x.t.device = DLDevice{kDLCPU, 0};
}

// A [batch, heads, tokens, dim] tensor, broken as `how` says (0: intact).
void Make(Tensor& x, int64_t batch, int64_t heads, int64_t tokens, const DLDataType& type,
          uint8_t how, Input& in, bool poison) {
  x.shape = {batch, heads, tokens, kDim};
  switch (how % 8) {
    case 1:
      x.shape[in.Byte() % 4] += (in.Byte() % 3) - 1 == 0 ? 1 : -1;
      break;
    case 2:
      x.shape.pop_back();
      break;
    case 3:
      x.shape.push_back(1);
      break;
    default:
      break;
  }
  for (int64_t& s : x.shape) s = s < 0 ? 0 : s;
  x.strides.assign(x.shape.size(), 1);
  for (int i = static_cast<int>(x.shape.size()) - 2; i >= 0; --i) {
    x.strides[i] = x.strides[i + 1] * std::max<int64_t>(1, x.shape[i + 1]);
  }
  if (how % 8 == 4 && x.shape.size() == 4) {  // heads and tokens swapped in memory
    x.strides = {heads * tokens * kDim, kDim, heads * kDim, 1};
  } else if (how % 8 == 5 && !x.strides.empty()) {  // padded rows
    for (size_t i = 0; i + 1 < x.strides.size(); ++i) x.strides[i] *= 2;
  }
  Fill(x, type, in, poison);
  if (how % 8 == 6) x.t.data = nullptr;
  if (how % 8 == 7) x.t.device = DLDevice{kDLCUDA, 0};
}

DLDataType Type(uint8_t b) {
  switch (b % 8) {
    case 5:
      return DLDataType{kDLFloat, 16, 1};
    case 6:
      return DLDataType{kDLBfloat, 16, 1};
    case 7:
      return (b & 8) ? DLDataType{kDLFloat, 64, 1} : DLDataType{kDLInt, 64, 1};
    default:
      return DLDataType{kDLFloat, 32, 1};
  }
}

std::vector<attnkit_session*>* base = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  base = new std::vector<attnkit_session*>();
  for (const char* config : kConfigs) {
    const std::string text = std::string(kModel) + config;
    attnkit_session* session = nullptr;
    attnkit_status* s = attnkit_session_create_from_text(text.data(), text.size(), &session);
    if (s != nullptr) Fail(std::string("config ") + config + ": " + attnkit_status_get_message(s));
    base->push_back(session);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const int which = in.Byte() % kNumConfigs;
  const int64_t batch = kBatch[which];
  attnkit_session* session = nullptr;
  if (!Ok(attnkit_session_fork((*base)[which], &session), "fork of a fresh session")) {
    Fail("fork of a fresh session failed");
  }
  for (int op = 0; op < 32 && !in.empty(); ++op) {
    const uint8_t code = in.Byte();
    switch (code % 8) {
      case 0:
      case 1:
      case 2: {  // attend (0, 1) or observe (2)
        const bool observe = code % 8 == 2;
        const int32_t layer = static_cast<int32_t>(in.Byte() % (kLayers + 2)) - 1;
        const uint8_t t = in.Byte();
        const int64_t tokens = (t & 0x80) ? 1 : t % 40;
        const uint8_t types = in.Byte(), broken = in.Byte(), flags = in.Byte();
        const DLDataType type = Type(types), out_type = (flags & 4) ? Type(types >> 4) : type;
        const bool poison = (flags & 8) != 0;
        const int victim = broken % 4;  // the tensor that is broken: q, k, v, out
        const uint8_t how = broken >> 2;
        Tensor q, k, v, out;
        Make(q, batch, kHeads, tokens, type, victim == 0 ? how : 0, in, poison);
        Make(k, batch, kKvHeads, tokens, type, victim == 1 ? how : 0, in, poison);
        Make(v, batch, kKvHeads, tokens, type, victim == 2 ? how : 0, in, false);
        Make(out, batch, kHeads, tokens, out_type, victim == 3 ? how : 0, in, false);
        DLTensor* out_arg = &out.t;
        if (flags & 1) out_arg = observe ? nullptr : &q.t;  // observe's out is optional
        if (flags & 2) out_arg = &q.t;                      // the output over the queries
        const std::string before = Save(session);
        const bool ok =
            observe
                ? Ok(attnkit_session_observe(session, layer, &q.t, out_arg), "observe")
                : Ok(attnkit_session_attend(session, layer, &q.t, &k.t, &v.t, out_arg), "attend");
        if (!ok && Save(session) != before) Fail("a refused call changed the session");
        break;
      }
      case 3:
        Ok(attnkit_session_reset(session), "reset");
        break;
      case 4: {  // save, then load into the same session: it must accept its own blob
        const std::string blob = Save(session);
        if (!Ok(attnkit_session_load(session, blob.data(), blob.size()), "load")) {
          Fail("a session refused its own blob");
        }
        if (Save(session) != blob) Fail("save after load differs from the loaded blob");
        break;
      }
      case 5: {  // fork and go on in the fork
        attnkit_session* fork = nullptr;
        if (!Ok(attnkit_session_fork(session, &fork), "fork")) Fail("fork failed");
        if (Save(fork) != Save(session)) Fail("a fork's blob differs from its source's");
        attnkit_session_free(session);
        session = fork;
        break;
      }
      case 6: {
        const int32_t layer = static_cast<int32_t>(in.Byte() % (kLayers + 2)) - 1;
        const int32_t sequence = static_cast<int32_t>(in.Byte() % (batch + 2)) - 1;
        const int32_t kv_head = static_cast<int32_t>(in.Byte() % (kKvHeads + 2)) - 1;
        attnkit_int64_array* positions = nullptr;
        if (Ok(attnkit_session_positions(session, layer, sequence, kv_head, &positions),
               "positions")) {
          attnkit_int64_array_free(positions);
        }
        int64_t next = 0;
        Ok(attnkit_session_next_position(session, sequence, &next), "next_position");
        break;
      }
      default: {
        attnkit_buffer* stats = nullptr;
        if (Ok(attnkit_session_stats(session, &stats), "stats")) attnkit_buffer_free(stats);
        int64_t held = -1;
        if (Ok(attnkit_session_bytes_held(session, &held), "bytes_held") && held < 0) {
          Fail("negative bytes held");
        }
        break;
      }
    }
  }
  attnkit_session_free(session);
  return 0;
}
