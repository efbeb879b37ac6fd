#!/usr/bin/env python3
"""Writes conformance cases from kvpress's own presses: what SnapKVPress, TOVAPress and
ExpectedAttentionPress keep when they compress a prompt, and what DMSPress (threshold eviction,
over KnormPress) keeps at the prompt and at every decode step.

kvpress (github.com/NVIDIA/kvpress) is not shipped with attnkit: point --kvpress at a checkout
of it. The presses are loaded from their files (kvpress/presses/*.py and kvpress/utils.py) without
kvpress's package __init__; the few names they import from transformers are stubbed below with
transformers' own definitions restated (repeat_kv, rotate_half, the default RoPE of
LlamaRotaryEmbedding, and empty classes for the isinstance checks), so only PyTorch is needed
(Debian's python3-torch on the CPU is enough).

Each case is one prompt of one layer (batch 1): random keys/values and queries, the press's
`compress()` called as its forward hook calls it after the prefill, and the kept positions read
back by matching the rows it returns with the rows it was given. kvpress compresses at prefill only,
so a case has no decode step. The runner (tests/conformance/kvpress_cases.cc, kind "kvpress") maps
the press's parameters onto an attnkit EvictionConfig as docs/kvpress.md says and checks that the
policy (from the attention weights) and a session (from q/k/v) keep exactly these positions per kv
head.

Inputs whose kept set hangs on a near-tie (the gap between the last kept and the first evicted
score below 1e-4 of the row's largest, 1e-3 for expected attention, whose RoPE angles kvpress
computes in float32) are skipped for the next seed: the cases check the semantics, not float
rounding.

  python3 generate_kvpress.py --kvpress /path/to/kvpress [--out tests/conformance/cases]
"""
import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
import types
from safetensors_writer import write_safetensors

try:
    import torch
    from torch import nn
except ImportError:  # no PyTorch here: NumPy stands in (numpy_torch.py says how far)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy_torch as torch
    nn = torch.nn
    sys.modules.update({"torch": torch, "torch.nn": nn, "torch.nn.functional": nn.functional})

# ---- transformers stubs ----------------------------------------------------------------------


def repeat_kv(hidden_states, n_rep):
    # transformers.models.llama.modeling_llama.repeat_kv
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen,
                                                           head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def rotate_half(x):
    # transformers.models.llama.modeling_llama.rotate_half
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """LlamaRotaryEmbedding with the default rope type (attention_scaling 1)."""

    def __init__(self, head_dim, theta):
        super().__init__()
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() /
                                         head_dim))

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def install_transformers_stubs():
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class _Stub:  # models and caches the presses only name in isinstance checks
        pass

    names = ["Gemma3ForConditionalGeneration", "LlamaForCausalLM", "MistralForCausalLM",
             "Phi3ForCausalLM", "PreTrainedModel", "QuantizedCache", "Qwen2ForCausalLM",
             "Qwen3ForCausalLM", "Cache", "DynamicCache"]
    module("transformers", **{n: type(n, (_Stub,), {}) for n in names})
    module("transformers.models")
    module("transformers.models.llama")
    module("transformers.models.llama.modeling_llama", repeat_kv=repeat_kv, rotate_half=rotate_half)
    for pkg, cls in [("gemma3", "Gemma3Attention"), ("phi3", "Phi3Attention"),
                     ("qwen3", "Qwen3Attention")]:
        module(f"transformers.models.{pkg}")
        module(f"transformers.models.{pkg}.modeling_{pkg}", **{cls: type(cls, (_Stub,), {})})


def package(root, name):
    """An empty package `name` whose submodules are the files under `root`/name (dotted)."""
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = pkg
    return pkg


def load_module(root, name):
    """The module `name` (dotted) from its file under `root`, registered in sys.modules."""
    path = os.path.join(root, *name.split(".")) + ".py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_presses(root):
    """kvpress.presses.{snapkv,tova,expected_attention}_press from the checkout at `root`."""
    for name in ["kvpress", "kvpress.presses"]:
        package(root, name)
    for name in ["kvpress.utils", "kvpress.presses.base_press", "kvpress.presses.scorer_press",
                 "kvpress.presses.snapkv_press", "kvpress.presses.tova_press",
                 "kvpress.presses.expected_attention_press", "kvpress.presses.knorm_press",
                 "kvpress.presses.dms_press"]:
        load_module(root, name)
    return sys.modules


# ---- the attention layer the presses see ------------------------------------------------------


class Layer(nn.Module):
    """What the presses read from an attention module: its config, head_dim, q_proj (identity:
    the hidden states given to the press are the pre-RoPE queries themselves) and rotary_emb."""

    def __init__(self, heads, kv_heads, head_dim, theta):
        super().__init__()
        self.config = types.SimpleNamespace(num_attention_heads=heads,
                                            num_key_value_heads=kv_heads)
        self.head_dim = head_dim
        self.q_proj = nn.Identity()
        self.rotary_emb = RotaryEmbedding(head_dim, theta)
        self.layer_idx = 0


def rope(x, cos, sin):
    # transformers' apply_rotary_pos_emb for one tensor: [b, h, s, d], cos/sin [b, s, d]
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def attention(q, k, kv_groups):
    """Eager causal softmax attention weights [1, H, P, P] in float32 (GQA keys repeated)."""
    d = q.shape[-1]
    w = torch.matmul(q, repeat_kv(k, kv_groups).transpose(2, 3)) / math.sqrt(d)
    p = q.shape[2]
    mask = torch.triu(torch.full((p, p), float("-inf")), diagonal=1)
    return torch.softmax(w + mask, dim=-1, dtype=torch.float32)


def kept_rows(before, after):
    """Per kv head, the positions in `before` of the rows `compress` returned (ascending)."""
    out = []
    for h in range(before.shape[1]):
        rows = {tuple(r.tolist()): i for i, r in enumerate(before[0, h])}
        out.append(sorted(rows[tuple(r.tolist())] for r in after[0, h]))
    return out


def margin_ok(scores, n_kept, rel):
    """True when, per kv head, the n_kept-th best score clears the next one by `rel` of the max."""
    for row in scores[0]:
        s = torch.sort(row.double(), descending=True).values
        if n_kept < len(s) and (s[n_kept - 1] - s[n_kept]) <= rel * s[0].abs():
            return False
    return True


# ---- cases ------------------------------------------------------------------------------------

# name, press, press parameters, heads, kv heads, head_dim, prompt length, compression_ratio
CASES = [
    ("snapkv_kvpress_default", "snapkv", {"window_size": 64, "kernel_size": 5}, 2, 1, 16, 128, 0.4),
    ("snapkv_kvpress_w8_k5", "snapkv", {"window_size": 8, "kernel_size": 5}, 4, 2, 8, 48, 0.5),
    ("snapkv_kvpress_w4_k3_gqa4", "snapkv", {"window_size": 4, "kernel_size": 3}, 8, 2, 8, 40, 0.7),
    ("snapkv_kvpress_w6_k7_mha", "snapkv", {"window_size": 6, "kernel_size": 7}, 3, 3, 8, 33, 0.4),
    ("snapkv_kvpress_w16_k1", "snapkv", {"window_size": 16, "kernel_size": 1}, 2, 1, 16, 64, 0.6),
    ("tova_kvpress_a", "tova", {}, 4, 2, 8, 40, 0.5),
    ("tova_kvpress_gqa4", "tova", {}, 8, 2, 8, 57, 0.75),
    ("tova_kvpress_mha", "tova", {}, 2, 2, 16, 30, 0.3),
    ("expected_attention_kvpress_default", "expected_attention", {}, 4, 2, 16, 64, 0.5),
    ("expected_attention_kvpress_nf16", "expected_attention", {"n_future_positions": 16}, 4, 2, 8,
     40, 0.5),
    ("expected_attention_kvpress_nocov", "expected_attention",
     {"n_future_positions": 32, "use_covariance": False}, 4, 1, 8, 36, 0.6),
    ("expected_attention_kvpress_novnorm", "expected_attention",
     {"n_future_positions": 64, "use_vnorm": False, "n_sink": 2}, 2, 2, 8, 30, 0.5),
    ("expected_attention_kvpress_eps", "expected_attention",
     {"n_future_positions": 8, "epsilon": 0.01, "n_sink": 0}, 6, 3, 8, 45, 0.3),
    ("expected_attention_kvpress_plain", "expected_attention",
     {"n_future_positions": 100, "use_covariance": False, "use_vnorm": False}, 4, 2, 16, 50, 0.5),
]

THETA = 10000.0


def make_case(mods, name, press_name, params, heads, kv_heads, d, p, ratio, seed):
    torch.manual_seed(seed)
    q_pre = torch.randn(1, heads, p, d)
    k_pre = torch.randn(1, kv_heads, p, d)
    v = torch.randn(1, kv_heads, p, d)
    if press_name == "expected_attention":
        # Queries with a common direction, as real ones have, so the mean matters.
        q_pre = q_pre + 2.0 * torch.randn(1, heads, 1, d)
    layer = Layer(heads, kv_heads, d, THETA)
    cos, sin = layer.rotary_emb(q_pre, torch.arange(p).unsqueeze(0))
    q, k = rope(q_pre, cos, sin), rope(k_pre, cos, sin)
    attn = attention(q, k, heads // kv_heads)
    hidden = q_pre.transpose(1, 2).reshape(1, p, heads * d)  # q_proj is the identity
    cls = {"snapkv": mods["kvpress.presses.snapkv_press"].SnapKVPress,
           "tova": mods["kvpress.presses.tova_press"].TOVAPress,
           "expected_attention":
               mods["kvpress.presses.expected_attention_press"].ExpectedAttentionPress}[press_name]
    press = cls(compression_ratio=ratio, **params)
    kwargs = {"position_embeddings": (cos, sin)}
    with torch.no_grad():
        scores = press.score(layer, hidden, k, v, attn, kwargs)
        new_k, _ = press.compress(layer, hidden, k, v, attn, kwargs)
    n_kept = new_k.shape[2]
    rel = 1e-3 if press_name == "expected_attention" else 1e-4
    if not margin_ok(scores, n_kept, rel):
        return None
    config = {"press": press_name, "compression_ratio": ratio}
    config.update({f.name: getattr(press, f.name) for f in dataclasses.fields(press)})
    meta = {"kind": "kvpress", "config": json.dumps(config, sort_keys=True),
            "prefill_len": str(p), "num_heads": str(heads), "num_kv_heads": str(kv_heads),
            "head_dim": str(d), "num_steps": "0", "seed": str(seed), "rope_theta": str(THETA),
            "rope_interleaved": "false", "torch_version": torch.__version__}
    tensors = {"prefill.q": q, "prefill.k": k, "prefill.v": v, "prefill.attn": attn,
               "kept.prefill": torch.tensor(kept_rows(k, new_k), dtype=torch.int64)}
    return meta, tensors


# DMSPress (threshold eviction) over KnormPress, prefill then decoding: name, threshold, sliding
# window, heads, kv heads, head_dim, prompt length, decode steps.
DMS_CASES = [
    ("threshold_kvpress_dms_knorm_a", -2.8, 8, 4, 2, 8, 24, 12),
    ("threshold_kvpress_dms_knorm_w4", -3.0, 4, 2, 2, 8, 16, 10),
    ("threshold_kvpress_dms_knorm_gqa4", -3.9, 6, 8, 2, 16, 20, 8),
    ("threshold_kvpress_dms_knorm_prompt_in_window", -2.5, 32, 2, 1, 8, 12, 30),
]


class _Cache:
    """The one-layer cache DMSPress's forward hook reads (cache.layers[i].keys/values)."""

    def __init__(self):
        self.layers = [types.SimpleNamespace(keys=None, values=None)]


def make_dms_case(mods, threshold, window, heads, kv_heads, d, p, steps, seed):
    """Runs DMSPress(KnormPress()) as a forward hook would: the prompt, then one token per step.
    The press never drops rows (it masks them); the kept set of each kv head is every cached
    position but the masked ones."""
    torch.manual_seed(seed)
    total = p + steps
    q_pre = torch.randn(1, heads, total, d)
    k_pre = torch.randn(1, kv_heads, total, d)
    v = torch.randn(1, kv_heads, total, d)
    layer = Layer(heads, kv_heads, d, THETA)
    cos, sin = layer.rotary_emb(q_pre, torch.arange(total).unsqueeze(0))
    q, k = rope(q_pre, cos, sin), rope(k_pre, cos, sin)
    knorm = mods["kvpress.presses.knorm_press"].KnormPress()
    press = mods["kvpress.presses.dms_press"].DMSPress(press=knorm, threshold=threshold,
                                                       sliding_window_size=window, decoding=True)
    cache = _Cache()
    layer.masked_key_indices = None  # the attention patch clears it at prefill
    tensors, scores = {}, []
    for step in range(-1, steps):
        first, n = (0, p) if step < 0 else (p + step, 1)
        prefix = "prefill" if step < 0 else f"step.{step}"
        cache.layers[0].keys = k[:, :, :first + n]
        cache.layers[0].values = v[:, :, :first + n]
        hidden = q_pre[:, :, first:first + n].transpose(1, 2).reshape(1, n, heads * d)
        kwargs = {"hidden_states": hidden, "past_key_values": cache,
                  "cache_position": torch.arange(first, first + n),
                  "position_embeddings": (cos[:, first:first + n], sin[:, first:first + n])}
        with torch.no_grad():
            press.forward_hook(layer, [], kwargs, [None, None])
        keep = [[1] * (first + n) for _ in range(kv_heads)]
        if layer.masked_key_indices is not None:
            _, heads_idx, tokens_idx = layer.masked_key_indices
            for h, t in zip(heads_idx.tolist(), tokens_idx.tolist()):
                keep[h][t] = 0
        tensors[prefix + ".q"] = q[:, :, first:first + n]
        tensors[prefix + ".k"] = k[:, :, first:first + n]
        tensors[prefix + ".v"] = v[:, :, first:first + n]
        tensors["keep_mask." + prefix] = torch.tensor(keep, dtype=torch.int64)
    # Near-ties: no key norm within 1e-4 of the threshold.
    norms = [abs(-math.sqrt(sum(x * x for x in row)) - threshold)
             for row in k[0].reshape(kv_heads * total, d).tolist()]
    if min(norms) < 1e-4:
        return None
    config = {"press": "dms", "scorer": "knorm", "threshold": threshold,
              "sliding_window_size": window, "decoding": True}
    meta = {"kind": "kvpress", "config": json.dumps(config, sort_keys=True),
            "prefill_len": str(p), "num_heads": str(heads), "num_kv_heads": str(kv_heads),
            "head_dim": str(d), "num_steps": str(steps), "seed": str(seed),
            "rope_theta": str(THETA), "rope_interleaved": "false",
            "torch_version": torch.__version__}
    return meta, tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kvpress", required=True, help="a checkout of github.com/NVIDIA/kvpress")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    install_transformers_stubs()
    mods = load_presses(args.kvpress)
    for name, press_name, params, heads, kv_heads, d, p, ratio in CASES:
        for seed in range(1000, 1100):
            case = make_case(mods, name, press_name, params, heads, kv_heads, d, p, ratio, seed)
            if case is not None:
                break
        else:
            sys.exit(f"{name}: no seed without a near-tie")
        folder = os.path.join(args.out, press_name)
        os.makedirs(folder, exist_ok=True)
        write_safetensors(os.path.join(folder, name + ".safetensors"), *case)
        print(f"{name}: seed {case[0]['seed']}, kept {list(case[1]['kept.prefill'].shape)}")
    for name, threshold, window, heads, kv_heads, d, p, steps in DMS_CASES:
        case = make_dms_case(mods, threshold, window, heads, kv_heads, d, p, steps, 2000)
        assert case is not None, name
        folder = os.path.join(args.out, "threshold")
        os.makedirs(folder, exist_ok=True)
        write_safetensors(os.path.join(folder, name + ".safetensors"), *case)
        last = case[1][f"keep_mask.step.{steps - 1}"]
        print(f"{name}: kept at the end {last.sum(1).tolist()} of {last.shape[1]}")


if __name__ == "__main__":
    main()
