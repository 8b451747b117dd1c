/**
 * The symbolic gradient tape behind the engine estimate (`engine_estimate.ts`): element
 * counts only, no data. Each `trace*` function replays one part of the forward pass op by
 * op, as `llama.ts`, `llama_block.ts`, `rms_norm.ts`, `rope.ts`, `loss.ts`, the adapter
 * layers and `quantized_linear.ts` write it, recording what every kernel's tfjs 4.22
 * gradient keeps for backward and which backward gradients it creates (the counting rules
 * are in `engine_estimate.ts`'s module doc).
 *
 * Dimension legend: B batch, T padded length, N = B·T rows, D hidden, H query heads,
 * K kv heads, d head dim, F MLP width, V vocab, L layers.
 * @module
 */
/** A traced tensor: its element count and whether it depends on a trainable variable. */
export interface Sym {
  /** Elements. */
  n: number;
  /** Depends on a trainable variable (gets a gradient in backward). */
  g: boolean;
}

/** Which tensors an op's gradient keeps (tfjs 4.22 gradient configs). */
export type Keep = "in" | "out" | "none" | "in+out";

/**
 * Counts what one gradient tape holds: `saved` elements (clones kept for backward) and
 * `grads` elements (backward gradients alive until the tape returns).
 *
 * @example
 * ```ts
 * import { Tape } from "./engine_tape.ts";
 * const t = new Tape();
 * // a matmul of x [4, 8] (depends on a trainable variable) by a frozen W [8, 8]: saves both, one gradient for x
 * t.op([{ n: 32, g: true }, t.param(64, false)], 32, "in");
 * if (t.saved !== 96 || t.grads !== 32) throw new Error(`${t.saved} ${t.grads}`);
 * ```
 */
export class Tape {
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
/** Dimensions of one traced step (see the module legend). */
export interface Dims {
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
export interface LinearPlan {
  name: string;
  inF: number;
  outF: number;
  /** Base weight is 4-bit (a customGrad op that saves nothing). */
  quantized: boolean;
  /** Base weight trainable (full fine-tuning / GaLore). */
  trainable: boolean;
  /** LoRA rank (0: no adapter). */
  rank: number;
  /** DoRA: the adapter also rescales each output row by a trained magnitude (`dora.ts`). */
  magnitude?: boolean;
}

/** RMSNorm.apply on `x` (`rows` × `width`). */
// RMSNorm.apply: mul(mul(x, rsqrt(add(mean(square(x), -1), eps))), w)
export function traceNorm(t: Tape, x: Sym, rows: number, width: number, trainable: boolean): Sym {
  const sq = t.op([x], x.n, "in"); // Square saves x
  const ms = t.op([sq], rows, "in"); // Mean saves its input
  const ad = t.op([ms, t.leaf(1)], rows, "in"); // Add(ms, eps) saves both
  const r = t.op([ad], rows, "in"); // Rsqrt saves x
  const xr = t.op([x, r], x.n, "in"); // Mul saves both
  return t.op([xr, t.param(width, trainable)], x.n, "in"); // Mul by weight saves both
}

/** One decoder linear (dense, 4-bit, with or without an adapter) on `x2` `[rows, in]`. */
// Linear.apply on x2 [N, I] → [N, O]: DenseLinear, QuantizedLinear, LoRALinear on either.
export function traceLinear(t: Tape, x2: Sym, lin: LinearPlan, rows: number): Sym {
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
  const sum = t.op([y, scaled], rows * outF, "in"); // Add
  if (!lin.magnitude) return sum;
  // DoRA: (y + scaled) · m / ‖W + s·BA‖. The norm is a customGrad over A and B that saves
  // nothing and answers zero gradients for both; RealDiv and the row-wise Mul save their inputs.
  const norm = t.op([t.param(rank * inF, true), t.param(outF * rank, true)], outF, "none");
  const c = t.op([t.param(outF, true), norm], outF, "in");
  return t.op([sum, c], rows * outF, "in");
}

/** RoPE on `x` (q or k after the head reshape). */
// applyRope on x [B, h, T, d] (X elements): split halves, neg, concat, ·cos + ·sin.
export function traceRope(t: Tape, x: Sym, dm: Dims): Sym {
  const X = x.n;
  t.op([x], X, "none"); // SplitV (one gradient: concat of both halves' dys)
  const half = { n: X / 2, g: x.g };
  const neg = t.op([half], X / 2, "none"); // Neg
  const rot = t.op([neg, half], X, "in"); // Concat saves all inputs
  const a = t.op([x, t.leaf(dm.T * dm.d)], X, "in"); // Mul by cos [T, d]
  const b = t.op([rot, t.leaf(dm.T * dm.d)], X, "in"); // Mul by sin [T, d]
  return t.op([a, b], X, "in"); // Add
}

/** The attention half of a block on `x` `[B, T, D]`. */
// LlamaBlock.attention on x [B, T, D].
export function traceAttention(t: Tape, x: Sym, dm: Dims, lins: Record<string, LinearPlan>): Sym {
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

/** The MLP half of a block. */
// LlamaBlock.mlp: down(silu(gate(x)) · up(x)).
export function traceMlp(t: Tape, x: Sym, dm: Dims, lins: Record<string, LinearPlan>): Sym {
  const { N, D, F } = dm;
  const x2 = t.op([x], N * D, "in"); // reshape
  const g = traceLinear(t, x2, lins.gate_proj, N);
  const sg = t.op([g], N * F, "out"); // Sigmoid saves its output
  const gs = t.op([g, sg], N * F, "in"); // g · σ(g)
  const act = t.op([gs, traceLinear(t, x2, lins.up_proj, N)], N * F, "in"); // · up(x)
  return t.op([traceLinear(t, act, lins.down_proj, N)], N * D, "in"); // down, reshape
}

/** One decoder block (two norms, attention, MLP, two residual adds). */
export function traceBlock(
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

/** The token embedding lookup. */
// LlamaForCausalLM.embed: reshape ids, gather rows, reshape.
export function traceEmbed(t: Tape, dm: Dims, trainable: boolean): Sym {
  const ids = t.op([t.leaf(dm.N)], dm.N, "in"); // reshape ids [B, T] → [N] (int32)
  const rows = t.op([t.param(dm.V * dm.D, trainable), ids], dm.N * dm.D, "in"); // GatherV2 saves table and indices
  return t.op([rows], dm.N * dm.D, "in"); // reshape [B, T, D]
}

/** Final norm, LM head and the loss. */
// head (final norm, lm_head, reshape) + loss (reshape [N, V], nllSum, ÷ divisor).
export function traceHead(
  t: Tape,
  h: Sym,
  dm: Dims,
  o: { normTrainable: boolean; headTrainable: boolean },
): Sym {
  const { N, D, V } = dm;
  const x = t.op([traceNorm(t, h, N, D, o.normTrainable)], N * D, "in"); // reshape [N, D]
  const logits = t.op([x, t.param(V * D, o.headTrainable)], N * V, "in"); // lm_head (or tied embedding) matmul
  let z = t.op([logits], N * V, "in"); // reshape [B, T, V]
  z = t.op([z], N * V, "in"); // reshape [N, V] (loss)
  // The fused cross-entropy (lib/train/loss.ts, wasm): one custom op that saves the logits; targets and
  // loss weights are read on the host, so there is no one-hot and no other [N, V] temporary.
  const loss = t.op([z], 1, "in");
  return t.op([loss, t.leaf(1)], 1, "in"); // ÷ divisor
}
