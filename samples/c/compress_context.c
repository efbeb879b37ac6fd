/* attnkit C sample: compress a context once with queries that are not part of it, through
 * attnkit_session_observe(), then generate from the compressed cache (stories260k, llama2.c
 * format, plain C).
 *
 *   attnkit_compress_context --scoring question|kvzip [--model DIR] [--context N] [--tokens N]
 *                            [--question TEXT] [--fork]
 *
 * question: question-aware compression (kvpress's pipeline with `question=`, SnapKV with the
 *   question as its window). The context is prefilled (eviction deferred to the first decode
 *   step), the question's tokens run through the model with every layer's attention an observe
 *   call (their queries score the cache; they attend to the context only, not to each other: an
 *   approximation of their hidden states that needs no cache entry), then the question is
 *   appended and the answer generated; the first decode step evicts down to the budget.
 * kvzip: KVzip-style context-reconstruction scoring. After the context prefill the host runs a
 *   "repeat the context" prompt (an instruction, then the context's own tokens) through the model
 *   with observe calls, so each cached token is scored by how much the reconstruction queries
 *   attend to it (H2O: every query counts); then generation continues from the context.
 *
 * Each scoring runs three sessions: with the observe pass, the same again (the output must be
 * identical), and without it (the kept positions must differ). It prints the kept positions of
 * layer 0, the generated text and the bytes held, and ends with "checks: ok" when every check
 * holds (exit status 1 otherwise). The context is the first N ids of reference.json's full-cache
 * greedy text (real model text, N default 160).
 *
 * --fork (with kvzip): compress once, then ask two questions of the compressed context, one from
 * a fork of the session (attnkit_session_fork: pages shared copy-on-write) and one from a session
 * loaded from attnkit_session_save()'s blob; each answer must equal that of a session that
 * compresses the context again (see run_forks). */
#define SAMPLE_PROGRAM "attnkit_compress_context"
#include "llama2c.h"

#ifndef ATTNKIT_SOURCE_DIR
#define ATTNKIT_SOURCE_DIR "."
#endif

/* The eviction budget: start 4 + intermediate 44 + recent 16 tokens = 4 pages of 16 per kv head. */
enum { kBudget = 64, kPageSize = 16, kMaxTokens = 1024 };

static int lookup(const Tokenizer* t, const char* piece) {
  for (int i = 0; i < t->vocab_size; ++i)
    if (strcmp(t->pieces[i], piece) == 0) return i;
  return -1;
}

/* llama2.c's encoder (sentencepiece BPE): a dummy space prefix, one token per character (bytes +3
 * when the character has no piece), then the best-scoring adjacent merge until none is left.
 * Returns the number of ids written (at most `max`). */
static int encode(const Tokenizer* t, const char* text, int* ids, int max) {
  int n = 0;
  const int space = lookup(t, " ");
  if (*text && space >= 0 && n < max) ids[n++] = space;
  char piece[8];
  for (const char* p = text; *p && n < max;) {
    int len = 1;
    while (len < 4 && (p[len] & 0xC0) == 0x80) ++len; /* a UTF-8 code point */
    memcpy(piece, p, (size_t)len);
    piece[len] = '\0';
    const int id = lookup(t, piece);
    if (id >= 0) {
      ids[n++] = id;
    } else {
      for (int i = 0; i < len && n < max; ++i) ids[n++] = (unsigned char)p[i] + 3;
    }
    p += len;
  }
  char merged[256];
  for (;;) {
    float best = -1e10f;
    int best_id = -1, best_at = -1;
    for (int i = 0; i + 1 < n; ++i) {
      snprintf(merged, sizeof(merged), "%s%s", t->pieces[ids[i]], t->pieces[ids[i + 1]]);
      const int id = lookup(t, merged);
      if (id >= 0 && t->scores[id] > best) {
        best = t->scores[id];
        best_id = id;
        best_at = i;
      }
    }
    if (best_at < 0) break;
    ids[best_at] = best_id;
    memmove(ids + best_at + 1, ids + best_at + 2, sizeof(int) * (size_t)(n - best_at - 2));
    --n;
  }
  return n;
}

/* Runs `tokens` tokens through the model. With `observe`, every layer's attention is an observe
 * call (the tokens' queries score the cache, at the positions after the sequence; the cache does
 * not grow) and no keys or values are computed; otherwise an attend call. Writes the last token's
 * logits when `logits` is not NULL. */
static void forward(const Config* c, const Weights* w, attnkit_session* session, const int* ids,
                    int tokens, int observe, float* logits) {
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
      rope(q + (size_t)t * D, D, head, first_position + t);
      if (observe) continue;
      matvec(k + (size_t)t * kv_dim, xb, w->wk + (size_t)l * kv_dim * D, kv_dim, D);
      matvec(v + (size_t)t * kv_dim, xb, w->wv + (size_t)l * kv_dim * D, kv_dim, D);
      rope(k + (size_t)t * kv_dim, kv_dim, head, first_position + t);
    }
    View qv, kv, vv, ov;
    make_view(&qv, q, tokens, c->n_heads, head);
    make_view(&ov, att, tokens, c->n_heads, head);
    if (observe) {
      check(attnkit_session_observe(session, l, &qv.t, &ov.t), "observe");
    } else {
      make_view(&kv, k, tokens, c->n_kv_heads, head);
      make_view(&vv, v, tokens, c->n_kv_heads, head);
      check(attnkit_session_attend(session, l, &qv.t, &kv.t, &vv.t, &ov.t), "attend");
    }
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
  if (logits != NULL) {
    rmsnorm(xb, x + (size_t)(tokens - 1) * D, w->rms_final, D);
    matvec(logits, xb, w->token_embedding, c->vocab_size, D);
  }
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

/* One run: its generated ids, the positions layer 0 (kv head 0) keeps after the first decode
 * step, and the most bytes held after any decode step. */
typedef struct {
  int generated[kMaxTokens];
  int64_t kept[kMaxTokens];
  size_t num_kept;
  int64_t max_decode_bytes;
} Run;

typedef struct {
  const Config* c;
  const Weights* w;
  const char* session_text;
  const int *context, *scoring, *question;
  int context_len, scoring_len, question_len, steps;
} Scenario;

static void run(const Scenario* s, int observe, Run* out) {
  attnkit_session* session = NULL;
  check(attnkit_session_create_from_text(s->session_text, strlen(s->session_text), &session),
        "session");
  float* logits = malloc(sizeof(float) * (size_t)s->c->vocab_size);
  forward(s->c, s->w, session, s->context, s->context_len, 0, logits);
  if (observe) forward(s->c, s->w, session, s->scoring, s->scoring_len, 1, NULL);
  if (s->question_len > 0) forward(s->c, s->w, session, s->question, s->question_len, 0, logits);
  out->max_decode_bytes = 0;
  for (int step = 0; step < s->steps; ++step) {
    out->generated[step] = argmax(logits, s->c->vocab_size);
    forward(s->c, s->w, session, &out->generated[step], 1, 0, logits);
    int64_t held = 0;
    check(attnkit_session_bytes_held(session, &held), "bytes_held");
    if (held > out->max_decode_bytes) out->max_decode_bytes = held;
    if (step == 0) {
      attnkit_int64_array* positions = NULL;
      check(attnkit_session_positions(session, 0, 0, 0, &positions), "positions");
      out->num_kept = positions->size < kMaxTokens ? positions->size : kMaxTokens;
      memcpy(out->kept, positions->data, sizeof(int64_t) * out->num_kept);
      attnkit_int64_array_free(positions);
    }
  }
  free(logits);
  attnkit_session_free(session);
}

/* Compress once, ask several questions (--fork, kvzip scoring): the context is prefilled, scored
 * by the reconstruction prompt's observe pass and evicted down to the budget by the first decode
 * step. Then the compressed session is saved and forked: the fork answers `questions[0]`, a
 * session loaded from the saved blob answers `questions[1]`, and each answer must equal that of a
 * session that compresses the context again and then reads the question (the fork shares the
 * compressed pages copy-on-write; the blob is a full copy). */
static attnkit_session* compressed(const Scenario* s, float* logits, int* first) {
  attnkit_session* session = NULL;
  check(attnkit_session_create_from_text(s->session_text, strlen(s->session_text), &session),
        "session");
  forward(s->c, s->w, session, s->context, s->context_len, 0, logits);
  forward(s->c, s->w, session, s->scoring, s->scoring_len, 1, NULL);
  *first = argmax(logits, s->c->vocab_size);
  forward(s->c, s->w, session, first, 1, 0, logits); /* evicts down to the budget */
  return session;
}

static void answer(const Scenario* s, attnkit_session* session, const int* question,
                   int question_len, float* logits, int* out) {
  forward(s->c, s->w, session, question, question_len, 0, logits);
  for (int step = 0; step < s->steps; ++step) {
    out[step] = argmax(logits, s->c->vocab_size);
    forward(s->c, s->w, session, &out[step], 1, 0, logits);
  }
}

static int run_forks(const Scenario* s, const Tokenizer* tok, const int* const* questions,
                     const int* question_lens) {
  float* logits = malloc(sizeof(float) * (size_t)s->c->vocab_size);
  int first = 0;
  attnkit_session* source = compressed(s, logits, &first);
  float* source_logits = malloc(sizeof(float) * (size_t)s->c->vocab_size);
  memcpy(source_logits, logits, sizeof(float) * (size_t)s->c->vocab_size);
  attnkit_buffer* blob = NULL;
  check(attnkit_session_save(source, &blob), "save");
  attnkit_session* targets[2] = {NULL, NULL};
  check(attnkit_session_fork(source, &targets[0]), "fork");
  check(attnkit_session_create_from_text(s->session_text, strlen(s->session_text), &targets[1]),
        "session");
  check(attnkit_session_load(targets[1], blob->data, blob->size), "load");
  int64_t held = 0, forked_held = 0;
  check(attnkit_session_bytes_held(source, &held), "bytes_held");
  check(attnkit_session_bytes_held(targets[0], &forked_held), "bytes_held");
  printf("compressed once: %lld bytes held; saved blob %zu bytes; fork holds %lld bytes\n",
         (long long)held, blob->size, (long long)forked_held);
  int ok = held == forked_held;
  static int got[kMaxTokens], want[kMaxTokens];
  for (int i = 0; i < 2; ++i) {
    memcpy(logits, source_logits, sizeof(float) * (size_t)s->c->vocab_size);
    answer(s, targets[i], questions[i], question_lens[i], logits, got);
    int again_first = 0;
    attnkit_session* again = compressed(s, logits, &again_first);
    answer(s, again, questions[i], question_lens[i], logits, want);
    attnkit_session_free(again);
    const int same = again_first == first && memcmp(got, want, sizeof(int) * (size_t)s->steps) == 0;
    printf("%s, question:", i == 0 ? "fork" : "loaded from the blob");
    for (int t = 0; t < question_lens[i]; ++t) print_piece(tok->pieces[questions[i][t]]);
    printf("\nanswer:");
    for (int t = 0; t < s->steps; ++t) print_piece(tok->pieces[got[t]]);
    printf("\nsame as compressing again: %s\n", same ? "yes" : "no");
    ok = ok && same;
  }
  attnkit_buffer_free(blob);
  for (int i = 0; i < 2; ++i) attnkit_session_free(targets[i]);
  attnkit_session_free(source);
  free(logits);
  free(source_logits);
  return ok;
}

static void print_kept(const char* label, const Run* r) {
  printf("%s (%zu):", label, r->num_kept);
  for (size_t i = 0; i < r->num_kept; ++i) printf(" %lld", (long long)r->kept[i]);
  printf("\n");
}

int main(int argc, char** argv) {
  char model_dir[4096];
  const char* models = getenv("ATTNKIT_MODELS_DIR");
  if (models && *models) {
    snprintf(model_dir, sizeof(model_dir), "%s/stories260k", models);
  } else {
    snprintf(model_dir, sizeof(model_dir), "%s/../shared/models/stories260k", ATTNKIT_SOURCE_DIR);
  }
  const char* scoring = NULL;
  const char* question_text = "Where did the little girl go?";
  int context_len = 160, steps = 40, fork_questions = 0;
  for (int i = 1; i < argc; ++i) {
    if (i + 1 < argc && strcmp(argv[i], "--scoring") == 0) {
      scoring = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--model") == 0) {
      snprintf(model_dir, sizeof(model_dir), "%s", argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--context") == 0) {
      context_len = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--tokens") == 0) {
      steps = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--question") == 0) {
      question_text = argv[++i];
    } else if (strcmp(argv[i], "--fork") == 0) {
      fork_questions = 1;
    } else {
      scoring = NULL;
      break;
    }
  }
  const int kvzip = scoring != NULL && strcmp(scoring, "kvzip") == 0;
  if (scoring == NULL || (!kvzip && strcmp(scoring, "question") != 0) || steps <= 0 ||
      steps > kMaxTokens || context_len <= kBudget || (fork_questions && !kvzip)) {
    fprintf(stderr,
            "usage: %s --scoring question|kvzip [--model DIR] [--context N > %d] [--tokens N] "
            "[--question TEXT] [--fork (kvzip only)]\n",
            argv[0], kBudget);
    return 2;
  }
  if (attnkit_abi_version() != ATTNKIT_ABI_VERSION) die("libattnkit", "ABI version mismatch");

  Config c;
  Weights w;
  Tokenizer tok;
  char* reference = load_model_dir(model_dir, &c, &w, &tok);
  static int context[kMaxTokens], scoring_ids[2 * kMaxTokens], question[kMaxTokens];
  const int available = read_ids(reference, "greedy_ids_full_cache", context, kMaxTokens);
  free(reference);
  if (available < context_len) die("--context", "longer than reference.json's greedy text");

  Scenario s = {&c, &w, NULL, context, scoring_ids, question, context_len, 0, 0, steps};
  if (kvzip) {
    /* KVzip's reconstruction prompt: the instruction, then the context again (without its BOS). */
    s.scoring_len = encode(&tok, "Repeat the story:", scoring_ids, kMaxTokens);
    memcpy(scoring_ids + s.scoring_len, context + 1, sizeof(int) * (size_t)(context_len - 1));
    s.scoring_len += context_len - 1;
  } else {
    s.question_len = encode(&tok, question_text, question, kMaxTokens);
    memcpy(scoring_ids, question, sizeof(int) * (size_t)s.question_len);
    s.scoring_len = s.question_len;
  }
  if (context_len + s.question_len + steps > c.seq_len) die("--tokens", "beyond the context size");
  char session_text[512];
  snprintf(session_text, sizeof(session_text),
           "num_layers: %d num_heads: %d num_kv_heads: %d head_dim: %d page_size: %d "
           "rope { theta: 10000 interleaved: true } "
           "eviction { enabled: true granularity: PER_TOKEN start_tokens: 4 "
           "intermediate_tokens: %d recent_tokens: 16 defer_eviction_to_decode: true %s }",
           c.n_layers, c.n_heads, c.n_kv_heads, c.dim / c.n_heads, kPageSize, kBudget - 20,
           kvzip ? "algorithm: H2O" : "algorithm: SNAPKV window_size: 16");
  s.session_text = session_text;

  if (fork_questions) {
    /* The question-agnostic compression serves two questions: the one given and another. */
    static int second[kMaxTokens];
    const int* questions[2] = {question, second};
    int lens[2] = {encode(&tok, question_text, question, kMaxTokens),
                   encode(&tok, "Who was happy?", second, kMaxTokens)};
    if (context_len + 1 + lens[0] + steps > c.seq_len ||
        context_len + 1 + lens[1] + steps > c.seq_len)
      die("--tokens", "beyond the context size");
    printf("config: %s\n", session_text);
    const int ok = run_forks(&s, &tok, questions, lens);
    printf("checks: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
  }

  static Run with_observe, again, without;
  run(&s, 1, &with_observe);
  run(&s, 1, &again);
  run(&s, 0, &without);

  printf("scoring: %s; context %d tokens, %d observed queries per layer, budget %d tokens\n",
         kvzip ? "KVzip context reconstruction (H2O over the repeat prompt's queries)"
               : "question-aware (SnapKV, the question's queries as the window)",
         context_len, s.scoring_len, kBudget);
  printf("config: %s\n", session_text);
  if (!kvzip) {
    printf("question:");
    for (int i = 0; i < s.question_len; ++i) print_piece(tok.pieces[question[i]]);
    printf("\n");
  }
  print_kept("kept by layer 0 after the first decode step, with observe", &with_observe);
  print_kept("kept without observe", &without);
  printf("generated:");
  for (int i = 0; i < steps; ++i) print_piece(tok.pieces[with_observe.generated[i]]);
  printf("\n");
  const int64_t head_dim = c.dim / c.n_heads;
  const int64_t budget_bytes = (int64_t)c.n_layers * c.n_kv_heads * kBudget * head_dim * 4 * 2;
  const int differ =
      with_observe.num_kept != without.num_kept ||
      memcmp(with_observe.kept, without.kept, sizeof(int64_t) * with_observe.num_kept) != 0;
  const int deterministic =
      memcmp(with_observe.generated, again.generated, sizeof(int) * (size_t)steps) == 0 &&
      with_observe.num_kept == again.num_kept &&
      memcmp(with_observe.kept, again.kept, sizeof(int64_t) * with_observe.num_kept) == 0;
  const int within =
      with_observe.max_decode_bytes == budget_bytes && with_observe.num_kept == kBudget;
  printf("bytes held after each decode step: at most %lld (budget: %lld)\n",
         (long long)with_observe.max_decode_bytes, (long long)budget_bytes);
  printf("kept positions differ from the run without observe: %s\n", differ ? "yes" : "no");
  printf("second run identical: %s\n", deterministic ? "yes" : "no");
  printf("bytes held equal the budget: %s\n", within ? "yes" : "no");
  const int ok = differ && deterministic && within;
  printf("checks: %s\n", ok ? "ok" : "FAILED");
  for (int i = 0; i < tok.vocab_size; ++i) free(tok.pieces[i]);
  free(tok.pieces);
  free(tok.scores);
  free(w.data);
  return ok ? 0 : 1;
}
