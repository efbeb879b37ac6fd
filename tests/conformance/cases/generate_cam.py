#!/usr/bin/env python3
"""Writes conformance cases from kvpress's CAMPress (cache merging, CaM) over KnormPress: a prompt,
then decode steps through the press's own forward hook, which merges evicted values into kept
neighbours every compression_interval steps; the case records each decode step's attention
output over the cache as the press left it.

kvpress (github.com/NVIDIA/kvpress; these cases: commit 8bb29b9) is not shipped with attnkit:
point --kvpress at a checkout of it. The presses are loaded from their files with the
transformers stubs of generate_kvpress.py beside this file, so only PyTorch is needed (Debian's
python3-torch on the CPU is enough).

What the generator adds around the press (docs/algorithms.md 1.9 says why):
- the attention the hook accumulates is handed to it as the model's output attentions (eager
  softmax of q k^T / sqrt(d), float32), the path kvpress takes when a model returns them;
- before each compression the global generator is seeded with attnkit's merge seed for that
  eviction (MergeSeed: SplitMix64 of the configured seed, the layer and the tokens seen), since
  the press draws its Bernoulli merge mask from torch's global generator;
- inputs are skipped (next seed) when a kept set or the merge candidates hang on a near-tie of
  the mean key-norm scores (gap below 1e-4 of the largest), or a merge draw lies within 1e-5 of
  its probability: the cases check the semantics, not float rounding.

The runner (tests/conformance/cam_cases.cc, kind "cam") runs an attnkit session with KNORM,
PER_TOKEN, intermediate_tokens = target_size, defer_eviction_to_decode, schedule.interval_steps =
compression_interval and cache_merging { merge_budget seed } and compares every decode step's
output.

  python3 generate_cam.py --kvpress /path/to/kvpress [--out tests/conformance/cases]
"""
import argparse
import json
import math
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import generate_kvpress as gk  # noqa: E402
from safetensors_writer import write_safetensors  # noqa: E402

MASK64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def merge_seed(seed, layer, tokens_seen):
    """attnkit's eviction::MergeSeed."""
    return splitmix64(seed ^ splitmix64(((layer << 40) ^ tokens_seen) & MASK64))


def load_cam(root):
    gk.install_transformers_stubs()
    stub = types.ModuleType("transformers.cache_utils")
    stub.QuantizedCache = sys.modules["transformers"].QuantizedCache
    sys.modules["transformers.cache_utils"] = stub
    gk.load_presses(root)  # kvpress.utils, base_press, scorer_press, knorm_press, ...
    for name in ["kvpress.presses.adakv_press", "kvpress.presses.decoding_press",
                 "kvpress.presses.cam_press"]:
        gk.load_module(root, name)
    return sys.modules


class Cache:
    def __init__(self):
        self.layers = [types.SimpleNamespace(keys=None, values=None)]


def attend(q, k, v, groups):
    """Softmax attention of q [1, H, 1, d] over k, v [1, Hkv, L, d]: output and weights."""
    kr, vr = gk.repeat_kv(k, groups), gk.repeat_kv(v, groups)
    w = torch.softmax(torch.matmul(q, kr.transpose(2, 3)) / math.sqrt(q.shape[-1]), dim=-1,
                      dtype=torch.float32)
    return torch.matmul(w, vr), w


# name, heads, kv heads, head_dim, prompt, decode steps, target_size, interval, merge_budget, seed
CASES = [
    ("cam_kvpress_interval4", 4, 2, 16, 40, 13, 32, 4, 8, 7),
    ("cam_kvpress_every_step", 2, 2, 8, 30, 10, 24, 1, 4, 1),
    ("cam_kvpress_default_budget", 4, 1, 16, 64, 9, 40, 3, 32, 11),
    ("cam_kvpress_gqa4_budget3", 8, 2, 8, 24, 17, 16, 5, 3, 5),
    ("cam_kvpress_prompt_over", 2, 1, 16, 50, 7, 20, 2, 6, 3),
]


def make_case(mods, name, heads, kv_heads, d, p, steps, target, interval, budget, seed, trial):
    torch.manual_seed(trial)
    total = p + steps
    q = torch.randn(1, heads, total, d)
    k = torch.randn(1, kv_heads, total, d) * (1 + torch.rand(1, kv_heads, total, 1))
    v = torch.randn(1, kv_heads, total, d)
    groups = heads // kv_heads
    knorm = mods["kvpress.presses.knorm_press"].KnormPress()
    cam_mod = mods["kvpress.presses.cam_press"]
    press = cam_mod.CAMPress(base_press=knorm, compression_interval=interval, target_size=target,
                             hidden_states_buffer_size=0, merge_budget=budget)
    layer = types.SimpleNamespace(layer_idx=0, config=types.SimpleNamespace(
        num_attention_heads=heads, num_key_value_heads=kv_heads), head_dim=d)
    cache = Cache()
    ok = [True]
    seen = [0]
    original_compress = press.compress
    draws = []

    def seeded_compress(module, hidden, keys, values, attentions, kwargs):
        # Near-ties of the layer-wide key-norm scores at the kept/evicted boundary and at the
        # merge candidates' boundary.
        scores = (-keys.norm(dim=-1)).mean(dim=1)[0].double()
        s = torch.sort(scores, descending=True).values
        big = s.abs().max()
        n_evict = keys.shape[2] - target
        if n_evict > 0 and (s[target - 1] - s[target]) <= 1e-4 * big:
            ok[0] = False
        ev = torch.sort(s[target:], descending=True).values
        kk = press.layer_step_counts[0]
        if 0 < kk < len(ev) and (ev[kk - 1] - ev[kk]) <= 1e-4 * big:
            ok[0] = False
        torch.manual_seed(merge_seed(seed, 0, seen[0]))
        return original_compress(module, hidden, keys, values, attentions, kwargs)

    press.compress = seeded_compress
    original_bernoulli = torch.bernoulli

    def recorded_bernoulli(prob, *args, **kwargs):
        state = torch.get_rng_state()
        u = torch.rand(prob.shape)
        torch.set_rng_state(state)
        mask = original_bernoulli(prob, *args, **kwargs)
        if not torch.equal(mask, (u < prob).to(mask.dtype)):
            sys.exit("torch.bernoulli does not draw as torch.rand: the margin check is wrong")
        if prob.numel() and (u - prob).abs().min() <= 1e-5:
            ok[0] = False
        draws.append((int(mask.sum()), prob.numel()))
        return mask

    torch.bernoulli = recorded_bernoulli
    tensors = {"q": q[0], "k": k[0], "v": v[0]}
    try:
        for step in range(-1, steps):
            first, n = (0, p) if step < 0 else (p + step, 1)
            keys = k[:, :, first:first + n] if step < 0 else torch.cat(
                [cache.layers[0].keys, k[:, :, first:first + 1]], dim=2)
            values = v[:, :, first:first + n] if step < 0 else torch.cat(
                [cache.layers[0].values, v[:, :, first:first + 1]], dim=2)
            cache.layers[0].keys, cache.layers[0].values = keys, values
            seen[0] = first + n
            if step < 0:
                out, w = None, None
            else:
                out, w = attend(q[:, :, first:first + 1], keys, values, groups)
                tensors[f"out.step.{step}"] = out[0, :, 0]
            kwargs = {"hidden_states": q[:, :, first:first + n].transpose(1, 2).reshape(1, n, -1),
                      "past_key_values": cache, "cache_position": torch.arange(first, first + n)}
            with torch.no_grad():
                press.forward_hook(layer, [], kwargs, [out, w])
    finally:
        torch.bernoulli = original_bernoulli
    if not ok[0]:
        return None
    config = {"press": "cam", "scorer": "knorm", "target_size": target,
              "compression_interval": interval, "merge_budget": budget, "seed": seed}
    meta = {"kind": "cam", "config": json.dumps(config, sort_keys=True), "prefill_len": str(p),
            "num_heads": str(heads), "num_kv_heads": str(kv_heads), "head_dim": str(d),
            "num_steps": str(steps), "trial_seed": str(trial), "torch_version": torch.__version__,
            "merges": json.dumps(draws)}
    return meta, tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kvpress", required=True, help="a checkout of github.com/NVIDIA/kvpress")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    mods = load_cam(args.kvpress)
    folder = os.path.join(args.out, "cam")
    os.makedirs(folder, exist_ok=True)
    for name, heads, kv_heads, d, p, steps, target, interval, budget, seed in CASES:
        for trial in range(3000, 3100):
            case = make_case(mods, name, heads, kv_heads, d, p, steps, target, interval, budget,
                             seed, trial)
            if case is not None:
                break
        else:
            sys.exit(f"{name}: no input without a near-tie")
        write_safetensors(os.path.join(folder, name + ".safetensors"), *case)
        print(f"{name}: trial {case[0]['trial_seed']}, merged/drawn per compression "
              f"{case[0]['merges']}")


if __name__ == "__main__":
    main()
