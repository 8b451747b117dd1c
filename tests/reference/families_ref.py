#!/usr/bin/python3
"""Family-aware reference forward pass in float64 numpy, for golden logits of each model family.

Written from Transformers' published modeling code of each family, not from any TypeScript in
this repo:
- qwen2 (`modeling_qwen2.py`): the Llama decoder (pre-RMSNorm, RoPE rotate_half, repeat_kv GQA,
  SwiGLU MLP) with `q_proj`, `k_proj`, `v_proj` built as `nn.Linear(..., bias=True)` and
  `o_proj` / the MLP without bias; `tie_word_embeddings` uses embed_tokens as the LM head;
  `use_sliding_window` must be false (refused here otherwise).
- gemma (`modeling_gemma.py`): GemmaRMSNorm `x * rsqrt(mean(x^2) + eps) * (1 + weight)`; the
  embeddings multiplied by `hidden_size ** 0.5` (the "normalizer"); GemmaMLP
  `down(gelu(gate(x), approximate="tanh") * up(x))`; `head_dim` from the config (256 in the
  released models, not hidden / heads); scaling `head_dim ** -0.5`; tied embeddings by default.
- phi3 (`modeling_phi3.py`): the Llama decoder with `self_attn.qkv_proj` (q = the first H*E output
  rows, k the next K*E, v the rest) and `mlp.gate_up_proj` (`gate, up = gate_up.chunk(2, dim=-1)`,
  `down(up * silu(gate))`); partial_rotary_factor must be 1 and rope_scaling null here.
- llama / mistral: the same decoder, biases only where `attention_bias` / `mlp_bias` say.
The safetensors reader and RoPE frequencies come from llama_ref.py (same directory).

    families_ref.py <model_dir> <ids_json> --out <file.json>
    families_ref.py --make-fixture <family> [--out FILE]   (generates the checkpoint with
        scripts/make_family_checkpoint.ts into out/families/<family>, then writes the fixture)

Output: {"model_type", "input_ids", "logits": [[[...V] ...T] ...B]} (8 significant digits).
Dimension legend: B batch, T sequence, D hidden, H query heads, K kv heads, E head_dim, V vocab.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from llama_ref import read_weights, rope_inv_freq, apply_rope, round_sig, load_json_arg, rows  # noqa: E402

FIXTURE_IDS = [[1, 42, 95, 7, 60, 3], [1, 5, 6, 7, 8, 9]]


def read_family_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    mt = raw.get("model_type", "llama")
    if mt not in ("llama", "mistral", "qwen2", "gemma", "phi3"):
        raise NotImplementedError("families_ref.py: model_type %r is not written yet" % mt)
    if mt == "phi3" and (raw.get("partial_rotary_factor", 1.0) != 1.0 or raw.get("rope_scaling")):
        raise NotImplementedError("phi3 with partial rotary or rope scaling is not covered by this reference")
    if mt == "qwen2" and raw.get("use_sliding_window", False):
        raise NotImplementedError("qwen2 with use_sliding_window is not covered by this reference")
    heads = raw["num_attention_heads"]
    cfg = {
        "model_type": mt,
        "hidden": raw["hidden_size"],
        "layers": raw["num_hidden_layers"],
        "heads": heads,
        "kv_heads": raw.get("num_key_value_heads") or heads,
        "head_dim": raw.get("head_dim") or raw["hidden_size"] // heads,
        "eps": raw.get("rms_norm_eps", 1e-6),
        "theta": raw.get("rope_theta", 10000.0),
        "scaling": raw.get("rope_scaling"),
        "vocab": raw["vocab_size"],
        "tied": raw.get("tie_word_embeddings", mt == "gemma"),
        "gemma": mt == "gemma",
        "phi3": mt == "phi3",
    }
    if mt == "gemma":
        act = raw.get("hidden_activation") or "gelu_pytorch_tanh"
        if act != "gelu_pytorch_tanh":
            raise NotImplementedError("gemma hidden_activation %r is not covered by this reference" % act)
    attn_bias = raw.get("attention_bias", False)
    cfg["bias"] = {
        "q_proj": mt == "qwen2" or attn_bias,
        "k_proj": mt == "qwen2" or attn_bias,
        "v_proj": mt == "qwen2" or attn_bias,
        "o_proj": attn_bias,
        "gate_proj": raw.get("mlp_bias", False),
        "up_proj": raw.get("mlp_bias", False),
        "down_proj": raw.get("mlp_bias", False),
    }
    return cfg


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    """PyTorch gelu(approximate="tanh")."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class FamilyRef:
    def __init__(self, model_dir):
        self.cfg = read_family_config(model_dir)
        self.w = read_weights(model_dir)
        self.inv_freq = rope_inv_freq(self.cfg)
        self.used = set()

    def get(self, name):
        self.used.add(name)
        return self.w[name]

    def norm(self, x, name):
        w = self.get(name)
        return rms_norm(x, 1.0 + w if self.cfg["gemma"] else w, self.cfg["eps"])

    def linear(self, x, prefix, name):
        """nn.Linear: x @ W.T (+ b)."""
        y = x @ self.get(prefix + name + ".weight").T
        if self.cfg["bias"][name]:
            y = y + self.get(prefix + name + ".bias")
        return y

    def forward(self, ids):
        c = self.cfg
        ids = np.asarray(ids, dtype=np.int64)
        B, T = ids.shape
        H, K, E = c["heads"], c["kv_heads"], c["head_dim"]
        pos = np.broadcast_to(np.arange(T), (B, T))
        causal = np.tril(np.ones((T, T), dtype=bool))
        x = self.get("model.embed_tokens.weight")[ids]  # [B, T, D]
        if c["gemma"]:
            x = x * (c["hidden"] ** 0.5)
        act = gelu_tanh if c["gemma"] else silu
        for i in range(c["layers"]):
            p = "model.layers.%d." % i
            h = self.norm(x, p + "input_layernorm.weight")
            a = p + "self_attn."
            if c["phi3"]:
                qkv = h @ self.get(a + "qkv_proj.weight").T
                q, k, v = qkv[..., :H * E], qkv[..., H * E:(H + K) * E], qkv[..., (H + K) * E:]
            else:
                q, k, v = self.linear(h, a, "q_proj"), self.linear(h, a, "k_proj"), self.linear(h, a, "v_proj")
            q = q.reshape(B, T, H, E).transpose(0, 2, 1, 3)
            k = k.reshape(B, T, K, E).transpose(0, 2, 1, 3)
            v = v.reshape(B, T, K, E).transpose(0, 2, 1, 3)
            q = apply_rope(q, pos, self.inv_freq)
            k = apply_rope(k, pos, self.inv_freq)
            k = np.repeat(k, H // K, axis=1)
            v = np.repeat(v, H // K, axis=1)
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E)
            s = np.where(causal[None, None], s, -np.inf)
            s -= s.max(axis=-1, keepdims=True)
            pr = np.exp(s)
            pr /= pr.sum(axis=-1, keepdims=True)
            attn = (pr @ v).transpose(0, 2, 1, 3).reshape(B, T, H * E)
            x = x + self.linear(attn, a, "o_proj")
            h = self.norm(x, p + "post_attention_layernorm.weight")
            m = p + "mlp."
            if c["phi3"]:
                gate, up = np.split(h @ self.get(m + "gate_up_proj.weight").T, 2, axis=-1)
            else:
                gate, up = self.linear(h, m, "gate_proj"), self.linear(h, m, "up_proj")
            x = x + self.linear(act(gate) * up, m, "down_proj")
        x = self.norm(x, "model.norm.weight")
        head = self.get("model.embed_tokens.weight") if c["tied"] else self.get("lm_head.weight")
        unused = sorted(set(self.w) - self.used)
        if unused:
            raise ValueError("families_ref.py: tensors not used by the %s forward: %s" % (c["model_type"], unused))
        return x @ head.T


def make_fixture(family, out):
    model_dir = os.path.join(REPO, "out", "families", family)
    subprocess.run(["deno", "run", "-A", os.path.join(REPO, "scripts", "make_family_checkpoint.ts"), family,
                    "--out", model_dir], check=True, cwd=REPO)
    logits = FamilyRef(model_dir).forward(FIXTURE_IDS)
    out = out or os.path.join(REPO, "tests", "fixtures", "families", "%s_logits.json" % family)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"model_type": family, "seed": 1, "input_ids": FIXTURE_IDS, "logits": round_sig(logits)}, f)
    print("wrote %s (logits %s, max |logit| %.3f)" % (out, logits.shape, np.abs(logits).max()))


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("ids", nargs="?")
    ap.add_argument("--out")
    ap.add_argument("--make-fixture", metavar="FAMILY")
    a = ap.parse_args(argv)
    if a.make_fixture:
        make_fixture(a.make_fixture, a.out)
        return 0
    if not (a.model_dir and a.ids and a.out):
        ap.error("need <model_dir> <ids_json> --out FILE, or --make-fixture FAMILY")
    ids = rows(load_json_arg(a.ids))
    logits = FamilyRef(a.model_dir).forward(ids)
    with open(a.out, "w") as f:
        json.dump({"input_ids": ids, "logits": round_sig(logits)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
