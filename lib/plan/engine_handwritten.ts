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
  /**
   * The forward's peak besides `saved` and the output: the larger of its two tidies at their ends
   * (the attention's less the MLP's saved tensors, not yet made).
   */
  forwardHeld: number;
  /** The backward's tidy at its end, besides the returned `dh` and parameter gradients. */
  backwardHeld: number;
  /** Largest 4-bit weight dequantized at once (freed right after its matmul), `O·I`. */
  dequantized: number;
}

/**
 * `project()`: what the forward's tidy holds besides `low` (saved) and `y`: the base output and
 * `low·Bᵀ` when a fused `addScaled` (LoRA, bias or residual) makes `y`.
 */
function projectForward(N: number, lin: LinearPlan, bias: boolean, residual: boolean): number {
  if (lin.rank === 0 && !bias && !residual) return 0;
  return N * lin.outF + (lin.rank > 0 ? N * lin.outF : 0);
}

/**
 * `projectBack()`: every tensor it makes besides the parameter gradients: the base `dx` term, and
 * with a LoRA `dy·B`, `·scale` (dlow), `dyᵀ·low` before `·scale` and the `dlow·A` term.
 */
function projectBackward(N: number, lin: LinearPlan): number {
  return N * lin.inF + (lin.rank > 0 ? 2 * N * lin.rank + lin.outF * lin.rank + N * lin.inF : 0);
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
  // The fused kernels (block_kernels.ts) read Gemma's `1 + w` in place: no extra tensor.
  const pf = (n: string, residual = false) => projectForward(N, L(n), o.biases.includes(n), residual);
  const pb = (n: string) => projectBackward(N, L(n));
  const sumOf = (n: string, width: number) => (L(n).rank > 0 ? N * width : 0); // addN of two terms
  const lowOf = (ns: string[]) => ns.reduce((t, n) => t + N * L(n).rank, 0);
  // Forward, two tidies. Attention (ends holding r1, q, k, v, p, merged, h1 and the q/k/v/o lows,
  // i.e. `saved` less the MLP's part); the masked scores before the softmax are freed inside it.
  const savedMlp = N + 2 * N * F + lowOf(["gate_proj", "up_proj", "down_proj"]); // r2, gate, up, lows
  const attention = N * D + N * D + // x reshape, normed x
    pf("q_proj") + pf("k_proj") + pf("v_proj") + N * (q + 2 * k) + // q/k/v outputs (rotated: saved)
    N * q + N * k + S + // grouped q and k reshapes, scores
    N * k + N * q + // grouped v reshape, probs·v (merged is saved)
    pf("o_proj", true); // o_proj (+ x: h1, saved)
  const mlp = N * D + pf("gate_proj") + pf("up_proj") + 2 * N * F + // norm 2, gate/up (saved), s, f(gate)·up
    pf("down_proj", true) + N * D; // down (+ h1; its reshape is the output)
  const forwardHeld = Math.max(attention - savedMlp, mlp);
  // Backward, one tidy (its peak at its end).
  const backwardHeld = N * D + N * D + // dOut and x reshapes
    2 * N * F + pb("down_proj") + sumOf("down_proj", F) + 2 * N * F + // s, act, dAct, dGate and dUp
    N * D + pb("gate_proj") + pb("up_proj") + N * D + N * D + // n2, dn2, dh1
    pb("o_proj") + sumOf("o_proj", q) + N * q + // dMerged, dCtx
    N * k + S + N * k + S + // v reshape, dP, dV, dS
    N * k + N * q + N * q + N * k + // dQ, dK with their operand reshapes
    N * q + 2 * N * k + // dq, dk, dv
    N * D + pb("q_proj") + pb("k_proj") + pb("v_proj") + N * D + // n1, dn1
    N * D; // norm 1's dx + dh1 (its reshape is dh)
  const dequantized = Math.max(...names.map((n) => (L(n).quantized ? L(n).inF * L(n).outF : 0)));
  return { saved, forwardHeld, backwardHeld, dequantized };
}
