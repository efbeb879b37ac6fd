#!/usr/bin/env python3
"""Writes conformance cases from CAKE's own code (github.com/antgroup/cakekv, commit c4675ce):
a prompt and decode steps through its patched Llama attention (llama_attn_forward_cake in
cake/model/modify_llama.py) over a CakeCache, with its CakeprefillKVCache (layer budgets from
each layer's preference, cascading or not) and CakeDecodingKVCache_LayerWise; after every call
(all layers) the case records which positions every (layer, kv head) kept.

cakekv is not shipped with attnkit: point --cakekv at a checkout of it. Its files are loaded
with small stubs for what they import from transformers (Cache classes, the RoPE helpers, a
flash-attention forward that returns zeros: only the cache matters here), so only PyTorch and
NumPy are needed (Debian's python3-torch on the CPU is enough). The attention module's
projections hand the case's q, k, v to the function; RoPE is the identity (cos 1, sin 0). One
change around the code, not in it: after every call the caches go back to position order (the
sort CAKE's evictions carry commented out), since its unsorted top-k leaves the decoding cache in
score order and its pooling would then mix tokens that are not neighbours (docs/algorithms.md
1.10).

Inputs whose kept sets hang on a near-tie of the indicator (gap between the last kept and the
first evicted below 1e-6 of the largest) or whose budgets lie within 1e-3 of an integer before
truncation are skipped for the next seed: the cases check the semantics, not float rounding.

The runner (tests/conformance/cake_cases.cc, kind "cake") runs an attnkit session with
algorithm CAKE, per_head, PER_TOKEN, window_size = recent_tokens = window, intermediate_tokens =
cache_size - window, cake { gamma }, budget { allocator: CAKE cake_tau1 cake_tau2 cake_cascading }
and compares every kept set after every call.

  python3 generate_cake.py --cakekv /path/to/cakekv [--out tests/conformance/cases]
"""
import argparse
import json
import logging
import math
import os
import sys
import types

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate_kvpress import load_module, package, repeat_kv, rotate_half  # noqa: E402
from safetensors_writer import write_safetensors  # noqa: E402


def apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    # transformers.models.llama.modeling_llama.apply_rotary_pos_emb
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class Logger:
    """transformers' logger (warning_once included)."""

    def warning_once(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return getattr(logging.getLogger("llama"), name)


FLASH_CALLS = []


def flash_attention_forward(query_states, key_states, value_states, attention_mask, q_len,
                            **kwargs):
    FLASH_CALLS.append(key_states.shape)
    return torch.zeros_like(query_states)


def install_stubs():
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class Cache:
        pass

    class DynamicCache(Cache):
        pass

    class StaticCache(Cache):
        pass

    class HybridCache(Cache):
        pass

    module("transformers")
    module("transformers.models")
    module("transformers.models.llama")
    import typing
    module("transformers.models.llama.modeling_llama", repeat_kv=repeat_kv,
           rotate_half=rotate_half, apply_rotary_pos_emb=apply_rotary_pos_emb,
           logger=Logger(), Optional=typing.Optional, Tuple=typing.Tuple,
           Union=typing.Union, List=typing.List, BaseModelOutputWithPast=object,
           LlamaRMSNorm=object)
    module("transformers.models.llama.configuration_llama", LlamaConfig=object)
    module("transformers.modeling_flash_attention_utils",
           _flash_attention_forward=flash_attention_forward)
    module("transformers.cache_utils", Cache=Cache, DynamicCache=DynamicCache,
           StaticCache=StaticCache, HybridCache=HybridCache)


def load_cake(root):
    install_stubs()
    package(root, "cake")
    package(root, "cake.model")
    load_module(root, "cake.utils")
    cache = load_module(root, "cake.cake_cache")
    llama = load_module(root, "cake.model.modify_llama")
    return cache, llama


def positions_of(held, originals):
    rows = {tuple(r.tolist()): i for i, r in enumerate(originals)}
    return torch.tensor([rows[tuple(r.tolist())] for r in held])


def sort_cache(cache, k, length, prefill):
    """The commented-out `indices = indices.sort().values` of CAKE's evictions, enabled: every
    layer's cache (and, during the prompt, its stored indicator, which is aligned with the cache's
    first rows) back in position order after each call, so the decoding cache pools neighbouring
    positions (docs/algorithms.md 1.10 says why). The kept sets are the code's own."""
    for layer in range(len(cache.key_cache)):
        keys, values = cache.key_cache[layer], cache.value_cache[layer]
        new_k, new_v = torch.empty_like(keys), torch.empty_like(values)
        scores = cache.evict_scores[layer] if prefill and layer < len(cache.evict_scores) else None
        new_s = scores.clone() if scores is not None else None
        for h in range(keys.shape[1]):
            pos = positions_of(keys[0, h], k[layer, h, :length])
            order = torch.argsort(pos)
            new_k[0, h] = keys[0, h, order]
            new_v[0, h] = values[0, h, order]
            if new_s is not None:
                m = scores.shape[-1]
                new_s[0, h] = scores[0, h, torch.argsort(pos[:m])]
        cache.key_cache[layer], cache.value_cache[layer] = new_k, new_v
        if new_s is not None:
            cache.evict_scores[layer] = new_s


class Projection:
    """What the patched attention reads through q_proj/k_proj/v_proj: the case's rows."""

    def __init__(self):
        self.value = None
        self.weight = torch.zeros(1)  # the dtype the function casts its inputs to

    def __call__(self, hidden):
        return self.value


def make_case(cache_mod, llama_mod, layers, heads, kv_heads, d, prompt, steps, cache_size,
              window, tau1, tau2, gamma, cascading, trial):
    torch.manual_seed(trial)
    total = prompt + steps
    q = torch.randn(layers, heads, total, d)
    k = torch.randn(layers, kv_heads, total, d) * (1 + 2 * torch.rand(layers, kv_heads, total, 1))
    v = torch.randn(layers, kv_heads, total, d)
    config = types.SimpleNamespace(
        window_size=[window] * layers, key_size=[cache_size - window] * layers,
        prefill=[True] * layers, decoding_evict=[None] * layers, tau1=tau1, tau2=tau2,
        gamma=gamma)
    config.prefill_cake_evict = [cache_mod.CakeprefillKVCache(
        cache_size=cache_size, window_size=window, num_heads=heads, num_layers=layers,
        use_cascading=cascading) for _ in range(layers)]
    cache = cache_mod.CakeCache()
    modules = []
    for layer in range(layers):
        m = types.SimpleNamespace(
            config=config, layer_idx=layer, num_heads=heads, num_key_value_heads=kv_heads,
            head_dim=d, num_key_value_groups=heads // kv_heads, q_proj=Projection(),
            k_proj=Projection(), v_proj=Projection(), o_proj=lambda x: x, training=False,
            attention_dropout=0.0, is_causal=True, _flash_attn_uses_top_left_mask=False)
        modules.append(m)
    tensors = {"q": q, "k": k, "v": v}
    ok = True
    # Watch every indicator top-k and every budget for near-ties.
    original_topk = torch.Tensor.topk

    def watched_topk(self, k_, *args, **kwargs):
        nonlocal ok
        if self.dim() == 3 and k_ < self.shape[-1]:
            s = torch.sort(self.double(), dim=-1, descending=True).values
            gap = (s[..., k_ - 1] - s[..., k_]).abs().min()
            if gap <= 1e-6 * s.abs().max():
                ok = False
        return original_topk(self, k_, *args, **kwargs)

    torch.Tensor.topk = watched_topk
    original_adjust = cache_mod.adjust_budgets

    def watched_adjust(budget_list, total_budget, seq_len, layer_nums):
        nonlocal ok
        for b in budget_list:
            if 0 < abs(float(b) - round(float(b))) < 1e-3:
                ok = False
        return original_adjust(budget_list, total_budget, seq_len, layer_nums)

    cache_mod.adjust_budgets = watched_adjust
    try:
        for step in range(-1, steps):
            first, n = (0, prompt) if step < 0 else (prompt + step, 1)
            cos = torch.ones(1, n, d)
            sin = torch.zeros(1, n, d)
            for layer in range(layers):
                m = modules[layer]
                m.q_proj.value = q[layer, :, first:first + n].transpose(0, 1).reshape(1, n, -1)
                m.k_proj.value = k[layer, :, first:first + n].transpose(0, 1).reshape(1, n, -1)
                m.v_proj.value = v[layer, :, first:first + n].transpose(0, 1).reshape(1, n, -1)
                with torch.no_grad():
                    llama_mod.llama_attn_forward_cake(
                        m, torch.zeros(1, n, heads * d), past_key_value=cache,
                        position_embeddings=(cos, sin))
                sort_cache(cache, k, first + n, prefill=step < 0)
            name = "prefill" if step < 0 else f"step.{step}"
            kept = torch.zeros(layers, kv_heads, total, dtype=torch.int64)
            for layer in range(layers):
                held = cache.key_cache[layer][0]
                for h in range(kv_heads):
                    rows = {tuple(r.tolist()): i for i, r in enumerate(k[layer, h, :first + n])}
                    for r in held[h]:
                        kept[layer, h, rows[tuple(r.tolist())]] = 1
            tensors["kept." + name] = kept
    finally:
        torch.Tensor.topk = original_topk
        cache_mod.adjust_budgets = original_adjust
    if not ok:
        return None
    config_json = {"cache_size": cache_size, "window_size": window, "tau1": tau1, "tau2": tau2,
                   "gamma": gamma, "cascading": cascading}
    meta = {"kind": "cake", "config": json.dumps(config_json, sort_keys=True),
            "num_layers": str(layers), "num_heads": str(heads), "num_kv_heads": str(kv_heads),
            "head_dim": str(d), "prefill_len": str(prompt), "num_steps": str(steps),
            "trial_seed": str(trial), "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "budgets": json.dumps([int(b) for b in cache.layer_budget])}
    return meta, tensors


# name, layers, heads, kv heads, head_dim, prompt, steps, cache_size, window, tau1, tau2, gamma,
# cascading
CASES = [
    ("cake_default_temperatures", 4, 4, 2, 16, 96, 6, 40, 8, 1.0, 1.0, 200.0, False),
    ("cake_cascading", 4, 4, 2, 16, 96, 6, 40, 8, 1.0, 1.0, 200.0, True),
    ("cake_tau_gamma", 3, 4, 1, 8, 80, 5, 36, 6, 1.6, 0.4, 5.0, False),
    ("cake_cascading_gqa4", 5, 8, 2, 8, 72, 4, 30, 6, 1.9, 1.8, 50.0, True),
    ("cake_short_prompt", 3, 2, 2, 16, 40, 8, 32, 8, 1.0, 1.0, 200.0, True),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cakekv", required=True, help="a checkout of github.com/antgroup/cakekv")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    cache_mod, llama_mod = load_cake(args.cakekv)
    folder = os.path.join(args.out, "cake")
    os.makedirs(folder, exist_ok=True)
    for name, *params in CASES:
        for trial in range(4000, 4100):
            case = make_case(cache_mod, llama_mod, *params, trial)
            if case is not None:
                break
        else:
            sys.exit(f"{name}: no input without a near-tie")
        write_safetensors(os.path.join(folder, name + ".safetensors"), *case)
        print(f"{name}: trial {case[0]['trial_seed']}, layer budgets {case[0]['budgets']}")


if __name__ == "__main__":
    main()
