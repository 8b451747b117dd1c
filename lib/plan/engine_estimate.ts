/**
 * Engine-aware memory estimate: the peak tfjs tensor bytes of one training step of OUR
 * trainer (`train()` → `runStep`), predicted from the architecture and the batch shape, to
 * compare with `record.memory.peakTensorBytes` and `record.memory.breakdown`.
 *
 * ## What tfjs counts
 *
 * The trainer measures `tf.memory().numBytes` with `tf.profile`. tfjs counts bytes per
 * tensor HANDLE, not per buffer: a `reshape`, a same-dtype `cast` and the clone the tape
 * keeps of a saved input share their source's buffer, yet each adds its full size. So the
 * estimate replays the forward op by op, as `llama.ts`, `llama_block.ts`, `rms_norm.ts`,
 * `rope.ts`, `loss.ts`, `lora.ts` and `quantized_linear.ts` write it (the `trace*`
 * functions below), and counts for every op:
 *
 * 1. **saved for backward**: while a tape records, each kernel keeps clones of what its
 *    tfjs 4.22 gradient config asks for, held until `engine.gradients()` returns:
 *    - inputs: Reshape, GatherV2 (table and indices), Square, Mean, Rsqrt, Sum, Log, Add,
 *      Sub, Mul, RealDiv, BatchMatMul (both operands, so a frozen weight is saved too),
 *      Concat (all), OneHot (indices), Max (input and output);
 *    - output: Softmax, Sigmoid, Exp;
 *    - nothing: Transpose, SplitV, Neg, Cast, and our 4-bit `customGrad` linear (it
 *      dequantizes again in backward).
 * 2. **backward gradients**: backprop keeps, until `engine.gradients()` returns, one
 *    gradient per (op, input) edge whose input depends on a trainable variable (with
 *    fan-out k: k−1 partial gradients and the running sum, still k tensors), plus what a
 *    gradient function computes outside its per-input `tidy`: Softmax's `dy·y` (S) and
 *    Sum's reshaped `dy` and `ones(x.shape)`. Inputs that depend on no trainable variable
 *    get nothing: with LoRA the embedding and everything before the first adapter, and
 *    every frozen weight.
 *
 * ## Counts (elements; bytes = 4 × elements, every tensor is float32 or int32)
 *
 * N = B·T tokens (T the padded length), q = H·d, k = K·d, F the MLP width, S = B·H·T²
 * scores, M = B·T² mask elements, W = 2(q+k)·D + 3·F·D + 2·D the block's weights.
 * One decoder block, its input depending on a trainable variable, everything trainable:
 * - RMSNorm (square, mean, +eps, rsqrt, ·r, ·w): saved 4ND + 3N + D + 1, gradients 4ND + 3N + D.
 * - attention, saved: 5ND (x reshape, x into q/k/v matmuls, o reshape) + 11N·(q + k)
 *   (head reshapes, RoPE 5 per rotated element — concat 1, ·cos 1, ·sin 1, add 2 —, grouped
 *   reshapes, both score operands, merge reshapes, o input, v into probs·v) + 6S (q·kᵀ out
 *   ·scale, reshape, +mask, softmax out, reshape, probs into probs·v) + M + 4·T·d RoPE
 *   tables + weights; gradients 5ND + 14.5N·(q + k) (RoPE 6.5 per element: split 1, neg ½,
 *   concat 1, ·cos 1, ·sin 1, add 2) + 7S (incl. softmax's eager dy·y) + weights.
 * - MLP (gate, σ, g·σ, up, ·up, down): saved 4ND + 6NF + 3FD, gradients 4ND + 6NF + 3FD.
 * - two residual adds: 2ND each, saved and gradients.
 * Block total: saved 21ND + 11N(q + k) + 6NF + 6S + 6N + M + 4Td + W + 3;
 * gradients 21ND + 14.5N(q + k) + 6NF + 7S + 6N + W.
 * Embedding (reshape ids, gather, reshape): saved 2N + VD + ND, gradients VD + ND (trained).
 * Head + loss (final norm, lm_head, 2 reshapes, logSumExp, one-hot product, weighted sum):
 * saved 6ND + 9NV + 15N + VD + D + 3, gradients 6ND + 11NV + 15N + VD + D + 2.
 * With frozen weights their saved clones stay (a dense matmul saves W either way) but their
 * gradients drop; a 4-bit linear saves neither x nor W. LoRA adds per adapted linear
 * (x into x·Aᵀ, A, the rank-R product, B, ·scaling, the add): saved N·I + R·I + N·R +
 * O·R + 3N·O + 1, gradients R·I + N·R + O·R + 2N·O, + N·I + N·O when x depends on a
 * trainable variable (every layer after the first adapter).
 *
 * ## Peak
 *
 * One tape (default): at the end of backward, `resident + saved + gradients + transient`
 * (`transient`: the embedding's scatter-add temporaries 2ND + N + VD when it is trained).
 * Block-wise (`gradientCheckpointing`, `layerwise`; `blockwise.ts`): the largest of the
 * head's tape, one recomputed block's tape (with the L+1 block inputs still alive at
 * block i: i+2 of them, the incoming `dh`, the recomputed output, the gradients summed so
 * far when checkpointing, and 2ND of RMSNorm square-gradient temporaries at its end), and
 * the embedding's tape; ids, RoPE tables, mask, targets and loss weights stay alive.
 * Candidates after backward: the global gradient norm (every gradient squared inside one
 * `tidy`: 2× the gradients) and the optimizer update of the largest tensor (AdamW holds 14
 * temporaries of its size; 8-bit AdamW 3; GaLore 4 full-size + 13 projected).
 * Earlier micro-batches' summed gradients stay alive through the later ones.
 *
 * Not modelled: kernel scratch inside tfjs backends (never in `numBytes`), LoRA dropout
 * masks (dropout 0 assumed), DyLoRA's slicing (counted as LoRA at the maximum rank),
 * GaLore projector refreshes (step 1 and every `updateProjGap` steps; the estimate is a
 * steady-state step) and step 1's creation of optimizer state (step 1 peaks lower by the
 * fp32 state when backward holds the peak).
 * @module
 */

import type { MemoryBreakdown } from "../engine/memory_parts.ts";
import { adapterKind } from "../adapters/registry.ts";
import { findModelFamily } from "../models/families.ts";
import { QUANT_FORMATS } from "../quant/formats.ts";
import { optimizerStateBytes, type ParamShape, updateTemporaries } from "./engine_optimizer.ts";
import { type Dims, type LinearPlan, Tape, traceBlock, traceEmbed, traceHead } from "./engine_tape.ts";
import { handWrittenBlock } from "./engine_handwritten.ts";
import type { ModelShape } from "./model_shape.ts";
import { linearModules } from "./model_shape.ts";
import type { TrainerPlanOptions } from "./plan_for_model.ts";
import { planSpecForTrainer } from "./plan_for_model.ts";
import type { ModelConfigInput, ResolvedPlanSpec } from "./plan_spec.ts";
import { resolvePlanSpec } from "./plan_spec.ts";

/** The trainer's breakdown (the one {@linkcode MemoryBreakdown} type), predicted. */
export type EngineBreakdown = MemoryBreakdown;

/** Where the predicted peak falls. */
export type PeakPhase =
  | "end of backward"
  | "head backward"
  | "forward"
  | "block backward"
  | "block backward (recompute)"
  | "embedding backward"
  | "gradient norm"
  | "optimizer step";

/** Parts of the peak above the resident bytes (tensor bytes). */
export interface EngineActivationParts {
  /** Clones the tape keeps for backward (the phase's tape). */
  savedForBackward: number;
  /** Gradients backprop keeps until the tape returns, parameter gradients excluded. */
  backwardGradients: number;
  /** Parameter gradients alive at the peak (the current tape's and any accumulated ones). */
  parameterGradients: number;
  /** Block inputs, `dh`, recomputed block output, ids, RoPE tables, mask, targets (block-wise modes). */
  kept: number;
  /** What the gradient function or optimizer update running at the peak holds. */
  transient: number;
}

/** The answer of {@linkcode estimateTrainingMemory}. */
export interface EngineEstimate {
  /** Method as trained: full, lora, qlora, dylora, qdylora, galore, galore8bit. */
  method: string;
  /** How the trainer runs the step. */
  mode: "full" | "checkpointed" | "layerwise";
  /** Predicted peak `tf.memory().numBytes` of a steady-state step (step ≥ 2). */
  peakTensorBytes: number;
  /** Tensor bytes held between steps (weights, adapters, fp32 optimizer state). */
  residentTensorBytes: number;
  /** Where the peak falls. */
  peakPhase: PeakPhase;
  /** The trainer's breakdown keys, predicted. */
  breakdown: EngineBreakdown;
  /** The peak above `residentTensorBytes`, by part (they sum to it). */
  parts: EngineActivationParts;
  /** Host (non-tensor) bytes: 4-bit weights and 8-bit optimizer state. */
  hostBytes: number;
  /** Optimizer state held as tensors (fp32 moments, GaLore projectors). */
  optimizerTensorBytes: number;
  /** Optimizer state in host memory (8-bit moments). */
  optimizerHostBytes: number;
  /** Trainable parameters. */
  trainableParams: number;
  /** Micro-batch and padded sequence length used. */
  batch: { batchSize: number; seqLen: number; gradAccumSteps: number };
  /** The counting rules, as sentences. */
  assumptions: string[];
}

/** Options: the trainer's (see {@linkcode TrainerPlanOptions}). */
export type EngineEstimateOptions = TrainerPlanOptions;

/** Bytes per element: every tensor of our engine is float32 or int32. */
const E = 4;

/** What every phase of the step shares: the spec, its mode and dimensions, how each linear is built. */
interface StepSetup {
  spec: ResolvedPlanSpec;
  mode: "full" | "checkpointed" | "layerwise";
  dm: Dims;
  lins: Record<string, LinearPlan>;
  /** Full fine-tuning or GaLore (no adapter): every base weight trains. */
  baseTrainable: boolean;
  tied: boolean;
  /** LoRA over a frozen base: the trainer's hand-written block backward (llama_block_grad.ts). */
  handWritten: boolean;
  /** Projections with a bias (Qwen2's q/k/v). */
  biases: string[];
  notes: string[];
}

/** Resident bytes, host bytes and the trainable tensors by backward group. */
interface ParamPlan {
  weights: number;
  host: number;
  adapters: number;
  embedParams: ParamShape[];
  blockParams: ParamShape[];
  headParams: ParamShape[];
  all: ParamShape[];
  state: { tensor: number; host: number };
}

/** The largest candidate so far. */
class PeakTracker {
  peak = 0;
  phase: PeakPhase = "end of backward";
  parts: EngineActivationParts = {
    savedForBackward: 0,
    backwardGradients: 0,
    parameterGradients: 0,
    kept: 0,
    transient: 0,
  };

  consider(phase: PeakPhase, x: EngineActivationParts): void {
    const total = x.savedForBackward + x.backwardGradients + x.parameterGradients + x.kept + x.transient;
    if (total > this.peak) {
      this.peak = total;
      this.phase = phase;
      this.parts = x;
    }
  }
}

const size = (ps: ParamShape[]) => ps.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);

/**
 * Predicts the peak tfjs tensor bytes of one steady-state training step of `train()` and
 * the trainer's memory breakdown, for full fine-tuning, LoRA, QLoRA (4-bit base), DyLoRA
 * (at its maximum rank) and GaLore, one tape or block-wise (`gradientCheckpointing`,
 * `layerwise`), from the architecture and the batch shape (counting rules in the module doc).
 *
 * `seqLen` is the padded length of a micro-batch (the longest example in it).
 *
 * @param config a loaded model (its `.config`), an HF config object or a preset name (Llama family)
 * @param options trainer options (as {@linkcode planForModel}; memory-neutral ones are ignored)
 * @returns the prediction with the trainer's breakdown keys
 * @throws {RangeError} for architectures our engine does not run (GELU MLP, LayerNorm, biases)
 * @example
 * ```ts
 * import { estimateTrainingMemory } from "./engine_estimate.ts";
 * const cfg = { vocab_size: 512, hidden_size: 128, intermediate_size: 344, num_hidden_layers: 4,
 *   num_attention_heads: 4, num_key_value_heads: 2 };
 * const full = estimateTrainingMemory(cfg, { batchSize: 8, seqLen: 43 });
 * const qlora = estimateTrainingMemory(cfg, { method: "qlora", r: 8, targetModules: ["q_proj", "v_proj"],
 *   batchSize: 8, seqLen: 43 });
 * // 4-bit linears leave the tensor heap, and their matmuls save no copy of x or W
 * if (!(qlora.peakTensorBytes < full.peakTensorBytes) || qlora.breakdown.hostOffloaded <= 0) {
 *   throw new Error("qlora should need fewer tensor bytes");
 * }
 * const ck = estimateTrainingMemory(cfg, { batchSize: 8, seqLen: 43, gradientCheckpointing: true });
 * if (!(ck.peakTensorBytes < full.peakTensorBytes / 2)) throw new Error("checkpointing keeps block inputs only");
 * ```
 */
export function estimateTrainingMemory(
  config: ModelConfigInput | { config: unknown },
  options?: EngineEstimateOptions,
): EngineEstimate {
  const setup = stepSetup(resolvePlanSpec(planSpecForTrainer(config, options)));
  const { spec, mode, dm, notes } = setup;
  const params = parameterPlan(setup);
  const P = size(params.all) * E;
  const peaks = new PeakTracker();
  const gradientBytes = mode === "full" && !setup.handWritten
    ? fullTapePeak(setup, P, peaks)
    : blockwisePeaks(setup, params, P, peaks);
  afterBackwardPeaks(setup, params, P, gradientBytes, peaks);

  const { weights, adapters, host, state } = params;
  const resident = weights + adapters + state.tensor;
  const breakdown: EngineBreakdown = {
    weights,
    quantConstants: 0,
    adapters,
    gradients: gradientBytes,
    optimizerStates: state.tensor,
    activations: Math.max(0, peaks.peak - gradientBytes),
    workspace: 0,
    hostOffloaded: host + state.host,
  };
  notes.push(
    `Peak at ${peaks.phase}: tfjs counts every tensor handle (saved clones and reshapes share buffers ` +
      "but each adds its size), so this is the trainer's peakTensorBytes, not distinct buffer bytes.",
    "Steady-state step (optimizer state exists at step start; no GaLore projector refresh).",
  );
  if (spec.method === "dylora" || spec.method === "qdylora") {
    notes.push("DyLoRA counted as LoRA at its maximum rank.");
  }
  return {
    method: spec.method,
    mode,
    peakTensorBytes: resident + peaks.peak,
    residentTensorBytes: resident,
    peakPhase: peaks.phase,
    breakdown,
    parts: peaks.parts,
    hostBytes: host + state.host,
    optimizerTensorBytes: state.tensor,
    optimizerHostBytes: state.host,
    trainableParams: P / E,
    batch: { batchSize: dm.B, seqLen: dm.T, gradAccumSteps: spec.gradAccumSteps },
    assumptions: notes,
  };
}

/** Checks the spec (a Llama-family shape, layer-wise with one micro-batch) and builds the step's setup. */
function stepSetup(spec: ResolvedPlanSpec): StepSetup {
  const shape = spec.shape;
  if (!shape) throw new RangeError("estimateTrainingMemory: needs a model config (layer shapes)");
  checkEngineRuns(shape);
  const method = spec.method;
  const adapter = method !== "full" && method !== "galore" && method !== "galore8bit";
  const mode = spec.layerwise ? "layerwise" : spec.gradientCheckpointing ? "checkpointed" : "full";
  if (spec.layerwise && spec.gradAccumSteps > 1) {
    throw new RangeError(
      "estimateTrainingMemory: layer-wise updates take one micro-batch per step (gradAccumSteps 1)",
    );
  }
  const dm: Dims = {
    B: spec.microBatch,
    T: spec.seqLen,
    N: spec.microBatch * spec.seqLen,
    D: shape.hiddenSize,
    H: shape.numAttentionHeads,
    K: shape.numKeyValueHeads,
    d: shape.headDim,
    F: shape.intermediateSize,
    V: shape.vocabSize,
    L: shape.numHiddenLayers,
  };
  const targets = spec.targetModules;
  const lins: Record<string, LinearPlan> = {};
  for (const m of linearModules(shape)) {
    lins[m.name] = {
      name: m.name,
      inF: m.inFeatures,
      outF: m.outFeatures,
      quantized: method === "qlora" || method === "qdylora",
      trainable: !adapter,
      rank: 0,
    };
    const lin = lins[m.name];
    lin.rank = adapter && (targets === "all-linear" || targets.includes(m.name)) ? spec.r : 0;
    lin.magnitude = lin.rank > 0 && spec.adapterKind === "dora";
  }
  // The trainer differentiates LoRA blocks by hand (llama_block_grad.ts); DyLoRA and DoRA by the tape.
  const handWritten = adapter && spec.adapterKind === "lora";
  const biases = shape.qkvBias ? ["q_proj", "k_proj", "v_proj"] : [];
  return {
    spec,
    mode,
    dm,
    lins,
    baseTrainable: !adapter,
    tied: shape.tieWordEmbeddings,
    handWritten,
    biases,
    notes: [],
  };
}

/** Resident fp32 weights and adapters, 4-bit host bytes, trainable tensors and optimizer state. */
function parameterPlan(setup: StepSetup): ParamPlan {
  const { spec, dm: { D, V, L }, lins, baseTrainable, tied, notes } = setup;
  const q = spec.quantize;
  const kind = adapterKind(spec.adapterKind);
  const blockParams: ParamShape[] = [];
  let weights = V * D * E + D * E + (tied ? 0 : V * D * E) + L * 2 * D * E;
  let host = 0, adapters = 0;
  for (const lin of Object.values(lins)) {
    const n = lin.inF * lin.outF;
    if (lin.quantized) host += L * QUANT_FORMATS[q.type].layerBytes(lin.outF, lin.inF, q);
    else weights += L * n * E;
    if (lin.rank > 0) adapters += L * kind.params(lin.inF, lin.outF, lin.rank) * E;
    if (lin.magnitude) adapters += L * lin.outF * E; // DoRA's cached ‖W_o‖² of the frozen base
    const prefix = `model.layers.0.${
      ["q_proj", "k_proj", "v_proj", "o_proj"].includes(lin.name) ? "self_attn" : "mlp"
    }.${lin.name}`;
    if (baseTrainable) blockParams.push({ name: `${prefix}.weight`, shape: [lin.outF, lin.inF] });
    if (lin.rank > 0) {
      blockParams.push({ name: `${prefix}.lora_A.weight`, shape: [lin.rank, lin.inF] });
      blockParams.push({ name: `${prefix}.lora_B.weight`, shape: [lin.outF, lin.rank] });
      if (lin.magnitude) blockParams.push({ name: `${prefix}.lora_magnitude_vector`, shape: [lin.outF] });
    }
  }
  if (baseTrainable) {
    blockParams.push({ name: "model.layers.0.input_layernorm.weight", shape: [D] });
    blockParams.push({ name: "model.layers.0.post_attention_layernorm.weight", shape: [D] });
  }
  const headParams: ParamShape[] = baseTrainable
    ? [
      { name: "model.norm.weight", shape: [D] },
      ...(tied ? [] : [{ name: "lm_head.weight", shape: [V, D] }]),
    ]
    : [];
  const embedParams: ParamShape[] = baseTrainable
    ? [{ name: "model.embed_tokens.weight", shape: [V, D] }]
    : [];
  const all = [...embedParams, ...Array.from({ length: L }, () => blockParams).flat(), ...headParams];
  const state = optimizerStateBytes(spec.optimizer, all, spec.galore.r);
  if (spec.optimizerState === "paged" || spec.optimizerState === "paged8bit") {
    notes.push("paged: our trainer has no paged optimizer; the state is counted as it would be unpaged.");
  }
  notes.push(
    `Resident tensors: fp32 weights ${weights} B, adapters ${adapters} B, fp32 optimizer state ${state.tensor} B; ` +
      `host memory: 4-bit weights ${host} B, 8-bit optimizer state ${state.host} B.`,
  );
  return { weights, host, adapters, embedParams, blockParams, headParams, all, state };
}

/** Ids, targets, loss weights, RoPE cos/sin and the mask: alive through every block-wise phase. */
function batchKeptBytes(dm: Dims): number {
  return (3 * dm.N + 2 * dm.T * dm.d + dm.B * dm.T * dm.T) * E;
}

/** The embedding's scatter-add gradient temporaries (reshape, indices, transpose, scatter-add). */
function gatherTransientBytes(dm: Dims): number {
  return (2 * dm.N * dm.D + dm.N + dm.V * dm.D) * E;
}

/**
 * One tape over embed → blocks → head → loss (accumulateGradients → tf.variableGrads):
 * the peak at the end of backward. Returns the gradient bytes held.
 */
function fullTapePeak(setup: StepSetup, P: number, peaks: PeakTracker): number {
  const { dm, lins, baseTrainable, spec, notes } = setup;
  const t = new Tape();
  let h = traceEmbed(t, dm, baseTrainable);
  for (let i = 0; i < dm.L; i++) h = traceBlock(t, h, dm, lins, baseTrainable);
  traceHead(t, h, dm, { normTrainable: baseTrainable, headTrainable: baseTrainable });
  // Gradients of variables are edges too; split them out. Earlier micro-batches' summed
  // gradients stay alive while the next tape runs.
  const prev = spec.gradAccumSteps > 1 ? P : 0;
  // The last gradient function: the embedding's scatter-add when it is trained; else the
  // first adapter's matmul gradient, which holds nothing beyond its output.
  peaks.consider("end of backward", {
    savedForBackward: t.saved * E,
    backwardGradients: t.grads * E - P,
    parameterGradients: P + prev,
    kept: 0,
    transient: baseTrainable ? gatherTransientBytes(dm) : 0,
  });
  notes.push(
    `One tape: ${t.saved * E} B of saved clones and ${t.grads * E} B of backward gradients ` +
      `(parameter gradients ${P} B included) alive at the end of backward.`,
  );
  return P;
}

/**
 * Block-wise backward (blockwise.ts): forward keeps h_0..h_L, backward runs one tape per
 * group (head, each block recomputed, embedding). Returns the gradient bytes held.
 */
function blockwisePeaks(setup: StepSetup, params: ParamPlan, P: number, peaks: PeakTracker): number {
  const { dm, lins, baseTrainable, tied, mode, spec, notes } = setup;
  const { N, D, V, L } = dm;
  if (setup.handWritten) return handWrittenPeaks(setup, params, P, peaks);
  const acc = mode === "checkpointed"; // gradients accumulate over groups until the update
  // Checkpointing sums into one buffer per parameter across groups and micro-batches:
  // from the second micro-batch on, every parameter's sum is alive (P) all the time.
  const later = spec.gradAccumSteps > 1 && acc;
  // A tape over a block (or the head) ends with the gradient of Square(h) in the first
  // RMSNorm: dy · (cast(h) · 2) holds cast(h), the scalar 2 and cast(h)·2 besides its output.
  const normTransient = (2 * N * D + 1) * E;
  const kept = batchKeptBytes(dm);
  const headBytes = size(params.headParams) * E, blockP = size(params.blockParams) * E;
  // head tape: xs = [h_L, final norm, lm_head (or the tied embedding)]
  const th = new Tape();
  traceHead(th, { n: N * D, g: true }, dm, { normTrainable: baseTrainable, headTrainable: baseTrainable });
  const headP = headBytes + (tied && baseTrainable ? V * D * E : 0);
  peaks.consider("head backward", {
    savedForBackward: th.saved * E,
    backwardGradients: th.grads * E - headP,
    parameterGradients: headP + (later ? P : 0),
    kept: kept + (L + 1) * N * D * E,
    transient: normTransient,
  });
  // block tapes, i = L−1 … 0: h_0..h_{i+1}, dh_{i+1} and the recomputed output are alive.
  const tb = new Tape();
  traceBlock(tb, { n: N * D, g: true }, dm, lins, baseTrainable);
  const tiedHeld = tied && baseTrainable ? V * D * E : 0; // the head's share of a tied embedding gradient
  for (let i = L - 1; i >= 0; i--) {
    const accumulated = (acc ? (later ? P : headBytes + (L - 1 - i) * blockP) : 0) + tiedHeld;
    peaks.consider("block backward (recompute)", {
      savedForBackward: tb.saved * E,
      backwardGradients: tb.grads * E - blockP,
      parameterGradients: blockP + accumulated,
      kept: kept + (i + 2) * N * D * E + 2 * N * D * E,
      transient: normTransient,
    });
  }
  if (baseTrainable) embeddingTapePeak(setup, P, acc, later, peaks);
  const groups = [params.headParams, params.blockParams, params.embedParams].map((ps) => size(ps) * E);
  notes.push(
    `Block-wise: ${L + 1} block inputs of B·T·D kept; one block's tape holds ${tb.saved * E} B saved and ` +
      `${tb.grads * E} B of gradients; ${
        acc ? "gradients accumulate until the update" : "each group is stepped and freed (layer-wise)"
      }.`,
  );
  return acc ? P : Math.max(...groups);
}

/**
 * The hand-written block backward (blockwise.ts with llama_block_grad.ts; LoRA over a frozen base,
 * so no embedding group): `"full"` keeps every block's saved tensors from the forward, the other
 * modes recompute one block at a time. Candidates: the last block's forward, the head's tape, and
 * each block's backward (its tidy at its end). Returns the gradient bytes held.
 */
function handWrittenPeaks(setup: StepSetup, params: ParamPlan, P: number, peaks: PeakTracker): number {
  const { dm, lins, baseTrainable, mode, spec, notes, biases } = setup;
  const { N, D, L } = dm;
  const recompute = mode !== "full";
  const acc = mode !== "layerwise";
  const later = spec.gradAccumSteps > 1 && acc;
  const blk = handWrittenBlock(dm, lins, { biases, unitOffset: false });
  const kept = batchKeptBytes(dm);
  const headBytes = size(params.headParams) * E, blockP = size(params.blockParams) * E;
  const allSaved = recompute ? 0 : L * blk.saved * E;
  if (!recompute) {
    peaks.consider("forward", {
      savedForBackward: allSaved,
      backwardGradients: 0,
      parameterGradients: later ? P : 0,
      kept: kept + L * N * D * E + N * D * E,
      transient: blk.forwardHeld * E,
    });
  }
  const th = new Tape();
  traceHead(th, { n: N * D, g: true }, dm, { normTrainable: baseTrainable, headTrainable: baseTrainable });
  peaks.consider("head backward", {
    savedForBackward: th.saved * E + allSaved,
    backwardGradients: th.grads * E - headBytes,
    parameterGradients: headBytes + (later ? P : 0),
    kept: kept + (L + 1) * N * D * E,
    transient: (2 * N * D + 1) * E,
  });
  for (let i = L - 1; i >= 0; i--) {
    const accumulated = acc ? (later ? P : headBytes + (L - 1 - i) * blockP) : 0;
    const base = kept + (i + 2) * N * D * E + N * D * E; // h_0..h_{i+1} and dh
    const saved = (recompute ? 1 : i + 1) * blk.saved * E;
    if (recompute) {
      peaks.consider("block backward (recompute)", {
        savedForBackward: saved,
        backwardGradients: 0,
        parameterGradients: accumulated,
        kept: base,
        transient: (blk.forwardHeld + N * D) * E,
      });
    }
    peaks.consider(recompute ? "block backward (recompute)" : "block backward", {
      savedForBackward: saved,
      backwardGradients: 0,
      parameterGradients: blockP + accumulated,
      kept: base + N * D * E, // and the new dh
      transient: blk.backwardHeld * E,
    });
  }
  notes.push(
    `Hand-written block backward: ${blk.saved * E} B kept per block for its backward ` +
      `(${recompute ? "recomputed one block at a time" : "all blocks, from the forward"}).`,
  );
  return acc ? P : Math.max(headBytes, blockP);
}

/** Embedding tape (block-wise, trained embedding): h_0, dh_0 and the recomputed h_0 alive. */
function embeddingTapePeak(
  setup: StepSetup,
  P: number,
  acc: boolean,
  later: boolean,
  peaks: PeakTracker,
): void {
  const { dm } = setup;
  const te = new Tape();
  traceEmbed(te, dm, true);
  const embP = dm.V * dm.D * E;
  peaks.consider("embedding backward", {
    savedForBackward: te.saved * E,
    backwardGradients: te.grads * E - embP,
    parameterGradients: embP + (acc ? (later ? P : P - embP) : 0),
    kept: batchKeptBytes(dm) + 3 * dm.N * dm.D * E,
    transient: gatherTransientBytes(dm),
  });
}

/**
 * Candidates after backward: the global gradient norm (every gradient squared inside one
 * tidy, step.ts / accumulate.ts; layer-wise: one group's) and the optimizer update of the
 * largest tensor (layer-wise: with that block's gradients and the block inputs alive).
 */
function afterBackwardPeaks(
  setup: StepSetup,
  params: ParamPlan,
  P: number,
  gradientBytes: number,
  peaks: PeakTracker,
): void {
  const { dm, mode, spec } = setup;
  const layerwise = mode === "layerwise";
  const blockInputs = batchKeptBytes(dm) + (dm.L + 1) * dm.N * dm.D * E;
  const maxUpdate = Math.max(
    0,
    ...params.all.map((p) => updateTemporaries(spec.optimizer, p, spec.galore.r)),
  );
  if (layerwise) {
    peaks.consider("optimizer step", {
      savedForBackward: 0,
      backwardGradients: 0,
      parameterGradients: gradientBytes,
      kept: blockInputs,
      transient: maxUpdate * E,
    });
  }
  const normGroup = layerwise ? gradientBytes : P;
  peaks.consider("gradient norm", {
    savedForBackward: 0,
    backwardGradients: 0,
    parameterGradients: normGroup,
    kept: layerwise ? blockInputs : 0,
    transient: normGroup,
  });
  if (!layerwise) {
    peaks.consider("optimizer step", {
      savedForBackward: 0,
      backwardGradients: 0,
      parameterGradients: P,
      kept: 0,
      transient: maxUpdate * E,
    });
  }
}

/** Refuses shapes our engine does not run (the family row says why when it is a known family). */
function checkEngineRuns(shape: ModelShape): void {
  const family = findModelFamily(shape.modelType);
  if (family && !family.engine) {
    throw new RangeError(
      `estimateTrainingMemory: our engine does not run ${family.modelType} yet (${family.engineGap}); ` +
        "use planMemory for a framework-agnostic plan",
    );
  }
  // Families the engine runs (Qwen2's q/k/v biases, Gemma, Phi-3's fused projections) are estimated
  // with the Llama layout: biases are a few vectors per layer, fused modules the same matrices.
  if (family?.engine) return;
  if (shape.mlp !== "swiglu" || shape.norm !== "rmsnorm" || shape.qkvBias || shape.outBias) {
    throw new RangeError(
      `estimateTrainingMemory: our engine runs Llama-family models (SwiGLU, RMSNorm, no biases); ` +
        `${shape.modelType} is not one (use planMemory for a framework-agnostic plan)`,
    );
  }
}
