/**
 * Llama-family causal language model assembled from blocks.
 *
 * Dimension legend: B batch, T sequence (new tokens), K key positions, D hidden, V vocab.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaConfig } from "./llama_config.ts";
import { BLOCK_LINEAR_NAMES, type BlockContext, type LayerCache, type LlamaBlock } from "./llama_block.ts";
import type { Linear, NamedParam, StorageInfo } from "./linear.ts";
import type { RMSNorm } from "./rms_norm.ts";
import { ropeInvFreq, ropeTables, ropeTablesAt } from "./rope.ts";
import {
  checkComputeDtype,
  type ComputeDtype,
  type HasComputeDtype,
  hasComputeDtype,
  withComputeDtype,
} from "../quant/compute_dtype.ts";

/** Token ids as nested arrays or an int32 tensor `[B, T]`. */
export type TokenIds = number[][] | tf.Tensor2D;

/** Options for {@linkcode LlamaForCausalLM.forward}. */
export interface ForwardOptions {
  /** 1 = real token, 0 = padding, `[B, K]` (K = past + new positions). @default {all ones} */
  attentionMask?: number[][];
  /** Key/value cache for incremental decoding (one entry per layer; see {@linkcode createCache}). */
  cache?: KVCache;
  /** Position of every token `[B, T]` (packed rows restart at 0 per example). @default {0 .. T-1 after the cache} */
  positionIds?: number[][];
  /**
   * Which packed example each token belongs to `[B, T]`: a token attends only to earlier tokens
   * of the same segment (block-diagonal causal mask). Without a cache only.
   */
  segmentIds?: number[][];
}

/** Key/value cache for generation. */
export interface KVCache {
  layers: LayerCache[];
  /** Positions already in the cache. */
  length: number;
}

/** Creates an empty cache for `model`. Dispose it with {@linkcode disposeCache}. */
export function createCache(model: LlamaForCausalLM): KVCache {
  return { layers: model.layers.map(() => ({})), length: 0 };
}

/** Frees the tensors held by a cache. */
export function disposeCache(cache: KVCache): void {
  for (const l of cache.layers) {
    l.k?.dispose();
    l.v?.dispose();
    l.k = l.v = undefined;
  }
  cache.length = 0;
}

/** One row of {@linkcode LlamaForCausalLM.summary}. */
export interface SummaryRow {
  /** Kind of parameter: embedding, attention, mlp, norm, lm_head, adapter. */
  kind: string;
  params: number;
  bytes: number;
  /** Storage kinds present ("fp32", "nf4", …). */
  dtype: string;
  trainable: number;
}

/** The adapter attached to a model (set by `attachLoRA`, `attachDyLoRA`, `loadAdapter`). */
export interface AttachedAdapter {
  /** Adapter kind: a key of `ADAPTER_KINDS` ("lora", "dylora", "dora"). */
  type: string;
  /** Module paths with adapters. */
  modules: string[];
  /** The resolved options it was attached with. */
  config: { [option: string]: unknown };
}

const MASKED = -1e9;

/**
 * Builds the additive attention mask `[B, 1, T, K]`: query t (absolute position
 * `past + t`) sees key s when `s <= past + t` and `padding[b][s] === 1`.
 */
export function buildAttentionMask(
  batch: number,
  seqLen: number,
  past: number,
  padding?: number[][],
  segments?: number[][],
): tf.Tensor4D {
  const K = past + seqLen;
  if (padding && (padding.length !== batch || padding.some((r) => r.length !== K))) {
    throw new TypeError(`attentionMask must be [${batch}, ${K}] (past + new positions)`);
  }
  const m = new Float32Array(batch * seqLen * K);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqLen; t++) {
      for (let s = 0; s < K; s++) {
        const ok = s <= past + t && (!padding || padding[b][s] === 1) &&
          (!segments || segments[b][s] === segments[b][t]);
        m[(b * seqLen + t) * K + s] = ok ? 0 : MASKED;
      }
    }
  }
  return tf.tensor4d(m, [batch, 1, seqLen, K]);
}

/** A Llama / Mistral causal LM. Create it with `loadModel()` or {@linkcode LlamaForCausalLM.fromParts}. */
export class LlamaForCausalLM {
  readonly invFreq: Float64Array;
  /** Trainable flag of the token embedding. */
  embedTrainable = true;
  /** The attached adapter, if any (see `attachLoRA`). */
  adapter?: AttachedAdapter;
  /** True while training (adapters apply dropout and sampled ranks); see {@linkcode setTraining}. */
  training = false;
  /**
   * Precision of the frozen base's big matmuls: the 4-bit layers and the LM head (set by
   * {@linkcode LlamaForCausalLM.setComputeDtype}; `"float32"` unless asked).
   */
  computeDtype: ComputeDtype = "float32";

  constructor(
    readonly config: LlamaConfig,
    readonly embedTokens: tf.Variable, // [V, D]
    readonly layers: LlamaBlock[],
    readonly norm: RMSNorm,
    /** `null` when the embeddings are tied. */
    public lmHead: Linear | null,
  ) {
    this.invFreq = ropeInvFreq(config.headDim, config.ropeTheta, config.ropeScaling);
  }

  /** Converts ids to an int32 tensor `[B, T]` (the caller disposes it when it was created here). */
  idsTensor(ids: TokenIds): tf.Tensor2D {
    if (ids instanceof tf.Tensor) {
      if (ids.rank !== 2) throw new TypeError(`ids must be [batch, seq], got shape [${ids.shape}]`);
      return ids.dtype === "int32" ? ids.clone() : tf.cast(ids, "int32");
    }
    if (!Array.isArray(ids) || ids.length === 0 || !Array.isArray(ids[0])) {
      throw new TypeError("ids must be number[][] (a batch of sequences) or an int32 tensor [batch, seq]");
    }
    const T = ids[0].length;
    const V = this.config.vocabSize;
    for (const row of ids) {
      if (row.length !== T) {
        throw new TypeError("all sequences in a batch must have the same length (pad them)");
      }
      for (const id of row) {
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new RangeError(`token id ${id} is outside the vocabulary [0, ${V})`);
        }
      }
    }
    return tf.tensor2d(ids, [ids.length, T], "int32");
  }

  /** Embedding lookup: `ids [B, T]` → `[B, T, D]`. */
  embed(ids: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, T] = ids.shape;
      const h = tf.reshape(tf.gather(this.embedTokens, tf.reshape(ids, [B * T])), [
        B,
        T,
        this.config.hiddenSize,
      ]);
      // Gemma scales the embeddings by sqrt(hidden); the factor is 1 elsewhere.
      return (this.config.embedScale === 1 ? h : tf.mul(h, this.config.embedScale)) as tf.Tensor3D;
    });
  }

  /** Per-forward context (RoPE tables and mask); dispose `cos`, `sin`, `mask` afterwards. */
  context(batch: number, seqLen: number, options: ForwardOptions = {}): BlockContext {
    const past = options.cache?.length ?? 0;
    const seg = options.segmentIds, pos = options.positionIds;
    if (seg && (past > 0 || seg.length !== batch || seg.some((r) => r.length !== seqLen))) {
      throw new TypeError(`segmentIds must be [${batch}, ${seqLen}] and are for a forward without a cache`);
    }
    if (pos && (pos.length !== batch || pos.some((r) => r.length !== seqLen))) {
      throw new TypeError(`positionIds must be [${batch}, ${seqLen}] (the new tokens)`);
    }
    const { cos, sin } = options.positionIds
      ? ropeTablesAt(this.invFreq, options.positionIds)
      : ropeTables(this.invFreq, seqLen, past);
    return { cos, sin, mask: buildAttentionMask(batch, seqLen, past, options.attentionMask, seg) };
  }

  /** Final norm + LM head: `h [B, T, D]` → logits `[B, T, V]`. */
  head(h: tf.Tensor3D): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, T, D] = h.shape;
      const x = tf.reshape(this.norm.apply(h), [B * T, D]);
      const logits = withComputeDtype(
        this.computeDtype,
        () => this.lmHead ? this.lmHead.apply(x as tf.Tensor2D) : tf.matMul(x, this.embedTokens, false, true), // tied: [B·T, V]
      );
      return tf.reshape(logits, [B, T, this.config.vocabSize]) as tf.Tensor3D;
    });
  }

  /**
   * Logits `[B, T, V]` for token ids `[B, T]`. With a cache, `ids` are the new
   * tokens and the cache grows by T.
   */
  forward(ids: TokenIds, options: ForwardOptions = {}): tf.Tensor3D {
    const idsT = this.idsTensor(ids);
    try {
      return tf.tidy(() => {
        const [B, T] = idsT.shape;
        const ctx = this.context(B, T, options);
        let h = this.embed(idsT);
        this.layers.forEach((layer, i) => {
          h = layer.forward(h, { ...ctx, cache: options.cache?.layers[i] });
        });
        if (options.cache) options.cache.length += T;
        return this.head(h);
      });
    } finally {
      idsT.dispose();
    }
  }

  /** All trainable parameters (embedding, blocks, final norm, untied head). */
  trainableParams(): NamedParam[] {
    return [
      ...(this.embedTrainable ? [{ name: "model.embed_tokens.weight", variable: this.embedTokens }] : []),
      ...this.layers.flatMap((l) => l.trainableParams()),
      ...this.norm.trainableParams(),
      ...(this.lmHead ? this.lmHead.trainableParams() : []),
    ];
  }

  /** Every linear layer with its module path. */
  linears(): Linear[] {
    const out = this.layers.flatMap((l) => BLOCK_LINEAR_NAMES.map((n) => l.linears[n]));
    if (this.lmHead) out.push(this.lmHead);
    return out;
  }

  /** Starts optimizer step `step` (1-based) on every layer that has a per-step hook (DyLoRA samples its rank). */
  beginStep(step: number): void {
    for (const lin of this.linears()) lin.beginStep?.(step);
  }

  /** Switches training mode on every layer that has one (dropout, DyLoRA rank sampling). */
  setTraining(training: boolean): void {
    this.training = training;
    for (const lin of this.linears()) {
      if ("training" in lin) (lin as { training: boolean }).training = training;
    }
  }

  /**
   * Sets the compute dtype of every 4-bit layer (under adapters too; bitsandbytes'
   * `bnb_4bit_compute_dtype`, see `lib/quant/compute_dtype.ts`) and of the LM head's matmul (forward,
   * and its input gradient in the block-wise backward), and returns how many 4-bit layers there are.
   * Refuses `"bfloat16"` when the model has no 4-bit layer or when it cannot run here.
   *
   * @example
   * ```ts
   * import { initEngine } from "../engine/backend.ts";
   * import { loadModel } from "./load_model.ts";
   * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
   * await initEngine({ backend: "cpu" });
   * const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
   * if (model.setComputeDtype("float32") !== 28) throw new Error("4 layers x 7 projections");
   * model.dispose();
   * ```
   */
  setComputeDtype(dtype: ComputeDtype): number {
    checkComputeDtype(dtype, "setComputeDtype");
    const layers: HasComputeDtype[] = [];
    for (const l of this.linears()) {
      const base = (l as { base?: Linear }).base ?? l; // under an adapter
      if (hasComputeDtype(base)) layers.push(base);
    }
    if (layers.length === 0 && dtype !== "float32") {
      throw new RangeError(
        `setComputeDtype: computeDtype "${dtype}" applies to 4-bit layers (bitsandbytes' ` +
          'bnb_4bit_compute_dtype) and this model has none; load it with quantize: "nf4" (or a 4-bit checkpoint).',
      );
    }
    for (const l of layers) l.computeDtype = dtype;
    this.computeDtype = dtype;
    return layers.length;
  }

  /** Freezes (or unfreezes) every base parameter. */
  setBaseTrainable(trainable: boolean): void {
    this.embedTrainable = trainable;
    for (const l of this.layers) {
      l.inputNorm.trainable = trainable;
      l.postAttentionNorm.trainable = trainable;
      for (const n of BLOCK_LINEAR_NAMES) {
        setTrainable(l.linears[n], trainable);
        const bias = l.biases[n];
        if (bias) bias.trainable = trainable;
      }
    }
    this.norm.trainable = trainable;
    if (this.lmHead) setTrainable(this.lmHead, trainable);
  }

  /** Parameter count, storage and trainable count per kind. */
  summary(): SummaryRow[] {
    const rows = new Map<string, SummaryRow>();
    const trainable = new Set(this.trainableParams().map((p) => p.variable));
    const add = (kind: string, infos: StorageInfo[], train: number) => {
      const r = rows.get(kind) ?? { kind, params: 0, bytes: 0, dtype: "", trainable: 0 };
      for (const i of infos) {
        r.params += i.params;
        r.bytes += i.bytes;
        if (!`+${r.dtype}+`.includes(`+${i.dtype}+`)) r.dtype = r.dtype ? `${r.dtype}+${i.dtype}` : i.dtype;
      }
      r.trainable += train;
      rows.set(kind, r);
    };
    const count = (ps: NamedParam[]) =>
      ps.filter((p) => trainable.has(p.variable)).reduce((s, p) => s + p.variable.size, 0);
    const e = this.embedTokens.size;
    add("embedding", [{ params: e, bytes: e * 4, dtype: "fp32" }], this.embedTrainable ? e : 0);
    for (const l of this.layers) {
      for (const n of BLOCK_LINEAR_NAMES) {
        const lin = l.linears[n];
        const kind = lin.name.includes(".self_attn.") ? "attention" : "mlp";
        const adapter = lin.storage().filter((i) => i.dtype.startsWith("adapter"));
        add(kind, lin.storage().filter((i) => !i.dtype.startsWith("adapter")), 0);
        if (adapter.length) {
          add("adapter", adapter.map((i) => ({ ...i, dtype: "fp32" })), count(lin.trainableParams()));
        } else add(kind, [], count(lin.trainableParams()));
        const bias = l.biases[n];
        if (bias) add(kind, bias.storage(), count(bias.trainableParams()));
      }
      for (const norm of [l.inputNorm, l.postAttentionNorm]) {
        add("norm", norm.storage(), count(norm.trainableParams()));
      }
    }
    add("norm", this.norm.storage(), count(this.norm.trainableParams()));
    if (this.lmHead) add("lm_head", this.lmHead.storage(), count(this.lmHead.trainableParams()));
    return [...rows.values()];
  }

  /** Total parameters (base + adapters). */
  numParams(): number {
    return this.summary().reduce((s, r) => s + r.params, 0);
  }

  dispose(): void {
    this.embedTokens.dispose();
    for (const l of this.layers) l.dispose();
    this.norm.dispose();
    this.lmHead?.dispose();
  }
}

function setTrainable(lin: Linear, trainable: boolean): void {
  if ("trainable" in lin) (lin as { trainable: boolean }).trainable = trainable;
}
