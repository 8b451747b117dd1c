#!/usr/bin/python3
"""Builds tiny GPTQ-quantized Llama directories (tests/fixtures/gptq_model/*) and their expected values.

A random full-precision Llama (hidden 64, intermediate 128, 2 layers, 4 heads / 2 kv heads, vocab 64,
seed 1234) is made with numpy; every attention/MLP projection is quantized round-to-nearest on
AutoGPTQ's grid and packed by tests/reference/gptq_ref.py (written from FORMATS.md §3). Other weights
(embeddings, norms, lm_head) are stored as F16 like AutoGPTQ/TheBloke checkpoints.

Variants (FORMATS.md §3.4–3.6):
  v1_g32        checkpoint_format "gptq" (stored zero - 1), sym, group_size 32, g_idx = i // 32
  v2_actorder   checkpoint_format "gptq_v2" (zero as is), asym, group_size 32, desc_act (permuted g_idx)
  v1_gm1_nogidx "gptq", sym, group_size -1 (one group), no g_idx tensor (loaders derive i // in)

Each directory gets config.json (with quantization_config), quantize_config.json, model.safetensors and
expected_dequant.json: sha256 of every dequantized float32 weight [out, in], the full values of a few,
and last-position logits of INPUT_IDS from tests/reference/llama_ref.py's LlamaRef (float64) run on the
dequantized weights.

Usage: /usr/bin/python3 tests/reference/make_gptq_model.py [OUT_DIR]   (default tests/fixtures/gptq_model)
"""

import base64
import hashlib
import json
import os
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gptq_ref  # noqa: E402
import llama_ref  # noqa: E402

F = np.float32
V, D, FF, L, H, K = 64, 64, 128, 2, 4, 2
E = D // H
INPUT_IDS = [1, 5, 9, 17, 33, 2, 63]
LINEARS = [("self_attn", "q_proj", H * E, D), ("self_attn", "k_proj", K * E, D), ("self_attn", "v_proj", K * E, D),
           ("self_attn", "o_proj", D, H * E), ("mlp", "gate_proj", FF, D), ("mlp", "up_proj", FF, D),
           ("mlp", "down_proj", D, FF)]
VARIANTS = [
    # name, group_size, sym, checkpoint_format, desc_act, store g_idx, weights with full expected values
    ("v1_g32", 32, True, "gptq", False, True,
     ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.o_proj.weight"]),
    ("v2_actorder", 32, False, "gptq_v2", True, True, ["model.layers.0.self_attn.k_proj.weight"]),
    ("v1_gm1_nogidx", -1, True, "gptq", False, False, []),
]

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D, "intermediate_size": FF,
    "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": K, "head_dim": E,
    "hidden_act": "silu", "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "rope_scaling": None, "vocab_size": V, "tie_word_embeddings": False, "bos_token_id": 1,
    "eos_token_id": 2, "torch_dtype": "float16",
}


def write_safetensors(path, tensors):
    """tensors: list of (name, numpy array) with dtype float16, float32 or int32 (written in order)."""
    kinds = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": kinds[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def full_precision_model():
    """Random weights; the linear ones are fp16-representable so the fp model is exactly the fp16 one."""
    rng = np.random.default_rng(1234)
    fp16 = lambda a: a.astype(np.float16).astype(F)
    w = {"model.embed_tokens.weight": fp16(rng.standard_normal((V, D)) * 0.5),
         "lm_head.weight": fp16(rng.standard_normal((V, D)) * 0.2),
         "model.norm.weight": fp16(1 + 0.1 * rng.standard_normal(D))}
    for i in range(L):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = fp16(1 + 0.1 * rng.standard_normal(D))
        w[p + "post_attention_layernorm.weight"] = fp16(1 + 0.1 * rng.standard_normal(D))
        for block, name, o, inp in LINEARS:
            w[p + "%s.%s.weight" % (block, name)] = fp16(rng.standard_normal((o, inp)) / np.sqrt(inp))
    return w, rng


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def build_variant(out_dir, variant, weights, rng):
    name, gs, sym, fmt, desc_act, store_gidx, full = variant
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    tensors, dequant = [], {}
    for key in sorted(weights):
        w = weights[key]
        module = key[:-len(".weight")]
        if not any(key.endswith(".%s.weight" % n) for _, n, _, _ in LINEARS):
            tensors.append((key, w.astype(np.float16)))
            continue
        O, I = w.shape
        G = I if gs == -1 else gs
        if desc_act:  # act-order: channel perm[i] is quantized i-th, so g_idx[perm[i]] = i // G
            perm = rng.permutation(I)
            g_idx = np.empty(I, dtype=np.int32)
            g_idx[perm] = np.arange(I) // G
        else:
            g_idx = (np.arange(I) // G).astype(np.int32)
        qweight, qzeros, scales = gptq_ref.pack(w, gs, sym, fmt, g_idx)
        dequant[key] = gptq_ref.dequant(qweight, qzeros, scales, g_idx, fmt)
        tensors += [(module + ".qweight", qweight), (module + ".qzeros", qzeros),
                    (module + ".scales", scales.astype(np.float16))]
        if store_gidx:
            tensors.append((module + ".g_idx", g_idx))
    tensors.sort(key=lambda t: t[0])
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)

    qcfg = {"bits": 4, "group_size": gs, "damp_percent": 0.01, "desc_act": desc_act, "static_groups": False,
            "sym": sym, "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model",
            "quant_method": "gptq", "checkpoint_format": fmt}
    with open(os.path.join(d, "quantize_config.json"), "w") as f:
        json.dump(qcfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(LLAMA_CONFIG, quantization_config=qcfg), f, indent=2)
        f.write("\n")

    # Logits of the dequantized model from the float64 reference forward.
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(LLAMA_CONFIG, f)
        plain = {k: (dequant[k] if k in dequant else v.astype(np.float16).astype(F)) for k, v in weights.items()}
        llama_ref.write_safetensors(os.path.join(tmp, "model.safetensors"), plain, "F32")
        logits = llama_ref.LlamaRef(tmp).forward([INPUT_IDS])[0, -1]
    doc = {
        "source": "tests/reference/make_gptq_model.py (numpy; packing/dequant from gptq_ref.py, logits from "
                  "llama_ref.py LlamaRef in float64 on the dequantized float32 weights)",
        "variant": {"group_size": gs, "sym": sym, "checkpoint_format": fmt, "desc_act": desc_act,
                    "g_idx_stored": store_gidx},
        "sha256": {k: hashlib.sha256(np.ascontiguousarray(v, dtype="<f4").tobytes()).hexdigest()
                   for k, v in sorted(dequant.items())},
        "dequant": {k: {"shape": list(dequant[k].shape), "f32": b64(dequant[k].astype("<f4"))} for k in full},
        "input_ids": INPUT_IDS,
        "last_logits": llama_ref.round_sig(logits, 10),
    }
    with open(os.path.join(d, "expected_dequant.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "gptq_model")
    weights, _ = full_precision_model()
    for i, variant in enumerate(VARIANTS):
        build_variant(out_dir, variant, weights, np.random.default_rng(99 + i))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out_dir) for f in fs)
    print("wrote %s (%d bytes)" % (out_dir, total))


if __name__ == "__main__":
    main()
