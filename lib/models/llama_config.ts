/**
 * Llama / Mistral configuration: parsed and validated from an HF `config.json`.
 * @module
 */
import { engineFamily } from "./families.ts";

/** RoPE frequency scaling (HF `rope_scaling`). */
export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositionEmbeddings: number;
  };

/** A validated Llama-family config (camelCase view of HF `config.json`). */
export interface LlamaConfig {
  /** `model_type` as written ("llama", "mistral", …). */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /**
   * Projections with a bias `[O]` (HF `nn.Linear(..., bias=True)`): q/k/v for Qwen2 (the family's
   * `qkvBias`), q/k/v/o with `attention_bias: true`, gate/up/down with `mlp_bias: true`.
   */
  biasedLinears: readonly string[];
  /** MLP activation: SwiGLU's `silu`, or Gemma's tanh-approximated GELU (GeGLU). */
  hiddenAct: "silu" | "gelu_tanh";
  /** Factor on the embeddings before the first layer (Gemma: `sqrt(hidden_size)`, else 1). */
  embedScale: number;
  /** RMSNorm scales by `1 + weight` (Gemma). */
  normUnitOffset: boolean;
  /** Checkpoints fuse q/k/v into `qkv_proj` and gate/up into `gate_up_proj` (Phi-3). */
  fusedLinears: boolean;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  /** The folder the model was loaded from (`loadModel`), for exports and adapter configs. */
  sourceDir?: string;
  /** The HF config object as read (kept so saving writes every original field back). */
  raw: Record<string, unknown>;
}

function need(raw: Record<string, unknown>, key: string, source: string): number {
  const v = raw[key];
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new TypeError(`${source}: "${key}" must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveInt(raw: Record<string, unknown>, key: string, source: string): number {
  const v = need(raw, key, source);
  if (!Number.isInteger(v) || v <= 0) {
    throw new RangeError(`${source}: "${key}" must be a positive integer, got ${v}`);
  }
  return v;
}

/** A finite number > 0 (`rms_norm_eps: -1` or `rope_theta: 0` would make every logit NaN). */
function positive(raw: Record<string, unknown>, key: string, source: string): number {
  const v = need(raw, key, source);
  if (!(v > 0)) {
    throw new RangeError(`${source}: "${key}" must be a number > 0, got ${v} (every logit would be NaN)`);
  }
  return v;
}

function parseRopeScaling(v: unknown, source: string): RopeScaling | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== "object") throw new TypeError(`${source}: "rope_scaling" must be an object or null`);
  const r = v as Record<string, unknown>;
  const kind = (r.rope_type ?? r.type) as string | undefined;
  const factor = typeof r.factor === "number" ? r.factor : NaN;
  switch (kind) {
    case "default":
      return null;
    case "linear":
      if (!(factor > 0)) throw new RangeError(`${source}: rope_scaling.factor must be > 0, got ${r.factor}`);
      return { type: "linear", factor };
    case "llama3":
      if (!(factor > 0)) throw new RangeError(`${source}: rope_scaling.factor must be > 0, got ${r.factor}`);
      return {
        type: "llama3",
        factor,
        lowFreqFactor: Number(r.low_freq_factor ?? 1),
        highFreqFactor: Number(r.high_freq_factor ?? 4),
        originalMaxPositionEmbeddings: Number(r.original_max_position_embeddings ?? 8192),
      };
    default:
      throw new RangeError(
        `${source}: rope_scaling type "${kind}" is not supported (supported: linear, llama3, or null)`,
      );
  }
}

/**
 * Validates an HF Llama/Mistral `config.json` object.
 *
 * @param raw the parsed JSON
 * @param source file name used in error messages
 * @example
 * ```ts
 * import { parseLlamaConfig } from "./llama_config.ts";
 * const c = parseLlamaConfig({
 *   model_type: "llama", vocab_size: 10, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1,
 * });
 * if (c.headDim !== 4 || c.numKeyValueHeads !== 1) throw new Error("bad parse");
 * ```
 */
export function parseLlamaConfig(raw: Record<string, unknown>, source = "config.json"): LlamaConfig {
  const modelType = String(raw.model_type ?? "llama");
  const family = engineFamily(modelType, source); // the families registry says which model types our engine runs
  family.checkConfig?.(raw, source);
  const hiddenSize = positiveInt(raw, "hidden_size", source);
  const numAttentionHeads = positiveInt(raw, "num_attention_heads", source);
  const numKeyValueHeads = raw.num_key_value_heads == null
    ? numAttentionHeads
    : positiveInt(raw, "num_key_value_heads", source);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new RangeError(
      `${source}: num_attention_heads (${numAttentionHeads}) must be a multiple of num_key_value_heads (${numKeyValueHeads})`,
    );
  }
  const headDim = raw.head_dim == null
    ? hiddenSize / numAttentionHeads
    : positiveInt(raw, "head_dim", source);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new RangeError(`${source}: head dimension must be an even integer, got ${headDim}`);
  }
  const biasedLinears = [
    ...(family.qkvBias || raw.attention_bias === true ? ["q_proj", "k_proj", "v_proj"] : []),
    ...(raw.attention_bias === true ? ["o_proj"] : []),
    ...(raw.mlp_bias === true ? ["gate_proj", "up_proj", "down_proj"] : []),
  ];
  let hiddenAct: "silu" | "gelu_tanh" = "silu";
  if (family.activation) hiddenAct = family.activation(raw, source);
  else if (raw.hidden_act !== undefined && raw.hidden_act !== "silu") {
    throw new RangeError(`${source}: hidden_act "${raw.hidden_act}" is not supported (only "silu")`);
  }
  return {
    modelType,
    vocabSize: positiveInt(raw, "vocab_size", source),
    hiddenSize,
    intermediateSize: positiveInt(raw, "intermediate_size", source),
    numHiddenLayers: positiveInt(raw, "num_hidden_layers", source),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: raw.rms_norm_eps == null ? 1e-6 : positive(raw, "rms_norm_eps", source),
    ropeTheta: raw.rope_theta == null ? 10000 : positive(raw, "rope_theta", source),
    ropeScaling: parseRopeScaling(raw.rope_scaling, source),
    // A sliding window (Mistral v0.1, Phi-3-mini) is honoured by refusing longer sequences: below
    // the window, sliding-window attention equals full causal attention.
    maxPositionEmbeddings: Math.min(
      raw.max_position_embeddings == null ? 2048 : positiveInt(raw, "max_position_embeddings", source),
      typeof raw.sliding_window === "number" && raw.use_sliding_window !== false && raw.sliding_window > 0
        ? raw.sliding_window
        : Infinity,
    ),
    tieWordEmbeddings: typeof raw.tie_word_embeddings === "boolean"
      ? raw.tie_word_embeddings
      : family.tieWordEmbeddings,
    biasedLinears,
    hiddenAct,
    embedScale: family.scaleEmbeddings ? Math.sqrt(hiddenSize) : 1,
    normUnitOffset: family.normUnitOffset === true,
    fusedLinears: family.fusedLinears === true,
    bosTokenId: typeof raw.bos_token_id === "number" ? raw.bos_token_id : undefined,
    eosTokenId: raw.eos_token_id as number | number[] | undefined,
    raw,
  };
}
