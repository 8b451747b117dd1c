#!/usr/bin/python3
"""Independent float64 reference for DoRA (weight-decomposed LoRA), numpy only.

Written from PEFT's published formula (huggingface/peft `src/peft/tuners/lora/dora.py`,
`DoraLinearLayer.get_weight_norm` / `forward`, and `lora/layer.py` `Linear.merge` /
`get_delta_weight`) and the DoRA paper (Liu et al. 2024, arXiv:2402.09353, section 4.3),
not from any TypeScript code in this repository.

    dora_ref.py            writes tests/fixtures/dora/dora_ref.json (seeded, deterministic)
    dora_ref.py --check    recomputes everything and compares with the committed fixture

Formulas (W: [out, in], A: [r, in], B: [out, r], x: [n, in], s = lora_alpha / r):
    V      = W + s * (B @ A)                       the directional matrix, [out, in]
    norm   = ||V||_2 over the input dim, per row   [out]   (PEFT: linalg.norm(weight, dim=1))
    m0     = ||W||_2 per row                       [out]   (lora_magnitude_vector at init, B = 0)
    c      = m / norm                              [out]   (norm is detached: a constant for autograd)
    y      = c * (x @ W^T) + c * s * (x @ A^T @ B^T)  ==  x @ (c[:, None] * V)^T
    merged = c[:, None] * V                        PEFT's merged weight
Gradients of L = sum(y * G) with the norm treated as a constant:
    dL/dm = sum_n G[n, o] * (x @ V^T)[n, o] / norm[o]
    dL/dB = s * (G * c)^T @ (x @ A^T)              [out, r]
    dL/dA = s * B^T @ (G * c)^T @ x                [r, in]
"""

import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "dora", "dora_ref.json")

N, IN, OUT_F, R, ALPHA = 3, 6, 5, 2, 4.0


def reference(w, a, b, m, x, g, scaling):
    v = w + scaling * (b @ a)
    norm = np.sqrt((v * v).sum(axis=1))
    c = m / norm
    y = c[None, :] * (x @ w.T) + c[None, :] * scaling * ((x @ a.T) @ b.T)
    merged = c[:, None] * v
    grad_m = (g * (x @ v.T)).sum(axis=0) / norm
    gc = g * c[None, :]
    grad_b = scaling * gc.T @ (x @ a.T)
    grad_a = scaling * b.T @ gc.T @ x
    m0 = np.sqrt((w * w).sum(axis=1))
    return {
        "weight_norm": norm,
        "initial_magnitude": m0,
        "y": y,
        "merged_weight": merged,
        "grad_magnitude": grad_m,
        "grad_lora_A": grad_a,
        "grad_lora_B": grad_b,
    }


def make():
    rng = np.random.default_rng(20240214)
    # Inputs are rounded to float32 so the TypeScript side sees exactly these values.
    f32 = lambda t: t.astype(np.float32).astype(np.float64)  # noqa: E731
    w = f32(rng.normal(0, 0.5, (OUT_F, IN)))
    a = f32(rng.normal(0, 0.4, (R, IN)))
    b = f32(rng.normal(0, 0.4, (OUT_F, R)))
    m = f32(np.sqrt((w * w).sum(axis=1)) * rng.uniform(0.8, 1.2, OUT_F))
    x = f32(rng.normal(0, 1.0, (N, IN)))
    g = f32(rng.normal(0, 1.0, (N, OUT_F)))
    scaling = ALPHA / R
    inputs = {"W": w, "lora_A": a, "lora_B": b, "magnitude": m, "x": x, "G": g}
    out = reference(w, a, b, m, x, g, scaling)
    return {
        "about": "DoRA float64 reference written by tests/reference/dora_ref.py from PEFT's formula",
        "r": R,
        "lora_alpha": ALPHA,
        "scaling": scaling,
        "inputs": {k: v.tolist() for k, v in inputs.items()},
        "expected": {k: v.tolist() for k, v in out.items()},
    }


def main():
    data = make()
    if "--check" in sys.argv:
        with open(OUT) as f:
            old = json.load(f)
        for k, v in data["expected"].items():
            if not np.allclose(np.array(old["expected"][k]), np.array(v), rtol=0, atol=1e-12):
                sys.exit(f"{OUT}: {k} differs from a fresh computation")
        print("dora_ref: fixture matches")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
