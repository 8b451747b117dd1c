/**
 * A decoder block's forward and backward written by hand (as llm.c does), for LoRA training over a
 * frozen (dense or 4-bit) base: no autodiff tape, no copy of every op input, no recomputation
 * unless the caller asks for it. The forward saves only what the backward needs, the backward
 * returns the block's input gradient and the gradients of its trainable tensors (LoRA A/B, biases,
 * norm weights). {@linkcode blockGradSupport} says when a block qualifies; otherwise the trainer
 * uses the tape (`llama_block.ts` under `engine.gradients`), which gives the same gradients
 * (tests/models/llama_block_grad_test.ts compares them).
 *
 * The elementwise work (RMSNorm, RoPE with the head layout moves, the masked softmax and its
 * backward, SwiGLU/GeGLU, the LoRA/bias/residual additions) runs as fused kernels
 * (`block_kernels.ts`): one tensor per result instead of a chain of tfjs ops, on the wasm and cpu
 * backends (webgpu takes the tape: {@linkcode blockGradSupport} says so).
 *
 * Saved per block (`N = B·T` rows): the RMSNorm reciprocals `r1, r2 [N, 1]`, the rotated queries and
 * keys and the values `[B, H|G, T, Dh]`, the attention probabilities `[B·G, R·T, K]`, the attention
 * output before `o_proj` `[N, H·Dh]`, the residual `h1 [N, D]`, the MLP's `gate`/`up` outputs
 * `[N, F]` each, and every LoRA's `x·Aᵀ [N, R]`; the block input is the caller's.
 *
 * Dimension legend: B batch, T tokens, K key positions (= T), D hidden, H query heads, G kv heads,
 * R = H / G, Dh head dim, F MLP width, N = B·T, I/O a linear's in/out features, r a LoRA rank.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { BlockContext, BlockLinears, LlamaBlock } from "./llama_block.ts";
import { BLOCK_LINEAR_NAMES } from "./llama_block.ts";
import type { Linear, LowRankForm } from "./linear.ts";
import type { RMSNorm } from "./rms_norm.ts";
import type { LlamaConfig } from "./llama_config.ts";
import {
  addScaled,
  fusedKernelsReason,
  gatedActivation,
  gatedActivationBackward,
  gateSigmoid,
  maskedSoftmax,
  moveHeads,
  rmsNormApply,
  rmsNormBackward,
  rmsNormForward,
  rmsNormWeightGrad,
  ropeHeads,
  softmaxBackward,
} from "./block_kernels.ts";

type Name = keyof BlockLinears;

/** A projection as the hand-written pass sees it: frozen base, optional LoRA, optional bias. */
interface Projection {
  base: Linear & { inputGrad: (dy: tf.Tensor2D) => tf.Tensor2D };
  /** `A: [r, I]`, `B: [O, r]`, scale `alpha / r`, dropout on its input while training. */
  lora?: { a: tf.Variable; b: tf.Variable; scale: number; dropout?: LowRankForm["dropout"] };
  bias?: { variable: tf.Variable; trainable: boolean };
}

/** What the forward keeps for the backward (all owned by it; {@linkcode disposeSaved} frees them). */
export interface BlockSaved {
  /** Block input `[B, T, D]`: the caller's tensor, not owned (keep it alive until the backward). */
  input: tf.Tensor3D;
  r1: tf.Tensor2D;
  r2: tf.Tensor2D;
  /** Rotated queries `[B, H, T, Dh]`, rotated keys and values `[B, G, T, Dh]`. */
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
  /** Attention probabilities `[B·G, R·T, K]` (the element order of `[B, H, T, K]`). */
  p: tf.Tensor3D;
  /** Attention output, `o_proj`'s input `[N, H·Dh]`. */
  merged: tf.Tensor2D;
  /** Residual after attention `[N, D]`. */
  h1: tf.Tensor2D;
  /** MLP `gate_proj` and `up_proj` outputs `[N, F]`. */
  gate: tf.Tensor2D;
  up: tf.Tensor2D;
  /** `x·Aᵀ [N, r]` of every projection with a LoRA. */
  low: Partial<Record<Name, tf.Tensor2D>>;
  /** The dropout seed each LoRA with dropout drew (its mask is made again in the backward). */
  seeds: Partial<Record<Name, number>>;
}

function projection(block: LlamaBlock, name: Name): Projection | string {
  let layer: Linear = block.linears[name];
  let lora: Projection["lora"];
  const form = layer.lowRank?.();
  if (typeof form === "string") return form;
  if (form) {
    lora = { a: form.a, b: form.b, scale: form.scale, dropout: form.dropout };
    layer = form.base;
  }
  if (layer.trainableParams().length > 0) {
    return `${layer.name} (${layer.constructor.name}) trains through the tape (its own weights train)`;
  }
  if (typeof layer.inputGrad !== "function") {
    return `${layer.name} (${layer.constructor.name}) has no inputGrad`;
  }
  const b = block.biases[name];
  return {
    base: layer as Projection["base"],
    lora,
    bias: b ? { variable: b.variable, trainable: b.trainableParams().length > 0 } : undefined,
  };
}

/**
 * Why `block` cannot use the hand-written pass, or `null` when it can: every projection is a frozen
 * dense or 4-bit layer, optionally under an adapter with a plain low-rank form (`Linear.lowRank()`:
 * LoRA, with or without dropout, not merged); activation SiLU or tanh-GELU; backend wasm or
 * cpu (the fused kernels read tensors synchronously).
 *
 * @example
 * ```ts
 * import { initEngine } from "../engine/backend.ts";
 * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
 * import { loadModel } from "./load_model.ts";
 * import { attachLoRA } from "../adapters/attach.ts";
 * import { blockGradSupport } from "./llama_block_grad.ts";
 * await initEngine({ backend: "cpu" });
 * const model = await loadModel(EMBEDDED_MODEL_DIR);
 * if (blockGradSupport(model.layers[0]) === null) throw new Error("a trainable dense base needs the tape");
 * attachLoRA(model, { r: 4 });
 * if (blockGradSupport(model.layers[0]) !== null) throw new Error("a LoRA block qualifies");
 * model.dispose();
 * ```
 */
export function blockGradSupport(block: LlamaBlock): string | null {
  const act = block.config.hiddenAct;
  if (act !== "silu" && act !== "gelu_tanh") return `activation ${act}`;
  const backend = fusedKernelsReason();
  if (backend) return backend;
  for (const n of BLOCK_LINEAR_NAMES) {
    const p = projection(block, n);
    if (typeof p === "string") return p;
  }
  return null;
}

/**
 * Whether the block's LoRAs apply dropout now (training with `dropout > 0`): then a recompute must
 * reuse the forward's seeds ({@linkcode blockForwardSaving}'s `useSeeds`).
 *
 * @example
 * ```ts
 * import { initEngine } from "../engine/backend.ts";
 * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
 * import { loadModel } from "./load_model.ts";
 * import { attachLoRA } from "../adapters/attach.ts";
 * import { blockUsesDropout } from "./llama_block_grad.ts";
 * await initEngine({ backend: "cpu" });
 * const model = await loadModel(EMBEDDED_MODEL_DIR);
 * attachLoRA(model, { r: 4, dropout: 0.1 });
 * if (blockUsesDropout(model.layers[0])) throw new Error("not while evaluating");
 * model.setTraining(true);
 * if (!blockUsesDropout(model.layers[0])) throw new Error("while training");
 * model.dispose();
 * ```
 */
export function blockUsesDropout(block: LlamaBlock): boolean {
  return BLOCK_LINEAR_NAMES.some((n) => {
    const f = block.linears[n].lowRank?.();
    return typeof f === "object" && f.dropout !== undefined;
  });
}

function projections(block: LlamaBlock): Record<Name, Projection> {
  const out = {} as Record<Name, Projection>;
  for (const n of BLOCK_LINEAR_NAMES) {
    const p = projection(block, n);
    if (typeof p === "string") throw new TypeError(`hand-written block backward: ${p}`);
    out[n] = p;
  }
  return out;
}

/**
 * `y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ + b (+ residual)`; returns `y [N, O]` and `x·Aᵀ [N, r]` (to keep).
 * The additions are one fused pass ({@linkcode addScaled}).
 */
function project(
  p: Projection,
  x: tf.Tensor2D,
  residual?: tf.Tensor2D,
  seed?: number,
): { y: tf.Tensor2D; low?: tf.Tensor2D } {
  const y = p.base.apply(x); // [N, O]
  let low: tf.Tensor2D | undefined, lb: tf.Tensor2D | null = null;
  if (p.lora) {
    // LoRA dropout: the same mask as LoRALinear.apply (tf.dropout with the layer's seed)
    const xin = p.lora.dropout ? tf.dropout(x, p.lora.dropout.rate, undefined, seed) as tf.Tensor2D : x;
    low = tf.matMul(xin, p.lora.a as tf.Tensor2D, false, true); // [N, r]
    lb = tf.matMul(low, p.lora.b as tf.Tensor2D, false, true); // [N, O]
  }
  if (!lb && !p.bias && !residual) return { y, low };
  return { y: addScaled(y, lb, p.lora?.scale ?? 0, p.bias?.variable, residual), low };
}

/**
 * Backward of {@linkcode project}: the terms of `dx = dy·W + scale·(dy·B)·A` (the caller sums them
 * with others in one `addN`), `dB = scale·dyᵀ·low`, `dA = (scale·dy·B)ᵀ·x`, `db = Σ dy`; gradients
 * go into `grads`.
 */
function projectBack(
  p: Projection,
  x: tf.Tensor2D,
  low: tf.Tensor2D | undefined,
  dy: tf.Tensor2D,
  grads: Map<tf.Variable, tf.Tensor>,
  seed?: number,
): tf.Tensor2D[] {
  const terms = [p.base.inputGrad(dy)]; // [N, I]
  if (p.lora) {
    const { a, b, scale, dropout } = p.lora;
    // With dropout, the forward's mask again (same seed and shape): on x for dA, on the input gradient.
    const drop = (t: tf.Tensor2D) =>
      dropout ? tf.dropout(t, dropout.rate, undefined, seed) as tf.Tensor2D : t;
    const dlow = tf.mul(tf.matMul(dy, b as tf.Tensor2D), scale) as tf.Tensor2D; // [N, r]
    grads.set(b, tf.keep(tf.mul(tf.matMul(dy, low!, true, false), scale))); // [O, r]
    grads.set(a, tf.keep(tf.matMul(dlow, drop(x), true, false))); // [r, I]
    terms.push(drop(tf.matMul(dlow, a as tf.Tensor2D)));
  }
  if (p.bias?.trainable) grads.set(p.bias.variable, tf.keep(tf.sum(dy, 0)));
  return terms;
}

/** One tensor from the terms of a sum (`addN` when there are several). */
function sumOf(terms: tf.Tensor2D[]): tf.Tensor2D {
  return terms.length === 1 ? terms[0] : tf.addN(terms) as tf.Tensor2D;
}

/** `dx` of an RMSNorm (plus `residual`); `dw` into `grads` when its weight trains. */
function rmsBack(
  norm: RMSNorm,
  x: tf.Tensor2D,
  r: tf.Tensor2D,
  dy: tf.Tensor2D,
  residual: tf.Tensor2D,
  grads: Map<tf.Variable, tf.Tensor>,
): tf.Tensor2D {
  if (norm.trainableParams().length > 0) grads.set(norm.weight, tf.keep(rmsNormWeightGrad(x, r, dy)));
  return rmsNormBackward(x, r, norm.weight, dy, norm.unitOffset, residual);
}

/**
 * Block forward that keeps what {@linkcode blockBackward} needs: `h: [B, T, D]` → `[B, T, D]`.
 * No key/value cache; the caller keeps `h` alive until the backward has run.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
 * import { loadModel } from "./load_model.ts";
 * import { attachLoRA } from "../adapters/attach.ts";
 * import { blockBackward, blockForwardSaving } from "./llama_block_grad.ts";
 * await initEngine({ backend: "cpu" });
 * const model = await loadModel(EMBEDDED_MODEL_DIR);
 * attachLoRA(model, { r: 4 });
 * const ctx = model.context(1, 3);
 * const h = model.embed(tf.tensor2d([[1, 2, 3]], [1, 3], "int32"));
 * const { out, saved } = blockForwardSaving(model.layers[0], h, ctx);
 * const { dh, grads } = blockBackward(model.layers[0], saved, tf.onesLike(out), ctx);
 * if (dh.shape.join() !== h.shape.join() || grads.size !== 14) throw new Error("7 LoRAs, A and B each");
 * tf.dispose([out, dh, h, ctx.cos, ctx.sin, ctx.mask, ...grads.values()]);
 * model.dispose();
 * ```
 */
export function blockForwardSaving(
  block: LlamaBlock,
  h: tf.Tensor3D,
  ctx: BlockContext,
  /** Dropout seeds to use instead of drawing new ones (recomputing a forward that drew them). */
  useSeeds?: BlockSaved["seeds"],
): { out: tf.Tensor3D; saved: BlockSaved } {
  const c = block.config;
  const ps = projections(block);
  const [B, T, D] = h.shape;
  const H = c.numAttentionHeads, G = c.numKeyValueHeads, R = H / G, Dh = c.headDim, N = B * T;
  const low: BlockSaved["low"] = {};
  const keepLow = (n: Name, l?: tf.Tensor2D) => {
    if (l) low[n] = tf.keep(l);
  };
  // Dropout seeds: drawn in apply()'s order (q, k, v, o, gate, up, down), or the given ones (a recompute).
  const seeds: BlockSaved["seeds"] = {};
  for (const n of BLOCK_LINEAR_NAMES) {
    const d = ps[n].lora?.dropout;
    if (d) seeds[n] = useSeeds?.[n] ?? d.nextSeed();
  }
  // Two phases, each its own tidy: the attention's intermediates are freed before the MLP's.
  let r1!: tf.Tensor2D, q!: tf.Tensor4D, k!: tf.Tensor4D, v!: tf.Tensor4D, p!: tf.Tensor3D;
  let merged!: tf.Tensor2D;
  const h1 = tf.tidy(() => {
    const x = tf.reshape(h, [N, D]) as tf.Tensor2D;
    const n1 = rmsNormForward(x, block.inputNorm.weight, block.inputNorm.eps, block.inputNorm.unitOffset);
    r1 = tf.keep(n1.r);
    const qp = project(ps.q_proj, n1.y, undefined, seeds.q_proj);
    const kp = project(ps.k_proj, n1.y, undefined, seeds.k_proj);
    const vp = project(ps.v_proj, n1.y, undefined, seeds.v_proj);
    keepLow("q_proj", qp.low);
    keepLow("k_proj", kp.low);
    keepLow("v_proj", vp.low);
    const rows = (n: number) => ({ B, T, n, from: "rows" as const, to: "heads" as const });
    q = tf.keep(ropeHeads(qp.y, ctx.cos, ctx.sin, rows(H)) as tf.Tensor4D); // [B, H, T, Dh]
    k = tf.keep(ropeHeads(kp.y, ctx.cos, ctx.sin, rows(G)) as tf.Tensor4D); // [B, G, T, Dh]
    v = tf.keep(moveHeads(vp.y, Dh, rows(G)) as tf.Tensor4D); // [B, G, T, Dh]
    const scores = tf.matMul(tf.reshape(q, [B * G, R * T, Dh]), tf.reshape(k, [B * G, T, Dh]), false, true); // [B·G, R·T, K]
    p = tf.keep(maskedSoftmax(scores, ctx.mask, 1 / Math.sqrt(Dh), H) as tf.Tensor3D); // [B·G, R·T, K]
    const ctxv = tf.matMul(p, tf.reshape(v, [B * G, T, Dh])); // [B·G, R·T, Dh]
    merged = tf.keep(moveHeads(ctxv, Dh, { B, T, n: H, from: "heads", to: "rows" }) as tf.Tensor2D); // [N, H·Dh]
    const op = project(ps.o_proj, merged, x, seeds.o_proj);
    keepLow("o_proj", op.low);
    return op.y; // [N, D]
  });
  let saved: BlockSaved | undefined;
  const out = tf.tidy(() => {
    const post = block.postAttentionNorm;
    const n2 = rmsNormForward(h1, post.weight, post.eps, post.unitOffset);
    const gp = project(ps.gate_proj, n2.y, undefined, seeds.gate_proj);
    const up = project(ps.up_proj, n2.y, undefined, seeds.up_proj);
    keepLow("gate_proj", gp.low);
    keepLow("up_proj", up.low);
    const act = gatedActivation(gp.y, up.y, gateSigmoid(c.hiddenAct, gp.y)); // [N, F]
    const dp = project(ps.down_proj, act, h1, seeds.down_proj);
    keepLow("down_proj", dp.low);
    saved = {
      input: h,
      r1,
      r2: tf.keep(n2.r),
      q,
      k,
      v,
      p,
      merged,
      h1,
      gate: tf.keep(gp.y),
      up: tf.keep(up.y),
      low,
      seeds,
    };
    return tf.reshape(dp.y, [B, T, D]) as tf.Tensor3D;
  });
  return { out, saved: saved! };
}

/** Frees what {@linkcode blockForwardSaving} kept. */
export function disposeSaved(saved: BlockSaved): void {
  const { low, input: _, seeds: _s, ...rest } = saved;
  tf.dispose([...Object.values(rest), ...Object.values(low)] as tf.Tensor[]);
}

/**
 * Backward of one block from its saved forward: `dOut: [B, T, D]` → the input gradient `dh`
 * `[B, T, D]` and the gradient of every trainable tensor of the block, by variable. `ctx` is the
 * forward's context (its RoPE tables). Frees `saved` (not `dOut`).
 */
export function blockBackward(
  block: LlamaBlock,
  saved: BlockSaved,
  dOut: tf.Tensor3D,
  ctx: BlockContext,
): { dh: tf.Tensor3D; grads: Map<tf.Variable, tf.Tensor> } {
  const c = block.config;
  const ps = projections(block);
  const [B, T, D] = dOut.shape;
  const H = c.numAttentionHeads, G = c.numKeyValueHeads, R = H / G, Dh = c.headDim, N = B * T;
  const grads = new Map<tf.Variable, tf.Tensor>();
  const { input, r1, r2, q, k, v, p, merged, h1, gate, up, low, seeds } = saved;
  try {
    const inNorm = block.inputNorm, post = block.postAttentionNorm;
    // One tidy: splitting it in two (MLP, then attention with the MLP's saved tensors freed) would
    // halve its peak, but then the checkpointed step's plain forward (llama_block.ts), which the
    // engine estimate does not replay, becomes the step's peak.
    const dh = tf.tidy(() => {
      // MLP: out = h1 + down(f(gate) · up)
      const d = tf.reshape(dOut, [N, D]) as tf.Tensor2D;
      const s = gateSigmoid(c.hiddenAct, gate); // [N, F]
      const act = gatedActivation(gate, up, s); // [N, F]
      const dAct = sumOf(projectBack(ps.down_proj, act, low.down_proj, d, grads, seeds.down_proj)); // [N, F]
      const { dGate, dUp } = gatedActivationBackward(c.hiddenAct, gate, up, dAct, s);
      const n2 = rmsNormApply(h1, r2, post.weight, post.unitOffset);
      const dn2 = tf.addN([
        ...projectBack(ps.gate_proj, n2, low.gate_proj, dGate, grads, seeds.gate_proj),
        ...projectBack(ps.up_proj, n2, low.up_proj, dUp, grads, seeds.up_proj),
      ]) as tf.Tensor2D;
      const dh1 = rmsBack(post, h1, r2, dn2, d, grads); // [N, D]

      // Attention: h1 = x + o_proj(merged)
      const x = tf.reshape(input, [N, D]) as tf.Tensor2D;
      const dMerged = sumOf(projectBack(ps.o_proj, merged, low.o_proj, dh1, grads, seeds.o_proj)); // [N, H·Dh]
      const heads = { B, T, n: H, from: "rows" as const, to: "heads" as const, shape: [B * G, R * T, Dh] };
      const dCtx = moveHeads(dMerged, Dh, heads); // [B·G, R·T, Dh]
      const dP = tf.matMul(dCtx, tf.reshape(v, [B * G, T, Dh]), false, true); // [B·G, R·T, K]
      const dV = tf.matMul(p, dCtx as tf.Tensor3D, true, false); // [B·G, K, Dh]
      const dS = softmaxBackward(p, dP, 1 / Math.sqrt(Dh)) as tf.Tensor3D; // [B·G, R·T, K]
      const dQ = tf.matMul(dS, tf.reshape(k, [B * G, T, Dh])); // [B·G, R·T, Dh]
      const dK = tf.matMul(dS, tf.reshape(q, [B * G, R * T, Dh]), true, false); // [B·G, K, Dh]
      // RoPE's transpose is the rotation by −θ, written straight into the rows layout.
      const back = (n: number) => ({ B, T, n, from: "heads" as const, to: "rows" as const, inverse: true });
      const dq = ropeHeads(dQ, ctx.cos, ctx.sin, back(H)) as tf.Tensor2D; // [N, H·Dh]
      const dk = ropeHeads(dK, ctx.cos, ctx.sin, back(G)) as tf.Tensor2D; // [N, G·Dh]
      const dv = moveHeads(dV, Dh, back(G)) as tf.Tensor2D; // [N, G·Dh]
      const n1 = rmsNormApply(x, r1, inNorm.weight, inNorm.unitOffset);
      const dn1 = tf.addN([
        ...projectBack(ps.q_proj, n1, low.q_proj, dq, grads, seeds.q_proj),
        ...projectBack(ps.k_proj, n1, low.k_proj, dk, grads, seeds.k_proj),
        ...projectBack(ps.v_proj, n1, low.v_proj, dv, grads, seeds.v_proj),
      ]) as tf.Tensor2D;
      return tf.reshape(rmsBack(inNorm, x, r1, dn1, dh1, grads), [B, T, D]) as tf.Tensor3D;
    });
    return { dh, grads };
  } catch (e) {
    tf.dispose([...grads.values()]);
    throw e;
  } finally {
    disposeSaved(saved);
  }
}

/**
 * Tensor bytes {@linkcode blockForwardSaving} keeps for one block at `B × T` (fp32), given the
 * LoRA rank of each projection that has one.
 *
 * @example
 * ```ts
 * import { blockSavedBytes } from "./llama_block_grad.ts";
 * const cfg = { hiddenSize: 8, intermediateSize: 16, numAttentionHeads: 2, numKeyValueHeads: 1, headDim: 4 };
 * // N = 3: r1, r2 3 each; q 24, k 12, v 12; p 2·3·3 = 18; merged 24; h1 24; gate, up 48 each
 * if (blockSavedBytes(cfg, 1, 3, []) !== 4 * 216) throw new Error("wrong");
 * ```
 */
export function blockSavedBytes(
  config: Pick<
    LlamaConfig,
    "hiddenSize" | "intermediateSize" | "numAttentionHeads" | "numKeyValueHeads" | "headDim"
  >,
  B: number,
  T: number,
  loraRanks: number[],
): number {
  const { hiddenSize: D, intermediateSize: F, numAttentionHeads: H, numKeyValueHeads: G, headDim: Dh } =
    config;
  const N = B * T;
  const floats = 2 * N + N * (H + 2 * G) * Dh + B * H * T * T + N * H * Dh + N * D + 2 * N * F +
    loraRanks.reduce((s, r) => s + N * r, 0);
  return 4 * floats;
}
