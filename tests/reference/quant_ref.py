#!/usr/bin/env python3
"""Reference bitsandbytes 4-bit quantizer in numpy, written from FORMATS.md §2 (not from the TS code).

Produces tests/fixtures/quant/bnb_cases.json: seeded inputs and the expected packed bytes, absmax,
double-quantization tensors, quant-state JSON and dequantized values, for lib/quant/*.ts to match
bit for bit. All arithmetic is float32, as in the CUDA kernels (kQuantizeBlockwise, dQuantizeNF4,
dQuantizeFP4, dQuantize<0>).

Usage: python3 tests/reference/quant_ref.py [OUT_DIR]   (default: tests/fixtures/quant)
"""

import base64
import hashlib
import json
import os
import sys

import numpy as np

F = np.float32

# §2.4 NF4 table, code order (= ascending)
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=F)
# §2.4 FP4 table: raw bit-pattern-order values / 12 in float32
FP4 = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=F) / F(12)).astype(F)
# §2.5: NF4 thresholds are the float32 midpoints of consecutive codes
NF4_MID = ((NF4[:-1] + NF4[1:]) / F(2)).astype(F)
assert NF4_MID[7] == F(0.03979014977812767) and NF4_MID[0] == F(-0.8480964004993439)
# §2.5 FP4 decision constants (float32 literals of dQuantizeFP4)
FP4_T = {k: F(v) for k, v in dict(t0=0.29166667, t1=0.583333, t2=0.8333333, t3=0.4166667,
                                  t4=0.0859375, t5=0.20833333, t6=0.00260417).items()}


def nf4_codes(x):
    # code = number of midpoints strictly below x (ties go low); NaN compares false everywhere -> 0
    c = np.searchsorted(NF4_MID, x, side="left").astype(np.uint8)
    c[np.isnan(x)] = 0
    return c


def fp4_codes(x):
    sign = np.where(x < 0, 8, 0)
    a = np.abs(x)
    c = np.where(a > FP4_T["t0"],
                 np.where(a > FP4_T["t1"], np.where(a > FP4_T["t2"], 3, 2), np.where(a > FP4_T["t3"], 5, 4)),
                 np.where(a > FP4_T["t4"], np.where(a > FP4_T["t5"], 7, 6), np.where(a > FP4_T["t6"], 1, 0)))
    return (c + sign).astype(np.uint8)


def torch_linspace_f32(start, end, steps):
    # float32 scalar kernel: first half start + step*i, second half end - step*(steps-1-i)
    s, e = F(start), F(end)
    step = F(F(e - s) / F(steps - 1))
    half = steps // 2
    return np.array([F(s + F(step * F(i))) if i < half else F(e - F(step * F(steps - 1 - i)))
                     for i in range(steps)], dtype=F)


def dynamic_map():
    # §2.6 create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), float32
    data = []
    for i in range(7):
        b = torch_linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = ((b[:-1] + b[1:]) / F(2)).astype(F)
        scale = F([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i])
        data += list((scale * means).astype(F))
        data += list((-scale * means).astype(F))
    data += [F(0), F(1)]
    out = np.array(sorted(float(v) for v in data), dtype=F)
    assert out.shape == (256,) and out[127] == 0 and out[255] == 1
    return out


DYN = dynamic_map()
DYN_MID = ((DYN[:-1] + DYN[1:]) * F(0.5)).astype(F)


def blockwise_scale(x, blocksize):
    """Per-block absmax and x * f32(1/absmax) in float32; padding is not included."""
    n = x.size
    nb = -(-n // blocksize)
    pad = np.zeros(nb * blocksize, dtype=F)
    pad[:n] = x
    blocks = pad.reshape(nb, blocksize)
    absmax = np.abs(blocks).max(axis=1).astype(F)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (F(1) / absmax).astype(F)
        scaled = (blocks * inv[:, None]).astype(F)
    return absmax, scaled  # scaled still holds the zero padding of the last block


def quantize_4bit(x, quant_type, blocksize):
    absmax, scaled = blockwise_scale(x, blocksize)
    flat = scaled.reshape(-1)[: x.size + (x.size & 1)]  # odd n: one padding 0 (scaled like its block)
    codes = nf4_codes(flat) if quant_type == "nf4" else fp4_codes(flat)
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return packed, absmax


def double_quant(absmax):
    offset = F(np.mean(absmax.astype(np.float64)))
    centered = (absmax - offset).astype(F)
    scales, scaled = blockwise_scale(centered, 256)
    flat = scaled.reshape(-1)[: centered.size]
    codes = np.searchsorted(DYN_MID, flat, side="left").astype(np.uint8)  # nearest, ties low
    codes[np.isnan(flat)] = 0
    return codes, scales, offset


def double_dequant(codes, scales, offset):
    return ((DYN[codes] * np.repeat(scales, 256)[: codes.size]).astype(F) + offset).astype(F)


def dequantize_4bit(packed, absmax, quant_type, blocksize, n):
    table = NF4 if quant_type == "nf4" else FP4
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 15
    return (table[codes[:n]] * np.repeat(absmax, blocksize)[:n]).astype(F)


def py_json(quant_type, blocksize, dtype, shape, offset):
    d = {"quant_type": quant_type, "blocksize": blocksize, "dtype": dtype, "shape": list(shape)}
    if offset is not None:
        d.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": float(offset)})
    return json.dumps(d)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode()


def make_inputs():
    rng = np.random.default_rng(20240531)
    cases = []

    def add(name, x, shape, qt, bs, dq, dtype="bfloat16"):
        cases.append((name, np.asarray(x, dtype=F), shape, qt, bs, dq, dtype))

    normal = (rng.standard_normal(1024) * 0.02).astype(F)
    add("normal_nf4_bs64", normal, [16, 64], "nf4", 64, False)
    add("normal_nf4_bs64_dq", normal, [16, 64], "nf4", 64, True)
    add("normal_fp4_bs64_dq", normal, [16, 64], "fp4", 64, True)
    uni = rng.uniform(-3, 3, 777).astype(F)  # odd, not divisible by 128
    add("uniform_fp4_bs128_odd", uni, [777], "fp4", 128, False, "float32")
    add("uniform_nf4_bs128_odd_dq", uni, [7, 111], "nf4", 128, True, "float16")
    z = (rng.standard_normal(320) * 0.1).astype(F)
    z[64:192] = 0  # two all-zero blocks
    add("zero_blocks_nf4_bs64", z, [5, 64], "nf4", 64, False)
    add("zero_blocks_fp4_bs64_dq", z, [5, 64], "fp4", 64, True)
    out = (rng.standard_normal(256) * 0.01).astype(F)
    out[77] = 50.0  # one huge outlier in block 1 (bs 64)
    add("outlier_nf4_bs64", out, [4, 64], "nf4", 64, False)
    add("outlier_fp4_bs128", out, [2, 128], "fp4", 128, False)
    big = rng.standard_normal(5000).astype(F)  # 2 blocks of 4096, the second partial
    add("normal_nf4_bs4096_partial", big, [5000], "nf4", 4096, False)
    many = rng.standard_normal(32 * 300).astype(F) * rng.uniform(0.5, 2, 32 * 300).astype(F)
    add("many_blocks_nf4_bs32_dq", many, [75, 128], "nf4", 32, True)  # 300 blocks -> 2 nested blocks
    add("single_block_nf4_bs64_dq", normal[:50], [50], "nf4", 64, True)  # all absmax equal -> nested scale 0
    return cases


def build():
    out = {"source": "tests/reference/quant_ref.py (numpy float32, from FORMATS.md §2)",
           "dynamic_map": b64(DYN), "nf4": b64(NF4), "fp4": b64(FP4), "cases": []}
    for name, x, shape, qt, bs, dq, dtype in make_inputs():
        packed, absmax = quantize_4bit(x, qt, bs)
        case = {"name": name, "quantType": qt, "blocksize": bs, "shape": shape, "dtype": dtype,
                "doubleQuant": dq, "input": b64(x), "packed": b64(packed), "absmax": b64(absmax)}
        used = absmax
        offset = None
        if dq:
            codes, scales, offset = double_quant(absmax)
            used = double_dequant(codes, scales, offset)
            case.update({"nestedCodes": b64(codes), "nestedScales": b64(scales),
                         "nestedOffset": float(offset), "absmaxUsed": b64(used)})
        deq = dequantize_4bit(packed, used, qt, bs, x.size)
        case["dequantSha256"] = hashlib.sha256(deq.astype("<f4").tobytes()).hexdigest()
        if x.size <= 1024:
            case["dequant"] = b64(deq)
        case["quantStateJson"] = py_json(qt, bs, dtype, shape, offset)
        assert not np.isnan(dequantize_4bit(packed, used, qt, bs, x.size)).any()
        out["cases"].append(case)
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "quant")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bnb_cases.json"), "w") as f:
        json.dump(build(), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
