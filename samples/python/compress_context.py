#!/usr/bin/env python3
"""attnkit Python sample: samples/c/compress_context.c in numpy. A context is compressed once with
queries that are not part of it (attnkit.Session.observe), then the answer is generated from the
compressed cache (stories260k, llama2.c format).

    compress_context.py --scoring question|kvzip [--model DIR] [--context N] [--tokens N]
                        [--question TEXT] [--fork]

question: question-aware compression (SnapKV, the question's queries as its window); kvzip:
KVzip-style scoring by a "repeat the context" prompt (H2O over its queries). Each scoring runs three
sessions: with the observe pass, the same again (identical output) and without it (other kept
positions). --fork (kvzip): compress once, answer two questions from Session.fork() and from a
session that load()s save()'s blob; each answer must equal that of compressing again. Ends with
"checks: ok" when every check holds (exit status 1 otherwise). The printed lines are the C
sample's, byte for byte: the float32 math below is the C sample's operation for operation (see
ExactMath), so the two compute the same bits.
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import sys

import numpy as np

import attnkit
from generate import F32, Model, byte_piece, default_model_dir, heads_view

BUDGET = 64  # start 4 + intermediate 44 + recent 16 tokens = 4 pages of 16 per kv head
PAGE_SIZE = 16
MAX_TOKENS = 1024


class ExactMath:
    """samples/c/llama2c.h's float32 math in numpy, bit for bit. Dot products sum left to right in
    float32 (BLAS sums in another order); expf, powf, cosf and sinf are libm's, as the C sample
    calls them: the float64 functions rounded to float32 differ from glibc's cosf/sinf for about 2%
    of the RoPE angles, and from its expf near float32 rounding midpoints."""

    def __init__(self, head_dim):
        libm = ctypes.CDLL(ctypes.util.find_library("m"))
        for name, arity in (("expf", 1), ("cosf", 1), ("sinf", 1), ("powf", 2)):
            function = getattr(libm, name)
            function.argtypes = [ctypes.c_float] * arity
            function.restype = ctypes.c_float
        self._libm = libm
        # RoPE frequency per pair of a head, as rope(): 1.0f / powf(10000.0f, (float)i / head).
        self._freq = np.array([F32(1) / F32(libm.powf(10000.0, float(F32(i) / F32(head_dim))))
                               for i in range(0, head_dim, 2)], dtype=F32)
        self._cos = np.empty((0, self._freq.size), dtype=F32)
        self._sin = np.empty((0, self._freq.size), dtype=F32)

    @staticmethod
    def matmul(x, w):
        """x [tokens, cols] times w [rows, cols] transposed: matvec()'s `acc += wr[c] * x[c]` from
        c = 0 up, in float32, for every token and row at once."""
        acc = np.zeros((x.shape[0], w.shape[0]), dtype=F32)
        for c, column in enumerate(w.T):
            acc += x[:, c:c + 1] * column
        return acc

    @staticmethod
    def rmsnorm(x, weight):
        """Rows of x as rmsnorm(): squares summed left to right in float64, the rest float32."""
        x64 = x.astype(np.float64)
        ss = np.add.accumulate(x64 * x64, axis=1)[:, -1]
        scale = F32(1) / np.sqrt((ss / x.shape[1]).astype(F32) + F32(1e-5))
        return weight * (scale[:, None] * x)

    def expf(self, x):
        """libm's expf of every element: exp in float64 rounded to float32 is expf's result except
        where the exact value lies within a hair of a float32 rounding midpoint (glibc's expf errs
        by up to 0.502 ulp); those few elements ask libm itself."""
        exact = np.exp(x.astype(np.float64))
        rounded = exact.astype(F32)
        near = rounded.astype(np.float64)
        below = np.nextafter(rounded, F32(-np.inf)).astype(np.float64)
        above = np.nextafter(rounded, F32(np.inf)).astype(np.float64)
        to_midpoint = np.minimum(np.abs(exact - (near + below) / 2),
                                 np.abs(exact - (near + above) / 2))
        ask = np.flatnonzero(to_midpoint < (above - below) / 200)  # within 1% of an ulp
        flat = rounded.reshape(-1)
        for i in ask:
            flat[i] = self._libm.expf(float(x.flat[i]))
        return rounded

    def rope(self, x, heads, head_dim, positions):
        """RoPE on interleaved pairs (x[2i], x[2i+1]) of every head, in place (x [tokens, heads *
        head_dim]), with libm's cosf and sinf of (float)pos * freq, tabulated per position."""
        end = int(positions.max()) + 1
        if end > self._cos.shape[0]:
            angles = np.arange(self._cos.shape[0], end).astype(F32)[:, None] * self._freq[None, :]
            cos = [[self._libm.cosf(float(a)) for a in row] for row in angles]
            sin = [[self._libm.sinf(float(a)) for a in row] for row in angles]
            self._cos = np.concatenate([self._cos, np.array(cos, dtype=F32).reshape(angles.shape)])
            self._sin = np.concatenate([self._sin, np.array(sin, dtype=F32).reshape(angles.shape)])
        cos = self._cos[positions][:, None, :]
        sin = self._sin[positions][:, None, :]
        pairs = x.reshape(x.shape[0], heads, head_dim // 2, 2)
        a, b = pairs[..., 0].copy(), pairs[..., 1].copy()
        pairs[..., 0] = a * cos - b * sin
        pairs[..., 1] = a * sin + b * cos


def forward(m, math, session, ids, observe=False):
    """Runs `ids` through the model; returns the last token's logits. With `observe`, every layer's
    attention is an observe call (the tokens' queries score the cache at the positions after the
    sequence; the cache does not grow) and no keys or values are computed; otherwise an attend
    call."""
    tokens = len(ids)
    positions = session.next_position(0) + np.arange(tokens)
    x = m.token_embedding[np.asarray(ids)].copy()
    for l in range(m.n_layers):
        xb = math.rmsnorm(x, m.rms_att[l])
        q = math.matmul(xb, m.wq[l])
        math.rope(q, m.n_heads, m.head_dim, positions)
        att = np.empty((tokens, m.dim), dtype=F32)
        q_view = heads_view(q, tokens, m.n_heads, m.head_dim)
        att_view = heads_view(att, tokens, m.n_heads, m.head_dim)
        if observe:
            session.observe(l, q_view, out=att_view)
        else:
            k = math.matmul(xb, m.wk[l])
            v = math.matmul(xb, m.wv[l])
            math.rope(k, m.n_kv_heads, m.head_dim, positions)
            session.attend(l, q_view, heads_view(k, tokens, m.n_kv_heads, m.head_dim),
                           heads_view(v, tokens, m.n_kv_heads, m.head_dim), out=att_view)
        x += math.matmul(att, m.wo[l])
        xb = math.rmsnorm(x, m.rms_ffn[l])
        h1 = math.matmul(xb, m.w1[l])
        h3 = math.matmul(xb, m.w3[l])
        x += math.matmul(h1 / (F32(1) + math.expf(-h1)) * h3, m.w2[l])
    return math.matmul(math.rmsnorm(x[-1:], m.rms_final), m.token_embedding)[0]


class Tokenizer:
    """tok512.bin as stored (pieces such as b"<0x0A>" and their merge scores) for the encoder, and
    the pieces as printed."""

    def __init__(self, path, vocab_size):
        data = open(path, "rb").read()
        self.pieces, self.scores, at = [], [], 4
        for _ in range(vocab_size):
            if at + 8 > len(data):
                raise SystemExit(f"compress_context.py: {path}: truncated vocabulary")
            self.scores.append(float(np.frombuffer(data, dtype=F32, count=1, offset=at)[0]))
            length = int.from_bytes(data[at + 4:at + 8], "little", signed=True)
            at += 8
            if length < 0 or at + length > len(data):
                raise SystemExit(f"compress_context.py: {path}: bad piece length")
            self.pieces.append(data[at:at + length])
            at += length
        self._ids = {}
        for i, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, i)  # the first id of a piece, as the C sample's lookup()

    def encode(self, text):
        """llama2.c's encoder (sentencepiece BPE), as the C sample's encode(): a dummy space
        prefix, one token per UTF-8 character (its bytes + 3 when it has no piece), then the
        best-scoring adjacent merge until none is left."""
        ids = [self._ids[b" "]] if text and b" " in self._ids else []
        raw = text.encode("utf-8")
        at = 0
        while at < len(raw):
            end = at + 1
            while end < len(raw) and end - at < 4 and raw[end] & 0xC0 == 0x80:
                end += 1
            character = raw[at:end]
            if character in self._ids:
                ids.append(self._ids[character])
            else:
                ids.extend(byte + 3 for byte in character)
            at = end
        while True:
            best, best_id, best_at = -1e10, -1, -1
            for i in range(len(ids) - 1):
                merged = self._ids.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]], -1)
                if merged >= 0 and self.scores[merged] > best:
                    best, best_id, best_at = self.scores[merged], merged, i
            if best_at < 0:
                return ids
            ids[best_at:best_at + 2] = [best_id]

    def text(self, ids):
        return b"".join(byte_piece(self.pieces[i]) for i in ids)


class Scenario:
    """The model, its math, the session config and the token ids of one scenario."""

    def __init__(self, m, math, session_text, context, scoring, question, steps):
        self.m, self.math, self.session_text = m, math, session_text
        self.context, self.scoring, self.question, self.steps = context, scoring, question, steps

    def forward(self, session, ids, observe=False):
        return forward(self.m, self.math, session, ids, observe)


class Run:
    """One run: its generated ids, the positions layer 0 (kv head 0) keeps after the first decode
    step, and the most bytes held after any decode step."""

    def __init__(self, s, observe):
        self.generated, self.kept, self.max_decode_bytes = [], [], 0
        with attnkit.Session(s.session_text) as session:
            logits = s.forward(session, s.context)
            if observe:
                s.forward(session, s.scoring, observe=True)
            if s.question:
                logits = s.forward(session, s.question)
            for step in range(s.steps):
                self.generated.append(int(np.argmax(logits)))
                logits = s.forward(session, self.generated[-1:])
                self.max_decode_bytes = max(self.max_decode_bytes, session.bytes_held)
                if step == 0:
                    self.kept = [int(p) for p in session.positions(0, 0, 0)[:MAX_TOKENS]]


def compressed(s):
    """Compress once (--fork, kvzip scoring): the context is prefilled, scored by the reconstruction
    prompt's observe pass and evicted down to the budget by the first decode step. Returns the
    session, the logits after that step and the id it decoded."""
    session = attnkit.Session(s.session_text)
    logits = s.forward(session, s.context)
    s.forward(session, s.scoring, observe=True)
    first = int(np.argmax(logits))
    return session, s.forward(session, [first]), first


def answer(s, session, question):
    logits = s.forward(session, question)
    out = []
    for _ in range(s.steps):
        out.append(int(np.argmax(logits)))
        logits = s.forward(session, out[-1:])
    return out


def run_forks(s, tok, questions, out):
    """The compressed session is saved and forked: the fork answers questions[0], a session loaded
    from the saved blob questions[1], and each answer must equal that of a session that compresses
    the context again and then reads the question (the fork shares the compressed pages
    copy-on-write; the blob is a full copy)."""
    source, _, first = compressed(s)
    with source:
        blob = source.save()
        fork = source.fork()
        loaded = attnkit.Session(s.session_text)
        with fork, loaded:
            loaded.load(blob)
            held, forked_held = source.bytes_held, fork.bytes_held
            out.write(f"compressed once: {held} bytes held; saved blob {len(blob)} bytes; "
                      f"fork holds {forked_held} bytes\n".encode())
            ok = held == forked_held
            for label, target, question in (("fork", fork, questions[0]),
                                             ("loaded from the blob", loaded, questions[1])):
                got = answer(s, target, question)
                again, _, again_first = compressed(s)
                with again:
                    want = answer(s, again, question)
                same = again_first == first and got == want
                out.write(f"{label}, question:".encode() + tok.text(question) + b"\nanswer:" +
                          tok.text(got) + f"\nsame as compressing again: "
                          f"{'yes' if same else 'no'}\n".encode())
                ok = ok and same
    return ok


def kept_line(label, run):
    return f"{label} ({len(run.kept)}):{''.join(f' {p}' for p in run.kept)}\n".encode()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scoring", choices=("question", "kvzip"), required=True)
    parser.add_argument("--model", default=default_model_dir(), metavar="DIR")
    parser.add_argument("--context", type=int, default=160, metavar="N")
    parser.add_argument("--tokens", type=int, default=40, metavar="N")
    parser.add_argument("--question", default="Where did the little girl go?", metavar="TEXT")
    parser.add_argument("--fork", action="store_true", help="kvzip only")
    args = parser.parse_args(argv)
    kvzip = args.scoring == "kvzip"
    steps, context_len = args.tokens, args.context
    if steps <= 0 or steps > MAX_TOKENS or context_len <= BUDGET or (args.fork and not kvzip):
        parser.error(f"--tokens 1 to {MAX_TOKENS}, --context above {BUDGET}, "
                     "--fork with kvzip only")

    m = Model(os.path.join(args.model, "stories260K.bin"))
    tok = Tokenizer(os.path.join(args.model, "tok512.bin"), m.vocab_size)
    with open(os.path.join(args.model, "reference.json"), "r", encoding="utf-8") as f:
        reference = json.load(f)["greedy_ids_full_cache"][:MAX_TOKENS]
    if len(reference) < context_len:
        raise SystemExit("compress_context.py: --context: longer than reference.json's greedy text")
    context = reference[:context_len]
    question = tok.encode(args.question)
    if kvzip:
        # KVzip's reconstruction prompt: the instruction, then the context again (without its BOS).
        scoring, asked = tok.encode("Repeat the story:") + context[1:], []
    else:
        scoring, asked = question, question
    if context_len + len(asked) + steps > m.seq_len:
        raise SystemExit("compress_context.py: --tokens: beyond the context size")
    session_text = (
        f"num_layers: {m.n_layers} num_heads: {m.n_heads} num_kv_heads: {m.n_kv_heads} "
        f"head_dim: {m.head_dim} page_size: {PAGE_SIZE} rope {{ theta: 10000 interleaved: true }} "
        f"eviction {{ enabled: true granularity: PER_TOKEN start_tokens: 4 "
        f"intermediate_tokens: {BUDGET - 20} recent_tokens: 16 defer_eviction_to_decode: true "
        f"{'algorithm: H2O' if kvzip else 'algorithm: SNAPKV window_size: 16'} }}")
    s = Scenario(m, ExactMath(m.head_dim), session_text, context, scoring, asked, steps)
    out = sys.stdout.buffer

    if args.fork:
        # The question-agnostic compression serves two questions: the one given and another.
        questions = [question, tok.encode("Who was happy?")]
        if any(context_len + 1 + len(q) + steps > m.seq_len for q in questions):
            raise SystemExit("compress_context.py: --tokens: beyond the context size")
        out.write(f"config: {session_text}\n".encode())
        ok = run_forks(s, tok, questions, out)
        out.write(f"checks: {'ok' if ok else 'FAILED'}\n".encode())
        out.flush()
        return 0 if ok else 1

    with_observe, again, without = Run(s, True), Run(s, True), Run(s, False)
    scoring_name = ("KVzip context reconstruction (H2O over the repeat prompt's queries)" if kvzip
                    else "question-aware (SnapKV, the question's queries as the window)")
    out.write(f"scoring: {scoring_name}; context {context_len} tokens, {len(scoring)} observed "
              f"queries per layer, budget {BUDGET} tokens\nconfig: {session_text}\n".encode())
    if not kvzip:
        out.write(b"question:" + tok.text(question) + b"\n")
    out.write(kept_line("kept by layer 0 after the first decode step, with observe", with_observe))
    out.write(kept_line("kept without observe", without))
    out.write(b"generated:" + tok.text(with_observe.generated) + b"\n")
    budget_bytes = m.n_layers * m.n_kv_heads * BUDGET * m.head_dim * 4 * 2
    differ = with_observe.kept != without.kept
    deterministic = with_observe.generated == again.generated and with_observe.kept == again.kept
    within = with_observe.max_decode_bytes == budget_bytes and len(with_observe.kept) == BUDGET
    yes_no = {True: "yes", False: "no"}
    ok = differ and deterministic and within
    out.write((f"bytes held after each decode step: at most {with_observe.max_decode_bytes} "
               f"(budget: {budget_bytes})\n"
               f"kept positions differ from the run without observe: {yes_no[differ]}\n"
               f"second run identical: {yes_no[deterministic]}\n"
               f"bytes held equal the budget: {yes_no[within]}\n"
               f"checks: {'ok' if ok else 'FAILED'}\n").encode())
    out.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except attnkit.Error as e:
        print(f"compress_context.py: attnkit failed (code {e.code}): {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"compress_context.py: {e}", file=sys.stderr)
        sys.exit(1)
