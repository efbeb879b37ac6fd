#!/usr/bin/env python3
"""Writes ThinK conformance cases (tests/conformance/cases/think/*.safetensors) from kvpress's own
ThinKPress (kvpress/presses/think_press.py): which key channels it drops when it compresses a
prompt, given as the keys it returns (the dropped channels zeroed).

kvpress is not shipped with attnkit: point --kvpress at a checkout of it. The press is loaded as
generate_kvpress.py loads the others (its files without the package __init__, transformers'
few names stubbed with their own definitions), so only PyTorch is needed (Debian's python3-torch
on the CPU is enough).

Each case is one prompt of one layer (batch 1): random pre-RoPE queries and keys, rotated with
transformers' default RoPE, and values; ThinKPress.compress called as its forward hook calls it
after the prefill (its window queries recomputed from the hidden states, which are the pre-RoPE
queries: q_proj is the identity). The case holds the prefill's rotated q / k / v, the keys the
press returns (`think.keys`) and a few probe queries. The runner (tests/conformance/
think_cases.cc, kind "think") prefills a session with kv_format { key_channel_ratio: 1 -
key_channel_compression_ratio, key_channel_window: window_size } and no residual window, then
checks that the probes' observe pass over its cache equals attention over the press's keys.

Inputs whose dropped set hangs on a near-tie (the last dropped and the first kept channel score
within 1e-4 of the largest) are skipped for the next seed: the cases check the semantics, not
float rounding.

  python3 generate_think.py --kvpress /path/to/kvpress [--out tests/conformance/cases/think]
"""
import argparse
import json
import math
import os
import sys

import torch

import generate_kvpress as kv
from safetensors_writer import write_safetensors

# name, heads, kv heads, head_dim, prompt length, key_channel_compression_ratio, window_size
CASES = [
    ("think_kvpress_default", 4, 2, 16, 64, 0.4, 32),
    ("think_kvpress_w8_gqa4", 8, 2, 16, 40, 0.6, 8),
    ("think_kvpress_mha_d32", 3, 3, 32, 50, 0.25, 16),
    ("think_kvpress_short_prompt", 2, 1, 8, 20, 0.5, 32),
    ("think_kvpress_d64", 2, 1, 64, 48, 0.6, 32),
    ("think_kvpress_odd_ratio", 4, 4, 24, 33, 0.3, 12),
]
PROBES = 3


def make_case(press_cls, heads, kv_heads, d, p, compression, window, seed):
    torch.manual_seed(seed)
    q_pre = torch.randn(1, heads, p, d)
    # Channels of unequal size, as real keys have, so the choice is not a coin toss.
    k_pre = torch.randn(1, kv_heads, p, d) * (0.25 + 2.0 * torch.rand(1, kv_heads, 1, d))
    v = torch.randn(1, kv_heads, p, d)
    layer = kv.Layer(heads, kv_heads, d, kv.THETA)
    cos, sin = layer.rotary_emb(q_pre, torch.arange(p).unsqueeze(0))
    q, k = kv.rope(q_pre, cos, sin), kv.rope(k_pre, cos, sin)
    hidden = q_pre.transpose(1, 2).reshape(1, p, heads * d)  # q_proj is the identity
    press = press_cls(key_channel_compression_ratio=compression, window_size=window)
    kwargs = {"hidden_states": hidden, "position_embeddings": (cos, sin)}
    with torch.no_grad():
        new_k, _ = press.compress(layer, hidden, k.clone(), v, None, kwargs)
        # The press's scores, restated to test the margin (compress does not return them).
        qw = q[:, :, -window:]
        qn = qw.pow(2).mean(dim=2).view(1, kv_heads, heads // kv_heads, d).mean(2)
        scores = qn * k.pow(2).mean(dim=2)
    n_pruned = int(d * compression)
    for row in scores[0]:
        s = torch.sort(row.double()).values
        if (s[n_pruned] - s[n_pruned - 1]) <= 1e-4 * s[-1].abs():
            return None
    dropped = (new_k[0] == 0).all(dim=1)  # [kv_heads, d]
    assert int(dropped.sum()) == kv_heads * n_pruned, "the press zeroed another number of channels"
    kept_ratio = 1.0 - compression
    assert int(d * (1.0 - kept_ratio)) == n_pruned, "kept ratio does not give the press's count"
    probes = torch.randn(1, heads, PROBES, d)
    config = {"key_channel_compression_ratio": compression, "window_size": window,
              "key_channel_ratio": kept_ratio}
    meta = {"kind": "think", "config": json.dumps(config, sort_keys=True), "prefill_len": str(p),
            "num_heads": str(heads), "num_kv_heads": str(kv_heads), "head_dim": str(d),
            "seed": str(seed), "rope_theta": str(kv.THETA), "torch_version": torch.__version__}
    tensors = {"prefill.q": q, "prefill.k": k, "prefill.v": v, "think.keys": new_k,
               "probe.q": probes}
    return meta, tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kvpress", required=True, help="a checkout of github.com/NVIDIA/kvpress")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "think"))
    args = parser.parse_args()
    kv.install_transformers_stubs()
    for name in ["kvpress", "kvpress.presses"]:
        kv.package(args.kvpress, name)
    for name in ["kvpress.utils", "kvpress.presses.base_press"]:
        kv.load_module(args.kvpress, name)
    press_cls = kv.load_module(args.kvpress, "kvpress.presses.think_press").ThinKPress
    os.makedirs(args.out, exist_ok=True)
    for name, heads, kv_heads, d, p, compression, window in CASES:
        for seed in range(3000, 3100):
            case = make_case(press_cls, heads, kv_heads, d, p, compression, window, seed)
            if case is not None:
                break
        else:
            sys.exit(f"{name}: no seed without a near-tie")
        write_safetensors(os.path.join(args.out, name + ".safetensors"), *case)
        dropped = (case[1]["think.keys"][0] == 0).all(dim=1)
        print(f"{name}: seed {case[0]['seed']}, dropped per kv head "
              f"{[torch.nonzero(r).flatten().tolist() for r in dropped]}")


if __name__ == "__main__":
    main()
