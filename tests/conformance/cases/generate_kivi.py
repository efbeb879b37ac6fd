#!/usr/bin/env python3
"""Writes the KIVI quantization cases (tests/conformance/cases/kivi/*.safetensors) by running KIVI's
own functions, quant_and_pack_kcache / quant_and_pack_vcache / unpack_tensor /
unpack_and_dequant_kcache / unpack_and_dequant_vcache from quant/new_pack.py of jy-yuan/KIVI
(commit 876b4d2), on random float16 keys and values, as KIVI's models run them.

usage: /usr/bin/python3 generate_kivi.py KIVI_CHECKOUT [OUT_DIR]

KIVI_CHECKOUT is a copy of the KIVI repository outside this one (never commit it). Stubs, each
exact: `triton` (imported at the top of new_pack.py for its GPU kernels, which these functions do
not use), and in-place clamp_/round_ on CPU float16 tensors, which Debian's PyTorch 1.13 lacks
("clamp_scalar_cpu not implemented for 'Half'"): they run in float32 and write back, exact since
clamping and rounding a float16 value give a float16 value. Every other operation (min, max, sub,
div, mul, add) runs in float16 as in the reference.

Each case holds: x (the float16 input as float32, [B, H, T, D]), bits, group, and the reference's
codes (unpacked, as float32), scale and mn (float16 as float32) and the dequantized tensor (float16 as
float32) for keys (per channel over groups of `group` tokens) and for values (per token over groups
of `group` channels). tests/cpp/session/kivi_cases_test.cc checks attnkit's quantization against
them bit for bit.
"""
import importlib.util
import os
import sys
import types

import torch
from safetensors_writer import write_safetensors


def install_stubs():
    triton = types.ModuleType("triton")
    triton.jit = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    triton.cdiv = lambda a, b: (a + b - 1) // b
    language = types.ModuleType("triton.language")
    language.constexpr = int
    triton.language = language
    sys.modules["triton"] = triton
    sys.modules["triton.language"] = language

    def in_float32(name):
        original = getattr(torch.Tensor, name)

        def op(self, *args, **kwargs):
            if self.dtype == torch.float16 and self.device.type == "cpu":
                self.copy_(getattr(self.float(), name)(*args, **kwargs))
                return self
            return original(self, *args, **kwargs)

        setattr(torch.Tensor, name, op)

    in_float32("clamp_")
    in_float32("round_")


def load_new_pack(root):
    path = os.path.join(root, "quant", "new_pack.py")
    spec = importlib.util.spec_from_file_location("kivi_new_pack", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_case(kivi, bits, group, shape, spread, seed):
    g = torch.Generator().manual_seed(seed)
    B, H, T, D = shape
    # Per-channel offsets and scales (outlier channels, as KIVI observes in keys).
    x = torch.randn(shape, generator=g) * spread
    x += torch.randn((1, H, 1, D), generator=g) * spread * 2
    x = x.half()
    k_code, k_scale, k_mn = kivi.quant_and_pack_kcache(x.clone(), group, bits)
    k_deq = kivi.unpack_and_dequant_kcache(k_code, k_scale, k_mn, group, bits)
    k_codes = kivi.unpack_tensor(k_code, bits, pack_dim=2)
    v_code, v_scale, v_mn = kivi.quant_and_pack_vcache(x.clone(), group, bits)
    v_deq = kivi.unpack_and_dequant_vcache(v_code, v_scale, v_mn, group, bits)
    v_codes = kivi.unpack_tensor(v_code, bits, pack_dim=3)
    for t in (k_deq, v_deq):
        assert torch.isfinite(t.float()).all()
    meta = {"kind": "kivi_quant", "bits": str(bits), "group": str(group),
            "reference": "jy-yuan/KIVI quant/new_pack.py @ 876b4d2"}
    tensors = {
        "x": x.float(),
        # [B, H, T / group, 1, D] and [B, H, T, D / group, 1] in the reference.
        "key_scale": k_scale.float().reshape(B, H, T // group, D),
        "key_mn": k_mn.float().reshape(B, H, T // group, D),
        "key_codes": k_codes.float(),
        "key_dequant": k_deq.float(),
        "value_scale": v_scale.float().reshape(B, H, T, D // group),
        "value_mn": v_mn.float().reshape(B, H, T, D // group),
        "value_codes": v_codes.float(),
        "value_dequant": v_deq.float(),
    }
    return meta, tensors


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    install_stubs()
    kivi = load_new_pack(sys.argv[1])
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "kivi")
    os.makedirs(out, exist_ok=True)
    cases = [
        # name, bits, group, [B, H, T, D], spread, seed
        ("int4_g32_d64", 4, 32, (1, 2, 32, 64), 1.0, 1),
        ("int2_g32_d64", 2, 32, (1, 1, 64, 64), 1.0, 2),
        ("int4_g16_d32_large", 4, 16, (2, 1, 32, 32), 40.0, 3),
        ("int2_g16_d32_small", 2, 16, (1, 2, 32, 32), 0.01, 4),
        ("int4_g32_d128", 4, 32, (1, 1, 32, 128), 3.0, 5),
        ("int2_g8_d16", 2, 8, (1, 2, 16, 16), 3.0, 6),
    ]
    for name, bits, group, shape, spread, seed in cases:
        meta, tensors = make_case(kivi, bits, group, shape, spread, seed)
        write_safetensors(os.path.join(out, name + ".safetensors"), meta, tensors)
        print("wrote", name)


if __name__ == "__main__":
    main()
