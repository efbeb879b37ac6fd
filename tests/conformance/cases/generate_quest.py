#!/usr/bin/env python3
"""Writes Quest sparse-decode cases (tests/conformance/cases/quest/quest_*.safetensors) by running the
reference's own decode attention, `forward` of evaluation/quest_attention.py in mit-han-lab/Quest
(commit 01c1623), on random queries, keys and values.

Quest is not shipped with attnkit: point --quest at a checkout of it (never commit it). The file
imports from transformers what it patches; those are stubbed: LlamaAttention, MistralAttention and
DynamicCache (classes it only tests against; the cases pass the legacy tuple cache), apply_rotary_pos_emb (identity: the case's q and k are already
rotated, as attnkit's inputs are) and repeat_kv (identity: the cases are multi-head, as the
reference's Llama-2 models are, so it has nothing to repeat). `forward` then runs unchanged: it
bounds each chunk's q.k from the chunk's per-channel key maxima times sign(q), keeps the top
max(3, min(L, token_budget) // chunk_size) chunks per head (local_heavy_hitter_mask) and attends
over them. Its `self` is a namespace holding the case's tensors behind q_proj / k_proj / v_proj
(the new token's q, k and v), an identity o_proj and the past keys and values; layer_id 2 (the
reference attends densely in layers 0 and 1). Only PyTorch is needed (Debian's python3-torch).

A case (kind "quest") holds q [H, d] (the decode query), k and v [H, L, d] (the cache, the new
token last), the reference's output out [H, d] and `selected` [H, L] (1 = the token was attended:
its softmax weight is not zero), and config {num_heads, head_dim, length, chunk_size,
token_budget}. The runner (tests/conformance/quest_cases.cc) prefills a session with
sparse_decode { token_budget } and page_size = chunk_size with the first L - 1 tokens, runs the
decode step and compares the output.

  /usr/bin/python3 generate_quest.py --quest /path/to/Quest [--out DIR]
"""
import argparse
import importlib.util
import json
import os
import sys
import types

import torch

from safetensors_writer import write_safetensors


def stub(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def load_quest(root):
    stub("transformers")
    stub("transformers.models")
    stub("transformers.models.llama")
    stub("transformers.models.llama.modeling_llama",
         LlamaAttention=type("LlamaAttention", (), {}),
         apply_rotary_pos_emb=lambda q, k, cos, sin, position_ids: (q, k),
         repeat_kv=lambda x, n_rep: x)
    stub("transformers.cache_utils", DynamicCache=type("DynamicCache", (), {}))
    stub("transformers.models.mistral")
    stub("transformers.models.mistral.modeling_mistral",
         MistralAttention=type("MistralAttention", (), {}))
    path = os.path.join(root, "evaluation", "quest_attention.py")
    spec = importlib.util.spec_from_file_location("quest_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_case(quest, gen, heads, dim, length, chunk, budget, query_scale):
    q = torch.randn(heads, dim, generator=gen) * query_scale
    k = torch.randn(heads, length, dim, generator=gen)
    v = torch.randn(heads, length, dim, generator=gen)
    hidden = heads * dim
    self = types.SimpleNamespace(
        num_heads=heads, head_dim=dim, hidden_size=hidden, num_key_value_heads=heads,
        num_key_value_groups=1, layer_id=2, chunk_size=chunk, token_budget=budget,
        q_proj=lambda h: q.reshape(1, 1, hidden),
        k_proj=lambda h: k[:, -1].reshape(1, 1, hidden),
        v_proj=lambda h: v[:, -1].reshape(1, 1, hidden),
        o_proj=lambda x: x,
        rotary_emb=lambda x, position_ids: (None, None))
    past = (k[:, :-1].unsqueeze(0), v[:, :-1].unsqueeze(0))
    out, weights, _ = quest.forward(self, torch.zeros(1, 1, hidden), attention_mask=None,
                                    position_ids=torch.tensor([[length - 1]]),
                                    past_key_value=past, output_attentions=True, use_cache=True)
    config = {"num_heads": heads, "head_dim": dim, "length": length, "chunk_size": chunk,
              "token_budget": budget}
    meta = {"kind": "quest", "config": json.dumps(config, sort_keys=True),
            "source": "mit-han-lab/Quest evaluation/quest_attention.py forward (01c1623)"}
    selected = (weights[0, :, 0] > 0)
    tensors = {"q": q, "k": k, "v": v, "out": out.reshape(heads, dim).contiguous(),
               "selected": selected}
    return meta, tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quest", required=True)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "quest"))
    args = parser.parse_args()
    quest = load_quest(args.quest)
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(2026)
    cases = {
        # name: (heads, head dim, length, chunk, token budget, query scale)
        "quest_aligned": (2, 32, 256, 16, 64, 2.0),
        "quest_partial_last_chunk": (2, 32, 203, 16, 64, 2.0),
        "quest_small_chunks": (2, 32, 333, 8, 40, 3.0),
        "quest_min_three_chunks": (3, 16, 50, 16, 16, 2.0),  # max(3, 1) chunks
        "quest_budget_not_multiple": (2, 32, 150, 16, 70, 2.0),  # 70 // 16 = 4 chunks
        "quest_short_cache": (2, 32, 100, 16, 1024, 2.0),  # min(L, budget) // 16 = 6 of 7
        "quest_large_chunks": (2, 32, 257, 32, 100, 2.5),
        "quest_weak_queries": (2, 32, 180, 16, 48, 0.5),
    }
    for name, (heads, dim, length, chunk, budget, scale) in cases.items():
        meta, tensors = make_case(quest, gen, heads, dim, length, chunk, budget, scale)
        write_safetensors(os.path.join(args.out, name + ".safetensors"), meta, tensors)
        read = int(tensors["selected"].sum())
        print(f"{name}: {read} of {heads * length} tokens attended")


if __name__ == "__main__":
    main()
