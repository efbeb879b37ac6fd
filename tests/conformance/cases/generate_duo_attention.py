#!/usr/bin/env python3
"""Writes conformance cases from kvpress's DuoAttentionPress: which keys its streaming heads drop
when it compresses a prompt (the keys it masks, `module.masked_key_indices`), for random head scores,
head_compression_ratio, sink and recent sizes and prompt lengths.

kvpress (github.com/NVIDIA/kvpress) is not shipped with attnkit: point --kvpress at a checkout of
it. kvpress/presses/duo_attention_press.py is loaded from its file with the modules it imports and
does not use on this path stubbed (requests, cachetools, datasets, transformers, kvpress's
BasePress); its own post_init_from_model() derives the streaming mask (the attention pattern it
would download is replaced by the case's scores) and its own compress() marks the masked keys.
Only PyTorch and NumPy are needed (Debian's python3-torch is enough).

A case (kind "head_split") holds the scores ([num_layers, num_kv_heads], float32 so that the float64
the press reads equals what attnkit reads), the press's parameters in `config`, and keep_mask
[num_layers, num_kv_heads, prompt_len] (1 = the key survives). The runner
(tests/conformance/head_split_cases.cc) builds a session with the matching HeadSplit and checks
the positions every kv head keeps after the prompt.

  /usr/bin/python3 generate_duo_attention.py --kvpress /path/to/kvpress [--out DIR]
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch

from safetensors_writer import write_safetensors


def stub(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def load_press(kvpress_dir):
    class LRUCache(dict):
        def __init__(self, maxsize=None):
            super().__init__()

    def cached(cache, key=None):  # no caching: every case derives its own mask
        return lambda function: function

    @dataclasses.dataclass
    class BasePress:
        def post_init_from_model(self, model):
            pass

    stub("requests")
    stub("cachetools", LRUCache=LRUCache, cached=cached)
    stub("datasets", load_dataset=None)
    stub("transformers", AutoTokenizer=None)
    stub("transformers.models")
    stub("transformers.models.gemma3")
    stub("transformers.models.gemma3.modeling_gemma3", Gemma3Attention=type("Gemma3Attention", (), {}))
    stub("transformers.models.llama")
    stub("transformers.models.llama.modeling_llama", apply_rotary_pos_emb=None)
    stub("transformers.models.qwen3")
    stub("transformers.models.qwen3.modeling_qwen3", Qwen3Attention=type("Qwen3Attention", (), {}))
    stub("kvpress")
    stub("kvpress.presses")
    stub("kvpress.presses.base_press", BasePress=BasePress)
    path = os.path.join(kvpress_dir, "kvpress", "presses", "duo_attention_press.py")
    spec = importlib.util.spec_from_file_location("kvpress.presses.duo_attention_press", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DuoAttentionPress


def make_case(Press, rng, num_layers, num_kv_heads, ratio, sink, recent, prompt_len):
    scores = rng.random((num_layers, num_kv_heads)).astype(np.float32)
    head_scores = np.clip(scores.astype(np.float64), 0, 1)  # as load_attention_pattern clips
    press = Press(head_compression_ratio=ratio)
    Press.load_attention_pattern = staticmethod(lambda model: (sink, recent, head_scores))
    press.post_init_from_model(types.SimpleNamespace(device="cpu"))
    keep = torch.ones(num_layers, num_kv_heads, prompt_len, dtype=torch.bool)
    head_dim = 8
    for layer in range(num_layers):
        module = types.SimpleNamespace(layer_idx=layer,
                                       config=types.SimpleNamespace(_attn_implementation="sdpa"))
        keys = torch.zeros(1, num_kv_heads, prompt_len, head_dim)
        press.compress(module, None, keys, keys, None, {})
        masked = getattr(module, "masked_key_indices", None)
        if masked is not None:
            _, heads, positions = masked
            keep[layer, heads, positions] = False
    config = {"num_layers": num_layers, "num_kv_heads": num_kv_heads,
              "num_heads": 2 * num_kv_heads, "head_dim": head_dim, "streaming_ratio": ratio,
              "sink_tokens": sink, "recent_tokens": recent, "prompt_len": prompt_len,
              "streaming_heads": int(press.streaming_mask.sum())}
    meta = {"kind": "head_split", "config": json.dumps(config, sort_keys=True),
            "source": "kvpress DuoAttentionPress (post_init_from_model, compress)"}
    return meta, {"head_scores": torch.from_numpy(scores), "keep_mask": keep}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kvpress", required=True)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "head_split"))
    args = parser.parse_args()
    Press = load_press(args.kvpress)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(2026)
    cases = {
        # name: (layers, kv heads, ratio, sink, recent, prompt)
        "head_split_duo_half": (4, 4, 0.5, 4, 8, 40),
        "head_split_duo_quarter_gqa": (3, 8, 0.25, 2, 5, 33),
        "head_split_duo_round_half_even": (2, 2, 0.625, 3, 6, 20),  # round(4 * 0.625) = 2
        "head_split_duo_round_up": (2, 2, 0.875, 1, 4, 17),  # round(4 * 0.875) = 4
        "head_split_duo_all": (2, 2, 1.0, 0, 7, 25),
        "head_split_duo_none": (2, 3, 0.0, 2, 3, 12),
        "head_split_duo_short_prompt": (3, 2, 0.5, 8, 16, 20),  # shorter than sink + recent
        "head_split_duo_no_sink": (2, 4, 0.5, 0, 1, 9),
    }
    for name, (layers, kv_heads, ratio, sink, recent, prompt) in cases.items():
        meta, tensors = make_case(Press, rng, layers, kv_heads, ratio, sink, recent, prompt)
        write_safetensors(os.path.join(args.out, name + ".safetensors"), meta, tensors)
        print(f"{name}: {json.loads(meta['config'])['streaming_heads']} streaming heads, "
              f"{int((~tensors['keep_mask']).sum())} keys dropped")


if __name__ == "__main__":
    main()
