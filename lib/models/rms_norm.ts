/**
 * RMSNorm: `x · rsqrt(mean(x²) + eps) · w` over the last axis (computed in fp32); Gemma's
 * variant scales by `1 + w` (`unitOffset`).
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { NamedParam, StorageInfo } from "./linear.ts";

/**
 * Root-mean-square layer norm with a learned scale `w: [D]`.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { RMSNorm } from "./rms_norm.ts";
 * await tf.setBackend("cpu");
 * const n = new RMSNorm("norm", tf.ones([2]), 0);
 * const y = n.apply(tf.tensor2d([[3, 4]])).dataSync(); // rms = sqrt(12.5)
 * if (Math.abs(y[0] - 3 / Math.sqrt(12.5)) > 1e-6) throw new Error("bad norm");
 * n.dispose();
 * ```
 */
export class RMSNorm {
  readonly weight: tf.Variable;
  trainable = true;

  /** Takes ownership of `weight` `[D]`; with `unitOffset` the scale is `1 + weight` (Gemma). */
  constructor(readonly name: string, weight: tf.Tensor, readonly eps: number, readonly unitOffset = false) {
    this.weight = tf.variable(weight, true, `${name}.weight#${crypto.randomUUID()}`);
    weight.dispose();
  }

  /** `x: [..., D]` → same shape. */
  apply<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => {
      const ms = tf.mean(tf.square(x), -1, true);
      const scale = this.unitOffset ? tf.add(this.weight, 1) : this.weight;
      return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, this.eps))), scale) as T;
    });
  }

  trainableParams(): NamedParam[] {
    return this.trainable ? [{ name: `${this.name}.weight`, variable: this.weight }] : [];
  }

  storage(): StorageInfo[] {
    return [{ params: this.weight.size, bytes: this.weight.size * 4, dtype: "fp32" }];
  }

  dispose(): void {
    this.weight.dispose();
  }
}
