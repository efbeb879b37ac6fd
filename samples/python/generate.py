#!/usr/bin/env python3
"""attnkit Python sample: samples/c/generate.c's generation loop over stories260k (llama2.c format)
in numpy float32, every layer's attention through attnkit.Session.attend().

    generate.py [--model DIR] [--config FILE] [--tokens N]

DIR holds stories260K.bin, tok512.bin and reference.json (default: $ATTNKIT_MODELS_DIR/stories260k
or ../shared/models/stories260k beside the source tree). FILE is an attnkit.v1.SessionConfig
textproto without the model shape, which the sample fills in (default:
samples/configs/snapkv.textproto). Prints the text, the KV bytes attnkit holds, tokens per second and
how many generated ids agree with the full-cache greedy run in reference.json: the C sample's lines.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import attnkit
from attnkit import attnkit_pb2

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
F32 = np.float32


def default_model_dir():
    models = os.environ.get("ATTNKIT_MODELS_DIR")
    if models:
        return os.path.join(models, "stories260k")
    return os.path.join(SOURCE_DIR, "..", "shared", "models", "stories260k")


class Model:
    """stories260K.bin: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
    seq_len), then float32 weights (see ../shared/models/README.md)."""

    def __init__(self, path):
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size < 28:
            raise SystemExit(f"generate.py: {path}: too short for a llama2.c header")
        (self.dim, self.hidden_dim, self.n_layers, self.n_heads, self.n_kv_heads, vocab,
         self.seq_len) = (int(v) for v in raw[:28].view(np.int32))
        self.vocab_size = abs(vocab)
        self.head_dim = self.dim // self.n_heads
        kv_dim = self.head_dim * self.n_kv_heads
        L, D, H = self.n_layers, self.dim, self.hidden_dim
        weights = raw[28:28 + (raw.size - 28) // 4 * 4].view(F32)
        shapes = [("token_embedding", (self.vocab_size, D)), ("rms_att", (L, D)),
                  ("wq", (L, D, D)), ("wk", (L, kv_dim, D)), ("wv", (L, kv_dim, D)),
                  ("wo", (L, D, D)), ("rms_ffn", (L, D)), ("w1", (L, H, D)), ("w2", (L, D, H)),
                  ("w3", (L, H, D)), ("rms_final", (D,))]
        at = 0
        for name, shape in shapes:
            count = int(np.prod(shape))
            if at + count > weights.size:
                raise SystemExit(f"generate.py: {path}: truncated weights")
            setattr(self, name, weights[at:at + count].reshape(shape))
            at += count
        # RoPE frequencies per pair of a head, as generate.c: 1 / powf(10000, i / head_dim).
        pair = np.arange(0, self.head_dim, 2)
        self.rope_freq = F32(1) / np.power(F32(10000), (pair / self.head_dim).astype(F32))


def byte_piece(piece):
    """A byte-fallback piece b"<0xHH>" stands for the byte 0xHH (a newline is <0x0A>), as in
    llama2.c's decode; a NUL byte prints nothing. Other pieces are returned unchanged."""
    hexdigits = b"0123456789abcdefABCDEF"
    if (len(piece) != 6 or not piece.startswith(b"<0x") or not piece.endswith(b">")
            or piece[3] not in hexdigits or piece[4] not in hexdigits):
        return piece
    value = int(piece[3:5], 16)
    return b"" if value == 0 else bytes([value])


def load_tokenizer(path, vocab_size):
    """tok512.bin: int32 max_token_length, then per token float32 score, int32 length, bytes."""
    data = open(path, "rb").read()
    pieces, at = [], 4
    for _ in range(vocab_size):
        if at + 8 > len(data):
            raise SystemExit(f"generate.py: {path}: truncated vocabulary")
        length = int.from_bytes(data[at + 4:at + 8], "little", signed=True)
        at += 8
        if length < 0 or at + length > len(data):
            raise SystemExit(f"generate.py: {path}: bad piece length")
        pieces.append(byte_piece(data[at:at + length]))
        at += length
    return pieces


def rmsnorm(x, weight):
    """Rows of x normalized as generate.c: the sum of squares in float64, the rest in float32."""
    ss = np.einsum("td,td->t", x.astype(np.float64), x.astype(np.float64))
    scale = F32(1) / np.sqrt((ss / x.shape[-1]).astype(F32) + F32(1e-5))
    return weight * (scale[:, None] * x)


def rope(x, heads, head_dim, positions, freq):
    """RoPE on interleaved pairs (x[2i], x[2i+1]) of every head, in place; x is [tokens, heads*dim].
    cos/sin in float64 rounded to float32, as libm's cosf/sinf give."""
    angle = positions.astype(F32)[:, None] * freq[None, :]  # [tokens, head_dim / 2], float32
    cos = np.cos(angle.astype(np.float64)).astype(F32)[:, None, :]
    sin = np.sin(angle.astype(np.float64)).astype(F32)[:, None, :]
    pairs = x.reshape(x.shape[0], heads, head_dim // 2, 2)
    a, b = pairs[..., 0].copy(), pairs[..., 1].copy()
    pairs[..., 0] = a * cos - b * sin
    pairs[..., 1] = a * sin + b * cos


def heads_view(buffer, tokens, heads, head_dim):
    """[1, heads, tokens, head_dim] over a [tokens, heads * head_dim] buffer: strides, not copies
    (attnkit reads and writes it in place through DLPack)."""
    return buffer.reshape(tokens, heads, head_dim).transpose(1, 0, 2)[None]


def forward(m, session, ids):
    """Runs `ids` through every layer, attention through attnkit; the logits of the last token."""
    tokens = len(ids)
    positions = session.next_position(0) + np.arange(tokens)
    x = m.token_embedding[np.asarray(ids)].copy()
    for l in range(m.n_layers):
        xb = rmsnorm(x, m.rms_att[l])
        q = xb @ m.wq[l].T
        k = xb @ m.wk[l].T
        v = xb @ m.wv[l].T
        rope(q, m.n_heads, m.head_dim, positions, m.rope_freq)
        rope(k, m.n_kv_heads, m.head_dim, positions, m.rope_freq)
        att = np.empty((tokens, m.dim), dtype=F32)
        session.attend(l, heads_view(q, tokens, m.n_heads, m.head_dim),
                       heads_view(k, tokens, m.n_kv_heads, m.head_dim),
                       heads_view(v, tokens, m.n_kv_heads, m.head_dim),
                       out=heads_view(att, tokens, m.n_heads, m.head_dim))
        x += att @ m.wo[l].T
        xb = rmsnorm(x, m.rms_ffn[l])
        h1 = xb @ m.w1[l].T
        h3 = xb @ m.w3[l].T
        h = h1 / (F32(1) + np.exp(-h1.astype(np.float64)).astype(F32)) * h3
        x += h @ m.w2[l].T
    return m.token_embedding @ rmsnorm(x[-1:], m.rms_final)[0]


def session_config(config_path, m):
    """The file's policies (parsed by attnkit, as the C sample) with the model's shape filled in."""
    with open(config_path, "r", encoding="utf-8") as f:
        config = attnkit.parse_config(f.read(), attnkit_pb2.SessionConfig)
    config.num_layers = m.n_layers
    config.num_heads = m.n_heads
    config.num_kv_heads = m.n_kv_heads
    config.head_dim = m.head_dim
    config.rope.theta = 10000
    config.rope.interleaved = True
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default_model_dir(), metavar="DIR")
    parser.add_argument("--config", metavar="FILE",
                        default=os.path.join(SOURCE_DIR, "samples", "configs", "snapkv.textproto"))
    parser.add_argument("--tokens", type=int, default=200, metavar="N")
    args = parser.parse_args(argv)
    if args.tokens <= 0:
        parser.error("--tokens: expected a positive number")
    steps = args.tokens

    m = Model(os.path.join(args.model, "stories260K.bin"))
    pieces = load_tokenizer(os.path.join(args.model, "tok512.bin"), m.vocab_size)
    with open(os.path.join(args.model, "reference.json"), "r", encoding="utf-8") as f:
        reference = json.load(f)
    prompt = reference.get("prompt_ids", [])
    expected = reference.get("greedy_ids_full_cache", [])
    if not prompt:
        raise SystemExit("generate.py: reference.json: no prompt_ids")
    if len(prompt) + steps > m.seq_len:
        raise SystemExit("generate.py: --tokens: prompt + tokens exceed the model's context")

    generated = []
    peak = 0
    with attnkit.Session(session_config(args.config, m)) as session:
        start = time.perf_counter()
        logits = forward(m, session, prompt)
        for s in range(steps):
            generated.append(int(np.argmax(logits)))
            peak = max(peak, session.bytes_held)
            if s + 1 < steps:
                logits = forward(m, session, generated[-1:])
        seconds = time.perf_counter() - start
        held = session.bytes_held
        layer0_tokens = len(session.positions(0, 0, 0))

    compared = min(steps, max(0, len(expected) - len(prompt)))
    agree = sum(generated[s] == expected[len(prompt) + s] for s in range(compared))
    out = sys.stdout.buffer
    out.write(b"".join(pieces[i] for i in prompt[1:]) + b"".join(pieces[i] for i in generated) + b"\n")
    out.write((f"generated {steps} tokens in {seconds:.3f} s: {steps / seconds:.1f} tokens/s\n"
               f"kv cache: {held} bytes held at the end (peak {peak}), {layer0_tokens} tokens per "
               f"kv head of layer 0\n"
               f"reference: {agree} of {compared} generated ids match the full-cache greedy run\n"
               ).encode())
    out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except attnkit.Error as e:
        print(f"generate.py: attnkit failed (code {e.code}): {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"generate.py: {e}", file=sys.stderr)
        sys.exit(1)
