#!/usr/bin/env python3
"""Reference GPTQ 4-bit packer/dequantizer in numpy, written from FORMATS.md §3 (not from the TS code).

Round-to-nearest on AutoGPTQ's quantizer grid (quantizer.py): per group g and output c,
xmin = min(w, 0), xmax = max(w, 0) (sym: +-max|w|, zero 8), scale = fp16((xmax - xmin) / 15),
asym zero = round(-xmin / scale), q = clamp(round(w / scale) + zero, 0, 15) in float32, ties to even.
Packing §3.2: qweight [I/8, O] nibble j = input 8r+j; qzeros [NG, O/8] nibble j = output 8c+j;
v1 ("gptq") stores zero - 1 (mod 16), v2 stores zero. Dequant §3.3: W[c, k] = s[g_idx[k], c] * (q - z).

Writes tests/fixtures/quant/gptq_cases.json. Usage: python3 tests/reference/gptq_ref.py [OUT_DIR]
"""

import base64
import json
import os
import sys

import numpy as np

F = np.float32


def pack_nibbles(vals):
    """vals [..., 8*m] uint8 -> [..., m] int32, element 8i+j in nibble j (LSB first)."""
    v = vals.astype(np.uint32).reshape(*vals.shape[:-1], -1, 8)
    word = np.zeros(v.shape[:-1], dtype=np.uint32)
    for j in range(8):
        word |= (v[..., j] & 0xF) << np.uint32(4 * j)
    return word.view(np.int32)


def unpack_nibbles(words):
    w = words.view(np.uint32)
    return np.stack([(w >> np.uint32(4 * j)) & 0xF for j in range(8)], axis=-1).reshape(*w.shape[:-1], -1)


def quantize(W, group_size, sym, g_idx):
    O, I = W.shape
    G = I if group_size == -1 else group_size
    NG = -(-I // G)
    scales = np.zeros((NG, O), dtype=F)
    zeros = np.zeros((NG, O), dtype=np.uint8)
    Q = np.zeros((I, O), dtype=np.uint8)
    for g in range(NG):
        cols = np.nonzero(g_idx == g)[0]
        w = W[:, cols]  # [O, members]
        xmin = np.minimum(w.min(axis=1), 0).astype(F)
        xmax = np.maximum(w.max(axis=1), 0).astype(F)
        if sym:
            xmax = np.maximum(-xmin, xmax)
            xmin = np.where(xmin < 0, -xmax, xmin).astype(F)
        both0 = (xmin == 0) & (xmax == 0)
        xmin = np.where(both0, F(-1), xmin).astype(F)
        xmax = np.where(both0, F(1), xmax).astype(F)
        s = ((xmax - xmin).astype(F) / F(15)).astype(F).astype(np.float16).astype(F)
        z = np.full(O, 8.0, dtype=F) if sym else np.clip(np.round((-xmin / s).astype(F)), 0, 15)
        scales[g] = s
        zeros[g] = z.astype(np.uint8)
        q = np.clip(np.round((w / s[:, None]).astype(F)) + z[:, None], 0, 15)
        Q[cols, :] = q.T.astype(np.uint8)
    return Q, scales, zeros


def pack(W, group_size, sym, fmt, g_idx):
    Q, scales, zeros = quantize(W, group_size, sym, g_idx)
    qweight = pack_nibbles(Q.T).T  # pack along the input dim: [I/8, O]
    stored = ((zeros.astype(np.int16) - 1) & 0xF).astype(np.uint8) if fmt == "gptq" else zeros
    qzeros = pack_nibbles(stored)  # [NG, O/8]
    return np.ascontiguousarray(qweight), qzeros, scales


def dequant(qweight, qzeros, scales, g_idx, fmt):
    q = unpack_nibbles(np.ascontiguousarray(qweight.T)).T.astype(F)  # [I, O]
    z = unpack_nibbles(qzeros).astype(np.int16)  # [NG, O]
    if fmt == "gptq":
        z = (z + 1) & 0xF
    W = scales[g_idx] * (q - z[g_idx].astype(F))  # [I, O]
    return np.ascontiguousarray(W.T).astype(F)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def build():
    rng = np.random.default_rng(777)
    O, I = 8, 256
    W = (rng.standard_normal((O, I)) * 0.05).astype(F)
    W[3, 10] = 0.9  # an outlier row/group
    perm = rng.permutation(I)  # act-order: channel perm[i] is quantized i-th, g_idx = position // G
    act = np.empty(I, dtype=np.int32)
    act[perm] = np.arange(I) // 128
    pos = (rng.standard_normal((O, I)) * 0.05 + 0.08).astype(F)  # all-positive rows: asym zero 0
    cases = []
    weights = {"normal": W, "positive": pos}
    for name, wname, gs, sym, fmt, g in [
        ("g128_sym_v1", "normal", 128, True, "gptq", None),
        ("gm1_sym_v1", "normal", -1, True, "gptq", None),
        ("g128_actorder_sym_v1", "normal", 128, True, "gptq", act),
        ("g128_asym_v2", "normal", 128, False, "gptq_v2", None),
        ("g128_asym_v1", "normal", 128, False, "gptq", None),
        ("g128_actorder_asym_v2_positive", "positive", 128, False, "gptq_v2", act),
    ]:
        w = weights[wname]
        G = I if gs == -1 else gs
        g_idx = (np.arange(I) // G).astype(np.int32) if g is None else g
        qweight, qzeros, scales = pack(w, gs, sym, fmt, g_idx)
        cases.append({"name": name, "outFeatures": O, "inFeatures": I, "groupSize": gs, "sym": sym,
                      "format": fmt, "actOrder": g is not None, "weight": wname, "qweight": b64(qweight),
                      "qzeros": b64(qzeros), "scales": b64(scales), "gIdx": b64(g_idx),
                      "dequant": b64(dequant(qweight, qzeros, scales, g_idx, fmt))})
    return {"source": "tests/reference/gptq_ref.py (numpy, from FORMATS.md §3)",
            "weights": {k: b64(v) for k, v in weights.items()}, "cases": cases}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "quant")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gptq_cases.json"), "w") as f:
        json.dump(build(), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
