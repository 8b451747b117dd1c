/**
 * A decoder block's forward and backward written by hand (as llm.c does), for LoRA training over a
 * frozen (dense or 4-bit) base: no autodiff tape, no copy of every op input, no recomputation
 * unless the caller asks for it. The forward saves only what the backward needs, the backward
 * returns the block's input gradient and the gradients of its trainable tensors (LoRA A/B, biases,
 * norm weights). {@linkcode blockGradSupport} says when a block qualifies; otherwise the trainer
 * uses the tape (`llama_block.ts` under `engine.gradients`), which gives the same gradients
 * (tests/models/llama_block_grad_test.ts compares them).
 *
 * Saved per block (`N = B·T` rows): the RMSNorm reciprocals `r1, r2 [N, 1]`, the rotated queries and
 * keys and the values `[B, H|G, T, Dh]`, the attention probabilities `[B, H, T, T]`, the attention
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
import type { Linear } from "./linear.ts";
import type { RMSNorm } from "./rms_norm.ts";
import type { LlamaConfig } from "./llama_config.ts";
import { applyRope } from "./rope.ts";

type Name = keyof BlockLinears;

/** A projection as the hand-written pass sees it: frozen base, optional LoRA, optional bias. */
interface Projection {
  base: Linear & { inputGrad: (dy: tf.Tensor2D) => tf.Tensor2D };
  /** `A: [r, I]`, `B: [O, r]`, scale `alpha / r`. */
  lora?: { a: tf.Variable; b: tf.Variable; scale: number };
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
  /** Attention probabilities `[B, H, T, K]`. */
  p: tf.Tensor4D;
  /** Attention output, `o_proj`'s input `[N, H·Dh]`. */
  merged: tf.Tensor2D;
  /** Residual after attention `[N, D]`. */
  h1: tf.Tensor2D;
  /** MLP `gate_proj` and `up_proj` outputs `[N, F]`. */
  gate: tf.Tensor2D;
  up: tf.Tensor2D;
  /** `x·Aᵀ [N, r]` of every projection with a LoRA. */
  low: Partial<Record<Name, tf.Tensor2D>>;
}

function projection(block: LlamaBlock, name: Name): Projection | string {
  let layer: Linear = block.linears[name];
  let lora: Projection["lora"];
  const form = layer.lowRank?.();
  if (typeof form === "string") return form;
  if (form) {
    lora = { a: form.a, b: form.b, scale: form.scale };
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
 * LoRA without dropout while training, not merged); activation SiLU or tanh-GELU.
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
  for (const n of BLOCK_LINEAR_NAMES) {
    const p = projection(block, n);
    if (typeof p === "string") return p;
  }
  return null;
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

/** `y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ + b`; returns `y [N, O]` and `x·Aᵀ [N, r]` (to keep). */
function project(p: Projection, x: tf.Tensor2D): { y: tf.Tensor2D; low?: tf.Tensor2D } {
  let y = p.base.apply(x); // [N, O]
  let low: tf.Tensor2D | undefined;
  if (p.lora) {
    low = tf.matMul(x, p.lora.a as tf.Tensor2D, false, true); // [N, r]
    y = tf.add(y, tf.mul(tf.matMul(low, p.lora.b as tf.Tensor2D, false, true), p.lora.scale));
  }
  if (p.bias) y = tf.add(y, p.bias.variable);
  return { y, low };
}

/**
 * Backward of {@linkcode project}: `dx = dy·W + scale·(dy·B)·A`, `dB = scale·dyᵀ·low`,
 * `dA = (scale·dy·B)ᵀ·x`, `db = Σ dy`; gradients go into `grads`.
 */
function projectBack(
  p: Projection,
  x: tf.Tensor2D,
  low: tf.Tensor2D | undefined,
  dy: tf.Tensor2D,
  grads: Map<tf.Variable, tf.Tensor>,
): tf.Tensor2D {
  let dx = p.base.inputGrad(dy); // [N, I]
  if (p.lora) {
    const { a, b, scale } = p.lora;
    const dlow = tf.mul(tf.matMul(dy, b as tf.Tensor2D), scale); // [N, r]
    grads.set(b, tf.keep(tf.mul(tf.matMul(dy, low!, true, false), scale))); // [O, r]
    grads.set(a, tf.keep(tf.matMul(dlow, x, true, false))); // [r, I]
    dx = tf.add(dx, tf.matMul(dlow, a as tf.Tensor2D));
  }
  if (p.bias?.trainable) grads.set(p.bias.variable, tf.keep(tf.sum(dy, 0)));
  return dx;
}

/** RMSNorm scale as applied (`1 + w` for Gemma). */
function normScale(norm: RMSNorm): tf.Tensor {
  return norm.unitOffset ? tf.add(norm.weight, 1) : norm.weight;
}

/** `x: [N, D]` → normed `[N, D]` and `r = 1/√(mean(x²) + eps)` `[N, 1]`. */
function rmsForward(norm: RMSNorm, x: tf.Tensor2D): { y: tf.Tensor2D; r: tf.Tensor2D } {
  const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), norm.eps)) as tf.Tensor2D;
  return { y: tf.mul(tf.mul(x, r), normScale(norm)), r };
}

/** The normed input again, from `x` and `r` (cheaper to recompute than to keep). */
function rmsApply(norm: RMSNorm, x: tf.Tensor2D, r: tf.Tensor2D): tf.Tensor2D {
  return tf.mul(tf.mul(x, r), normScale(norm));
}

/** `dx = r·(g − x̂·mean(g·x̂))` with `g = dy·w`, `x̂ = x·r`; `dw = Σₙ dy·x̂` when the weight trains. */
function rmsBack(
  norm: RMSNorm,
  x: tf.Tensor2D,
  r: tf.Tensor2D,
  dy: tf.Tensor2D,
  grads: Map<tf.Variable, tf.Tensor>,
): tf.Tensor2D {
  const xhat = tf.mul(x, r);
  if (norm.trainableParams().length > 0) grads.set(norm.weight, tf.keep(tf.sum(tf.mul(dy, xhat), 0)));
  const g = tf.mul(dy, normScale(norm));
  return tf.mul(r, tf.sub(g, tf.mul(xhat, tf.mean(tf.mul(g, xhat), -1, true))));
}

const GELU_C = Math.sqrt(2 / Math.PI);

/** The MLP's gate activation and its derivative at `g`. */
function activation(kind: string, g: tf.Tensor2D): { f: tf.Tensor2D; df: () => tf.Tensor2D } {
  if (kind === "gelu_tanh") {
    const th = tf.tanh(tf.mul(tf.add(g, tf.mul(tf.pow(g, 3), 0.044715)), GELU_C));
    return {
      f: tf.mul(tf.mul(g, 0.5), tf.add(th, 1)),
      // ½(1 + tanh u) + ½·g·(1 − tanh²u)·c·(1 + 3·0.044715·g²)
      df: () =>
        tf.add(
          tf.mul(tf.add(th, 1), 0.5),
          tf.mul(
            tf.mul(tf.mul(g, 0.5), tf.sub(1, tf.square(th))),
            tf.mul(tf.add(tf.mul(tf.square(g), 3 * 0.044715), 1), GELU_C),
          ),
        ),
    };
  }
  const s = tf.sigmoid(g);
  // silu' = σ(g)·(1 + g·(1 − σ(g)))
  return { f: tf.mul(g, s), df: () => tf.mul(s, tf.add(tf.mul(g, tf.sub(1, s)), 1)) };
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
): { out: tf.Tensor3D; saved: BlockSaved } {
  const c = block.config;
  const ps = projections(block);
  const [B, T, D] = h.shape;
  const H = c.numAttentionHeads, G = c.numKeyValueHeads, R = H / G, Dh = c.headDim, N = B * T;
  const low: BlockSaved["low"] = {};
  const keepLow = (n: Name, l?: tf.Tensor2D) => {
    if (l) low[n] = tf.keep(l);
  };
  let saved: BlockSaved | undefined;
  const out = tf.tidy(() => {
    const x = tf.reshape(h, [N, D]) as tf.Tensor2D;
    const { y: n1, r: r1 } = rmsForward(block.inputNorm, x);
    const heads = (y: tf.Tensor2D, n: number) =>
      tf.transpose(tf.reshape(y, [B, T, n, Dh]), [0, 2, 1, 3]) as tf.Tensor4D; // [B, n, T, Dh]
    const qp = project(ps.q_proj, n1), kp = project(ps.k_proj, n1), vp = project(ps.v_proj, n1);
    keepLow("q_proj", qp.low);
    keepLow("k_proj", kp.low);
    keepLow("v_proj", vp.low);
    const q = applyRope(heads(qp.y, H), ctx.cos, ctx.sin); // [B, H, T, Dh]
    const k = applyRope(heads(kp.y, G), ctx.cos, ctx.sin); // [B, G, T, Dh]
    const v = heads(vp.y, G); // [B, G, T, Dh]
    const scores = tf.mul(
      tf.matMul(tf.reshape(q, [B * G, R * T, Dh]), tf.reshape(k, [B * G, T, Dh]), false, true),
      1 / Math.sqrt(Dh),
    ); // [B·G, R·T, K]
    const p = tf.softmax(tf.add(tf.reshape(scores, [B, H, T, T]), ctx.mask)) as tf.Tensor4D; // [B, H, T, K]
    const ctxv = tf.matMul(tf.reshape(p, [B * G, R * T, T]), tf.reshape(v, [B * G, T, Dh])); // [B·G, R·T, Dh]
    const merged = tf.reshape(tf.transpose(tf.reshape(ctxv, [B, H, T, Dh]), [0, 2, 1, 3]), [
      N,
      H * Dh,
    ]) as tf.Tensor2D;
    const op = project(ps.o_proj, merged);
    keepLow("o_proj", op.low);
    const h1 = tf.add(x, op.y) as tf.Tensor2D; // [N, D]
    const { y: n2, r: r2 } = rmsForward(block.postAttentionNorm, h1);
    const gp = project(ps.gate_proj, n2), up = project(ps.up_proj, n2);
    keepLow("gate_proj", gp.low);
    keepLow("up_proj", up.low);
    const act = tf.mul(activation(c.hiddenAct, gp.y).f, up.y) as tf.Tensor2D; // [N, F]
    const dp = project(ps.down_proj, act);
    keepLow("down_proj", dp.low);
    saved = {
      input: h,
      r1: tf.keep(r1),
      r2: tf.keep(r2),
      q: tf.keep(q),
      k: tf.keep(k),
      v: tf.keep(v),
      p: tf.keep(p),
      merged: tf.keep(merged),
      h1: tf.keep(h1),
      gate: tf.keep(gp.y),
      up: tf.keep(up.y),
      low,
    };
    return tf.reshape(tf.add(h1, dp.y), [B, T, D]) as tf.Tensor3D;
  });
  return { out, saved: saved! };
}

/** Frees what {@linkcode blockForwardSaving} kept. */
export function disposeSaved(saved: BlockSaved): void {
  const { low, input: _, ...rest } = saved;
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
  const { input, r1, r2, q, k, v, p, merged, h1, gate, up, low } = saved;
  try {
    const dh = tf.tidy(() => {
      const d = tf.reshape(dOut, [N, D]) as tf.Tensor2D;
      const x = tf.reshape(input, [N, D]) as tf.Tensor2D;
      // MLP: out = h1 + down(f(gate) · up)
      const a = activation(c.hiddenAct, gate);
      const act = tf.mul(a.f, up) as tf.Tensor2D;
      const dAct = projectBack(ps.down_proj, act, low.down_proj, d, grads); // [N, F]
      const dUp = tf.mul(dAct, a.f) as tf.Tensor2D;
      const dGate = tf.mul(tf.mul(dAct, up), a.df()) as tf.Tensor2D;
      const n2 = rmsApply(block.postAttentionNorm, h1, r2);
      const dn2 = tf.add(
        projectBack(ps.gate_proj, n2, low.gate_proj, dGate, grads),
        projectBack(ps.up_proj, n2, low.up_proj, dUp, grads),
      ) as tf.Tensor2D;
      const dh1 = tf.add(d, rmsBack(block.postAttentionNorm, h1, r2, dn2, grads)) as tf.Tensor2D;

      // Attention: h1 = x + o_proj(merged)
      const dMerged = projectBack(ps.o_proj, merged, low.o_proj, dh1, grads); // [N, H·Dh]
      const dCtx = tf.reshape(tf.transpose(tf.reshape(dMerged, [B, T, H, Dh]), [0, 2, 1, 3]), [
        B * G,
        R * T,
        Dh,
      ]); // [B·G, R·T, Dh]
      const pg = tf.reshape(p, [B * G, R * T, T]);
      const vg = tf.reshape(v, [B * G, T, Dh]);
      const dP = tf.matMul(dCtx, vg, false, true); // [B·G, R·T, K]
      const dV = tf.matMul(pg, dCtx, true, false); // [B·G, K, Dh]
      // softmax backward, then the 1/√Dh scale: dS = p·(dP − Σ dP·p)
      const dS = tf.mul(tf.mul(pg, tf.sub(dP, tf.sum(tf.mul(dP, pg), -1, true))), 1 / Math.sqrt(Dh));
      const dQ = tf.matMul(dS, tf.reshape(k, [B * G, T, Dh])); // [B·G, R·T, Dh]
      const dK = tf.matMul(dS, tf.reshape(q, [B * G, R * T, Dh]), true, false); // [B·G, K, Dh]
      // RoPE is a rotation: its transpose is the rotation by −θ (cos and sin repeat over the halves).
      const cos = ctx.cos, negSin = tf.neg(ctx.sin);
      const flat = (t: tf.Tensor, n: number) =>
        tf.reshape(tf.transpose(t, [0, 2, 1, 3]), [N, n * Dh]) as tf.Tensor2D; // [B, n, T, Dh] → [N, n·Dh]
      const dq = flat(applyRope(tf.reshape(dQ, [B, H, T, Dh]) as tf.Tensor4D, cos, negSin), H);
      const dk = flat(applyRope(tf.reshape(dK, [B, G, T, Dh]) as tf.Tensor4D, cos, negSin), G);
      const dv = flat(tf.reshape(dV, [B, G, T, Dh]), G);
      const n1 = rmsApply(block.inputNorm, x, r1);
      const dn1 = tf.addN([
        projectBack(ps.q_proj, n1, low.q_proj, dq, grads),
        projectBack(ps.k_proj, n1, low.k_proj, dk, grads),
        projectBack(ps.v_proj, n1, low.v_proj, dv, grads),
      ]) as tf.Tensor2D;
      return tf.reshape(tf.add(dh1, rmsBack(block.inputNorm, x, r1, dn1, grads)), [B, T, D]) as tf.Tensor3D;
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
