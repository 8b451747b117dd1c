/**
 * The additive bias `b: [O]` of a projection (`nn.Linear(..., bias=True)`: Qwen2's q/k/v,
 * Llama's `attention_bias` / `mlp_bias`). It is held by the block beside the projection,
 * not inside it, so the projection can be dense, 4-bit or carry an adapter: PEFT's LoRA
 * computes `base(x) + ΔW·x` where `base(x) = W·x + b`, and merging folds `ΔW` into `W`
 * while the bias stays as it is, which is exactly what keeping it outside gives.
 *
 * Dimension legend: N rows, O out features.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { NamedParam, StorageInfo } from "./linear.ts";

/**
 * A learned bias `b: [O]` added to a projection's output; its HF tensor is `${name}.bias`.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { Bias } from "./bias.ts";
 * await tf.setBackend("cpu");
 * const b = new Bias("model.layers.0.self_attn.q_proj", tf.tensor1d([1, -1]));
 * const y = b.apply(tf.tensor2d([[3, 4], [5, 6]])); // [N, O] + [O]
 * if (y.dataSync().join() !== "4,3,6,5") throw new Error("bad bias");
 * if (b.trainableParams()[0].name !== "model.layers.0.self_attn.q_proj.bias") throw new Error("name");
 * b.dispose();
 * ```
 */
export class Bias {
  readonly variable: tf.Variable;
  /** Whether {@linkcode Bias.trainableParams} lists it (false once the base is frozen). */
  trainable: boolean;

  /** Takes ownership of `values` `[O]`; `name` is the module path (`…q_proj`). */
  constructor(readonly name: string, values: tf.Tensor, options: { trainable?: boolean } = {}) {
    if (values.rank !== 1) throw new TypeError(`${name}.bias must be 1-D [out], got [${values.shape}]`);
    this.trainable = options.trainable ?? true;
    this.variable = tf.variable(values, true, `${name}.bias#${crypto.randomUUID()}`);
    values.dispose();
  }

  /** Number of outputs `O`. */
  get size(): number {
    return this.variable.size;
  }

  /** `y: [N, O]` → `y + b`. */
  apply(y: tf.Tensor2D): tf.Tensor2D {
    if (y.shape[1] !== this.size) {
      throw new TypeError(`${this.name}.bias has ${this.size} values, the projection gives ${y.shape[1]}`);
    }
    return tf.add(y, this.variable) as tf.Tensor2D;
  }

  trainableParams(): NamedParam[] {
    return this.trainable ? [{ name: `${this.name}.bias`, variable: this.variable }] : [];
  }

  storage(): StorageInfo[] {
    return [{ params: this.size, bytes: this.size * 4, dtype: "fp32" }];
  }

  dispose(): void {
    this.variable.dispose();
  }
}
