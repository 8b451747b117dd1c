/**
 * A frozen linear layer whose weight lives packed (4-bit) in host memory,
 * outside the tfjs/wasm heap. Each use dequantizes it into a temporary tensor,
 * multiplies and frees it; the backward pass (input gradient only — the base is
 * frozen) dequantizes again instead of keeping the fp32 weight alive. This is
 * QLoRA's "compute in 16/32-bit, store in 4-bit", applied to our small heap.
 *
 * Dimension legend: N rows, I in features, O out features.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Linear, NamedParam, StorageInfo } from "../models/linear.ts";
import { timedSpan } from "../engine/kernel_timer.ts";

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

/** A linear layer backed by a packed weight and a dequantizer. */
export class QuantizedLinear implements Linear {
  /**
   * @param dequantize returns the weight `[O, I]` as fp32 (row-major), freshly computed.
   * @param storageInfo what the packed form costs (for summaries).
   */
  constructor(
    readonly name: string,
    readonly outFeatures: number,
    readonly inFeatures: number,
    private readonly dequantize: () => Float32Array,
    private readonly storageInfo: StorageInfo,
  ) {}

  /** A fresh dequantized weight tensor, counted by the probe until {@linkcode release}. */
  private weightTensor(): tf.Tensor2D {
    const w = timedSpan(
      "dequantize",
      () => tf.tensor2d(this.dequantize(), [this.outFeatures, this.inFeatures]),
    );
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
      const y = tf.matMul(input as tf.Tensor2D, w, false, true); // [N, O]
      this.release(w);
      return {
        value: y,
        // Frozen weight: only dL/dx = dy · W, recomputing W rather than storing it.
        gradFunc: (dy: tf.Tensor) => {
          const w2 = this.weightTensor();
          const dx = tf.matMul(dy as tf.Tensor2D, w2); // [N, I]
          this.release(w2);
          return dx;
        },
      };
    });
    return f(x) as tf.Tensor2D;
  }

  trainableParams(): NamedParam[] {
    return [];
  }

  storage(): StorageInfo[] {
    return [this.storageInfo];
  }

  denseWeight(): tf.Tensor2D {
    return tf.tensor2d(this.dequantize(), [this.outFeatures, this.inFeatures]);
  }

  dispose(): void {}
}
