/* attnkit C sample: continuous batching over stories260k. One session holds SLOTS sequences; a
 * queue of requests (prompts of different lengths, different numbers of tokens to generate) is
 * served greedily: every step is one ragged call per layer (attnkit_session_attend_ragged) in
 * which a newly admitted request brings its whole prompt while the others bring one token each;
 * a finished request is retired (attnkit_session_reset_sequence) and its slot, pages included,
 * goes to the next request in the queue. Each request is then generated again alone, in a
 * batch-1 session of the same config, and the two must agree id for id.
 *
 *   attnkit_serve [--model DIR] [--config FILE] [--slots N] [--requests N]
 *
 * DIR and FILE as for attnkit_generate (default config: samples/configs/snapkv.textproto, so every
 * sequence is evicted by its own SnapKV policy). Prints each request's text, the steps, the KV
 * bytes the batch held at most, and "checks: ok" when every request matched its own session. */
#include <time.h>

#define SAMPLE_PROGRAM "attnkit_serve"
#include "llama2c.h"

#ifndef ATTNKIT_SOURCE_DIR
#define ATTNKIT_SOURCE_DIR "."
#endif

enum { kMaxSlots = 16, kMaxRequests = 64, kMaxTokens = 256 };

typedef struct {
  int prompt_len, to_generate;
  int ids[kMaxTokens];  // the prompt, then the generated ids
  int generated;
} Request;

/* A float32 DLTensor [batch, heads, tokens, head_dim] over a buffer laid out
 * [batch][tokens][heads][head_dim]. */
static void make_batch_view(View* v, float* data, int batch, int tokens, int heads, int head_dim) {
  make_view(v, data, tokens, heads, head_dim);
  v->shape[0] = batch;
  v->strides[0] = (int64_t)tokens * heads * head_dim;
}

/* One step of every slot with counts[b] > 0: slot b's tokens ids_of[b][0..counts[b]) run through
 * the model, attention through one ragged call per layer; writes the logits of each slot's last
 * token into logits[b]. */
static void forward_batch(const Config* c, const Weights* w, attnkit_session* session, int slots,
                          const int* const* ids_of, const int64_t* counts, float** logits) {
  const int D = c->dim, head = D / c->n_heads, kv_dim = head * c->n_kv_heads, H = c->hidden_dim;
  int T = 0;
  for (int b = 0; b < slots; ++b) T = counts[b] > T ? (int)counts[b] : T;
  const size_t rows = (size_t)slots * T;
  float* x = calloc(rows * D, sizeof(float));
  float* q = calloc(rows * D, sizeof(float));
  float* k = calloc(rows * kv_dim, sizeof(float));
  float* v = calloc(rows * kv_dim, sizeof(float));
  float* att = calloc(rows * D, sizeof(float));
  float* xb = malloc(sizeof(float) * D);
  float* tmp = malloc(sizeof(float) * (size_t)(H > D ? H : D));
  float* h1 = malloc(sizeof(float) * H);
  float* h3 = malloc(sizeof(float) * H);
  int64_t first[kMaxSlots];
  for (int b = 0; b < slots; ++b) {
    check(attnkit_session_next_position(session, b, &first[b]), "next_position");
    for (int t = 0; t < counts[b]; ++t) {
      memcpy(x + ((size_t)b * T + t) * D, w->token_embedding + (size_t)ids_of[b][t] * D,
             sizeof(float) * D);
    }
  }
  for (int l = 0; l < c->n_layers; ++l) {
    for (int b = 0; b < slots; ++b) {
      for (int t = 0; t < counts[b]; ++t) {
        const size_t r = (size_t)b * T + t;
        rmsnorm(xb, x + r * D, w->rms_att + (size_t)l * D, D);
        matvec(q + r * D, xb, w->wq + (size_t)l * D * D, D, D);
        matvec(k + r * kv_dim, xb, w->wk + (size_t)l * kv_dim * D, kv_dim, D);
        matvec(v + r * kv_dim, xb, w->wv + (size_t)l * kv_dim * D, kv_dim, D);
        rope(q + r * D, D, head, first[b] + t);
        rope(k + r * kv_dim, kv_dim, head, first[b] + t);
      }
    }
    View qv, kv, vv, ov;
    make_batch_view(&qv, q, slots, T, c->n_heads, head);
    make_batch_view(&kv, k, slots, T, c->n_kv_heads, head);
    make_batch_view(&vv, v, slots, T, c->n_kv_heads, head);
    make_batch_view(&ov, att, slots, T, c->n_heads, head);
    check(attnkit_session_attend_ragged(session, l, &qv.t, &kv.t, &vv.t, &ov.t, counts,
                                        (size_t)slots),
          "attend_ragged");
    for (int b = 0; b < slots; ++b) {
      for (int t = 0; t < counts[b]; ++t) {
        const size_t r = (size_t)b * T + t;
        float* xt = x + r * D;
        matvec(tmp, att + r * D, w->wo + (size_t)l * D * D, D, D);
        for (int i = 0; i < D; ++i) xt[i] += tmp[i];
        rmsnorm(xb, xt, w->rms_ffn + (size_t)l * D, D);
        matvec(h1, xb, w->w1 + (size_t)l * H * D, H, D);
        matvec(h3, xb, w->w3 + (size_t)l * H * D, H, D);
        for (int i = 0; i < H; ++i) h1[i] = h1[i] / (1.0f + expf(-h1[i])) * h3[i];
        matvec(tmp, h1, w->w2 + (size_t)l * D * H, D, H);
        for (int i = 0; i < D; ++i) xt[i] += tmp[i];
      }
    }
  }
  for (int b = 0; b < slots; ++b) {
    if (counts[b] == 0) continue;
    rmsnorm(xb, x + ((size_t)b * T + counts[b] - 1) * D, w->rms_final, D);
    matvec(logits[b], xb, w->token_embedding, c->vocab_size, D);
  }
  free(x);
  free(q);
  free(k);
  free(v);
  free(att);
  free(xb);
  free(tmp);
  free(h1);
  free(h3);
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
  int slots = 4, num_requests = 10;
  for (int i = 1; i < argc; ++i) {
    if (i + 1 < argc && strcmp(argv[i], "--model") == 0) {
      snprintf(model_dir, sizeof(model_dir), "%s", argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--config") == 0) {
      snprintf(config_path, sizeof(config_path), "%s", argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--slots") == 0) {
      slots = atoi(argv[++i]);
      if (slots < 1 || slots > kMaxSlots) die("--slots", "expected 1 to 16");
    } else if (i + 1 < argc && strcmp(argv[i], "--requests") == 0) {
      num_requests = atoi(argv[++i]);
      if (num_requests < 1 || num_requests > kMaxRequests) die("--requests", "expected 1 to 64");
    } else {
      fprintf(stderr, "usage: %s [--model DIR] [--config FILE] [--slots N] [--requests N]\n",
              argv[0]);
      return 2;
    }
  }
  if (attnkit_abi_version() != ATTNKIT_ABI_VERSION) die("libattnkit", "ABI version mismatch");

  Config c;
  Weights w;
  Tokenizer tok;
  char* reference = load_model_dir(model_dir, &c, &w, &tok);
  int prompt[64];
  const int prompt_len = read_ids(reference, "prompt_ids", prompt, 64);
  free(reference);
  if (prompt_len < 2) die("reference.json", "no prompt_ids");

  attnkit_buffer* policies = read_policies(config_path);

  /* The requests: the reference prompt cut to different lengths, each followed by a different
   * token so the continuations differ, and different numbers of tokens to generate. */
  Request* requests = calloc((size_t)num_requests, sizeof(Request));
  for (int r = 0; r < num_requests; ++r) {
    Request* q = &requests[r];
    const int keep = 2 + (r * 3) % (prompt_len - 1);
    memcpy(q->ids, prompt, sizeof(int) * (size_t)keep);
    q->ids[keep] = 259 + (r * 37) % (c.vocab_size - 259);  // a word piece (0-258: specials, bytes)
    q->prompt_len = keep + 1;
    q->to_generate = 30 + (r * 23) % 100;  // past the 100-token budget of snapkv.textproto
  }

  attnkit_session* session = make_session(policies, &c, slots, config_path);
  float* logits[kMaxSlots];
  for (int b = 0; b < slots; ++b) logits[b] = malloc(sizeof(float) * c.vocab_size);
  int slot_request[kMaxSlots];  // -1: free
  for (int b = 0; b < slots; ++b) slot_request[b] = -1;
  int next_request = 0, done = 0, steps = 0, max_active = 0;
  int64_t peak = 0;
  const clock_t start = clock();
  while (done < num_requests) {
    const int* ids_of[kMaxSlots];
    int64_t counts[kMaxSlots];
    int active = 0;
    for (int b = 0; b < slots; ++b) {
      counts[b] = 0;
      if (slot_request[b] < 0 && next_request < num_requests) {
        slot_request[b] = next_request++;  // admitted: its prompt is this step's tokens
        Request* q = &requests[slot_request[b]];
        ids_of[b] = q->ids;
        counts[b] = q->prompt_len;
      } else if (slot_request[b] >= 0) {
        Request* q = &requests[slot_request[b]];
        ids_of[b] = &q->ids[q->prompt_len + q->generated - 1];  // the last generated id
        counts[b] = 1;
      }
      active += counts[b] > 0;
    }
    if (active > max_active) max_active = active;
    forward_batch(&c, &w, session, slots, ids_of, counts, logits);
    ++steps;
    int64_t held = 0;
    check(attnkit_session_bytes_held(session, &held), "bytes_held");
    if (held > peak) peak = held;
    for (int b = 0; b < slots; ++b) {
      if (slot_request[b] < 0) continue;
      Request* q = &requests[slot_request[b]];
      q->ids[q->prompt_len + q->generated++] = argmax(logits[b], c.vocab_size);
      if (q->generated == q->to_generate) {
        check(attnkit_session_reset_sequence(session, b), "reset_sequence");  // pages freed
        slot_request[b] = -1;
        ++done;
      }
    }
  }
  const double seconds = (double)(clock() - start) / CLOCKS_PER_SEC;
  int64_t held_after = 0;
  check(attnkit_session_bytes_held(session, &held_after), "bytes_held");
  attnkit_session_free(session);

  /* Each request again, alone in a batch-1 session of the same config. */
  int agree = 0;
  for (int r = 0; r < num_requests; ++r) {
    const Request* q = &requests[r];
    attnkit_session* alone = make_session(policies, &c, 1, config_path);
    int ids[kMaxTokens];
    memcpy(ids, q->ids, sizeof(int) * (size_t)q->prompt_len);
    const int* ids_of[1] = {ids};
    int64_t counts[1] = {q->prompt_len};
    int same = 1;
    for (int s = 0; s < q->to_generate; ++s) {
      forward_batch(&c, &w, alone, 1, ids_of, counts, logits);
      ids[q->prompt_len + s] = argmax(logits[0], c.vocab_size);
      same = same && ids[q->prompt_len + s] == q->ids[q->prompt_len + s];
      ids_of[0] = &ids[q->prompt_len + s];
      counts[0] = 1;
    }
    attnkit_session_free(alone);
    agree += same;
    printf("request %d (prompt %d tokens, %d generated, %s its own session):", r, q->prompt_len,
           q->to_generate, same ? "same as" : "DIFFERS FROM");
    for (int i = 1; i < q->prompt_len + q->to_generate; ++i) print_piece(tok.pieces[q->ids[i]]);
    fputs("\n", stdout);
  }
  printf("served %d requests in %d slots: %d steps (up to %d sequences a step) in %.3f s\n",
         num_requests, slots, steps, max_active, seconds);
  printf("kv cache: peak %lld bytes over the batch, %lld after every request retired\n",
         (long long)peak, (long long)held_after);
  printf("requests matching their own batch-1 session: %d of %d\n", agree, num_requests);
  printf("checks: %s\n", agree == num_requests && held_after == 0 ? "ok" : "FAILED");
  attnkit_buffer_free(policies);
  for (int b = 0; b < slots; ++b) free(logits[b]);
  free(requests);
  for (int i = 0; i < tok.vocab_size; ++i) free(tok.pieces[i]);
  free(tok.pieces);
  free(tok.scores);
  free(w.data);
  return agree == num_requests && held_after == 0 ? 0 : 1;
}
