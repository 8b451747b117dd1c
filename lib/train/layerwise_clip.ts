/**
 * Gradient clipping for layer-wise updates, where each block is stepped as soon as its
 * gradients exist and a full set of gradients is never held (`train({ layerwise: true })`).
 *
 * Clipping by the global norm `‖g‖ = √Σ_blocks ‖g_b‖²` multiplies every gradient by
 * `c = min(1, maxGradNorm / ‖g‖)`, but the first block is stepped before the last
 * block's gradient exists. Three ways round it (`layerwiseClip`):
 * - `"prepass"` (default, exact): a first backward pass that only sums each block's squared
 *   norm and frees the gradient at once (as LOMO does), then the pass that updates with the
 *   exact `c`. Costs one more forward + backward per step, no extra memory (one block's
 *   gradients at a time). When the divergence guard's prepass runs anyway
 *   (`divergence.layerwiseCheck: "prepass"`, the default), the norm comes from that same pass,
 *   at no extra cost.
 * - `"previous"`: `c` from the previous step's global norm (measured during its updating
 *   pass) times {@linkcode PREVIOUS_NORM_SAFETY}; no extra pass. The first step of a run (and
 *   of a resumed run) has no previous norm and takes a prepass.
 * - `"per-block"`: each block's own norm clipped to its share of the budget,
 *   `maxGradNorm · √(n_b / n)` for a block of `n_b` of the `n` trainable elements, so the
 *   global norm after clipping is at most `maxGradNorm`; no extra pass, but blocks are scaled
 *   unequally, which changes the update's direction.
 * @module
 */

/** How layer-wise updates clip gradients (see the module docs). */
export type LayerwiseClip = "prepass" | "previous" | "per-block";

/** The accepted `layerwiseClip` values. */
export const LAYERWISE_CLIPS: readonly LayerwiseClip[] = ["prepass", "previous", "per-block"];

/**
 * `"previous"` assumes this step's norm is at most this multiple of the previous step's
 * (the norm of consecutive steps changes by a few percent once training settles).
 */
export const PREVIOUS_NORM_SAFETY = 1.1;

/** What {@linkcode layerwiseClipScale} needs to know about the step and the block. */
export interface ClipContext {
  /** Clip threshold; `<= 0` or `Infinity` turns clipping off. */
  maxGradNorm: number;
  /** This step's global norm (from a prepass), when known. */
  globalNorm?: number;
  /** The previous step's global norm, when known. */
  previousNorm?: number;
  /** Squared norm of this block's gradients. */
  blockSquares: number;
  /** Elements in this block and in all trainable parameters. */
  blockSize: number;
  totalSize: number;
}

/**
 * The factor a block's gradients are multiplied by before its update.
 *
 * @example
 * ```ts
 * import { layerwiseClipScale } from "./layerwise_clip.ts";
 * const base = { maxGradNorm: 1, blockSquares: 4, blockSize: 25, totalSize: 100 };
 * const near = (a: number, b: number) => Math.abs(a - b) < 1e-6;
 * if (!near(layerwiseClipScale("prepass", { ...base, globalNorm: 4 }), 0.25)) throw new Error("1 / 4");
 * if (layerwiseClipScale("prepass", { ...base, globalNorm: 0.5 }) !== 1) throw new Error("below: 1");
 * // per-block: a quarter of the elements gets √(1/4) = 0.5 of the budget; its norm is 2
 * if (!near(layerwiseClipScale("per-block", base), 0.25)) throw new Error("0.5 / 2");
 * if (!near(layerwiseClipScale("previous", { ...base, previousNorm: 2 }), 1 / 2.2)) throw new Error("safety");
 * ```
 */
export function layerwiseClipScale(mode: LayerwiseClip, c: ClipContext): number {
  const { maxGradNorm } = c;
  if (!(maxGradNorm > 0) || maxGradNorm === Infinity) return 1;
  let norm: number | undefined;
  let limit = maxGradNorm;
  if (mode === "per-block") {
    norm = Math.sqrt(c.blockSquares);
    limit = maxGradNorm * Math.sqrt(c.blockSize / c.totalSize);
  } else if (mode === "previous" && c.previousNorm !== undefined && c.globalNorm === undefined) {
    norm = c.previousNorm * PREVIOUS_NORM_SAFETY;
  } else {
    norm = c.globalNorm;
  }
  if (norm === undefined) {
    throw new RangeError(
      `layerwiseClip "${mode}": the global gradient norm is not known for this step; run a prepass first`,
    );
  }
  return norm > limit ? limit / (norm + 1e-6) : 1; // the same factor as clipByGlobalNorm (torch's)
}

/** True when `mode` needs a norm-only backward pass before the updating pass of this step. */
export function needsNormPrepass(mode: LayerwiseClip, maxGradNorm: number, previousNorm?: number): boolean {
  if (!(maxGradNorm > 0) || maxGradNorm === Infinity) return false;
  return mode === "prepass" || (mode === "previous" && previousNorm === undefined);
}
