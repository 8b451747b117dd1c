/**
 * Activation memory of one training micro-batch: what the forward pass keeps for backward.
 *
 * Legend: `B` micro-batch, `T` sequence length, `D` hidden, `I` MLP inner, `H` query
 * heads, `K` kv heads, `d` head dim, `V` vocab, `L` layers, `R` LoRA rank, `e` bytes per
 * element of the compute dtype.
 *
 * Per decoder layer, per token, elements kept (eager attention, no dropout):
 * - attention block: norm input and output `2D`, q/k/v `(H + 2K)·d`, attention output `H·d`
 *   → `2D + 2H·d + 2K·d`
 * - attention scores: pre- and post-softmax `2·H·T` (quadratic in T; FlashAttention would drop it)
 * - MLP: norm input and output `2D`, then SwiGLU gate, up, act(gate), product `4I`, or
 *   GELU up and act(up) `2I`
 * - LoRA: the rank-R intermediate `x·A` of every adapted module, `R` each
 *
 * So `layer = B·T·e·(per-token elements)`. Without checkpointing all `L` layers are kept;
 * with checkpointing only each layer's input `B·T·D·e` is kept and one layer is
 * recomputed at a time, so the peak is `L·B·T·D·e + layer`. On top: embeddings output and
 * final norm `3·B·T·D·e`, and the logits in fp32 with their gradient `2·B·T·V·4`.
 * This is the same counting as Korthikanti et al. 2022 ("Reducing activation
 * recomputation", `sbh(34 + 5as/h)` at 16 bits) without dropout masks, adapted to
 * SwiGLU and GQA. Frameworks that skip saving inputs of frozen matmuls keep less, so for
 * LoRA/QLoRA this is an upper bound.
 *
 * This is a framework-agnostic (PyTorch-style) count. Our own tfjs engine keeps far more per
 * token (a clone of every saved tensor, every reshape, and one gradient per op input until
 * backward ends): `engine_estimate.ts` counts that op by op, and `planForModel` uses it.
 * @module
 */

import type { FloatDtype } from "./_resolve.ts";
import { dtypeBytes } from "./_resolve.ts";
import type { ModelShape } from "./model_shape.ts";

/** Inputs of {@linkcode estimateActivations}. */
export interface ActivationInputs {
  /** Sequences per micro-batch (`B`). */
  microBatch: number;
  /** Tokens per sequence (`T`). */
  seqLen: number;
  /** Dtype activations are kept in. */
  computeDtype: FloatDtype;
  /** Keep only layer inputs and recompute one layer at a time. */
  gradientCheckpointing: boolean;
  /** Sum over adapted modules of one layer of their rank (0 without adapters). */
  adapterRankPerLayer: number;
}

/** Activation bytes by part. */
export interface ActivationEstimate {
  /** Bytes of one decoder layer's full activations. */
  perLayer: number;
  /** Bytes kept for all layers at peak (checkpointed inputs + one recomputed layer, or all layers). */
  layers: number;
  /** Embedding output and final norm. */
  edges: number;
  /** fp32 logits and their gradient. */
  logits: number;
  /** `layers + edges + logits`. */
  total: number;
}

/**
 * Estimates activation bytes for one micro-batch (formula in the module doc).
 *
 * @param shape model shape
 * @param inputs batch, sequence, dtype, checkpointing, adapter ranks
 * @returns bytes by part
 * @example
 * ```ts
 * import { estimateActivations } from "./activations.ts";
 * import { modelShape } from "./model_shape.ts";
 * const s = modelShape({ hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2,
 *   num_attention_heads: 2, vocab_size: 10 });
 * const a = estimateActivations(s, { microBatch: 1, seqLen: 4, computeDtype: "fp32",
 *   gradientCheckpointing: false, adapterRankPerLayer: 0 });
 * // per token: (2·8 + 2·8 + 2·8) + 2·2·4 + (2·8 + 4·16) = 48 + 16 + 80 = 144 elements
 * if (a.perLayer !== 144 * 4 * 4 || a.logits !== 2 * 4 * 10 * 4) throw new Error(JSON.stringify(a));
 * ```
 */
export function estimateActivations(shape: ModelShape, inputs: ActivationInputs): ActivationEstimate {
  const { hiddenSize: D, intermediateSize: I, numAttentionHeads: H, numKeyValueHeads: K, headDim: d } = shape;
  const { microBatch: B, seqLen: T } = inputs;
  const e = dtypeBytes(inputs.computeDtype);
  let mlp: number;
  switch (shape.mlp) {
    case "swiglu":
      mlp = 2 * D + 4 * I;
      break;
    case "gelu":
      mlp = 2 * D + 2 * I;
      break;
  }
  const attention = 2 * D + 2 * H * d + 2 * K * d;
  const scores = 2 * H * T;
  const perToken = attention + scores + mlp + inputs.adapterRankPerLayer;
  const perLayer = B * T * e * perToken;
  const L = shape.numHiddenLayers;
  const layers = inputs.gradientCheckpointing ? L * B * T * D * e + perLayer : L * perLayer;
  const edges = 3 * B * T * D * e;
  const logits = 2 * B * T * shape.vocabSize * 4;
  return { perLayer, layers, edges, logits, total: layers + edges + logits };
}
