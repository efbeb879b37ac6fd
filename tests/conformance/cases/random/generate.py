#!/usr/bin/env python3
"""Writes cases.json: what kvpress's RandomPress keeps, computed with PyTorch.

RandomPress (kvpress/presses/random_press.py) seeds PyTorch's generator with its seed before every
scoring and scores the cache with torch.rand(batch, kv_heads, tokens); ScorerPress then keeps the
top-scored tokens of each kv head. attnkit's RANDOM_SCORES draws the same numbers from ATen's CPU
generator (the same mt19937 and uniform kernel as torch.rand), so for each case the C++ test
(tests/cpp/eviction/random_test.cc) expects:
  * `scores`: the [kv_heads][tokens] float32 draws themselves;
  * `kept_per_head`: per kv head, the start area, the `intermediate` best-scored tokens between the
    areas and the recent area (per_head: true, PER_TOKEN granularity);
  * `kept_layer`: the same over the mean of the kv heads' scores (layer-wide selection).

Run with any PyTorch (CPU is enough): python3 generate.py > cases.json
"""
import json
import sys

import torch

CASES = [
    # seed, kv_heads, tokens, start, intermediate, recent
    (0, 2, 16, 0, 6, 0),
    (42, 4, 40, 4, 12, 4),
    (7, 1, 64, 2, 20, 6),
    (123456789, 8, 33, 1, 9, 3),
    (2**63 + 5, 2, 50, 0, 25, 5),
]


def keep(scores, start, intermediate, recent):
    """Kept positions of one row: areas plus the top `intermediate` scores in between."""
    tokens = scores.shape[-1]
    middle = scores[start:tokens - recent]
    best = torch.topk(middle, intermediate).indices + start
    kept = list(range(start)) + best.tolist() + list(range(tokens - recent, tokens))
    return sorted(kept)


def main():
    out = {"torch_version": torch.__version__, "cases": []}
    for seed, heads, tokens, start, intermediate, recent in CASES:
        generator = torch.Generator().manual_seed(seed)
        scores = torch.rand(heads, tokens, generator=generator)
        layer = scores.double().mean(0)
        out["cases"].append({
            "seed": str(seed),  # may exceed JSON's exact integers
            "kv_heads": heads,
            "tokens": tokens,
            "start": start,
            "intermediate": intermediate,
            "recent": recent,
            "scores": [[float(v) for v in row] for row in scores],
            "kept_per_head": [keep(row, start, intermediate, recent) for row in scores],
            "kept_layer": keep(layer, start, intermediate, recent),
        })
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
