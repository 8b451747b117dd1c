/**
 * `deno run -A scripts/make_family_checkpoint.ts <family> [--out DIR] [--seed N]`: writes a
 * small random-weight HF checkpoint of a model family with that family's real tensor names and
 * `config.json` keys (as Transformers' `configuration_<family>.py` / `modeling_<family>.py` name
 * them), for the per-family logits tests against `tests/reference/families_ref.py`.
 *
 * Weights are normal(0, 0.1) from a seeded generator (the same bytes on every machine), biases
 * normal(0, 0.5) and norm weights 1 + normal(0, 0.1), so that every tensor visibly moves the
 * logits: a loader that skipped one would fail the reference test.
 * @module
 */
import { writeSafetensors } from "../lib/io/safetensors_writer.ts";

/** One family preset: its `config.json` and its tensors' names and shapes. */
export interface FamilyPreset {
  /** What it is, one line. */
  doc: string;
  config: Record<string, unknown>;
}

/** The small family checkpoints this script knows, by name. */
export const FAMILY_PRESETS: Record<string, FamilyPreset> = {
  qwen2: {
    doc: "Qwen2.5-style: q/k/v biases, tied embeddings, GQA 4:2, rope_theta 1e6",
    config: {
      architectures: ["Qwen2ForCausalLM"],
      model_type: "qwen2",
      vocab_size: 96,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      hidden_act: "silu",
      max_position_embeddings: 512,
      initializer_range: 0.02,
      rms_norm_eps: 1e-6,
      use_cache: true,
      tie_word_embeddings: true,
      rope_theta: 1000000.0,
      rope_scaling: null,
      use_sliding_window: false,
      sliding_window: 512,
      max_window_layers: 2,
      attention_dropout: 0.0,
      bos_token_id: 1,
      eos_token_id: 2,
      torch_dtype: "float32",
    },
  },
  gemma: {
    doc:
      "Gemma-style: head_dim 256 (not hidden / heads), GeGLU tanh-GELU, 1 + weight norms, scaled tied embeddings",
    config: {
      architectures: ["GemmaForCausalLM"],
      model_type: "gemma",
      vocab_size: 96,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      head_dim: 256,
      hidden_act: "gelu_pytorch_tanh",
      hidden_activation: "gelu_pytorch_tanh",
      max_position_embeddings: 512,
      initializer_range: 0.02,
      rms_norm_eps: 1e-6,
      use_cache: true,
      tie_word_embeddings: true,
      rope_theta: 10000.0,
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 2,
      eos_token_id: 1,
      pad_token_id: 0,
      torch_dtype: "float32",
    },
  },
  phi3: {
    doc:
      "Phi-3-style: fused qkv_proj and gate_up_proj, untied lm_head, sliding_window above the test lengths",
    config: {
      architectures: ["Phi3ForCausalLM"],
      model_type: "phi3",
      vocab_size: 96,
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      hidden_act: "silu",
      max_position_embeddings: 512,
      original_max_position_embeddings: 512,
      initializer_range: 0.02,
      rms_norm_eps: 1e-5,
      use_cache: true,
      tie_word_embeddings: false,
      rope_theta: 10000.0,
      rope_scaling: null,
      partial_rotary_factor: 1.0,
      resid_pdrop: 0.0,
      embd_pdrop: 0.0,
      attention_dropout: 0.0,
      sliding_window: 256,
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 0,
      torch_dtype: "float32",
    },
  },
};

/** How a tensor is filled: a weight, a bias, a norm weight around 1, or a norm offset around 0. */
type Fill = "weight" | "bias" | "norm" | "offset";

/**
 * Tensor names, shapes and fills of a family config, in HF order.
 *
 * @example
 * ```ts
 * import { FAMILY_PRESETS, familyTensors } from "./make_family_checkpoint.ts";
 * const names = familyTensors(FAMILY_PRESETS.qwen2.config).map((t) => t.name);
 * if (!names.includes("model.layers.1.self_attn.v_proj.bias")) throw new Error("no v bias");
 * if (names.includes("lm_head.weight")) throw new Error("qwen2 preset is tied");
 * ```
 */
export function familyTensors(c: Record<string, unknown>): { name: string; shape: number[]; fill: Fill }[] {
  const D = c.hidden_size as number, F = c.intermediate_size as number, V = c.vocab_size as number;
  const H = c.num_attention_heads as number, G = (c.num_key_value_heads ?? H) as number;
  const Dh = (c.head_dim ?? D / H) as number;
  const type = c.model_type as string;
  if (type !== "qwen2" && type !== "gemma" && type !== "phi3") {
    throw new RangeError(`make_family_checkpoint: no tensor layout for model_type "${type}"`);
  }
  const qkvBias = type === "qwen2";
  // Gemma stores its norm weights as offsets around 0 (the norm scales by 1 + weight).
  const norm: Fill = type === "gemma" ? "offset" : "norm";
  const out: { name: string; shape: number[]; fill: Fill }[] = [
    { name: "model.embed_tokens.weight", shape: [V, D], fill: "weight" },
  ];
  for (let i = 0; i < (c.num_hidden_layers as number); i++) {
    const p = `model.layers.${i}`;
    const proj = (name: string, o: number, i: number, bias: boolean) => [
      { name: `${p}.${name}.weight`, shape: [o, i], fill: "weight" as Fill },
      ...(bias ? [{ name: `${p}.${name}.bias`, shape: [o], fill: "bias" as Fill }] : []),
    ];
    if (type === "phi3") {
      out.push(
        { name: `${p}.input_layernorm.weight`, shape: [D], fill: norm },
        ...proj("self_attn.qkv_proj", (H + 2 * G) * Dh, D, false),
        ...proj("self_attn.o_proj", D, H * Dh, false),
        { name: `${p}.post_attention_layernorm.weight`, shape: [D], fill: norm },
        ...proj("mlp.gate_up_proj", 2 * F, D, false),
        ...proj("mlp.down_proj", D, F, false),
      );
      continue;
    }
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [D], fill: norm },
      ...proj("self_attn.q_proj", H * Dh, D, qkvBias),
      ...proj("self_attn.k_proj", G * Dh, D, qkvBias),
      ...proj("self_attn.v_proj", G * Dh, D, qkvBias),
      ...proj("self_attn.o_proj", D, H * Dh, false),
      { name: `${p}.post_attention_layernorm.weight`, shape: [D], fill: norm },
      ...proj("mlp.gate_proj", F, D, false),
      ...proj("mlp.up_proj", F, D, false),
      ...proj("mlp.down_proj", D, F, false),
    );
  }
  out.push({ name: "model.norm.weight", shape: [D], fill: norm });
  if (c.tie_word_embeddings !== true) out.push({ name: "lm_head.weight", shape: [V, D], fill: "weight" });
  return out;
}

/** `n` normal(0, 1) values from a mulberry32 stream seeded by `seed` (Box–Muller). */
function normals(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), a = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

/**
 * Writes `config.json` and `model.safetensors` (F32) of a family preset into `out`.
 *
 * @example
 * ```ts
 * import { makeFamilyCheckpoint } from "./make_family_checkpoint.ts";
 * const out = await Deno.makeTempDir();
 * const r = await makeFamilyCheckpoint("qwen2", out);
 * if (r.tensors !== 1 + 2 * 12 + 1) throw new Error(`${r.tensors}`);
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function makeFamilyCheckpoint(
  family: string,
  out: string,
  options: { seed?: number; config?: Record<string, unknown> } = {},
): Promise<{ dir: string; tensors: number; params: number }> {
  const preset = FAMILY_PRESETS[family];
  if (!preset) {
    throw new RangeError(
      `make_family_checkpoint: unknown family "${family}" (known: ${Object.keys(FAMILY_PRESETS).join(", ")})`,
    );
  }
  const config = { ...preset.config, ...options.config };
  const seed = options.seed ?? 1;
  await Deno.mkdir(out, { recursive: true });
  let params = 0;
  const tensors = familyTensors(config).map((t, k) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    params += n;
    const z = normals(n, seed * 1000003 + k * 7919);
    for (let i = 0; i < n; i++) {
      z[i] = t.fill === "norm" ? 1 + 0.1 * z[i] : (t.fill === "bias" ? 0.5 : 0.1) * z[i];
    }
    return { name: t.name, dtype: "F32" as const, shape: t.shape, data: z };
  });
  await writeSafetensors(`${out}/model.safetensors`, tensors, { metadata: { format: "pt" } });
  await Deno.writeTextFile(`${out}/config.json`, JSON.stringify(config, null, 2) + "\n");
  return { dir: out, tensors: tensors.length, params };
}

if (import.meta.main) {
  const args = [...Deno.args];
  const flag = (name: string) => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const usage = `usage: deno run -A scripts/make_family_checkpoint.ts <${
    Object.keys(FAMILY_PRESETS).join("|")
  }> [--out DIR] [--seed N]`;
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    for (const [k, p] of Object.entries(FAMILY_PRESETS)) console.log(`  ${k}: ${p.doc}`);
    Deno.exit(0);
  }
  const out = flag("--out"), seed = flag("--seed");
  if (args.length !== 1 || (seed !== undefined && !/^\d+$/.test(seed))) {
    console.error(usage);
    Deno.exit(2);
  }
  try {
    const r = await makeFamilyCheckpoint(args[0], out ?? `out/families/${args[0]}`, {
      seed: seed === undefined ? 1 : Number(seed),
    });
    console.log(`${args[0]}: ${r.tensors} tensors, ${r.params} params -> ${r.dir}`);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
