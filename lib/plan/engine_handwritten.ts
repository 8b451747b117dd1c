/**
 * Tensor counts of the hand-written block forward/backward (`lib/models/llama_block_grad.ts`) for
 * the engine estimate: what a block's forward keeps for its backward, and what each pass's `tidy`
 * holds at its end (every intermediate it created, reshapes included, since tfjs counts handles),
 * replayed from the code. Scalars (a few bytes) are left out.
 *
 * Elements; N = B·T rows, q = H·d, k = K·d (K kv heads), F the MLP width, S = B·H·T² scores.
 * @module
 */
import type { Dims, LinearPlan } from "./engine_tape.ts";

/** Element counts of one block on the hand-written path. */
export interface HandWrittenBlock {
  /** Kept from the forward for the backward (`blockSavedBytes` / 4). */
  saved: number;
  /** The forward's tidy at its end, besides `saved` and the output. */
  forwardHeld: number;
  /** The backward's tidy at its end, besides the returned `dh` and parameter gradients. */
  backwardHeld: number;
  /** Largest 4-bit weight dequantized at once (freed right after its matmul), `O·I`. */
  dequantized: number;
}

/** `y = x·Wᵀ (+ LoRA) (+ bias)`: what the forward's tidy holds besides `low` (saved) and `y`. */
function projectForward(N: number, lin: LinearPlan, bias: boolean): number {
  let held = 0;
  if (lin.rank > 0) held += 2 * N * lin.outF + N * lin.outF; // base y, low·Bᵀ, ·scale (the add is y)
  if (bias) held += N * lin.outF; // the pre-bias y
  return held;
}

/** `projectBack`: what its caller's tidy holds besides the returned `dx` and the parameter gradients. */
function projectBackward(N: number, lin: LinearPlan): number {
  if (lin.rank === 0) return 0;
  // dy·B, ·scale (dlow), dyᵀ·low before ·scale, base dx, dlow·A (the add is dx)
  return 2 * N * lin.rank + lin.outF * lin.rank + 2 * N * lin.inF;
}

/**
 * Counts for one block with the given projections (`lins` by HF name) and which of them carry a
 * bias; norms with Gemma's `1 + w` add `D` per use.
 *
 * @example
 * ```ts
 * import { handWrittenBlock } from "./engine_handwritten.ts";
 * const dm = { B: 1, T: 4, N: 4, D: 8, H: 2, K: 1, d: 4, F: 16, V: 32, L: 1 };
 * const lin = (name: string, inF: number, outF: number) =>
 *   ({ name, inF, outF, quantized: false, trainable: false, rank: 2 });
 * const lins = { q_proj: lin("q_proj", 8, 8), k_proj: lin("k_proj", 8, 4), v_proj: lin("v_proj", 8, 4),
 *   o_proj: lin("o_proj", 8, 8), gate_proj: lin("gate_proj", 8, 16), up_proj: lin("up_proj", 8, 16),
 *   down_proj: lin("down_proj", 16, 8) };
 * const b = handWrittenBlock(dm, lins, { biases: [], unitOffset: false });
 * // saved: 2N + N(q + 2k) + S + Nq + ND + 2NF + Σ N·r = 8 + 64 + 32 + 32 + 32 + 128 + 56
 * if (b.saved !== 352) throw new Error(`saved ${b.saved}`);
 * ```
 */
export function handWrittenBlock(
  dm: Dims,
  lins: Record<string, LinearPlan>,
  o: { biases: readonly string[]; unitOffset: boolean },
): HandWrittenBlock {
  const { B, T, N, D, H, K, d, F } = dm;
  const q = H * d, k = K * d, S = B * H * T * T;
  const L = (n: string) => lins[n];
  const names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
  const lowRows = names.reduce((s, n) => s + N * L(n).rank, 0);
  const saved = 2 * N + N * (q + 2 * k) + S + N * q + N * D + 2 * N * F + lowRows;
  const off = o.unitOffset ? D : 0;
  const pf = (n: string) => projectForward(N, L(n), o.biases.includes(n));
  const pb = (n: string) => projectBackward(N, L(n));
  const norm = 3 * N * D + 2 * N + off; // x², mean, +eps, x·r, ·w (the rsqrt is saved)
  const forwardHeld = N * D + norm + // x reshape, norm 1
    pf("q_proj") + pf("k_proj") + pf("v_proj") + N * (q + 2 * k) + // q/k/v outputs
    // head reshape + transpose (q, k; v's transpose is saved), grouped reshapes, scores, ·scale,
    // reshape, +mask, probs and v reshapes, probs·v, reshape, transpose
    2 * N * q + 2 * N * k + N * k + N * q + N * k + 4 * S + S + N * k + 3 * N * q +
    pf("o_proj") + N * D + // o_proj (h1 is saved)
    norm + pf("gate_proj") + pf("up_proj") + 3 * N * F + // norm 2, gate/up (saved), σ, f, f·up
    pf("down_proj") + N * D + N * D; // down, h1 + down (its reshape is the output)
  const rmsBack = 6 * N * D + N + off; // x̂, g, g·x̂, mean, x̂·mean, −, ·r
  const backwardHeld = 2 * N * D + // dOut and x reshapes
    3 * N * F + pb("down_proj") + N * F + N * F + 6 * N * F + // σ, f, act; down; dUp; dGate
    2 * N * D + off + pb("gate_proj") + pb("up_proj") + 3 * N * D + rmsBack + N * D + // n2 … dh1
    pb("o_proj") + N * q + 3 * N * q + // o_proj, dCtx
    S + N * k + S + N * k + 4 * S + N * H + // p, v reshapes, dP, dV, dS
    N * k + N * q + N * q + N * k + T * d + // dQ, dK with operand reshapes, −sin
    4 * N * q + 4 * N * k + 3 * N * k + // dq, dk, dv
    2 * N * D + off + pb("q_proj") + pb("k_proj") + pb("v_proj") + 3 * N * D + N * D + // n1 … addN
    rmsBack + N * D; // norm 1, + dh1 (its reshape is dh)
  const dequantized = Math.max(...names.map((n) => (L(n).quantized ? L(n).inF * L(n).outF : 0)));
  return { saved, forwardHeld, backwardHeld, dequantized };
}
