#!/usr/bin/python3
"""Reference Llama forward pass in float64 numpy, for golden logits.

Written from the HF Llama spec (transformers `modeling_llama.py` conventions, summarised in
FORMATS.md section 5), not from any TypeScript code in this repo, so it can check the TS model.
Needs only numpy.

    llama_ref.py <model_dir> <ids_json> [--mask <mask_json>] [--positions arange|mask] --out <file.json>
    llama_ref.py --self-check [--model-dir DIR]
    llama_ref.py --make-fixture [--model-dir DIR] [--out FILE]

`ids_json` / `mask_json` are JSON text or a path to a JSON file: a list of rows (or one row).
Output: {"logits": [[[...V] ...T] ...B]} (float64 values rounded to 8 significant digits).

Dimension legend: B batch, T sequence, D hidden, H query heads, K kv heads, E head_dim,
F intermediate, V vocab.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXTERNAL = os.environ.get("NBTUNE_EXTERNAL_FIXTURES", os.path.join(REPO, "tests", "fixtures", "external"))
TINY_LLAMA = os.path.join(EXTERNAL, "tiny-random-llama-2")
FIXTURE_IDS = [[1, 42, 99, 7, 2999], [1, 5, 6, 7, 8]]
FIXTURE_OUT = os.path.join(REPO, "tests", "fixtures", "tiny_random_llama_logits.json")


# ---------------------------------------------------------------- safetensors (FORMATS.md §1)

def _decode(dtype, raw, shape):
    if dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2")
    elif dtype == "F64":
        arr = np.frombuffer(raw, dtype="<f8")
    elif dtype == "BF16":
        # bf16 is the upper half of an IEEE f32.
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise ValueError("unsupported safetensors dtype %s (need F32, F16, BF16 or F64)" % dtype)
    return arr.astype(np.float64).reshape(shape)


def read_safetensors(path):
    """Returns {name: float64 array} for one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = _decode(info["dtype"], data[base + begin:base + end], info["shape"])
    return out


def write_safetensors(path, tensors, dtype="F32"):
    """Writes {name: array} as F32/F16/BF16 (BF16 truncates); used for synthetic test models."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float64)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = (a.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raise ValueError("unsupported dtype %s" % dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def read_weights(model_dir):
    """Single file or sharded checkpoint (model.safetensors.index.json)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for shard in shards:
            weights.update(read_safetensors(os.path.join(model_dir, shard)))
        return weights
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


# ---------------------------------------------------------------- config and RoPE

def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    heads = cfg["num_attention_heads"]
    # transformers v5 moves rope_theta / rope_scaling into rope_parameters.
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling")
    if scaling is None and rope.get("rope_type", "default") != "default":
        scaling = rope
    return {
        "hidden": cfg["hidden_size"],
        "inter": cfg["intermediate_size"],
        "layers": cfg["num_hidden_layers"],
        "heads": heads,
        "kv_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads,
        "eps": cfg.get("rms_norm_eps", 1e-6),
        "theta": cfg.get("rope_theta", rope.get("rope_theta", 10000.0)),
        "scaling": scaling,
        "vocab": cfg["vocab_size"],
        "tied": cfg.get("tie_word_embeddings", False),
    }


def rope_inv_freq(cfg):
    """inv_freq[i] = 1 / theta^(2i/E), i < E/2, with linear or llama3 scaling."""
    d = cfg["head_dim"]
    inv = 1.0 / (cfg["theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    s = cfg["scaling"]
    kind = None if s is None else (s.get("rope_type") or s.get("type"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / s["factor"]  # same as dividing positions by factor
    if kind == "llama3":
        factor = s["factor"]
        low = s.get("low_freq_factor", 1.0)
        high = s.get("high_freq_factor", 4.0)
        old = s.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        mid = (wavelen >= old / high) & (wavelen <= old / low)
        return np.where(mid, (1 - smooth) * inv / factor + smooth * inv, out)
    raise NotImplementedError("rope_scaling type %r is not supported by llama_ref.py" % kind)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, positions, inv_freq):
    # x: [B, n, T, E]; positions: [B, T]
    freqs = positions[:, :, None].astype(np.float64) * inv_freq[None, None, :]  # [B, T, E/2]
    emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :, :]  # [B, 1, T, E]
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


# ---------------------------------------------------------------- model

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


class LlamaRef:
    """Holds config and float64 weights; `forward(ids, mask)` returns logits [B, T, V]."""

    def __init__(self, model_dir):
        self.cfg = read_config(model_dir)
        self.w = read_weights(model_dir)
        self.inv_freq = rope_inv_freq(self.cfg)

    def forward(self, ids, mask=None, positions="arange"):
        c, w = self.cfg, self.w
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        B, T = ids.shape
        if ids.min() < 0 or ids.max() >= c["vocab"]:
            raise ValueError("token ids must be in [0, %d)" % c["vocab"])
        mask = np.ones((B, T), dtype=bool) if mask is None else np.asarray(mask).reshape(B, T).astype(bool)
        if positions == "arange":  # what HF's forward does without position_ids
            pos = np.broadcast_to(np.arange(T), (B, T))
        elif positions == "mask":  # what HF's generate() passes: cumsum(mask) - 1, pads at 0
            pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        else:
            raise ValueError("positions must be 'arange' or 'mask'")
        H, K, E = c["heads"], c["kv_heads"], c["head_dim"]

        allowed = np.tril(np.ones((T, T), dtype=bool))[None, :, :] & mask[:, None, :]  # [B, Tq, Tk]
        # Query rows with no visible key (pad queries under left padding) attend to all keys,
        # like transformers' sdpa `_unmask_unattended`; their logits are not meaningful.
        allowed = np.where(allowed.any(axis=-1, keepdims=True), allowed, True)

        x = w["model.embed_tokens.weight"][ids]  # [B, T, D]
        for i in range(c["layers"]):
            p = "model.layers.%d." % i
            h = rms_norm(x, w[p + "input_layernorm.weight"], c["eps"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(B, T, H, E).transpose(0, 2, 1, 3)  # [B, H, T, E]
            k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(B, T, K, E).transpose(0, 2, 1, 3)  # [B, K, T, E]
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(B, T, K, E).transpose(0, 2, 1, 3)
            q = apply_rope(q, pos, self.inv_freq)
            k = apply_rope(k, pos, self.inv_freq)
            k = np.repeat(k, H // K, axis=1)  # repeat_kv: kv head j serves q heads j*n .. j*n+n-1
            v = np.repeat(v, H // K, axis=1)
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E)  # [B, H, T, T]
            scores = np.where(allowed[:, None, :, :], scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H * E)
            x = x + attn @ w[p + "self_attn.o_proj.weight"].T
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], c["eps"])
            gate = h @ w[p + "mlp.gate_proj.weight"].T
            up = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        x = rms_norm(x, w["model.norm.weight"], c["eps"])
        head = w.get("lm_head.weight")
        if head is None or c["tied"]:
            head = w["model.embed_tokens.weight"]
        return x @ head.T  # [B, T, V]


# ---------------------------------------------------------------- CLI helpers

def round_sig(a, digits=8):
    """Nested lists of floats rounded to `digits` significant digits."""
    return json.loads(json.dumps(np.asarray(a).tolist(), default=float),
                      parse_float=lambda s: float("%.*g" % (digits, float(s))))


def load_json_arg(text):
    if os.path.exists(text):
        with open(text) as f:
            return json.load(f)
    return json.loads(text)


def rows(value):
    return [value] if value and not isinstance(value[0], list) else value


def self_check(model_dir):
    """Compares with Transformers' logits in reference_logits.json (tol abs/rel 1e-5)."""
    with open(os.path.join(model_dir, "reference_logits.json")) as f:
        ref = json.load(f)
    tol = ref["logit_tolerance"]
    model = LlamaRef(model_dir)
    ok = True
    worst = 0.0
    for case in ref["model_cases"]:
        ids = case["input_ids"]
        last = model.forward([ids])[0, -1]
        for vid, want in case["sampled_logits"].items():
            got = last[int(vid)]
            err = abs(got - want)
            worst = max(worst, err)
            if err > tol["absolute"] and err > tol["relative"] * abs(want):
                ok = False
                print("MISMATCH ids=%s vocab %s: got %.9g want %.9g" % (ids, vid, got, want))
        if int(np.argmax(last)) != case["greedy_token"]:
            ok = False
            print("MISMATCH ids=%s argmax %d want %d" % (ids, int(np.argmax(last)), case["greedy_token"]))
        seq = list(ids)
        for _ in range(len(case["greedy_continuation"])):
            seq.append(int(np.argmax(model.forward([seq])[0, -1])))
        if seq[len(ids):] != case["greedy_continuation"]:
            ok = False
            print("MISMATCH ids=%s greedy %s want %s" % (ids, seq[len(ids):], case["greedy_continuation"]))
    # Padding invariants: right padding leaves real positions unchanged; left padding with
    # mask-derived positions reproduces the unpadded last logits.
    plain = model.forward([[1, 42, 99]])[0]
    right = model.forward([[1, 42, 99, 0, 0]], mask=[[1, 1, 1, 0, 0]])[0, :3]
    left = model.forward([[0, 0, 1, 42, 99]], mask=[[0, 0, 1, 1, 1]], positions="mask")[0, -1]
    pad_err = max(np.abs(right - plain).max(), np.abs(left - plain[-1]).max())
    if pad_err > 1e-12:
        ok = False
        print("MISMATCH padding invariants: max err %.3g" % pad_err)
    print("%s: %d cases, max abs err %.3g vs transformers; padding err %.3g" % (
        "OK" if ok else "FAILED", len(ref["model_cases"]), worst, pad_err))
    return synthetic_check() and ok


def _synthetic_model(d, cfg, weights, dtype):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    write_safetensors(os.path.join(d, "model.safetensors"), weights, dtype)
    return LlamaRef(d)


def synthetic_check():
    """Paths the tiny checkpoint does not cover, checked by equivalent rewrites of one model:
    GQA == MHA with kv weights repeated per group; tied == untied with lm_head = embed;
    head_dim != hidden/heads; F16 and BF16 storage; llama3/linear scaling with factor 1 == none."""
    import tempfile
    rng = np.random.default_rng(0)
    V, D, H, K, E, F = 50, 12, 4, 2, 4, 20  # head_dim 4 != 12/4 = 3
    # Values exactly representable in bf16 and f16, so all storage dtypes give the same model.
    r = lambda *shape: np.round(rng.standard_normal(shape) * 0.5 * 64) / 64
    base = {"hidden_size": D, "intermediate_size": F, "num_hidden_layers": 2, "num_attention_heads": H,
            "num_key_value_heads": K, "head_dim": E, "rms_norm_eps": 1e-6, "rope_theta": 500.0,
            "rope_scaling": None, "vocab_size": V, "tie_word_embeddings": True}
    w = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": 1 + r(D)}
    for i in range(2):
        p = "model.layers.%d." % i
        w.update({p + "input_layernorm.weight": 1 + r(D), p + "post_attention_layernorm.weight": 1 + r(D),
                  p + "self_attn.q_proj.weight": r(H * E, D), p + "self_attn.k_proj.weight": r(K * E, D),
                  p + "self_attn.v_proj.weight": r(K * E, D), p + "self_attn.o_proj.weight": r(D, H * E),
                  p + "mlp.gate_proj.weight": r(F, D), p + "mlp.up_proj.weight": r(F, D),
                  p + "mlp.down_proj.weight": r(D, F)})
    # MHA twin: kv head j's rows repeated for query heads j*n .. j*n+n-1.
    mha = dict(w, **{"lm_head.weight": w["model.embed_tokens.weight"]})
    for i in range(2):
        for name in ("k_proj", "v_proj"):
            key = "model.layers.%d.self_attn.%s.weight" % (i, name)
            mha[key] = np.repeat(w[key].reshape(K, E, D), H // K, axis=0).reshape(H * E, D)
    ids = [[3, 7, 1, 49, 0, 22], [5, 5, 5, 2, 9, 11]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["gqa_tied_f32"] = _synthetic_model(tmp + "/a", base, w, "F32").forward(ids)
        results["gqa_tied_f16"] = _synthetic_model(tmp + "/b", base, w, "F16").forward(ids)
        results["gqa_tied_bf16"] = _synthetic_model(tmp + "/c", base, w, "BF16").forward(ids)
        cfg = dict(base, num_key_value_heads=H, tie_word_embeddings=False)
        results["mha_untied"] = _synthetic_model(tmp + "/d", cfg, mha, "F32").forward(ids)
        for kind, scaling in (("linear", {"type": "linear", "factor": 1.0}),
                              ("llama3", {"rope_type": "llama3", "factor": 1.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64})):
            results[kind] = _synthetic_model(tmp + "/" + kind, dict(base, rope_scaling=scaling), w, "F32").forward(ids)
        scaled = _synthetic_model(tmp + "/lin2", dict(base, rope_scaling={"type": "linear", "factor": 2.0}), w, "F32")
        results["linear2"] = scaled.forward(ids)
    want = results["gqa_tied_f32"]
    errs = {k: float(np.abs(v - want).max()) for k, v in results.items() if k != "linear2"}
    ok = all(e < 1e-12 for e in errs.values()) and float(np.abs(results["linear2"] - want).max()) > 1e-6
    print("%s: synthetic equivalences, max err %.3g" % ("OK" if ok else "FAILED", max(errs.values())))
    if not ok:
        print(errs)
    return ok


def make_fixture(model_dir, out):
    model = LlamaRef(model_dir)
    vocab = model.cfg["vocab"]
    ids = [[i % vocab for i in row] for row in FIXTURE_IDS]
    logits = model.forward(ids)
    doc = {
        "source": "tests/reference/llama_ref.py --make-fixture (float64 numpy reference, checked against "
                  "transformers logits by --self-check); model: stas/tiny-random-llama-2 "
                  "(tests/fixtures/external/tiny-random-llama-2), BF16 weights widened exactly",
        "positions": "arange (0..T-1), no attention mask",
        "digits": 8,
        "input_ids": ids,
        "shape": list(logits.shape),
        "last_logits": round_sig(logits[:, -1, :]),
        "logits": round_sig(logits),
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (out, os.path.getsize(out)))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("ids", nargs="?", help="JSON list of rows of token ids, or a path to one")
    ap.add_argument("--mask", help="JSON list of 0/1 rows (1 = real token), or a path to one")
    ap.add_argument("--positions", choices=["arange", "mask"], default="arange",
                    help="arange: 0..T-1 like HF forward (default); mask: cumsum(mask)-1 like HF generate")
    ap.add_argument("--out", help="output JSON file")
    ap.add_argument("--last-only", action="store_true", help="write only last-position logits [B, V]")
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--make-fixture", action="store_true")
    ap.add_argument("--model-dir", dest="ref_dir", default=TINY_LLAMA, help="model for --self-check / --make-fixture")
    a = ap.parse_args(argv)
    if a.self_check:
        return 0 if self_check(a.ref_dir) else 1
    if a.make_fixture:
        make_fixture(a.ref_dir, a.out or FIXTURE_OUT)
        return 0
    if not (a.model_dir and a.ids and a.out):
        ap.error("need <model_dir> <ids_json> --out <file.json> (or --self-check / --make-fixture)")
    ids = rows(load_json_arg(a.ids))
    mask = rows(load_json_arg(a.mask)) if a.mask else None
    logits = LlamaRef(a.model_dir).forward(ids, mask=mask, positions=a.positions)
    doc = {"last_logits": round_sig(logits[:, -1, :])} if a.last_only else {"logits": round_sig(logits)}
    with open(a.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
