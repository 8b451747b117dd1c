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

import type { ModelShape } from "./model_shape.ts";
import { linearModules } from "./model_shape.ts";
import { resolvePlanSpec } from "./plan_spec.ts";
import type { TrainerPlanOptions } from "./plan_for_model.ts";
import { planSpecForTrainer } from "./plan_for_model.ts";
import type { MemoryBreakdown } from "../engine/memory_parts.ts";
import type { ModelConfigInput } from "./plan_spec.ts";

/** The trainer's breakdown (the one {@linkcode MemoryBreakdown} type), predicted. */
export type EngineBreakdown = MemoryBreakdown;

/** Where the predicted peak falls. */
export type PeakPhase =
  | "end of backward"
  | "head backward"
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

// ---------------------------------------------------------------------------------------
// A symbolic gradient tape: elements only, no data.

interface Sym {
  /** Elements. */
  n: number;
  /** Depends on a trainable variable (gets a gradient in backward). */
  g: boolean;
}

/** Which tensors an op's gradient keeps (tfjs 4.22 gradient configs). */
type Keep = "in" | "out" | "none" | "in+out";

class Tape {
  saved = 0;
  grads = 0;

  /** A tensor that does not depend on trainable variables (ids, mask, RoPE tables, scalars). */
  leaf(n: number): Sym {
    return { n, g: false };
  }

  /** A variable, trainable or frozen. */
  param(n: number, trainable: boolean): Sym {
    return { n, g: trainable };
  }

  /**
   * Records one kernel: its saved clones and one backward gradient per differentiable
   * input, plus `eager` elements its gradient function computes outside the per-input
   * `tidy` (they stay in the backward scope until the tape returns).
   */
  op(inputs: Sym[], out: number, keep: Keep, eager = 0): Sym {
    if (keep === "in" || keep === "in+out") { for (const x of inputs) this.saved += x.n; }
    if (keep === "out" || keep === "in+out") this.saved += out;
    for (const x of inputs) if (x.g) this.grads += x.n;
    const g = inputs.some((x) => x.g);
    if (g) this.grads += eager;
    return { n: out, g };
  }

  /** Softmax: its gradient computes `dy·y` eagerly (S more elements kept). */
  softmax(x: Sym): Sym {
    return this.op([x], x.n, "out", x.n);
  }

  /** Sum: its gradient reshapes dy and multiplies by `ones(x.shape)` eagerly (out + x more). */
  sum(x: Sym, out: number): Sym {
    return this.op([x], out, "in", out + x.n);
  }
}

/** Dimensions of one traced step. */
interface Dims {
  B: number;
  T: number;
  N: number;
  D: number;
  H: number;
  K: number;
  d: number;
  F: number;
  V: number;
  L: number;
}

/** How each decoder linear is built. */
interface LinearPlan {
  name: string;
  inF: number;
  outF: number;
  /** Base weight is 4-bit (a customGrad op that saves nothing). */
  quantized: boolean;
  /** Base weight trainable (full fine-tuning / GaLore). */
  trainable: boolean;
  /** LoRA rank (0: no adapter). */
  rank: number;
}

// RMSNorm.apply: mul(mul(x, rsqrt(add(mean(square(x), -1), eps))), w)
function traceNorm(t: Tape, x: Sym, rows: number, width: number, trainable: boolean): Sym {
  const sq = t.op([x], x.n, "in"); // Square saves x
  const ms = t.op([sq], rows, "in"); // Mean saves its input
  const ad = t.op([ms, t.leaf(1)], rows, "in"); // Add(ms, eps) saves both
  const r = t.op([ad], rows, "in"); // Rsqrt saves x
  const xr = t.op([x, r], x.n, "in"); // Mul saves both
  return t.op([xr, t.param(width, trainable)], x.n, "in"); // Mul by weight saves both
}

// Linear.apply on x2 [N, I] → [N, O]: DenseLinear, QuantizedLinear, LoRALinear on either.
function traceLinear(t: Tape, x2: Sym, lin: LinearPlan, rows: number): Sym {
  const { inF, outF, rank } = lin;
  let y: Sym;
  if (lin.quantized) {
    // customGrad: nothing saved; backward dequantizes the weight again (a transient O·I
    // tensor, freed before the next gradient, so it never sits on top of the final peak).
    y = t.op([x2], rows * outF, "none");
  } else {
    y = t.op([x2, t.param(outF * inF, lin.trainable)], rows * outF, "in"); // BatchMatMul saves x and W
  }
  if (rank === 0) return y;
  // LoRA: y + scaling · (x Aᵀ) Bᵀ (dropout 0)
  const low = t.op([x2, t.param(rank * inF, true)], rows * rank, "in");
  const up = t.op([low, t.param(outF * rank, true)], rows * outF, "in");
  const scaled = t.op([up, t.leaf(1)], rows * outF, "in"); // Mul by the scaling (a scalar tensor)
  return t.op([y, scaled], rows * outF, "in"); // Add
}

// applyRope on x [B, h, T, d] (X elements): split halves, neg, concat, ·cos + ·sin.
function traceRope(t: Tape, x: Sym, dm: Dims): Sym {
  const X = x.n;
  t.op([x], X, "none"); // SplitV (one gradient: concat of both halves' dys)
  const half = { n: X / 2, g: x.g };
  const neg = t.op([half], X / 2, "none"); // Neg
  const rot = t.op([neg, half], X, "in"); // Concat saves all inputs
  const a = t.op([x, t.leaf(dm.T * dm.d)], X, "in"); // Mul by cos [T, d]
  const b = t.op([rot, t.leaf(dm.T * dm.d)], X, "in"); // Mul by sin [T, d]
  return t.op([a, b], X, "in"); // Add
}

// LlamaBlock.attention on x [B, T, D].
function traceAttention(t: Tape, x: Sym, dm: Dims, lins: Record<string, LinearPlan>): Sym {
  const { N, D, H, K, d, B, T } = dm;
  const S = B * H * T * T;
  const x2 = t.op([x], N * D, "in"); // reshape [N, D]
  const heads = (y: Sym, h: number) => t.op([t.op([y], N * h * d, "in")], N * h * d, "none"); // reshape, transpose
  const q = traceRope(t, heads(traceLinear(t, x2, lins.q_proj, N), H), dm);
  const k = traceRope(t, heads(traceLinear(t, x2, lins.k_proj, N), K), dm);
  const v = heads(traceLinear(t, x2, lins.v_proj, N), K);
  const qg = t.op([q], N * H * d, "in"); // reshape [B·G, R·T, d]
  const kg = t.op([k], N * K * d, "in"); // reshape [B·G, T, d]
  let s = t.op([qg, kg], S, "in"); // q kᵀ
  s = t.op([s, t.leaf(1)], S, "in"); // · 1/√d
  s = t.op([s], S, "in"); // reshape [B, H, T, T]
  s = t.op([s, t.leaf(B * T * T)], S, "in"); // + mask [B, 1, T, T]
  s = t.softmax(s); // softmax saves its output
  s = t.op([s], S, "in"); // reshape
  const vg = t.op([v], N * K * d, "in"); // reshape
  let c = t.op([s, vg], N * H * d, "in"); // probs · v
  c = t.op([c], N * H * d, "in"); // reshape [B, H, T, d]
  c = t.op([c], N * H * d, "none"); // transpose
  c = t.op([c], N * H * d, "in"); // reshape [N, H·d]
  return t.op([traceLinear(t, c, lins.o_proj, N)], N * D, "in"); // o_proj, reshape [B, T, D]
}

// LlamaBlock.mlp: down(silu(gate(x)) · up(x)).
function traceMlp(t: Tape, x: Sym, dm: Dims, lins: Record<string, LinearPlan>): Sym {
  const { N, D, F } = dm;
  const x2 = t.op([x], N * D, "in"); // reshape
  const g = traceLinear(t, x2, lins.gate_proj, N);
  const sg = t.op([g], N * F, "out"); // Sigmoid saves its output
  const gs = t.op([g, sg], N * F, "in"); // g · σ(g)
  const act = t.op([gs, traceLinear(t, x2, lins.up_proj, N)], N * F, "in"); // · up(x)
  return t.op([traceLinear(t, act, lins.down_proj, N)], N * D, "in"); // down, reshape
}

function traceBlock(
  t: Tape,
  h: Sym,
  dm: Dims,
  lins: Record<string, LinearPlan>,
  normsTrainable: boolean,
): Sym {
  const { N, D } = dm;
  const a = traceAttention(t, traceNorm(t, h, N, D, normsTrainable), dm, lins);
  const h1 = t.op([h, a], N * D, "in"); // residual add
  const m = traceMlp(t, traceNorm(t, h1, N, D, normsTrainable), dm, lins);
  return t.op([h1, m], N * D, "in"); // residual add
}

// LlamaForCausalLM.embed: reshape ids, gather rows, reshape.
function traceEmbed(t: Tape, dm: Dims, trainable: boolean): Sym {
  const ids = t.op([t.leaf(dm.N)], dm.N, "in"); // reshape ids [B, T] → [N] (int32)
  const rows = t.op([t.param(dm.V * dm.D, trainable), ids], dm.N * dm.D, "in"); // GatherV2 saves table and indices
  return t.op([rows], dm.N * dm.D, "in"); // reshape [B, T, D]
}

// head (final norm, lm_head, reshape) + loss (reshape [N, V], nllSum, ÷ divisor).
function traceHead(t: Tape, h: Sym, dm: Dims, o: { normTrainable: boolean; headTrainable: boolean }): Sym {
  const { N, D, V } = dm;
  const x = t.op([traceNorm(t, h, N, D, o.normTrainable)], N * D, "in"); // reshape [N, D]
  const logits = t.op([x, t.param(V * D, o.headTrainable)], N * V, "in"); // lm_head (or tied embedding) matmul
  let z = t.op([logits], N * V, "in"); // reshape [B, T, V]
  z = t.op([z], N * V, "in"); // reshape [N, V] (loss)
  // logSumExp: max (saves x and out), sub, exp (out), sum, log, reshape(max), add
  const mx = t.op([z], N, "in+out");
  const ex = t.op([t.op([z, mx], N * V, "in")], N * V, "out");
  const lg = t.op([t.sum(ex, N)], N, "in");
  const lse = t.op([t.op([mx], N, "in"), lg], N, "in");
  // picked = sum(mul(logits, oneHot(targets))): oneHot saves indices; mul casts both sides
  const oh = t.op([t.leaf(N)], N * V, "in");
  const prod = t.op([t.op([z], N * V, "none"), t.op([oh], N * V, "none")], N * V, "in");
  const picked = t.sum(prod, N);
  const diff = t.op([lse, picked], N, "in");
  const weighted = t.op([diff, t.leaf(N)], N, "in"); // · loss weights
  return t.op([t.sum(weighted, 1), t.leaf(1)], 1, "in"); // sum, ÷ divisor
}

// ---------------------------------------------------------------------------------------
// Optimizer state and update temporaries, from lib/optim.

interface Tensor2 {
  name: string;
  shape: number[];
}

/** Elements of the temporaries one update holds at its end (all in one `tf.tidy`). */
function updateTemporaries(opt: string, p: Tensor2, galoreRank: number): number {
  const n = p.shape.reduce((a, b) => a * b, 1);
  // Fp32Moments.direction: m·β1, g·(1−β1), add; v·β2, g², ·(1−β2), add; m/bc1, √v, /√bc2,
  // +eps, ÷ → 12 tensors; then dir·lr and the subtraction: 14.
  const adam = 14 * n;
  // 8-bit: the direction is a host array turned into one tensor; ·lr and the subtraction.
  const adam8 = n >= 4096 ? 3 * n : adam;
  const pr = galoreShape(p, galoreRank);
  if ((opt === "galore" || opt === "galore8bit") && pr) {
    const r = pr.moment;
    // project (1 r-sized), Adam direction on r (12, or 1 when 8-bit), projectBack:
    // matmul, ·scale (2 full-size), then ·lr and the subtraction (2 full-size).
    return r + (opt === "galore8bit" && r >= 4096 ? 1 : 12) * r + 4 * n;
  }
  return opt === "adamw8bit" || opt === "galore8bit" ? adam8 : adam;
}

/** GaLore projection of a decoder linear `[M, N]` (projType "std"), or undefined when not projected. */
function galoreShape(p: Tensor2, rank: number): { moment: number; projector: number } | undefined {
  if (!/attn|mlp/.test(p.name) || p.shape.length !== 2) return undefined;
  const [M, Nn] = p.shape;
  // std: M ≥ N projects the right side (N > rank), else the left (M > rank); a side
  // whose dimension is ≤ rank stays the identity (full-size moments, no projector).
  if (M >= Nn) return Nn > rank ? { moment: M * rank, projector: Nn * rank } : undefined;
  return M > rank ? { moment: rank * Nn, projector: M * rank } : undefined;
}

/** Optimizer state: tensor bytes and host bytes. */
function optimizerState(
  opt: string,
  params: Tensor2[],
  galoreRank: number,
): { tensor: number; host: number } {
  let tensor = 0, host = 0;
  const moments = (n: number, eightBit: boolean, blocksize: number) => {
    if (eightBit && n >= 4096) host += 2 * n + 2 * 4 * Math.ceil(n / blocksize);
    else tensor += 2 * 4 * n;
  };
  for (const p of params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    switch (opt) {
      case "adamw":
        moments(n, false, 256);
        break;
      case "adamw8bit":
        moments(n, true, 256);
        break;
      case "galore":
      case "galore8bit": {
        const pr = galoreShape(p, galoreRank);
        if (pr) tensor += 4 * pr.projector;
        moments(pr ? pr.moment : n, opt === "galore8bit", 256);
        break;
      }
    }
  }
  return { tensor, host };
}

/** Host bytes of one 4-bit matrix as `QuantizedLinear.storage()` reports them. */
function quantHostBytes(n: number, blocksize: number, doubleQuant: boolean): number {
  const packed = Math.ceil(n / 2), blocks = Math.ceil(n / blocksize);
  const constantBits = doubleQuant ? 8 * blocks + 32 * Math.ceil(blocks / 256) : 32 * blocks;
  return Math.ceil(((8 * packed + constantBits) / n) * n / 8); // same float steps as storage.ts
}

// ---------------------------------------------------------------------------------------

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
  const spec = resolvePlanSpec(planSpecForTrainer(config, options));
  const shape = spec.shape;
  if (!shape) throw new RangeError("estimateTrainingMemory: needs a model config (layer shapes)");
  checkLlama(shape);
  const method = spec.method;
  const quantized = method === "qlora" || method === "qdylora";
  const adapter = method !== "full" && method !== "galore" && method !== "galore8bit";
  const opt = spec.optimizer;
  const layerwise = spec.layerwise;
  const mode = layerwise ? "layerwise" : spec.gradientCheckpointing ? "checkpointed" : "full";
  const accum = spec.gradAccumSteps;
  if (layerwise && accum > 1) {
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
      quantized,
      trainable: !adapter,
      rank: adapter && (targets === "all-linear" || targets.includes(m.name)) ? spec.r : 0,
    };
  }
  const baseTrainable = !adapter;
  const tied = shape.tieWordEmbeddings;
  const notes: string[] = [];

  // ---- parameters: resident tensors, host bytes, trainable tensors (with optimizer names)
  const { D, V, L } = dm;
  const blockParams: Tensor2[] = [];
  let weights = V * D * E + D * E + (tied ? 0 : V * D * E) + L * 2 * D * E;
  let host = 0, adapters = 0;
  for (const lin of Object.values(lins)) {
    const n = lin.inF * lin.outF;
    if (lin.quantized) host += L * quantHostBytes(n, spec.quantize.blocksize, spec.quantize.doubleQuant);
    else weights += L * n * E;
    if (lin.rank > 0) adapters += L * lin.rank * (lin.inF + lin.outF) * E;
    const group = ["q_proj", "k_proj", "v_proj", "o_proj"].includes(lin.name) ? "self_attn" : "mlp";
    if (baseTrainable) {
      blockParams.push({ name: `model.layers.0.${group}.${lin.name}.weight`, shape: [lin.outF, lin.inF] });
    }
    if (lin.rank > 0) {
      blockParams.push({
        name: `model.layers.0.${group}.${lin.name}.lora_A.weight`,
        shape: [lin.rank, lin.inF],
      });
      blockParams.push({
        name: `model.layers.0.${group}.${lin.name}.lora_B.weight`,
        shape: [lin.outF, lin.rank],
      });
    }
  }
  if (baseTrainable) {
    blockParams.push({ name: "model.layers.0.input_layernorm.weight", shape: [D] });
    blockParams.push({ name: "model.layers.0.post_attention_layernorm.weight", shape: [D] });
  }
  const headParams: Tensor2[] = baseTrainable
    ? [
      { name: "model.norm.weight", shape: [D] },
      ...(tied ? [] : [{ name: "lm_head.weight", shape: [V, D] }]),
    ]
    : [];
  const embedParams: Tensor2[] = baseTrainable ? [{ name: "model.embed_tokens.weight", shape: [V, D] }] : [];
  const all: Tensor2[] = [
    ...embedParams,
    ...Array.from({ length: L }, () => blockParams).flat(),
    ...headParams,
  ];
  const size = (ps: Tensor2[]) => ps.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  const trainable = size(all);
  const galoreRank = spec.galore.r;
  const state = optimizerState(opt, all, galoreRank);
  if (spec.optimizerState === "paged" || spec.optimizerState === "paged8bit") {
    notes.push("paged: our trainer has no paged optimizer; the state is counted as it would be unpaged.");
  }
  const resident = weights + adapters + state.tensor;
  notes.push(
    `Resident tensors: fp32 weights ${weights} B, adapters ${adapters} B, fp32 optimizer state ${state.tensor} B; ` +
      `host memory: 4-bit weights ${host} B, 8-bit optimizer state ${state.host} B.`,
  );

  // ---- optimizer phase candidate: every gradient + the temporaries of the largest update
  const maxUpdate = (ps: Tensor2[]) => Math.max(0, ...ps.map((p) => updateTemporaries(opt, p, galoreRank)));

  // ---- tapes
  const N = dm.N;
  const batchKept = (3 * N + 2 * dm.T * dm.d + dm.B * dm.T * dm.T) * E; // ids, targets, loss weights, cos, sin, mask
  const gatherTransient = (2 * N * D + N + V * D) * E; // reshape, indices, transpose, scatter-add
  // A tape over a block (or the head) ends with the gradient of Square(h) in the first
  // RMSNorm: dy · (cast(h) · 2) holds cast(h), the scalar 2 and cast(h)·2 besides its output.
  const normTransient = (2 * N * D + 1) * E;
  let peak = 0;
  let phase: PeakPhase = "end of backward";
  let parts: EngineActivationParts = {
    savedForBackward: 0,
    backwardGradients: 0,
    parameterGradients: 0,
    kept: 0,
    transient: 0,
  };
  let gradientBytes: number;
  const consider = (p: PeakPhase, x: EngineActivationParts) => {
    const total = x.savedForBackward + x.backwardGradients + x.parameterGradients + x.kept + x.transient;
    if (total > peak) {
      peak = total;
      phase = p;
      parts = x;
    }
  };
  const P = trainable * E;

  if (mode === "full") {
    // One tape over embed → blocks → head → loss (accumulateGradients → tf.variableGrads).
    const t = new Tape();
    let h = traceEmbed(t, dm, baseTrainable);
    for (let i = 0; i < L; i++) h = traceBlock(t, h, dm, lins, baseTrainable);
    traceHead(t, h, dm, { normTrainable: baseTrainable, headTrainable: baseTrainable });
    // Gradients of variables are edges too; split them out. Earlier micro-batches' summed
    // gradients stay alive while the next tape runs.
    const prev = accum > 1 ? P : 0;
    // The last gradient function: the embedding's scatter-add when it is trained; else the
    // first adapter's matmul gradient, which holds nothing beyond its output.
    const transient = baseTrainable ? gatherTransient : 0;
    consider("end of backward", {
      savedForBackward: t.saved * E,
      backwardGradients: t.grads * E - P,
      parameterGradients: P + prev,
      kept: 0,
      transient,
    });
    gradientBytes = P;
    notes.push(
      `One tape: ${t.saved * E} B of saved clones and ${t.grads * E} B of backward gradients ` +
        `(parameter gradients ${P} B included) alive at the end of backward.`,
    );
  } else {
    // Block-wise: forward keeps h_0..h_L; backward runs one tape per group (blockwise.ts).
    const hs = (L + 1) * N * D * E;
    const acc = mode === "checkpointed"; // gradients accumulate over groups until the update
    // Checkpointing sums into one buffer per parameter across groups and micro-batches:
    // from the second micro-batch on, every parameter's sum is alive (P) all the time.
    const later = accum > 1 && acc;
    // head tape: xs = [h_L, final norm, lm_head (or the tied embedding)]
    const th = new Tape();
    traceHead(th, { n: N * D, g: true }, dm, { normTrainable: baseTrainable, headTrainable: baseTrainable });
    const headP = size(headParams) * E + (tied && baseTrainable ? V * D * E : 0);
    consider("head backward", {
      savedForBackward: th.saved * E,
      backwardGradients: th.grads * E - headP,
      parameterGradients: headP + (later ? P : 0),
      kept: batchKept + hs,
      transient: normTransient,
    });
    // block tapes, i = L−1 … 0: h_0..h_{i+1}, dh_{i+1} and the recomputed output are alive.
    const tb = new Tape();
    traceBlock(tb, { n: N * D, g: true }, dm, lins, baseTrainable);
    const blockP = size(blockParams) * E;
    const tiedHeld = tied && baseTrainable ? V * D * E : 0; // the head's share of a tied embedding gradient
    for (let i = L - 1; i >= 0; i--) {
      const accumulated = (acc ? (later ? P : size(headParams) * E + (L - 1 - i) * blockP) : 0) + tiedHeld;
      consider("block backward (recompute)", {
        savedForBackward: tb.saved * E,
        backwardGradients: tb.grads * E - blockP,
        parameterGradients: blockP + accumulated,
        kept: batchKept + (i + 2) * N * D * E + 2 * N * D * E,
        transient: normTransient,
      });
    }
    if (baseTrainable) {
      // embedding tape: h_0, dh_0 and the recomputed h_0 alive; every other gradient accumulated.
      const te = new Tape();
      traceEmbed(te, dm, true);
      const embP = V * D * E;
      consider("embedding backward", {
        savedForBackward: te.saved * E,
        backwardGradients: te.grads * E - embP,
        parameterGradients: embP + (acc ? (later ? P : P - embP) : 0),
        kept: batchKept + 3 * N * D * E,
        transient: gatherTransient,
      });
    }
    const groups = [size(headParams), size(blockParams), size(embedParams)].map((n) => n * E);
    gradientBytes = acc ? P : Math.max(...groups);
    notes.push(
      `Block-wise: ${L + 1} block inputs of B·T·D kept; one block's tape holds ${tb.saved * E} B saved and ` +
        `${tb.grads * E} B of gradients; ${
          acc ? "gradients accumulate until the update" : "each group is stepped and freed (layer-wise)"
        }.`,
    );
    if (!acc) {
      // layer-wise: the update of a block runs with that block's gradients alive.
      consider("optimizer step", {
        savedForBackward: 0,
        backwardGradients: 0,
        parameterGradients: Math.max(...groups),
        kept: batchKept + (L + 1) * N * D * E,
        transient: maxUpdate(all) * E,
      });
    }
  }
  // The global gradient norm squares every gradient inside one tidy (step.ts,
  // accumulate.ts): all gradients and as many squares are alive (layer-wise: one group's).
  const normGroup = mode === "layerwise" ? gradientBytes : P;
  consider("gradient norm", {
    savedForBackward: 0,
    backwardGradients: 0,
    parameterGradients: normGroup,
    kept: mode === "layerwise" ? batchKept + (L + 1) * N * D * E : 0,
    transient: normGroup,
  });
  if (mode !== "layerwise") {
    consider("optimizer step", {
      savedForBackward: 0,
      backwardGradients: 0,
      parameterGradients: P,
      kept: 0,
      transient: maxUpdate(all) * E,
    });
  }

  const breakdown: EngineBreakdown = {
    weights,
    quantConstants: 0,
    adapters,
    gradients: gradientBytes,
    optimizerStates: state.tensor,
    activations: Math.max(0, peak - gradientBytes),
    workspace: 0,
    hostOffloaded: host + state.host,
  };
  notes.push(
    `Peak at ${phase}: tfjs counts every tensor handle (saved clones and reshapes share buffers ` +
      "but each adds its size), so this is the trainer's peakTensorBytes, not distinct buffer bytes.",
    "Steady-state step (optimizer state exists at step start; no GaLore projector refresh).",
  );
  if (method === "dylora" || method === "qdylora") notes.push("DyLoRA counted as LoRA at its maximum rank.");
  return {
    method,
    mode,
    peakTensorBytes: resident + peak,
    residentTensorBytes: resident,
    peakPhase: phase,
    breakdown,
    parts,
    hostBytes: host + state.host,
    optimizerTensorBytes: state.tensor,
    optimizerHostBytes: state.host,
    trainableParams: trainable,
    batch: { batchSize: dm.B, seqLen: dm.T, gradAccumSteps: accum },
    assumptions: notes,
  };
}

function checkLlama(shape: ModelShape): void {
  if (shape.mlp !== "swiglu" || shape.norm !== "rmsnorm" || shape.qkvBias || shape.outBias) {
    throw new RangeError(
      `estimateTrainingMemory: our engine runs Llama-family models (SwiGLU, RMSNorm, no biases); ` +
        `${shape.modelType} is not one (use planMemory for a framework-agnostic plan)`,
    );
  }
}
