#!/usr/bin/python3
"""Reference PEFT LoRA adapters and golden logits for stas/tiny-random-llama-2 (numpy only).

Written from the PEFT format spec (FORMATS.md section 4: huggingface/peft `lora/layer.py`,
`lora/config.py`, `utils/save_and_load.py`, `utils/other.py`) and the safetensors spec
(FORMATS.md section 1), not from any TypeScript code in this repo. The base forward pass is
the independent float64 reference in `llama_ref.py`.

    peft_ref.py [--make-fixtures] [--model-dir DIR] [--out-dir DIR]
        Writes tests/fixtures/peft/{tiny-llama-lora-qv,tiny-llama-lora-all-rslora}/ and
        tests/fixtures/peft/expected_keys.json (deterministic: seeded numpy RNG).
    peft_ref.py --check [--model-dir DIR] [--out-dir DIR]
        Re-reads the fixture files, validates the safetensors layout independently, and
        checks that the stored logits match a fresh computation.
    peft_ref.py --logits <adapter_dir> <ids_json> --out <file.json> [--model-dir DIR]
        Loads any PEFT LoRA adapter directory (e.g. one written by our TS code) onto the base
        model and writes {"logits": [B][T][V]} (8 significant digits).

Formulas (PEFT `update_layer` / `get_delta_weight` / `forward`):
    lora_A.weight: [r, in]    lora_B.weight: [out, r]
    scaling = lora_alpha / r            (use_rslora false)
    scaling = lora_alpha / sqrt(r)      (use_rslora true)
    dW = (B @ A) * scaling   ([out, in]; transposed only with fan_in_fan_out)
    y  = x W^T + ((x A^T) B^T) * scaling  ==  x (W + dW)^T     (dropout is identity at inference)
"""

import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import LlamaRef, TINY_LLAMA, REPO, load_json_arg, round_sig, rows  # noqa: E402

OUT_DIR = os.path.join(REPO, "tests", "fixtures", "peft")
INPUT_IDS = [[1, 42, 99, 7, 5], [1, 5, 6, 7, 8]]
PREFIX = "base_model.model."  # PeftModelForCausalLM -> LoraModel -> LlamaForCausalLM

# module path (relative to LlamaForCausalLM) for each linear name, in Llama's module order
LINEARS = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}

# Full key set of a PEFT 0.19.1 LoraConfig.to_dict() as saved by save_pretrained
# (json.dumps(indent=2, sort_keys=True)); matches FORMATS.md §4's example plus the keys its
# "..." elides, as seen in two independent real 0.19.1 adapter_config.json files.
PEFT_0_19_1_DEFAULTS = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
    "base_model_name_or_path": None, "bias": "none", "corda_config": None, "ensure_weight_tying": False,
    "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True,
    "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
    "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 8, "lora_bias": False,
    "lora_dropout": 0.0, "lora_ga_config": None, "megatron_config": None,
    "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA",
    "peft_version": "0.19.1", "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": None,
    "target_modules": None, "target_parameters": None, "task_type": None,
    "trainable_token_indices": None, "use_bdlora": None, "use_dora": False, "use_qalora": False,
    "use_rslora": False,
}
OLD_STYLE_KEYS = ["peft_type", "r", "lora_alpha", "target_modules", "task_type", "base_model_name_or_path",
                  "lora_dropout", "bias", "fan_in_fan_out", "use_rslora", "inference_mode"]

CASES = [
    {
        "name": "tiny-llama-lora-qv", "seed": 20240401, "style": "peft-0.19.1",
        "r": 4, "lora_alpha": 8, "use_rslora": False, "lora_dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
    },
    {
        "name": "tiny-llama-lora-all-rslora", "seed": 20240402, "style": "old",
        "r": 2, "lora_alpha": 4, "use_rslora": True, "lora_dropout": 0.0,
        # PEFT stores target_modules from a Python set: order is arbitrary. Deliberately shuffled.
        "target_modules": ["up_proj", "o_proj", "q_proj", "down_proj", "v_proj", "gate_proj", "k_proj"],
    },
]
B_STD = 0.05  # lora_B ~ N(0, B_STD): non-zero so the adapter changes the output


# ---------------------------------------------------------------- safetensors, written like safetensors-rs

def st_header_bytes(entries, metadata):
    """entries: [(name, dtype, shape, nbytes)] in data order. Compact JSON like serde_json,
    `__metadata__` first, then tensors in data order; padded with spaces to a multiple of 8."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return text + b" " * (-len(text) % 8)


def write_safetensors_f32(path, tensors, metadata):
    # safetensors-rs `prepare` orders by dtype (descending) then name; all F32 here -> by name.
    names = sorted(tensors)
    raws = [np.ascontiguousarray(tensors[n], dtype="<f4").tobytes() for n in names]
    text = st_header_bytes([(n, "F32", tensors[n].shape, len(r)) for n, r in zip(names, raws)], metadata)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(raws))


def parse_safetensors_strict(path):
    """Independent strict reader: validates layout (FORMATS.md §1) and returns
    (header_text, metadata, [(name, dtype, shape, begin, end)] in header order, {name: f64 array})."""
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= 8, "file too short"
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data), "header length past EOF"
    raw = data[8:8 + n]
    assert raw[:1] == b"{", "header must start with '{'"
    assert n % 8 == 0, "header length %d not a multiple of 8" % n
    text = raw.decode("utf-8")
    pairs = json.loads(text, object_pairs_hook=list)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate keys"
    header = dict(pairs)
    meta = header.pop("__metadata__", None)
    if meta is not None:
        meta = dict(meta)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()), "metadata must be str->str"
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
    entries = []
    for name, info in pairs:
        if name == "__metadata__":
            continue
        info = dict(info)
        assert set(info) == {"dtype", "shape", "data_offsets"}, info
        b, e = info["data_offsets"]
        assert (e - b) == int(np.prod(info["shape"], dtype=np.int64)) * sizes[info["dtype"]], name
        entries.append((name, info["dtype"], info["shape"], b, e))
    pos = 0
    for name, _, _, b, e in sorted(entries, key=lambda t: (t[3], t[4])):
        assert b == pos, "hole or overlap at %s (%d != %d)" % (name, b, pos)
        pos = e
    assert 8 + n + pos == len(data), "buffer not entirely indexed (%d != %d)" % (8 + n + pos, len(data))
    arrays = {}
    for name, dtype, shape, b, e in entries:
        assert dtype == "F32", "expected F32, got %s for %s" % (dtype, name)
        arrays[name] = np.frombuffer(data[8 + n + b:8 + n + e], dtype="<f4").astype(np.float64).reshape(shape)
    return text, meta, entries, arrays


# ---------------------------------------------------------------- PEFT adapter reader (spec only)

def _pattern_value(pattern, module, default):
    """rank_pattern / alpha_pattern lookup (`get_pattern_key`): re.match(rf"(.*\\.)?({key})$")."""
    for key, value in (pattern or {}).items():
        if re.match(r"(.*\.)?(%s)$" % key, module):
            return value
    return default


def _targeted(target_modules, module):
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return any(module == t or module.endswith("." + t) for t in target_modules or [])


def load_adapter(adapter_dir, base_weights):
    """Returns (merged float64 weights, {module: scaling}, config) for a PEFT LoRA adapter dir."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError("not a LORA adapter: %r" % cfg.get("peft_type"))
    if cfg.get("use_dora") or cfg.get("lora_bias"):
        raise ValueError("DoRA / lora_bias not supported by this reference")
    _, _, _, tensors = parse_safetensors_strict(os.path.join(adapter_dir, "adapter_model.safetensors"))
    merged = dict(base_weights)
    scalings = {}
    pat = re.compile(r"^%s(.+)\.lora_([AB])\.weight$" % re.escape(PREFIX))
    modules = {}
    for key in tensors:
        m = pat.match(key)
        if not m:
            raise ValueError("unexpected adapter key %s" % key)
        modules.setdefault(m.group(1), {})[m.group(2)] = tensors[key]
    for module, ab in sorted(modules.items()):
        if set(ab) != {"A", "B"}:
            raise ValueError("module %s lacks lora_A or lora_B" % module)
        if not _targeted(cfg.get("target_modules"), module):
            raise ValueError("module %s not matched by target_modules %r" % (module, cfg.get("target_modules")))
        A, B = ab["A"], ab["B"]
        r = _pattern_value(cfg.get("rank_pattern"), module, cfg.get("r", 8))
        alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", 8))
        if A.shape[0] != r or B.shape[1] != r:
            raise ValueError("module %s: rank %d in config, A %s B %s" % (module, r, A.shape, B.shape))
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora", False) else alpha / r
        delta = (B @ A) * scaling  # [out, in]
        if cfg.get("fan_in_fan_out", False):
            delta = delta.T
        wkey = module + ".weight"
        if merged[wkey].shape != delta.shape:
            raise ValueError("module %s: base %s vs delta %s" % (module, merged[wkey].shape, delta.shape))
        merged[wkey] = merged[wkey] + delta
        scalings[module] = scaling
    return merged, scalings, cfg


def adapter_logits(model, adapter_dir, ids):
    base = model.w
    merged, scalings, cfg = load_adapter(adapter_dir, base)
    try:
        model.w = merged
        return model.forward(ids), scalings, cfg
    finally:
        model.w = base


# ---------------------------------------------------------------- fixture generation

def module_keys(layers, targets):
    out = []
    for i in range(layers):
        for short, path in LINEARS.items():
            if short in targets:
                out.append("model.layers.%d.%s" % (i, path))
    return out


def make_config(case):
    if case["style"] == "peft-0.19.1":
        cfg = dict(PEFT_0_19_1_DEFAULTS)
    else:
        cfg = {k: PEFT_0_19_1_DEFAULTS[k] for k in OLD_STYLE_KEYS}
    cfg.update({"base_model_name_or_path": "stas/tiny-random-llama-2", "task_type": "CAUSAL_LM",
                "peft_type": "LORA", "inference_mode": True, "bias": "none", "r": case["r"],
                "lora_alpha": case["lora_alpha"], "lora_dropout": case["lora_dropout"],
                "use_rslora": case["use_rslora"], "target_modules": list(case["target_modules"])})
    return cfg


def make_tensors(case, base, layers):
    rng = np.random.default_rng(case["seed"])
    r = case["r"]
    tensors = {}
    for module in module_keys(layers, case["target_modules"]):  # Llama module order, layer-major
        out_f, in_f = base[module + ".weight"].shape
        bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform(a=sqrt(5)) bound for lora_A
        tensors[PREFIX + module + ".lora_A.weight"] = rng.uniform(-bound, bound, (r, in_f)).astype(np.float32)
        tensors[PREFIX + module + ".lora_B.weight"] = (rng.standard_normal((out_f, r)) * B_STD).astype(np.float32)
    return tensors


def scaling_of(case):
    return case["lora_alpha"] / (math.sqrt(case["r"]) if case["use_rslora"] else case["r"])


def unmerged_check(model, adapter_dir):
    """y = x W^T + ((x A^T) B^T) s must equal x (W + s B A)^T for every adapted linear."""
    merged, scalings, _ = load_adapter(adapter_dir, model.w)
    _, _, _, t = parse_safetensors_strict(os.path.join(adapter_dir, "adapter_model.safetensors"))
    rng = np.random.default_rng(0)
    worst = 0.0
    for module, s in scalings.items():
        W = model.w[module + ".weight"]
        A, B = t[PREFIX + module + ".lora_A.weight"], t[PREFIX + module + ".lora_B.weight"]
        x = rng.standard_normal((3, W.shape[1]))
        y1 = x @ W.T + (x @ A.T) @ B.T * s
        y2 = x @ merged[module + ".weight"].T
        worst = max(worst, float(np.abs(y1 - y2).max()))
    return worst


def build_case(model, case, out_dir):
    d = os.path.join(out_dir, case["name"])
    os.makedirs(d, exist_ok=True)
    cfg = make_config(case)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))  # PEFT save_pretrained: no trailing newline
    tensors = make_tensors(case, model.w, model.cfg["layers"])
    write_safetensors_f32(os.path.join(d, "adapter_model.safetensors"), tensors, {"format": "pt"})
    # Logits from the files as written (f32 A/B widened to f64), through the spec reader.
    logits, scalings, _ = adapter_logits(model, d, INPUT_IDS)
    base_logits = model.forward(INPUT_IDS)
    s = scaling_of(case)
    assert all(abs(v - s) < 1e-15 for v in scalings.values()), scalings
    diff = float(np.abs(logits - base_logits).max())
    scale = float(np.abs(logits).max())
    doc = {
        "note": ("tests/reference/peft_ref.py --make-fixtures: float64 numpy Llama forward (llama_ref.py, "
                 "checked against transformers) on stas/tiny-random-llama-2 (BF16 weights widened exactly), "
                 "every targeted W replaced by W + scaling * (lora_B @ lora_A) with A, B read back from "
                 "adapter_model.safetensors (F32 widened to f64); scaling = %s = %r; seed %d; positions "
                 "0..T-1, no mask; values rounded to 8 significant digits"
                 % ("lora_alpha/sqrt(r)" if case["use_rslora"] else "lora_alpha/r", s, case["seed"])),
        "adapter": case["name"],
        "scaling": s,
        "input_ids": INPUT_IDS,
        "shape": list(logits.shape),
        "max_abs_logit": round_sig(scale),
        "max_abs_diff_vs_base": round_sig(diff),
        "logits": round_sig(logits),
    }
    with open(os.path.join(d, "expected_logits.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("%s: %d tensors, scaling %.6g, max|logit| %.4g, max|adapter-base| %.4g (%.1f%% of max), "
          "unmerged-vs-merged %.2g" % (case["name"], len(tensors), s, scale, diff, 100 * diff / scale,
                                       unmerged_check(model, d)))
    return cfg, tensors


def expected_keys_doc(results, layers):
    doc = {
        "note": ("What PEFT 0.19.1 (get_peft_model_state_dict + safetensors.torch.save_file) writes for "
                 "these adapters on stas/tiny-random-llama-2, derived from the PEFT/safetensors spec "
                 "(FORMATS.md §1, §4) by tests/reference/peft_ref.py. Use to check our writer's key names, "
                 "dtypes and shapes; header key order / byte layout is informative only (readers must "
                 "not depend on it)."),
        "key_format": PREFIX + "model.layers.{i}.{self_attn|mlp}.{name}.lora_{A|B}.weight",
        "lora_A_shape": "[r, in_features]",
        "lora_B_shape": "[out_features, r]",
        "metadata": {"format": "pt"},
        "peft_0_19_1_config_keys": sorted(PEFT_0_19_1_DEFAULTS),
        "old_style_config_keys": sorted(OLD_STYLE_KEYS),
        "cases": {},
    }
    for case, (cfg, tensors) in results:
        names = sorted(tensors)
        entries = [(n, "F32", tensors[n].shape, tensors[n].size * 4) for n in names]
        doc["cases"][case["name"]] = {
            "sorted_keys": names,
            "tensors": {n: {"dtype": "F32", "shape": list(tensors[n].shape)} for n in names},
            "num_tensors": len(names),
            "header_json": st_header_bytes(entries, {"format": "pt"}).decode("utf-8").rstrip(" "),
            "required_config": {k: cfg[k] for k in ("peft_type", "task_type", "r", "lora_alpha", "use_rslora",
                                                    "fan_in_fan_out", "bias", "inference_mode",
                                                    "base_model_name_or_path", "lora_dropout")},
            "target_modules_set": sorted(cfg["target_modules"]),
            "config_keys": sorted(cfg),
            "scaling": scaling_of(case),
        }
    return doc


def make_fixtures(model_dir, out_dir):
    model = LlamaRef(model_dir)
    results = [(case, build_case(model, case, out_dir)) for case in CASES]
    doc = expected_keys_doc(results, model.cfg["layers"])
    with open(os.path.join(out_dir, "expected_keys.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(root, fn)) for root, _, fns in os.walk(out_dir) for fn in fns)
    print("wrote %s (%d bytes in total)" % (out_dir, total))


# ---------------------------------------------------------------- check

def check(model_dir, out_dir):
    model = LlamaRef(model_dir)
    ok = True
    with open(os.path.join(out_dir, "expected_keys.json")) as f:
        keys_doc = json.load(f)
    for case in CASES:
        d = os.path.join(out_dir, case["name"])
        path = os.path.join(d, "adapter_model.safetensors")
        text, meta, entries, arrays = parse_safetensors_strict(path)
        exp = keys_doc["cases"][case["name"]]
        names = [e[0] for e in entries]
        want = sorted(PREFIX + m + ".lora_%s.weight" % ab for m in module_keys(model.cfg["layers"], case["target_modules"])
                      for ab in "AB")
        problems = []
        if meta != {"format": "pt"}:
            problems.append("metadata %r" % meta)
        if names != sorted(names) or names != want or names != exp["sorted_keys"]:
            problems.append("keys differ from expected")
        for name, dtype, shape, _, _ in entries:
            if exp["tensors"][name] != {"dtype": dtype, "shape": shape}:
                problems.append("%s: %s %s" % (name, dtype, shape))
        if text.rstrip(" ") != exp["header_json"]:
            problems.append("header bytes differ from expected_keys.json")
        regen = make_tensors(case, model.w, model.cfg["layers"])
        if any(not np.array_equal(regen[k].astype(np.float64), arrays[k]) for k in regen):
            problems.append("tensor values differ from a fresh seeded generation")
        with open(os.path.join(d, "adapter_config.json")) as f:
            cfg = json.load(f)
        if cfg != make_config(case):
            problems.append("adapter_config.json differs from a fresh generation")
        with open(os.path.join(d, "expected_logits.json")) as f:
            stored = json.load(f)
        logits, _, _ = adapter_logits(model, d, stored["input_ids"])
        got = np.asarray(stored["logits"])
        rel = float(np.abs(got - logits).max() / np.abs(logits).max())
        if rel > 1e-7:
            problems.append("stored logits differ: rel err %.3g" % rel)
        diff = float(np.abs(logits - model.forward(stored["input_ids"])).max())
        if diff < 1e-3 * float(np.abs(logits).max()):
            problems.append("adapter barely changes the output (%.3g)" % diff)
        print("%s %s: %d tensors, header %d bytes, file %d bytes, stored-vs-fresh rel err %.2g, "
              "adapter effect %.3g" % ("OK" if not problems else "FAILED", case["name"], len(entries),
                                       len(text), os.path.getsize(path), rel, diff))
        for p in problems:
            print("  " + p)
        ok = ok and not problems
    return ok


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-fixtures", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--logits", nargs=2, metavar=("ADAPTER_DIR", "IDS_JSON"))
    ap.add_argument("--out", help="output JSON for --logits")
    ap.add_argument("--model-dir", default=TINY_LLAMA)
    ap.add_argument("--out-dir", default=OUT_DIR)
    a = ap.parse_args(argv)
    if a.check:
        return 0 if check(a.model_dir, a.out_dir) else 1
    if a.logits:
        if not a.out:
            ap.error("--logits needs --out")
        logits, _, _ = adapter_logits(LlamaRef(a.model_dir), a.logits[0], rows(load_json_arg(a.logits[1])))
        with open(a.out, "w") as f:
            json.dump({"logits": round_sig(logits)}, f, separators=(",", ":"))
            f.write("\n")
        return 0
    make_fixtures(a.model_dir, a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
