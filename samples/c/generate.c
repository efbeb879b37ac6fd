/* attnkit C sample: a real generation loop over stories260k (llama2.c format) in plain C whose
 * attention goes through attnkit_session_attend().
 *
 *   attnkit_generate [--model DIR] [--config FILE] [--tokens N]
 *
 * DIR holds stories260K.bin, tok512.bin and reference.json (default:
 * $ATTNKIT_MODELS_DIR/stories260k or ../shared/models/stories260k beside the source tree). FILE is
 * an attnkit.v1.SessionConfig textproto without the model shape, which the sample fills in
 * (default: samples/configs/snapkv.textproto). Prints the text, the KV bytes attnkit holds, tokens
 * per second and how many generated ids agree with the full-cache greedy run in reference.json. */
#include <time.h>

#define SAMPLE_PROGRAM "attnkit_generate"
#include "llama2c.h"

#ifndef ATTNKIT_SOURCE_DIR
#define ATTNKIT_SOURCE_DIR "."
#endif

/* Runs `tokens` tokens through the model (all layers), attention through attnkit; writes the logits
 * of the last token. */
static void forward(const Config* c, const Weights* w, attnkit_session* session, const int* ids,
                    int tokens, float* logits) {
  const int D = c->dim, head = D / c->n_heads, kv_dim = head * c->n_kv_heads, H = c->hidden_dim;
  float* x = malloc(sizeof(float) * (size_t)tokens * D);
  float* xb = malloc(sizeof(float) * D);
  float* q = malloc(sizeof(float) * (size_t)tokens * D);
  float* k = malloc(sizeof(float) * (size_t)tokens * kv_dim);
  float* v = malloc(sizeof(float) * (size_t)tokens * kv_dim);
  float* att = malloc(sizeof(float) * (size_t)tokens * D);
  float* tmp = malloc(sizeof(float) * (size_t)(H > D ? H : D));
  float* h1 = malloc(sizeof(float) * H);
  float* h3 = malloc(sizeof(float) * H);
  int64_t first_position = 0;
  check(attnkit_session_next_position(session, 0, &first_position), "next_position");
  for (int t = 0; t < tokens; ++t) {
    memcpy(x + (size_t)t * D, w->token_embedding + (size_t)ids[t] * D, sizeof(float) * D);
  }
  for (int l = 0; l < c->n_layers; ++l) {
    for (int t = 0; t < tokens; ++t) {
      rmsnorm(xb, x + (size_t)t * D, w->rms_att + (size_t)l * D, D);
      matvec(q + (size_t)t * D, xb, w->wq + (size_t)l * D * D, D, D);
      matvec(k + (size_t)t * kv_dim, xb, w->wk + (size_t)l * kv_dim * D, kv_dim, D);
      matvec(v + (size_t)t * kv_dim, xb, w->wv + (size_t)l * kv_dim * D, kv_dim, D);
      rope(q + (size_t)t * D, D, head, first_position + t);
      rope(k + (size_t)t * kv_dim, kv_dim, head, first_position + t);
    }
    View qv, kv, vv, ov;
    make_view(&qv, q, tokens, c->n_heads, head);
    make_view(&kv, k, tokens, c->n_kv_heads, head);
    make_view(&vv, v, tokens, c->n_kv_heads, head);
    make_view(&ov, att, tokens, c->n_heads, head);
    check(attnkit_session_attend(session, l, &qv.t, &kv.t, &vv.t, &ov.t), "attend");
    for (int t = 0; t < tokens; ++t) {
      float* xt = x + (size_t)t * D;
      matvec(tmp, att + (size_t)t * D, w->wo + (size_t)l * D * D, D, D);
      for (int i = 0; i < D; ++i) xt[i] += tmp[i];
      rmsnorm(xb, xt, w->rms_ffn + (size_t)l * D, D);
      matvec(h1, xb, w->w1 + (size_t)l * H * D, H, D);
      matvec(h3, xb, w->w3 + (size_t)l * H * D, H, D);
      for (int i = 0; i < H; ++i) h1[i] = h1[i] / (1.0f + expf(-h1[i])) * h3[i];
      matvec(tmp, h1, w->w2 + (size_t)l * D * H, D, H);
      for (int i = 0; i < D; ++i) xt[i] += tmp[i];
    }
  }
  rmsnorm(xb, x + (size_t)(tokens - 1) * D, w->rms_final, D);
  matvec(logits, xb, w->token_embedding, c->vocab_size, D);
  free(x);
  free(xb);
  free(q);
  free(k);
  free(v);
  free(att);
  free(tmp);
  free(h1);
  free(h3);
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  char model_dir[4096], config_path[4096];
  const char* models = getenv("ATTNKIT_MODELS_DIR");
  if (models && *models) {
    snprintf(model_dir, sizeof(model_dir), "%s/stories260k", models);
  } else {
    snprintf(model_dir, sizeof(model_dir), "%s/../shared/models/stories260k", ATTNKIT_SOURCE_DIR);
  }
  snprintf(config_path, sizeof(config_path), "%s/samples/configs/snapkv.textproto",
           ATTNKIT_SOURCE_DIR);
  int steps = 200;
  for (int i = 1; i < argc; ++i) {
    if (i + 1 < argc && strcmp(argv[i], "--model") == 0) {
      snprintf(model_dir, sizeof(model_dir), "%s", argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--config") == 0) {
      snprintf(config_path, sizeof(config_path), "%s", argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--tokens") == 0) {
      steps = atoi(argv[++i]);
      if (steps <= 0) die("--tokens", "expected a positive number");
    } else {
      fprintf(stderr, "usage: %s [--model DIR] [--config FILE] [--tokens N]\n", argv[0]);
      return 2;
    }
  }
  if (attnkit_abi_version() != ATTNKIT_ABI_VERSION) die("libattnkit", "ABI version mismatch");

  Config c;
  Weights w;
  Tokenizer tok;
  char* reference = load_model_dir(model_dir, &c, &w, &tok);
  int prompt[64], expected[1024];
  const int prompt_len = read_ids(reference, "prompt_ids", prompt, 64);
  const int expected_len = read_ids(reference, "greedy_ids_full_cache", expected, 1024);
  free(reference);
  if (prompt_len == 0) die("reference.json", "no prompt_ids");
  if (prompt_len + steps > c.seq_len) die("--tokens", "prompt + tokens exceed the model's context");

  attnkit_buffer* policies = read_policies(config_path);
  attnkit_session* session = make_session(policies, &c, 1, config_path);
  attnkit_buffer_free(policies);

  float* logits = malloc(sizeof(float) * c.vocab_size);
  int* generated = malloc(sizeof(int) * (size_t)steps);
  const double start = now_seconds();
  forward(&c, &w, session, prompt, prompt_len, logits);
  int64_t peak = 0, held = 0;
  for (int s = 0; s < steps; ++s) {
    generated[s] = argmax(logits, c.vocab_size);
    check(attnkit_session_bytes_held(session, &held), "bytes_held");
    if (held > peak) peak = held;
    if (s + 1 < steps) forward(&c, &w, session, &generated[s], 1, logits);
  }
  const double seconds = now_seconds() - start;

  for (int i = 1; i < prompt_len; ++i) print_piece(tok.pieces[prompt[i]]);
  for (int s = 0; s < steps; ++s) print_piece(tok.pieces[generated[s]]);
  fputs("\n", stdout);

  check(attnkit_session_bytes_held(session, &held), "bytes_held");
  attnkit_int64_array* positions = NULL;
  check(attnkit_session_positions(session, 0, 0, 0, &positions), "positions");
  int compared = 0, agree = 0;
  for (int s = 0; s < steps && prompt_len + s < expected_len; ++s, ++compared) {
    agree += generated[s] == expected[prompt_len + s];
  }
  printf("generated %d tokens in %.3f s: %.1f tokens/s\n", steps, seconds, steps / seconds);
  printf("kv cache: %lld bytes held at the end (peak %lld), %lld tokens per kv head of layer 0\n",
         (long long)held, (long long)peak, (long long)positions->size);
  printf("reference: %d of %d generated ids match the full-cache greedy run\n", agree, compared);
  attnkit_int64_array_free(positions);
  attnkit_session_free(session);
  for (int i = 0; i < tok.vocab_size; ++i) free(tok.pieces[i]);
  free(tok.pieces);
  free(tok.scores);
  free(w.data);
  free(logits);
  free(generated);
  return 0;
}
