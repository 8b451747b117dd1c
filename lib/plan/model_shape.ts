/**
 * Model shapes for the memory planner: an HF `config.json`-like object (snake_case, as
 * on the Hub), a parsed camelCase config (`model.config`), or a Falcon config, read into
 * one {@linkcode ModelShape}; and parameter counts from that shape.
 *
 * Dimension legend: `D` hidden, `I` MLP inner, `H` query heads, `K` kv heads, `d` head
 * dim, `V` vocab, `L` layers. Linear weights are `[out, in]` as in `nn.Linear`.
 * @module
 */

import {
  findModelFamily,
  type MlpKind,
  MODEL_FAMILIES,
  type ModelFamily,
  type NormKind,
} from "../models/families.ts";

export type { MlpKind, NormKind };

/** The family row of a `model_type` (`lib/models/families.ts`); unknown types read as Llama-like. */
function familyOf(modelType: string): ModelFamily {
  return findModelFamily(modelType) ?? MODEL_FAMILIES.llama;
}

/** The shape facts the planner needs, whatever the config spelling. */
export interface ModelShape {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  mlp: MlpKind;
  norm: NormKind;
  /** Norms per decoder layer (2 for Llama and Falcon-40B's `ln_attn` + `ln_mlp`). */
  normsPerLayer: number;
  tieWordEmbeddings: boolean;
  /** Bias on the q/k/v projections (Qwen2). */
  qkvBias: boolean;
  /** Bias on the attention output projection and the MLP (`attention_bias`/`bias` true). */
  outBias: boolean;
}

/** One linear layer inside a decoder layer. */
export interface LinearModule {
  /** PEFT-style module name (`q_proj`, `query_key_value`, …). */
  name: string;
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

type Raw = Record<string, unknown>;

function pick(raw: Raw, keys: string[]): unknown {
  for (const k of keys) if (raw[k] !== undefined && raw[k] !== null) return raw[k];
  return undefined;
}

function posInt(raw: Raw, keys: string[], fallback?: number): number {
  const v = pick(raw, keys) ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new RangeError(
      `model config: "${keys[0]}" must be a positive integer, received ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/**
 * Reads a config into a {@linkcode ModelShape}. Accepts HF snake_case keys (Llama, Mistral,
 * Qwen2, Falcon: `n_head`, `num_kv_heads`, `ffn_hidden_size`, `multi_query`), camelCase
 * keys (a parsed `model.config`), an object with `raw` holding the HF dict, or a shape
 * (returned as is).
 * `mlp` may be given explicitly; otherwise `hidden_act`/`activation` "gelu*" means GELU.
 *
 * @param config the config object
 * @returns the normalised shape
 * @example
 * ```ts
 * import { modelShape } from "./model_shape.ts";
 * const s = modelShape({ model_type: "falcon", hidden_size: 8192, n_head: 128, num_kv_heads: 8,
 *   num_hidden_layers: 60, vocab_size: 65024, new_decoder_architecture: true });
 * if (s.mlp !== "gelu" || s.intermediateSize !== 32768 || s.numKeyValueHeads !== 8) throw new Error("bad");
 * ```
 */
export function modelShape(config: unknown): ModelShape {
  if (typeof config !== "object" || config === null) {
    throw new TypeError(
      `model config must be an object, received ${config === null ? "null" : typeof config}`,
    );
  }
  if (isShape(config)) return config;
  let raw = config as Raw;
  if (typeof raw.raw === "object" && raw.raw !== null && raw.hidden_size === undefined) raw = raw.raw as Raw;
  const givenType = String(pick(raw, ["model_type", "modelType"]) ?? "llama");
  const family = familyOf(givenType);
  // Falcon's config keys (n_head_kv, multi_query, new_decoder_architecture) belong to its fused-qkv layout.
  const isFalcon = family.fusedQkv;
  const hiddenSize = posInt(raw, ["hidden_size", "hiddenSize", "n_embed", "d_model"]);
  const numAttentionHeads = posInt(raw, ["num_attention_heads", "numAttentionHeads", "n_head"]);
  const multiQuery = isFalcon && raw.new_decoder_architecture !== true && raw.multi_query !== false;
  const numKeyValueHeads = posInt(
    raw,
    ["num_key_value_heads", "numKeyValueHeads", "num_kv_heads", "n_head_kv"],
    multiQuery ? 1 : numAttentionHeads,
  );
  const headDim = posInt(raw, ["head_dim", "headDim"], hiddenSize / numAttentionHeads);
  const act = String(
    pick(raw, ["hidden_act", "hiddenAct", "activation"]) ?? (family.mlp === "gelu" ? "gelu" : "silu"),
  );
  const mlpGiven = pick(raw, ["mlp"]);
  if (mlpGiven !== undefined && mlpGiven !== "swiglu" && mlpGiven !== "gelu") {
    throw new RangeError(
      `model config: "mlp" must be "swiglu" or "gelu", received ${JSON.stringify(mlpGiven)}`,
    );
  }
  const mlp: MlpKind = (mlpGiven as MlpKind | undefined) ?? (act.startsWith("gelu") ? "gelu" : "swiglu");
  const intermediateSize = posInt(
    raw,
    ["intermediate_size", "intermediateSize", "ffn_hidden_size"],
    mlp === "gelu" ? 4 * hiddenSize : undefined,
  );
  const norm: NormKind = family.norm;
  // Falcon-40B (new decoder) has ln_attn + ln_mlp; Falcon-7B one shared input_layernorm.
  const normsPerLayer = isFalcon && raw.new_decoder_architecture !== true ? 1 : family.normsPerLayer;
  const tie = pick(raw, ["tie_word_embeddings", "tieWordEmbeddings"]);
  const anyBias = pick(raw, ["attention_bias", "attentionBias", "bias"]) === true;
  return {
    modelType: findModelFamily(givenType)?.modelType ?? givenType,
    vocabSize: posInt(raw, ["vocab_size", "vocabSize"]),
    hiddenSize,
    intermediateSize,
    numHiddenLayers: posInt(raw, ["num_hidden_layers", "numHiddenLayers", "n_layer"]),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    mlp,
    norm,
    normsPerLayer,
    // the family's default (FalconForCausalLM ties lm_head to word_embeddings; Llama unties)
    tieWordEmbeddings: typeof tie === "boolean" ? tie : family.tieWordEmbeddings,
    qkvBias: family.qkvBias || anyBias,
    outBias: anyBias && !family.qkvBias,
  };
}

/**
 * The linear layers of one decoder layer, with PEFT module names: Llama-style
 * `q_proj k_proj v_proj o_proj gate_proj up_proj down_proj` (no `gate_proj` for GELU),
 * or Falcon's `query_key_value dense dense_h_to_4h dense_4h_to_h`.
 *
 * @param shape from {@linkcode modelShape}
 * @returns the per-layer linears
 * @example
 * ```ts
 * import { linearModules, modelShape } from "./model_shape.ts";
 * const s = modelShape({ hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1,
 *   num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 10 });
 * const names = linearModules(s).map((m) => m.name).join(",");
 * if (names !== "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj") throw new Error(names);
 * ```
 */
export function linearModules(shape: ModelShape): LinearModule[] {
  const { hiddenSize: D, intermediateSize: I, numAttentionHeads: H, numKeyValueHeads: K, headDim: d } = shape;
  const family = familyOf(shape.modelType);
  const a = family.linearNames.attention, mlpNames = family.linearNames.mlp;
  const attn: LinearModule[] = family.fusedQkv
    ? [
      { name: a[0], inFeatures: D, outFeatures: (H + 2 * K) * d, bias: shape.qkvBias },
      { name: a[1], inFeatures: H * d, outFeatures: D, bias: shape.outBias },
    ]
    : [
      { name: a[0], inFeatures: D, outFeatures: H * d, bias: shape.qkvBias },
      { name: a[1], inFeatures: D, outFeatures: K * d, bias: shape.qkvBias },
      { name: a[2], inFeatures: D, outFeatures: K * d, bias: shape.qkvBias },
      { name: a[3], inFeatures: H * d, outFeatures: D, bias: shape.outBias },
    ];
  // SwiGLU names [gate, up, down]; GELU uses the last two (up, down)
  const [up, down] = mlpNames.slice(-2);
  let mlp: LinearModule[];
  switch (shape.mlp) {
    case "swiglu":
      if (mlpNames.length < 3) {
        throw new RangeError(`${shape.modelType}: a SwiGLU MLP needs gate/up/down names in its family row`);
      }
      mlp = [
        { name: mlpNames[0], inFeatures: D, outFeatures: I, bias: shape.outBias },
        { name: up, inFeatures: D, outFeatures: I, bias: shape.outBias },
        { name: down, inFeatures: I, outFeatures: D, bias: shape.outBias },
      ];
      break;
    case "gelu":
      mlp = [
        { name: up, inFeatures: D, outFeatures: I, bias: shape.outBias },
        { name: down, inFeatures: I, outFeatures: D, bias: shape.outBias },
      ];
      break;
  }
  return [...attn, ...mlp];
}

/** Parameter counts by part (elements, not bytes). */
export interface ParamParts {
  /** Token embeddings `[V, D]`. */
  embeddings: number;
  /** All decoder-layer linear weights (the matrices LoRA/QLoRA/GaLore act on). */
  linearWeights: number;
  /** Biases of those linears. */
  linearBiases: number;
  /** Every norm weight (and bias for LayerNorm), final norm included. */
  norms: number;
  /** `lm_head` `[V, D]`, 0 when tied to the embeddings. */
  lmHead: number;
  /** Sum of the parts. */
  total: number;
}

/**
 * Counts parameters by part from the shape (GQA-aware; tied `lm_head` counted once).
 *
 * @param config any config {@linkcode modelShape} accepts, or a shape
 * @returns counts per part
 * @example
 * ```ts
 * import { countParamParts } from "./model_shape.ts";
 * const p = countParamParts({ hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1,
 *   num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 10 });
 * // q 64 + k 32 + v 32 + o 64 + mlp 3·128 = 576; norms 8+8+8; embeddings and lm_head 80 each
 * if (p.linearWeights !== 576 || p.norms !== 24 || p.total !== 760) throw new Error(JSON.stringify(p));
 * ```
 */
export function countParamParts(config: unknown): ParamParts {
  const s = modelShape(config);
  const normSize = s.norm === "layernorm" ? 2 * s.hiddenSize : s.hiddenSize;
  let linearWeights = 0, linearBiases = 0;
  for (const m of linearModules(s)) {
    linearWeights += m.inFeatures * m.outFeatures;
    if (m.bias) linearBiases += m.outFeatures;
  }
  linearWeights *= s.numHiddenLayers;
  linearBiases *= s.numHiddenLayers;
  const embeddings = s.vocabSize * s.hiddenSize;
  const norms = (s.numHiddenLayers * s.normsPerLayer + 1) * normSize;
  const lmHead = s.tieWordEmbeddings ? 0 : embeddings;
  return {
    embeddings,
    linearWeights,
    linearBiases,
    norms,
    lmHead,
    total: embeddings + linearWeights + linearBiases + norms + lmHead,
  };
}

/**
 * Total parameter count from the shape.
 *
 * @param config any config {@linkcode modelShape} accepts, or a shape
 * @returns number of parameters
 * @example
 * ```ts
 * import { countParams } from "./model_shape.ts";
 * // Llama-2-7B: 6,738,415,616 (the count Meta and the Hub report)
 * const n = countParams({ hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32,
 *   num_attention_heads: 32, vocab_size: 32000 });
 * if (n !== 6738415616) throw new Error(String(n));
 * ```
 */
export function countParams(config: unknown): number {
  return countParamParts(config).total;
}

function isShape(x: unknown): x is ModelShape {
  return typeof x === "object" && x !== null && "normsPerLayer" in x && "mlp" in x && "qkvBias" in x;
}
