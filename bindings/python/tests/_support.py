"""Shared by the unittest suites: paths from ctest's environment and small session helpers."""

import os

import numpy as np

import attnkit
from attnkit import attnkit_pb2

SOURCE_DIR = os.environ.get("ATTNKIT_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD_DIR = os.environ.get("ATTNKIT_BUILD_DIR", "")


def models_dir():
    """../shared/models (ATTNKIT_MODELS_DIR, else ATTNKIT_SHARED_DIR/models, else beside the
    checkout); None when absent."""
    candidates = [os.environ.get("ATTNKIT_MODELS_DIR")]
    if os.environ.get("ATTNKIT_SHARED_DIR"):
        candidates.append(os.path.join(os.environ["ATTNKIT_SHARED_DIR"], "models"))
    candidates.append(os.path.join(SOURCE_DIR, "..", "shared", "models"))
    for candidate in candidates:
        if candidate and os.path.isdir(os.path.join(candidate, "stories260k")):
            return candidate
    return None


def session_config(num_layers=1, num_heads=8, num_kv_heads=4, head_dim=8, **fields):
    return attnkit_pb2.SessionConfig(num_layers=num_layers, num_heads=num_heads,
                                     num_kv_heads=num_kv_heads, head_dim=head_dim, **fields)


def random_qkv(rng, tokens, num_heads=8, num_kv_heads=4, head_dim=8, dtype=np.float32):
    q = rng.standard_normal((1, num_heads, tokens, head_dim)).astype(dtype)
    k = rng.standard_normal((1, num_kv_heads, tokens, head_dim)).astype(dtype)
    v = rng.standard_normal((1, num_kv_heads, tokens, head_dim)).astype(dtype)
    return q, k, v


def reference_attention(q, k, v):
    """Causal softmax(q k^T / sqrt(d)) v in float64 for q [1, H, T, d] over the same T keys (GQA)."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    heads, kv_heads, tokens = q.shape[1], k.shape[1], q.shape[2]
    group = heads // kv_heads
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((tokens, tokens), dtype=bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v


__all__ = ["attnkit", "attnkit_pb2", "np", "SOURCE_DIR", "BUILD_DIR", "models_dir",
           "session_config", "random_qkv", "reference_attention"]
