/**
 * A frozen linear layer whose weight lives packed (4-bit) in host memory,
 * outside the tfjs/wasm heap. Each use dequantizes it straight into a temporary
 * tensor on the wasm heap (native kernel when built), multiplies and frees it;
 * the backward pass (input gradient only — the base is frozen) dequantizes
 * again instead of keeping the fp32 weight alive, except in a checkpointed
 * block's recompute, which keeps it for the backward that follows at once. This is
 * QLoRA's "compute in 16/32-bit, store in 4-bit", applied to our small heap.
 *
 * Dimension legend: N rows, I in features, O out features.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Linear, NamedParam, StorageInfo } from "../models/linear.ts";
import { timedSpan } from "../engine/kernel_timer.ts";
import { filledTensor } from "../engine/heap_tensor.ts";
import { type ComputeDtype, withComputeDtype } from "./compute_dtype.ts";

/** Live / peak count of dequantized weight tensors (the memory probe used by tests). */
export interface DequantStats {
  live: number;
  peak: number;
  /** Largest number of dequantized elements alive at once. */
  peakElements: number;
  /** Dequantizations since the last reset. */
  count: number;
}

const stats: DequantStats = { live: 0, peak: 0, peakElements: 0, count: 0 };
let liveElements = 0;

/** The dequantization probe: how many dequantized weights existed at once. */
export function dequantStats(): DequantStats {
  return { ...stats };
}

/** Resets the probe's peaks and count. */
export function resetDequantStats(): void {
  stats.peak = stats.live;
  stats.peakElements = liveElements;
  stats.count = 0;
}

/** Weights dequantized in a recompute pass and kept for its backward (see {@linkcode keepDequantizedForBackward}). */
const kept = new Set<tf.Tensor>();
let keepDepth = 0;
let keptElements = 0;

/**
 * Most fp32 bytes of weights kept for the backward at once. A 1.1B block (176 MB) is kept whole; a 7B
 * block (808 MB) only up to this, the rest is dequantized again, so the heap's high-water mark grows by
 * at most this much.
 */
export const KEEP_DEQUANTIZED_BYTES = 256 * 1024 * 1024;

/**
 * Runs `fn` (a forward pass that is about to be differentiated, such as a block's recompute under
 * gradient checkpointing) so that each quantized layer keeps the weight it dequantizes for its
 * backward instead of dequantizing again: 2 dequantizations per layer per step instead of 3, within
 * {@linkcode KEEP_DEQUANTIZED_BYTES}. The kept weights are freed by the backward, or by
 * {@linkcode releaseKeptWeights}.
 *
 * @example
 * ```ts
 * import { keepDequantizedForBackward, releaseKeptWeights } from "./quantized_linear.ts";
 * // Any forward pass; quantized layers inside it keep their dequantized weights for the backward.
 * const y = keepDequantizedForBackward(() => 6 * 7);
 * releaseKeptWeights(); // after the backward: frees whatever it did not use
 * if (y !== 42) throw new Error();
 * ```
 */
export function keepDequantizedForBackward<T>(fn: () => T): T {
  keepDepth++;
  try {
    return fn();
  } finally {
    keepDepth--;
  }
}

/**
 * Frees weights kept by {@linkcode keepDequantizedForBackward} whose backward never ran.
 *
 * @example
 * ```ts
 * import { dequantStats, releaseKeptWeights } from "./quantized_linear.ts";
 * releaseKeptWeights();
 * if (dequantStats().live !== 0) throw new Error("nothing should be alive");
 * ```
 */
export function releaseKeptWeights(): void {
  for (const w of kept) {
    kept.delete(w);
    keptElements -= w.size;
    stats.live--;
    liveElements -= w.size;
    w.dispose();
  }
}

/** Fills `out` (`[O·I]`, row-major) with the dequantized weight. */
export type DequantizeInto = (out: Float32Array) => void;

/**
 * On the webgpu backend: the dequantized weight `[O, I]` made on the GPU from packed data
 * uploaded once (see lib/engine/webgpu_dequant.ts), and how to free that upload.
 */
export interface DeviceDequantizer {
  weight: () => tf.Tensor;
  release: () => void;
}

/** A linear layer backed by a packed weight and a dequantizer. */
export class QuantizedLinear implements Linear {
  private readonly dequantizeInto: DequantizeInto;
  private readonly device?: DeviceDequantizer;
  /** Precision of this layer's matmuls (set through `setComputeDtype` / `loadModel`'s `computeDtype`). */
  computeDtype: ComputeDtype = "float32";

  /**
   * @param dequantize the weight `[O, I]` as fp32 (row-major): a function returning a fresh array,
   *   or `{ into }` writing it into a given buffer (then it goes straight to the wasm heap).
   *   `{ into, device }` also dequantizes on the GPU when the backend is webgpu.
   * @param storageInfo what the packed form costs (for summaries).
   */
  constructor(
    readonly name: string,
    readonly outFeatures: number,
    readonly inFeatures: number,
    dequantize: (() => Float32Array) | { into: DequantizeInto; device?: DeviceDequantizer },
    private readonly storageInfo: StorageInfo,
  ) {
    this.dequantizeInto = typeof dequantize === "function" ? (out) => out.set(dequantize()) : dequantize.into;
    if (typeof dequantize !== "function") this.device = dequantize.device;
  }

  /** `a · w` or `a · wᵀ` at this layer's compute dtype. */
  private matMul(a: tf.Tensor2D, w: tf.Tensor2D, transposeW: boolean): tf.Tensor2D {
    return withComputeDtype(this.computeDtype, () => tf.matMul(a, w, false, transposeW));
  }

  /** A fresh dequantized weight tensor `[O, I]`, counted by the probe until {@linkcode release}. */
  private weightTensor(): tf.Tensor2D {
    const w = timedSpan(
      "dequantize",
      () =>
        this.device && tf.getBackend() === "webgpu"
          ? this.device.weight()
          : filledTensor([this.outFeatures, this.inFeatures], this.dequantizeInto),
    ) as tf.Tensor2D;
    stats.live++;
    stats.count++;
    liveElements += w.size;
    stats.peak = Math.max(stats.peak, stats.live);
    stats.peakElements = Math.max(stats.peakElements, liveElements);
    return w;
  }

  private release(w: tf.Tensor): void {
    stats.live--;
    liveElements -= w.size;
    w.dispose();
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    if (x.shape[1] !== this.inFeatures) {
      throw new TypeError(`${this.name}: input has ${x.shape[1]} features, expected ${this.inFeatures}`);
    }
    const f = tf.customGrad((input) => {
      const w = this.weightTensor();
      const y = this.matMul(input as tf.Tensor2D, w, true); // [N, O]
      let keep: tf.Tensor2D | undefined;
      if (keepDepth > 0 && 4 * (keptElements + w.size) <= KEEP_DEQUANTIZED_BYTES) {
        keep = tf.keep(w);
        kept.add(keep);
        keptElements += w.size;
      } else this.release(w);
      return {
        value: y,
        // Frozen weight: only dL/dx = dy · W, with the kept weight or a recomputed one.
        gradFunc: (dy: tf.Tensor) => {
          const reuse = keep !== undefined && kept.delete(keep);
          if (reuse) keptElements -= keep!.size;
          const w2 = reuse ? keep! : this.weightTensor();
          keep = undefined;
          const dx = this.matMul(dy as tf.Tensor2D, w2, false); // [N, I]
          this.release(w2);
          return dx;
        },
      };
    });
    return f(x) as tf.Tensor2D;
  }

  /** `dx = dy · W` with a freshly dequantized `W`, freed at once: `dy: [N, O]` → `[N, I]`. */
  inputGrad(dy: tf.Tensor2D): tf.Tensor2D {
    const w = this.weightTensor();
    try {
      return this.matMul(dy, w, false); // [N, I]
    } finally {
      this.release(w);
    }
  }

  trainableParams(): NamedParam[] {
    return [];
  }

  storage(): StorageInfo[] {
    return [this.storageInfo];
  }

  denseWeight(): tf.Tensor2D {
    return filledTensor([this.outFeatures, this.inFeatures], this.dequantizeInto) as tf.Tensor2D;
  }

  dispose(): void {
    this.device?.release();
  }
}
