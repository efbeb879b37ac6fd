#!/usr/bin/env python3
"""Writes Tri-shape conformance cases for queries shorter than the keys (a prompt continuing a
cached prefix) from the reference's own code: OpenVINO genai_optimizations'
`genai_opt/sparse_attention.py` (github.com/openvinotoolkit/openvino_contrib,
modules/genai_optimizations; the version of commit e08bdfd8 or later, the first whose Tri-shape takes
k_len > q_len: earlier ones assert or build a square mask).

The reference is not shipped with attnkit: point --reference at that file. It is loaded on its own
with the few names it imports stubbed below, so only PyTorch is needed (Debian's python3-torch on
the CPU is enough):
  - transformers: repeat_kv restated from transformers' llama code; the model classes, the cache
    class and the RoPE helpers (used only by its model adapters, never here) as placeholders.
  - block_sparse_attn.block_sparse_attn_func (github.com/mit-han-lab/Block-Sparse-Attention, a CUDA
    kernel): restated in plain PyTorch from its forward kernel (csrc/block_sparse_attn/src/
    flash_fwd_kernel.h, compute_block_attn_1rowblock, and flash_blockmask.h, fwdBlockmask) for
    the call the reference makes (is_causal, one sequence, block mask of 128 x 128 blocks, m and n
    blocks counted from query 0 and key 0): query i (0-based among the q_len queries) attends key j
    iff j <= i + k_len - q_len (causal, aligned to the bottom right: n_block_max and
    apply_mask_streaming) and block_mask[i // 128, j // 128] (the row's key-block list); a query
    that attends no key gets zeros (the empty-line path). The stub also records the mask.

Each case calls `SparseAttention("tri-shape", ...)._tri_shape_attention` as its patched attention
layer does, with random q/k/v (batch 1), the attention mask transformers hands the layer (additive,
[1, 1, q_len, k_len], 0 where key j <= i + k_len - q_len, the dtype's minimum elsewhere) and the
default scale 1/sqrt(head_dim). When q_len > recent_size the reference builds a block mask and calls
the kernel: the case's `block_mask` is that mask. When q_len <= recent_size it computes plain dense
attention instead and builds no block mask: the case's `block_mask` is then every block that holds
a causal (query, key) pair, the blocks that dense attention computes (the attention restricted to
it is the dense attention). `output` is the reference's output in either case.

A-shape is the reference's Tri-shape with last_query_size 0 (no dense tail); the reference keeps one
sink block (block 0) and has no sink size. block_size is 128: the reference refuses any other for
Tri-shape (its kernel's block).

  /usr/bin/python3 generate_trishape.py --reference /path/to/genai_opt/sparse_attention.py \
      [--out tests/conformance/cases/trishape]
"""
import argparse
import importlib.util
import json
import os
import sys
import types

import torch
from safetensors_writer import write_safetensors

BLOCK = 128

# name: (q_len, k_len, recent_size, last_query_size, heads, kv_heads, head_dim). Lengths are not
# multiples of 128 unless said; d = k_len - q_len, pad = ceil(q_len/128)*128 - q_len. The reference's
# diagonal offset max(kb - qb, 0) is floor(d / 128) when 0 < d % 128 <= pad ("short" offset: a query
# block's later queries see keys of the block right of its diagonal, which the mask leaves out) and
# ceil(d / 128) otherwise.
CASES = [
    ("q300_k1000_r128_l100", 300, 1000, 128, 100, 2, 1, 4),      # d%B 60 <= pad 84: short offset
    ("q300_k1030_r128_l100", 300, 1030, 128, 100, 2, 1, 4),      # d%B 90 > pad 84
    ("q500_k756_r128_l1", 500, 756, 128, 1, 2, 2, 4),            # d a multiple of the block
    ("q650_k1200_r256_l28", 650, 1200, 256, 28, 2, 1, 4),        # short offset, tail in one block
    ("q650_k1300_r256_l129", 650, 1300, 256, 129, 2, 1, 4),      # short offset, tail over 2 blocks
    ("q777_k1777_r384_l300", 777, 1777, 384, 300, 2, 1, 4),      # short offset, tail over 3 blocks
    ("q900_k1111_r128_l127", 900, 1111, 128, 127, 2, 2, 4),      # short offset
    ("q1000_k1500_r256_l0", 1000, 1500, 256, 0, 2, 1, 4),        # A-shape (no dense tail)
    ("q1000_k1010_r256_l100", 1000, 1010, 256, 100, 2, 1, 4),    # short offset of 0 blocks
    ("q1100_k1234_r512_l5000", 1100, 1234, 512, 5000, 2, 1, 4),  # last_query_size > q_len
    ("q129_k1000_r128_l50", 129, 1000, 128, 50, 2, 1, 4),        # two query blocks, pad 127
    ("q640_k1000_r128_l100", 640, 1000, 128, 100, 2, 1, 4),      # q_len a multiple of the block
    ("q515_k2000_r128_l250", 515, 2000, 128, 250, 2, 1, 4),      # short offset, pad 125
    ("q333_k717_r128_l64", 333, 717, 128, 64, 2, 2, 4),          # d a multiple of the block
    ("q600_k1400_r256_l0", 600, 1400, 256, 0, 2, 1, 4),          # A-shape, d%B 32 <= pad 40
    ("q700_k700_r256_l100", 700, 700, 256, 100, 2, 1, 4),        # q_len == k_len, for contrast
    ("q200_k900_r256_l100", 200, 900, 256, 100, 2, 1, 4),        # q_len <= recent: dense
    ("q200_k630_r256_l100", 200, 630, 256, 100, 2, 1, 4),        # dense, short offset
    ("q250_k895_r384_l0", 250, 895, 384, 0, 2, 2, 4),            # dense, short offset (645%B 5)
    ("q700_k1000_r768_l100", 700, 1000, 768, 100, 2, 1, 4),      # dense, short offset, 6 rows
]

# ---- stubs for the reference's imports --------------------------------------------------------


def repeat_kv(hidden_states, n_rep):
    # transformers.models.llama.modeling_llama.repeat_kv
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen,
                                                           head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


KERNEL_CALLS = []  # the block masks the reference handed the kernel, newest last


def block_sparse_attn_func(q, k, v, q_offsets, k_offsets, head_mask_type, streaming_info,
                           base_blockmask, max_seqlen_q, max_seqlen_k, p_dropout=0.0,
                           deterministic=False, softmax_scale=None, is_causal=False,
                           exact_streaming=False, return_attn_probs=False):
    """Block-sparse attention as the kernel computes it for the reference's call (see the module
    docstring). q [q_len, H, d], k and v [k_len, H, d]; base_blockmask [1, H, qb, kb] bool."""
    assert is_causal and p_dropout == 0.0 and streaming_info is None and not return_attn_probs
    assert q_offsets.tolist() == [0, max_seqlen_q] and k_offsets.tolist() == [0, max_seqlen_k]
    assert bool((head_mask_type == 1).all()), "one block mask per head (mask type 1)"
    q_len, heads, d = q.shape
    k_len = k.shape[0]
    qb, kb = -(-q_len // BLOCK), -(-k_len // BLOCK)
    assert tuple(base_blockmask.shape) == (1, heads, qb, kb), base_blockmask.shape
    KERNEL_CALLS.append(base_blockmask.clone())
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qi = torch.arange(q_len).view(q_len, 1)
    kj = torch.arange(k_len).view(1, k_len)
    causal = kj <= qi + (k_len - q_len)
    rows = torch.arange(q_len) // BLOCK
    cols = torch.arange(k_len) // BLOCK
    out = torch.zeros(q_len, heads, d, dtype=torch.float32)
    for h in range(heads):
        allowed = causal & base_blockmask[0, h][rows][:, cols]
        s = (q[:, h].float() @ k[:, h].float().T) * scale
        s = s.masked_fill(~allowed, float("-inf"))
        p = torch.softmax(s, dim=-1)
        p = torch.nan_to_num(p, nan=0.0)  # rows that attend no key: zeros
        out[:, h] = p @ v[:, h].float()
    return out.to(q.dtype)


def install_stubs():
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    def unused(*args, **kwargs):
        raise RuntimeError("not used by the attention functions these cases call")

    module("transformers", PreTrainedModel=type("PreTrainedModel", (), {}))
    module("transformers.cache_utils", Cache=type("Cache", (), {}))
    module("transformers.models")
    for pkg in ("llama", "phi3", "qwen2_vl"):
        module(f"transformers.models.{pkg}")
    module("transformers.models.llama.modeling_llama", repeat_kv=repeat_kv,
           apply_rotary_pos_emb=unused)
    module("transformers.models.phi3.modeling_phi3", apply_rotary_pos_emb=unused)
    module("transformers.models.qwen2_vl.modeling_qwen2_vl", apply_multimodal_rotary_pos_emb=unused)
    module("block_sparse_attn", block_sparse_attn_func=block_sparse_attn_func)


def load_reference(path):
    spec = importlib.util.spec_from_file_location("genai_opt_sparse_attention", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- one case ---------------------------------------------------------------------------------


def causal_additive_mask(q_len, k_len, dtype):
    """The additive causal mask transformers passes an eager attention layer, aligned bottom right."""
    qi = torch.arange(q_len).view(q_len, 1)
    kj = torch.arange(k_len).view(1, k_len)
    mask = torch.zeros(q_len, k_len, dtype=dtype)
    mask.masked_fill_(kj > qi + (k_len - q_len), torch.finfo(dtype).min)
    return mask.view(1, 1, q_len, k_len)


def dense_block_mask(q_len, k_len):
    """Every block holding a causal pair: row r's last query q1 sees keys up to q1 + k_len - q_len."""
    qb, kb = -(-q_len // BLOCK), -(-k_len // BLOCK)
    mask = torch.zeros(qb, kb, dtype=torch.bool)
    for r in range(qb):
        last_key = min((r + 1) * BLOCK, q_len) - 1 + (k_len - q_len)
        mask[r, : last_key // BLOCK + 1] = True
    return mask


def make_case(ref, q_len, k_len, recent, last, heads, kv_heads, d, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, q_len, d, generator=g)
    k = torch.randn(1, kv_heads, k_len, d, generator=g)
    v = torch.randn(1, kv_heads, k_len, d, generator=g)
    layer = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, head_dim=d)
    sparse = ref.SparseAttention("tri-shape", last_query_size=last, recent_size=recent,
                                 block_size=BLOCK)
    KERNEL_CALLS.clear()
    with torch.no_grad():
        out, _ = sparse._tri_shape_attention(layer, q, k, v, causal_additive_mask(q_len, k_len,
                                                                                  q.dtype),
                                             scaling=d ** -0.5)
    if KERNEL_CALLS:
        calls = KERNEL_CALLS[-1][0]
        assert all(torch.equal(calls[0], calls[h]) for h in range(heads)), "one mask for all heads"
        block_mask, path = calls[0], "block_sparse"
    else:
        block_mask, path = dense_block_mask(q_len, k_len), "dense"
    output = out.reshape(1, q_len, heads, d).transpose(1, 2).contiguous()  # [1, H, q_len, d]
    config = {"mode": "tri-shape", "block_size": BLOCK, "recent_size": recent,
              "last_query_size": last}
    meta = {"kind": "sparse_attention", "config": json.dumps(config), "seed": str(seed),
            "reference_path": path, "generator": "tests/conformance/cases/generate_trishape.py",
            "torch_version": torch.__version__}
    return meta, {"q": q, "k": k, "v": v, "block_mask": block_mask, "output": output}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True,
                        help="genai_optimizations' genai_opt/sparse_attention.py")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "trishape"))
    args = parser.parse_args()
    install_stubs()
    ref = load_reference(args.reference)
    os.makedirs(args.out, exist_ok=True)
    for i, (name, q_len, k_len, recent, last, heads, kv_heads, d) in enumerate(CASES):
        meta, tensors = make_case(ref, q_len, k_len, recent, last, heads, kv_heads, d, 3000 + i)
        write_safetensors(os.path.join(args.out, f"trishape_{name}.safetensors"), meta, tensors)
        m = tensors["block_mask"]
        print(f"{name}: {meta['reference_path']}, mask {list(m.shape)} with {int(m.sum())} blocks")


if __name__ == "__main__":
    main()
