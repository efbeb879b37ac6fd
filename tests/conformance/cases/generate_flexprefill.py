#!/usr/bin/env python3
"""Writes FlexPrefill conformance cases (tests/conformance/cases/flexprefill/*.safetensors) from the
reference's own code: `flex_prefill/ops/flex_prefill_attention.py` of bytedance/FlexPrefill
(commit a24b27b; never commit it, point --reference at that file).

Each case runs the reference's `get_active_blocks` (the per-head pattern choice: the last block of
queries' attention gives vertical and slash scores; a head whose pooled query-block attention is
within `tau` (square-root JS divergence) of the vertical distribution is query-aware; the fewest
blocks that reach `gamma` of the attention, between min_budget and max_budget blocks) on random
structured float32 q, k, v (batch 1), exactly as `flex_prefill_attention` calls it, and records the
active blocks per query head as a [H, nb, nb] mask. `output` is the attention restricted to those
blocks by the reference's `torch_block_wise_attention` (its plain PyTorch path, float32; the keys
and values repeated to the query heads first, as its Triton kernel reads them: head h reads kv head
h // group). The reference's Triton attention itself takes bfloat16 only, so it is not used for
the float32 output. Every case has gqa_interleave off: attnkit reads kv head h // group everywhere
and does not offer the reference's interleaved layout (docs/algorithms.md, FlexPrefill).

Run it where Triton and a CUDA GPU are (the reference pools the keys with a Triton kernel,
`triton_bnhd_pool`): `--device cuda`. `--device cpu` runs get_active_blocks with that one kernel
replaced by the same computation in PyTorch (the keys' mean over each block of tokens, the last
block over the tokens it holds), written only with --allow-cpu-pool and marked `device: cpu` in
the metadata: the pool sums in another order than Triton does, so a block choice that hangs on
the last bit could differ. The committed cases were written with --device cuda on an H100
(PyTorch 2.11, Triton); the earlier CPU-pool cases chose the same blocks in all eight (outputs
within 7.2e-7).

Reference quirks the cases keep (docs/algorithms.md, FlexPrefill):
  - the vertical and slash token counts are divided by 128 whatever the block size
    (`score_cover_topk(...) // 128 + 1`);
  - `causal_mask` is a module global built at the first call from that call's block size; the
    generator resets it before every case so each case gets its own block size's mask;
  - flex_prefill_attention computes dense causal attention when q_len <= max(2 * block_size,
    ceil(min_budget / block_size) * block_size); every case is longer than that.

  python3 generate_flexprefill.py --reference /path/to/flex_prefill_attention.py --device cuda \
      [--out tests/conformance/cases/flexprefill]
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import types

import torch

from safetensors_writer import write_safetensors

# name: (q_len, heads, kv_heads, head_dim, block_size, gamma, tau, min_budget, max_budget,
#        gqa_interleave). min_budget / max_budget are in tokens, as flex_prefill_attention takes
#        them (None: its defaults, 1 and 2^31 - 1).
CASES = [
    ("b16_vs_only", 200, 4, 2, 16, 16, 0.9, 0.0, None, None, False),
    ("b16_query_aware", 200, 4, 2, 16, 16, 0.9, 1.0, None, None, False),
    ("b32_tau01_min64", 300, 4, 2, 16, 32, 0.95, 0.1, 64, None, False),
    ("b16_max96", 250, 4, 2, 16, 16, 0.9, 0.2, None, 96, False),
    ("b64_tau03", 700, 2, 1, 16, 64, 0.8, 0.3, 128, 512, False),
    ("b128_paper", 640, 2, 1, 32, 128, 0.9, 0.1, None, None, False),
    ("b16_gqa4_tau005", 333, 4, 1, 16, 16, 0.9, 0.05, None, None, False),
    ("b32_gamma05", 450, 2, 2, 16, 32, 0.5, 0.15, 32, 256, False),
]


def stub(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def load_reference(path, device):
    if "einops" not in sys.modules:
        try:
            import einops  # noqa: F401
        except ImportError:
            # The one pattern the reference uses: "b h g i j -> b (h g) i j".
            def rearrange(x, pattern):
                assert pattern == "b h g i j -> b (h g) i j", pattern
                return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3], x.shape[4])

            stub("einops", rearrange=rearrange)
    try:
        import transformers.utils  # noqa: F401
    except ImportError:
        stub("transformers")
        stub("transformers.utils", is_flash_attn_2_available=lambda: False)
    if device == "cpu":
        try:
            import triton  # noqa: F401
        except ImportError:
            class _Lang(types.ModuleType):
                constexpr = int

            def jit(fn=None, **kwargs):
                return fn if fn is not None else (lambda f: f)

            stub("triton", jit=jit, cdiv=lambda a, b: (a + b - 1) // b,
                 next_power_of_2=lambda n: 1 << (n - 1).bit_length(), Config=object,
                 autotune=lambda *a, **k: (lambda f: f), heuristics=lambda *a, **k: (lambda f: f))
            sys.modules["triton.language"] = _Lang("triton.language")
            sys.modules["triton"].language = sys.modules["triton.language"]
    spec = importlib.util.spec_from_file_location("flex_prefill_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if device == "cpu":
        def bnhd_avg_pool(x, kernel_size, pool_type="avg"):
            assert pool_type == "avg"
            b, n, h, d = x.shape
            m = math.ceil(n / kernel_size)
            pad = m * kernel_size - n
            xs = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)).view(b, m, kernel_size, h, d)
            counts = torch.full((m,), kernel_size, dtype=x.dtype)
            counts[-1] = kernel_size - pad
            return xs.sum(2) / counts.view(1, m, 1, 1)

        module.triton_bnhd_pool = bnhd_avg_pool
    return module


def rotate(x, positions, base=500.0):
    """x [n, h, d] turned by angle position * base^(-2i/d) in pairs (i, i + d/2): q_i . k_j then
    depends on i - j, which gives slash patterns."""
    d = x.shape[-1]
    freq = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    angle = positions.double()[:, None] * freq[None, :]
    cos, sin = angle.cos().float()[:, None, :], angle.sin().float()[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def make_inputs(n, heads, kv_heads, d, seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.arange(n)
    # Per head a fixed direction (relative-position structure after the rotation) plus noise.
    qa = torch.randn(1, heads, d, generator=g) * 1.5
    kb = torch.randn(1, kv_heads, d, generator=g) * 1.5
    q = rotate(qa + torch.randn(n, heads, d, generator=g), pos)
    k = rotate(kb + torch.randn(n, kv_heads, d, generator=g), pos)
    # A few keys every query attends (vertical lines), per kv head.
    for h in range(kv_heads):
        spikes = torch.randperm(n, generator=g)[: max(2, n // 60)]
        k[spikes, h] += 3.0 * torch.randn(1, d, generator=g)
    v = torch.randn(n, kv_heads, d, generator=g)
    return q[None].contiguous(), k[None].contiguous(), v[None].contiguous()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True, help="flex_prefill_attention.py")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--allow-cpu-pool", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "flexprefill"))
    args = parser.parse_args()
    if args.device == "cpu" and not args.allow_cpu_pool:
        sys.exit("--device cpu replaces the reference's Triton pool: add --allow-cpu-pool")
    ref = load_reference(args.reference, args.device)
    os.makedirs(args.out, exist_ok=True)
    for index, (name, n, heads, kv_heads, d, bs, gamma, tau, min_budget, max_budget,
                interleave) in enumerate(CASES):
        q, k, v = make_inputs(n, heads, kv_heads, d, 100 + index)
        ref.causal_mask = None
        nb = math.ceil(n / bs)
        lo = 1 if min_budget is None else min_budget
        hi = 2147483647 if max_budget is None else max_budget
        assert n > max(2 * bs, math.ceil(lo / bs) * bs), name
        dev = torch.device(args.device)
        with torch.no_grad():
            block_idx = ref.get_active_blocks(
                q.to(dev), k.to(dev), v.to(dev), bs, gamma, math.ceil(lo / bs),
                math.ceil(hi / bs), tau, interleave)
        mask = torch.zeros(heads, nb * nb, dtype=torch.bool)
        for h in range(heads):
            mask[h, block_idx[0][h].cpu().long()] = True
        # The attention over those blocks: kv heads repeated to the query heads as the Triton
        # kernel reads them, then the reference's torch_block_wise_attention per head.
        group = heads // kv_heads
        kv_of = [(h % kv_heads) if interleave else (h // group) for h in range(heads)]
        kr, vr = k[:, :, kv_of, :], v[:, :, kv_of, :]
        width = int(mask.sum(1).max())
        padded = torch.zeros(1, heads, width, dtype=torch.long)
        for h in range(heads):
            ids = mask[h].nonzero().flatten()
            padded[0, h, : ids.numel()] = ids
            padded[0, h, ids.numel():] = ids[0]  # repeats of a listed block change nothing
        with torch.no_grad():
            out = ref.torch_block_wise_attention(q, kr, vr, padded, bs)
        meta = {
            "kind": "flexprefill",
            "config": json.dumps({
                "num_heads": heads, "num_kv_heads": kv_heads, "head_dim": d, "length": n,
                "block_size": bs, "gamma": gamma, "tau": tau,
                "min_budget": lo, "max_budget": hi, "gqa_interleave": interleave,
            }),
            "device": args.device,
        }
        write_safetensors(os.path.join(args.out, f"flexprefill_{name}.safetensors"), meta, {
            "q": q[0].transpose(0, 1).contiguous(),   # [H, n, d]
            "k": k[0].transpose(0, 1).contiguous(),   # [KV, n, d]
            "v": v[0].transpose(0, 1).contiguous(),
            "block_mask": mask.view(heads, nb, nb),
            "output": out[0].transpose(0, 1).contiguous().float(),  # [H, n, d]
        })
        density = mask.view(heads, nb, nb).tril().sum().item() / (heads * nb * (nb + 1) / 2)
        print(f"{name}: {nb} blocks of {bs}, causal density {density:.3f}")


if __name__ == "__main__":
    main()
