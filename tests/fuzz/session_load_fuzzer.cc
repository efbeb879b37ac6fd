// libFuzzer target for attnkit_session_load (issue: "fuzz the load path"): the blob reader of
// Session::Load (core/src/session/session.cc, util/archive.cc, KvStore::LoadState, every policy's
// LoadState) driven through the C ABI of the libattnkit built with g++, which this clang++ harness
// links (-fsanitize=fuzzer,address,undefined on the harness; the library itself carries no
// coverage, so the search is blind inside it and the invariants below do the work).
//
// At start-up two sessions of one config (int4 KIVI pages with a residual window, H2O eviction in
// groups, two layers) run a prompt and decode steps on fixed data: `base` is the blob of the one,
// `victim` the other, whose own blob is `victim_blob`. An input patches a copy of `base`:
//   byte 0: flags (bit 0: keep the blob's old CRC instead of recomputing it over the patched
//           payload; bit 1: cut the blob to the length in the next two bytes);
//   then patches [u16 offset][u8 length][length bytes], written at offset % size.
// With the CRC recomputed, every lying field reaches the reader's checks. Invariants beyond "no
// crash, no sanitizer report": a refused load is ATTNKIT_INVALID_ARGUMENT with a message and leaves
// the victim exactly as it was (its blob unchanged byte for byte); an accepted one leaves a session
// that decodes another step (or refuses it only because the loaded counters have a step or an
// observe pass partway through its layers) and saves; the victim is then restored from
// victim_blob.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "attnkit/attnkit.h"

namespace {

constexpr int kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 8;
const char kConfig[] =
    "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 8 page_size: 4 "
    "kv_format { keys: INT4 values: INT4 residual_tokens: 4 } "
    "eviction { enabled: true algorithm: H2O granularity: PER_GROUP group_size: 2 "
    "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 4 normalize_scores: true }";

void Die(const char* what, attnkit_status* s) {
  std::fprintf(stderr, "session_load_fuzzer: %s: %s\n", what,
               s != nullptr ? attnkit_status_get_message(s) : "(no status)");
  std::abort();
}

void Check(const char* what, attnkit_status* s) {
  if (s != nullptr) Die(what, s);
}

// A float32 CPU tensor [1, heads, tokens, dim] over `data`.
struct View {
  std::vector<int64_t> shape;
  DLTensor t{};
  View(float* data, int64_t heads, int64_t tokens) : shape{1, heads, tokens, kDim} {
    t.data = data;
    t.device = DLDevice{kDLCPU, 0};
    t.ndim = 4;
    t.dtype = DLDataType{kDLFloat, 32, 1};
    t.shape = shape.data();
  }
};

// Deterministic data (an LCG): the harness must be reproducible.
std::vector<float> Data(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  for (float& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<float>(static_cast<int32_t>(seed >> 8) % 2000) / 1000.0f;
  }
  return v;
}

// One step over every layer. With `loaded`, the session comes from an accepted patched blob whose
// counters may say a step or an observe pass is partway through its layers (a state a save
// between two layers' calls leaves): the attend that state refuses is FAILED_PRECONDITION, and the
// step stops there; any other refusal is a failure.
void Step(attnkit_session* session, int64_t tokens, uint32_t seed, bool loaded = false) {
  std::vector<float> q = Data(kHeads * tokens * kDim, seed),
                     k = Data(kKvHeads * tokens * kDim, seed + 1),
                     v = Data(kKvHeads * tokens * kDim, seed + 2), o(q.size());
  View qv(q.data(), kHeads, tokens), kv(k.data(), kKvHeads, tokens), vv(v.data(), kKvHeads, tokens),
      ov(o.data(), kHeads, tokens);
  for (int32_t layer = 0; layer < kLayers; ++layer) {
    attnkit_status* s = attnkit_session_attend(session, layer, &qv.t, &kv.t, &vv.t, &ov.t);
    if (loaded && s != nullptr && attnkit_status_get_code(s) == ATTNKIT_FAILED_PRECONDITION &&
        std::strncmp(attnkit_status_get_message(s), "layer: ", 7) == 0) {
      attnkit_status_free(s);
      return;
    }
    Check("attend", s);
  }
}

std::string Save(const attnkit_session* session) {
  attnkit_buffer* buffer = nullptr;
  Check("save", attnkit_session_save(session, &buffer));
  std::string blob(reinterpret_cast<const char*>(buffer->data), buffer->size);
  attnkit_buffer_free(buffer);
  return blob;
}

attnkit_session* Run(int64_t prompt, int steps, uint32_t seed) {
  attnkit_session* session = nullptr;
  Check("create", attnkit_session_create_from_text(kConfig, std::strlen(kConfig), &session));
  Step(session, prompt, seed);
  for (int i = 0; i < steps; ++i) Step(session, 1, seed + 10 * (i + 1));
  return session;
}

// CRC-32C (Castagnoli, reflected 0x82F63B78), as the blob header carries it over the payload.
uint32_t Crc32c(const char* data, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= static_cast<uint8_t>(data[i]);
    for (int b = 0; b < 8; ++b) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

constexpr size_t kHeader = 32;  // magic[16], version u32, payload length i64, CRC-32C u32

std::string* base = nullptr;
std::string* victim_blob = nullptr;
attnkit_session* victim = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  attnkit_session* source = Run(/*prompt=*/13, /*steps=*/5, 7);
  base = new std::string(Save(source));
  attnkit_session_free(source);
  victim = Run(/*prompt=*/9, /*steps=*/3, 99);
  victim_blob = new std::string(Save(victim));
  if (base->size() <= kHeader) Die("the base blob has no payload", nullptr);
  // The harness's CRC must be the blob's: otherwise every patched blob fails at the checksum.
  uint32_t crc = 0;
  std::memcpy(&crc, base->data() + 28, sizeof crc);
  if (crc != Crc32c(base->data() + kHeader, base->size() - kHeader)) {
    Die("the harness's CRC-32C differs from the blob's", nullptr);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string blob = *base;
  size_t pos = 0;
  auto byte = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
  const uint8_t flags = byte();
  if (flags & 2) {
    const size_t cut = byte() | (static_cast<size_t>(byte()) << 8);
    blob.resize(cut % (blob.size() + 1));
  }
  while (pos + 3 <= size && !blob.empty()) {
    const size_t offset = (byte() | (static_cast<size_t>(byte()) << 8)) % blob.size();
    const size_t length = byte();
    for (size_t i = 0; i < length && pos < size; ++i) blob[(offset + i) % blob.size()] = byte();
  }
  if (!(flags & 1) && blob.size() >= kHeader) {
    const uint32_t crc = Crc32c(blob.data() + kHeader, blob.size() - kHeader);
    std::memcpy(&blob[28], &crc, sizeof crc);
  }

  attnkit_status* status = attnkit_session_load(victim, blob.data(), blob.size());
  if (status != nullptr) {
    if (attnkit_status_get_code(status) != ATTNKIT_INVALID_ARGUMENT ||
        std::strlen(attnkit_status_get_message(status)) == 0) {
      Die("a refused load must be INVALID_ARGUMENT with a message", status);
    }
    attnkit_status_free(status);
    if (Save(victim) != *victim_blob) {
      std::fprintf(stderr, "session_load_fuzzer: a refused load changed the session\n");
      std::abort();
    }
    return 0;
  }
  // Accepted (the input left the meaning intact, or changed only values a session may hold):
  // the session must go on and save.
  Step(victim, 1, 12345, /*loaded=*/true);
  (void)Save(victim);
  Check("restoring the victim",
        attnkit_session_load(victim, victim_blob->data(), victim_blob->size()));
  return 0;
}
