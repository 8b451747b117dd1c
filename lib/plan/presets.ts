/**
 * Shapes of common open models as HF `config.json`-like objects, for planning memory
 * without downloading anything. Only the fields the planner reads are kept.
 *
 * Provenance: the shape fields are those of the public `config.json` of each named
 * model on the Hugging Face Hub (recalled, and checked by the parameter totals in
 * `tests/plan/presets_test.ts` against the counts the model cards report). Falcon-40B
 * is modelled honestly: parallel attention + 2-matrix GELU MLP, 8 kv heads, LayerNorm
 * with bias, `lm_head` tied to the embeddings (as `FalconForCausalLM` does).
 * @module
 */

import { countParams } from "./model_shape.ts";

/** A named model shape. */
export interface ModelPreset {
  /** Canonical name (`llama-2-7b`). */
  name: string;
  /** Hub model the shape comes from, or "hypothetical". */
  source: string;
  /** HF-config-like object (snake_case keys; `mlp` added where it is not SwiGLU). */
  config: Readonly<Record<string, unknown>>;
  /**
   * Parameter count to use instead of counting the shape. Only the QLoRA seed's
   * hypothetical 10B model sets it (its arithmetic is per parameter, 10e9 exactly).
   */
  params?: number;
}

const llama = (
  hidden: number,
  inter: number,
  layers: number,
  heads: number,
  kvHeads: number,
  vocab: number,
  extra: Record<string, unknown> = {},
) => ({
  model_type: "llama",
  hidden_size: hidden,
  intermediate_size: inter,
  num_hidden_layers: layers,
  num_attention_heads: heads,
  num_key_value_heads: kvHeads,
  vocab_size: vocab,
  hidden_act: "silu",
  tie_word_embeddings: false,
  ...extra,
});

const TABLE: ModelPreset[] = [
  {
    name: "qwen2-0.5b",
    source: "Qwen/Qwen2-0.5B",
    config: {
      ...llama(896, 4864, 24, 14, 2, 151936, { tie_word_embeddings: true }),
      model_type: "qwen2",
    },
  },
  {
    name: "llama-3.2-1b",
    source: "meta-llama/Llama-3.2-1B",
    config: llama(2048, 8192, 16, 32, 8, 128256, { head_dim: 64, tie_word_embeddings: true }),
  },
  {
    name: "llama-3.2-3b",
    source: "meta-llama/Llama-3.2-3B",
    config: llama(3072, 8192, 28, 24, 8, 128256, { head_dim: 128, tie_word_embeddings: true }),
  },
  { name: "llama-2-7b", source: "meta-llama/Llama-2-7b-hf", config: llama(4096, 11008, 32, 32, 32, 32000) },
  {
    name: "llama-7b",
    source: "huggyllama/llama-7b (LLaMA-1)",
    config: llama(4096, 11008, 32, 32, 32, 32000),
  },
  {
    name: "mistral-7b",
    source: "mistralai/Mistral-7B-v0.1",
    config: { ...llama(4096, 14336, 32, 32, 8, 32000), model_type: "mistral" },
  },
  { name: "llama-3-8b", source: "meta-llama/Meta-Llama-3-8B", config: llama(4096, 14336, 32, 32, 8, 128256) },
  {
    name: "hypothetical-10b",
    source: "hypothetical (the QLoRA seed's 10B example; Llama-like shape for activations)",
    config: llama(5120, 13824, 32, 40, 40, 32000),
    params: 10e9,
  },
  { name: "llama-2-13b", source: "meta-llama/Llama-2-13b-hf", config: llama(5120, 13824, 40, 40, 40, 32000) },
  {
    name: "llama-13b",
    source: "huggyllama/llama-13b (LLaMA-1)",
    config: llama(5120, 13824, 40, 40, 40, 32000),
  },
  {
    name: "codellama-34b",
    source: "codellama/CodeLlama-34b-hf",
    config: llama(8192, 22016, 48, 64, 8, 32000, { rope_theta: 1e6 }),
  },
  {
    name: "falcon-40b",
    source: "tiiuae/falcon-40b",
    config: {
      model_type: "falcon",
      hidden_size: 8192,
      num_attention_heads: 128,
      num_kv_heads: 8,
      num_hidden_layers: 60,
      vocab_size: 65024,
      new_decoder_architecture: true,
      parallel_attn: true,
      bias: false,
      mlp: "gelu",
      intermediate_size: 32768,
      tie_word_embeddings: true,
    },
  },
  {
    name: "llama-65b",
    source: "huggyllama/llama-65b (LLaMA-1)",
    config: llama(8192, 22016, 80, 64, 64, 32000),
  },
  { name: "llama-2-70b", source: "meta-llama/Llama-2-70b-hf", config: llama(8192, 28672, 80, 64, 8, 32000) },
];

/** Size aliases: the preset each common size label means. */
const SIZE_ALIASES: Record<string, string> = {
  "0.5b": "qwen2-0.5b",
  "1b": "llama-3.2-1b",
  "3b": "llama-3.2-3b",
  "7b": "llama-2-7b",
  "8b": "llama-3-8b",
  "10b": "hypothetical-10b",
  "13b": "llama-2-13b",
  "34b": "codellama-34b",
  "40b": "falcon-40b",
  "65b": "llama-65b",
  "70b": "llama-2-70b",
};

/**
 * Every preset name and size alias, for help texts and error messages.
 *
 * @returns sorted names
 * @example
 * ```ts
 * import { presetNames } from "./presets.ts";
 * if (!presetNames().includes("7B") || !presetNames().includes("falcon-40b")) throw new Error("missing");
 * ```
 */
export function presetNames(): string[] {
  return [...Object.keys(SIZE_ALIASES).map((k) => k.toUpperCase()), ...TABLE.map((p) => p.name)];
}

/**
 * Looks up a preset by name or size label, case-insensitively (`"7B"`, `"mistral-7b"`).
 *
 * @param name preset name or size alias
 * @returns the preset
 * @throws {RangeError} for an unknown name, listing the known ones
 * @example
 * ```ts
 * import { getPreset } from "./presets.ts";
 * const p = getPreset("7B");
 * if (p.name !== "llama-2-7b" || p.config.hidden_size !== 4096) throw new Error(p.name);
 * let threw = false;
 * try { getPreset("9B"); } catch (e) { threw = e instanceof RangeError; }
 * if (!threw) throw new Error("expected a RangeError");
 * ```
 */
export function getPreset(name: string): ModelPreset {
  if (typeof name !== "string") throw new TypeError(`preset name must be a string, received ${typeof name}`);
  const key = name.trim().toLowerCase();
  const canonical = SIZE_ALIASES[key] ?? key;
  const found = TABLE.find((p) => p.name === canonical);
  if (!found) {
    throw new RangeError(`unknown model preset "${name}"; known presets are ${presetNames().join(", ")}`);
  }
  return found;
}

/**
 * Parameter count of a preset: its `params` override, else counted from the shape.
 *
 * @param name preset name or size alias
 * @returns number of parameters
 * @example
 * ```ts
 * import { presetParams } from "./presets.ts";
 * if (presetParams("10B") !== 10e9) throw new Error("seed 10B");
 * if (Math.abs(presetParams("70B") / 1e9 - 68.98) > 0.01) throw new Error("70B");
 * ```
 */
export function presetParams(name: string): number {
  const p = getPreset(name);
  return p.params ?? countParams(p.config);
}
