/* A C host built against the installed Debian packages only (tests/install/install_test.sh compiles
 * it with `pkg-config --cflags --libs attnkit` over the unpacked .debs): a session from a text
 * config, a prompt and a few decode steps on float32 tensors filled by hand, a refused call's
 * status, the bytes held. Exits 0 when every check holds, 1 with a message otherwise. */
#include <attnkit/attnkit.h>
#include <dlpack/dlpack.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 8, kPrompt = 20, kSteps = 5 };
/* H2O keeps 2 + 8 + 4 = 14 tokens per kv head. */
enum { kBudget = 14 };
static const char kConfig[] =
    "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 8\n"
    "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN\n"
    "  start_tokens: 2 intermediate_tokens: 8 recent_tokens: 4 }\n";

static int failures = 0;
#define CHECK(cond, ...)                   \
  do {                                     \
    if (!(cond)) {                         \
      fprintf(stderr, "FAIL %s: ", #cond); \
      fprintf(stderr, __VA_ARGS__);        \
      fprintf(stderr, "\n");               \
      failures++;                          \
    }                                      \
  } while (0)

/* Consumes `status`: 1 when it is OK (NULL), else prints it and returns 0. */
static int ok(attnkit_status* status, const char* what) {
  if (status == NULL) return 1;
  fprintf(stderr, "FAIL %s: %s\n", what, attnkit_status_get_message(status));
  attnkit_status_free(status);
  failures++;
  return 0;
}

/* A float32 CPU buffer laid out [tokens, heads, head_dim] (as most loops keep q/k/v), described as
 * the logical [1, heads, tokens, head_dim] with strides (in elements): no copy. */
static DLTensor describe(float* data, int64_t* shape, int64_t* strides, int heads, int tokens) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.device.device_id = 0;
  t.ndim = 4;
  t.dtype.code = kDLFloat;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  shape[0] = 1, shape[1] = heads, shape[2] = tokens, shape[3] = kDim;
  strides[0] = (int64_t)tokens * heads * kDim, strides[1] = kDim;
  strides[2] = (int64_t)heads * kDim, strides[3] = 1;
  t.shape = shape;
  t.strides = strides; /* NULL would mean compact row-major */
  t.byte_offset = 0;
  return t;
}

static void fill(float* data, size_t n, unsigned* seed) {
  for (size_t i = 0; i < n; ++i) {
    *seed = *seed * 1103515245u + 12345u;
    data[i] = (float)((*seed >> 8) & 0xffff) / 65536.0f - 0.5f;
  }
}

/* One attend call of `layer` on `tokens` new tokens; checks the output is finite and, for a prompt,
 * that its first query (which sees only token 0) returns token 0's value. */
static void attend(attnkit_session* session, int layer, int tokens, unsigned* seed) {
  size_t nq = (size_t)tokens * kHeads * kDim, nkv = (size_t)tokens * kKvHeads * kDim;
  float* q = malloc(nq * sizeof *q);
  float* k = malloc(nkv * sizeof *k);
  float* v = malloc(nkv * sizeof *v);
  float* out = malloc(nq * sizeof *out);
  fill(q, nq, seed), fill(k, nkv, seed), fill(v, nkv, seed);
  int64_t qs[4], qst[4], ks[4], kst[4], vs[4], vst[4], os[4], ost[4];
  DLTensor tq = describe(q, qs, qst, kHeads, tokens), tk = describe(k, ks, kst, kKvHeads, tokens);
  DLTensor tv = describe(v, vs, vst, kKvHeads, tokens), to = describe(out, os, ost, kHeads, tokens);
  if (ok(attnkit_session_attend(session, layer, &tq, &tk, &tv, &to), "attnkit_session_attend")) {
    for (size_t i = 0; i < nq; ++i) CHECK(isfinite(out[i]), "out[%zu] = %f", i, out[i]);
    if (tokens == kPrompt) {
      /* out[t=0, head h] == v[t=0, kv head h / (heads / kv_heads)] */
      for (int h = 0; h < kHeads; ++h)
        for (int d = 0; d < kDim; ++d) {
          float got = out[h * kDim + d], want = v[(h / (kHeads / kKvHeads)) * kDim + d];
          CHECK(fabsf(got - want) < 1e-5f, "layer %d head %d dim %d: %f, expected %f", layer, h, d,
                got, want);
        }
    }
  }
  free(q), free(k), free(v), free(out);
}

int main(void) {
  printf("attnkit %s (ABI %d)\n", attnkit_version_string(), (int)attnkit_abi_version());
  CHECK(attnkit_abi_version() == ATTNKIT_ABI_VERSION, "library ABI %d, header %d",
        (int)attnkit_abi_version(), ATTNKIT_ABI_VERSION);

  attnkit_session* session = NULL;
  if (!ok(attnkit_session_create_from_text(kConfig, strlen(kConfig), &session),
          "attnkit_session_create_from_text"))
    return 1;

  unsigned seed = 1;
  for (int layer = 0; layer < kLayers; ++layer) attend(session, layer, kPrompt, &seed);
  for (int step = 0; step < kSteps; ++step)
    for (int layer = 0; layer < kLayers; ++layer) attend(session, layer, 1, &seed);

  /* A refused call: a layer the config does not have is INVALID_ARGUMENT with a message. */
  {
    float buffer[kHeads * kDim] = {0};
    int64_t s[4], st[4];
    DLTensor q = describe(buffer, s, st, kHeads, 1);
    attnkit_status* status = attnkit_session_attend(session, kLayers, &q, &q, &q, &q);
    CHECK(attnkit_status_get_code(status) == ATTNKIT_INVALID_ARGUMENT, "layer %d: code %d", kLayers,
          (int)attnkit_status_get_code(status));
    const char* message = attnkit_status_get_message(status);
    CHECK(message != NULL && message[0] != '\0', "a refused call has a message");
    printf("refused as expected: %s\n", message ? message : "(null)");
    attnkit_status_free(status);
  }

  /* The budget holds: every kv head of every layer keeps 14 of the 25 tokens seen. */
  for (int layer = 0; layer < kLayers; ++layer)
    for (int head = 0; head < kKvHeads; ++head) {
      attnkit_int64_array* positions = NULL;
      if (ok(attnkit_session_positions(session, layer, 0, head, &positions),
             "attnkit_session_positions")) {
        CHECK(positions->size == kBudget, "layer %d kv head %d keeps %zu tokens, expected %d",
              layer, head, (size_t)positions->size, kBudget);
        attnkit_int64_array_free(positions);
      }
    }

  int64_t bytes = -1;
  if (ok(attnkit_session_bytes_held(session, &bytes), "attnkit_session_bytes_held")) {
    printf("bytes held: %lld\n", (long long)bytes);
    CHECK(bytes > 0, "bytes held %lld", (long long)bytes);
  }
  attnkit_session_free(session);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("OK\n");
  return 0;
}
