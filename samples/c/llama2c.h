/* The llama2.c model code the C samples share (generate.c, compress_context.c): the checkpoint and
 * tokenizer readers, reference.json's id arrays, the float32 math of one layer, and the DLTensor
 * view attnkit reads q/k/v through. Plain C99, header-only (static functions); define
 * SAMPLE_PROGRAM (the name errors start with) before including it. */
#ifndef ATTNKIT_SAMPLES_C_LLAMA2C_H_
#define ATTNKIT_SAMPLES_C_LLAMA2C_H_

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnkit/attnkit.h"

#ifndef SAMPLE_PROGRAM
#error "define SAMPLE_PROGRAM before including llama2c.h"
#endif

typedef struct {
  int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} Config;

typedef struct {
  float *token_embedding, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final;
  float* data;
} Weights;

typedef struct {
  char** pieces; /* as stored ("<0x0A>" for a byte) */
  float* scores;
  int vocab_size;
} Tokenizer;

static void die(const char* what, const char* detail) {
  fprintf(stderr, SAMPLE_PROGRAM ": %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

/* Exits with the status's message when `status` is an error. */
static void check(attnkit_status* status, const char* what) {
  if (status == NULL) return;
  fprintf(stderr, SAMPLE_PROGRAM ": %s failed (code %d): %s\n", what,
          (int)attnkit_status_get_code(status), attnkit_status_get_message(status));
  attnkit_status_free(status);
  exit(1);
}

static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) die(path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = malloc((size_t)n + 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die(path, "read failed");
  buf[n] = '\0';
  fclose(f);
  if (size) *size = (size_t)n;
  return buf;
}

static void load_model(const char* path, Config* c, Weights* w) {
  size_t size = 0;
  char* bytes = read_file(path, &size);
  if (size < sizeof(int32_t) * 7) die(path, "too short for a llama2.c header");
  int32_t header[7];
  memcpy(header, bytes, sizeof(header));
  c->dim = header[0];
  c->hidden_dim = header[1];
  c->n_layers = header[2];
  c->n_heads = header[3];
  c->n_kv_heads = header[4];
  c->vocab_size = abs(header[5]);
  c->seq_len = header[6];
  const int head = c->dim / c->n_heads, kv_dim = head * c->n_kv_heads;
  const size_t L = (size_t)c->n_layers, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
  const size_t floats = (size_t)c->vocab_size * D + L * D + L * D * D + 2 * L * kv_dim * D +
                        L * D * D + L * D + 3 * L * D * H + D;
  if (size < sizeof(header) + floats * sizeof(float)) die(path, "truncated weights");
  w->data = malloc(floats * sizeof(float));
  memcpy(w->data, bytes + sizeof(header), floats * sizeof(float));
  free(bytes);
  float* p = w->data;
  w->token_embedding = p;
  p += (size_t)c->vocab_size * D;
  w->rms_att = p;
  p += L * D;
  w->wq = p;
  p += L * D * D;
  w->wk = p;
  p += L * kv_dim * D;
  w->wv = p;
  p += L * kv_dim * D;
  w->wo = p;
  p += L * D * D;
  w->rms_ffn = p;
  p += L * D;
  w->w1 = p;
  p += L * H * D;
  w->w2 = p;
  p += L * D * H;
  w->w3 = p;
  p += L * H * D;
  w->rms_final = p;
}

static void load_tokenizer(const char* path, int vocab_size, Tokenizer* t) {
  size_t size = 0, at = 4;
  char* bytes = read_file(path, &size);
  t->vocab_size = vocab_size;
  t->pieces = calloc((size_t)vocab_size, sizeof(char*));
  t->scores = calloc((size_t)vocab_size, sizeof(float));
  for (int i = 0; i < vocab_size; ++i) {
    int32_t len;
    if (at + 8 > size) die(path, "truncated vocabulary");
    memcpy(&t->scores[i], bytes + at, 4);
    memcpy(&len, bytes + at + 4, 4);
    at += 8;
    if (len < 0 || at + (size_t)len > size) die(path, "bad piece length");
    t->pieces[i] = malloc((size_t)len + 1);
    memcpy(t->pieces[i], bytes + at, (size_t)len);
    t->pieces[i][len] = '\0';
    at += (size_t)len;
  }
  free(bytes);
}

/* The model folder's stories260K.bin and tok512.bin; returns reference.json's text (free it). */
static char* load_model_dir(const char* model_dir, Config* c, Weights* w, Tokenizer* tok) {
  char path[4200];
  snprintf(path, sizeof(path), "%s/stories260K.bin", model_dir);
  load_model(path, c, w);
  snprintf(path, sizeof(path), "%s/tok512.bin", model_dir);
  load_tokenizer(path, c->vocab_size, tok);
  snprintf(path, sizeof(path), "%s/reference.json", model_dir);
  return read_file(path, NULL);
}

/* The attnkit.v1.SessionConfig textproto at `path` (policies, no model shape) in binary. */
static inline attnkit_buffer* read_policies(const char* path) {
  size_t size = 0;
  char* text = read_file(path, &size);
  attnkit_buffer* policies = NULL;
  check(attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, text, size, &policies), path);
  free(text);
  return policies;
}

/* A session of `policies` merged with the model's shape and `batch` sequences (binary protos
 * merge, the later message's scalars win); `what` names the config in errors. */
static inline attnkit_session* make_session(const attnkit_buffer* policies, const Config* c,
                                            int batch, const char* what) {
  char shape_text[256];
  snprintf(shape_text, sizeof(shape_text),
           "num_layers: %d num_heads: %d num_kv_heads: %d head_dim: %d batch_size: %d "
           "rope { theta: 10000 interleaved: true }",
           c->n_layers, c->n_heads, c->n_kv_heads, c->dim / c->n_heads, batch);
  attnkit_buffer* shape = NULL;
  check(
      attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, shape_text, strlen(shape_text), &shape),
      "model shape");
  const size_t size = policies->size + shape->size;
  uint8_t* config = malloc(size + 1);
  memcpy(config, policies->data, policies->size);
  memcpy(config + policies->size, shape->data, shape->size);
  attnkit_buffer_free(shape);
  attnkit_session* session = NULL;
  check(attnkit_session_create(config, size, &session), what);
  free(config);
  return session;
}

/* Prints a piece; "<0xHH>" stands for the byte 0xHH (llama2.c's decode). */
static void print_piece(const char* piece) {
  unsigned value;
  if (strlen(piece) == 6 && sscanf(piece, "<0x%02X>", &value) == 1) {
    putchar((int)value);
  } else {
    fputs(piece, stdout);
  }
}

/* Reads the integer array `key` of reference.json ("key": [1, 2, ...]). */
static int read_ids(const char* json, const char* key, int* out, int max) {
  char pattern[64];
  snprintf(pattern, sizeof(pattern), "\"%s\"", key);
  const char* p = strstr(json, pattern);
  if (!p || !(p = strchr(p, '['))) return 0;
  int n = 0;
  ++p;
  while (*p && *p != ']' && n < max) {
    char* end;
    long v = strtol(p, &end, 10);
    if (end == p) {
      ++p;
      continue;
    }
    out[n++] = (int)v;
    p = end;
  }
  return n;
}

static void rmsnorm(float* out, const float* x, const float* weight, int n) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += (double)x[i] * x[i];
  const float scale = 1.0f / sqrtf((float)(ss / n) + 1e-5f);
  for (int i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

/* out[rows] = w[rows][cols] x[cols] */
static void matvec(float* out, const float* x, const float* w, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    float acc = 0;
    const float* wr = w + (size_t)r * cols;
    for (int c = 0; c < cols; ++c) acc += wr[c] * x[c];
    out[r] = acc;
  }
}

/* RoPE on interleaved pairs (x[2i], x[2i+1]) of each head at position `pos`. */
static void rope(float* x, int n, int head, int64_t pos) {
  for (int i = 0; i < n; i += 2) {
    const float freq = 1.0f / powf(10000.0f, (float)(i % head) / (float)head);
    const float angle = (float)pos * freq, c = cosf(angle), s = sinf(angle);
    const float a = x[i], b = x[i + 1];
    x[i] = a * c - b * s;
    x[i + 1] = a * s + b * c;
  }
}

typedef struct {
  DLTensor t;
  int64_t shape[4], strides[4];
} View;

/* A float32 DLTensor of logical shape [1, heads, tokens, head_dim] over a buffer laid out
 * [tokens, heads, head_dim]: strides, not copies. */
static void make_view(View* v, float* data, int tokens, int heads, int head_dim) {
  v->shape[0] = 1;
  v->shape[1] = heads;
  v->shape[2] = tokens;
  v->shape[3] = head_dim;
  v->strides[0] = (int64_t)tokens * heads * head_dim;
  v->strides[1] = head_dim;
  v->strides[2] = (int64_t)heads * head_dim;
  v->strides[3] = 1;
  memset(&v->t, 0, sizeof(v->t));
  v->t.data = data;
  v->t.device.device_type = kDLCPU;
  v->t.ndim = 4;
  v->t.dtype.code = kDLFloat;
  v->t.dtype.bits = 32;
  v->t.dtype.lanes = 1;
  v->t.shape = v->shape;
  v->t.strides = v->strides;
}

static int argmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

#endif /* ATTNKIT_SAMPLES_C_LLAMA2C_H_ */
