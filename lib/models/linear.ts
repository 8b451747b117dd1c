/**
 * The Linear layer interface every projection in a model implements, and the
 * dense (full-precision) implementation.
 *
 * Quantized layers (`lib/quant/`) and adapters (`lib/adapters/`) implement the
 * same interface, so a block does not know which kind it holds.
 *
 * Dimension legend: N rows (batch·sequence), I in features, O out features.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { TensorReader } from "../io/safetensors_reader.ts";

/** A named trainable tensor. */
export interface NamedParam {
  /** HF-style name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  variable: tf.Variable;
}

/** What `storage()` reports for `model.summary()`. */
export interface StorageInfo {
  /** Number of parameters represented. */
  params: number;
  /** Bytes used to store them (including quantization constants). */
  bytes: number;
  /** Storage kind ("fp32", "fp16", "nf4", …). */
  dtype: string;
}

/** `y = base(x) + scale · (x · Aᵀ) · Bᵀ` with `A: [R, I]`, `B: [O, R]` (what LoRA computes). */
export interface LowRankForm {
  base: Linear;
  a: tf.Variable;
  b: tf.Variable;
  scale: number;
  /**
   * Dropout on the adapter's input while training: its rate, and the layer's next dropout seed
   * (`tf.dropout(x, rate, undefined, seed)`, the stream `apply()` draws from).
   */
  dropout?: { rate: number; nextSeed: () => number };
}

/** A linear map `y = x Wᵀ` with `W: [O, I]` (HF / PyTorch layout). */
export interface Linear {
  /** Module path, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** `x: [N, I]` → `[N, O]`. */
  apply(x: tf.Tensor2D): tf.Tensor2D;
  /** Variables this layer trains (empty for frozen layers). */
  trainableParams(): NamedParam[];
  /** Every parameter with its storage, for summaries and memory accounting. */
  storage(): StorageInfo[];
  /** The full-precision weight `[O, I]` as a new tensor (the caller disposes it). */
  denseWeight(): tf.Tensor2D;
  /**
   * The input gradient of a frozen layer, `dx = dy · W`: `dy: [N, O]` → `[N, I]` (used by the
   * hand-written block backward, `llama_block_grad.ts`; layers without it train through the tape).
   */
  inputGrad?(dy: tf.Tensor2D): tf.Tensor2D;
  /**
   * Adapters that are a plain low-rank update over a frozen base say so here (for the hand-written
   * block backward), or say why not (merged, dropout while training, another kind).
   */
  lowRank?(): LowRankForm | string;
  /** Called by the trainer at the start of every optimizer step (adapters that sample per step). */
  beginStep?(step: number): void;
  dispose(): void;
}

/**
 * Builds the linear layer for one weight `[O, I]` of a checkpoint (`name` is the module
 * path, the weight is `${name}.weight`); `loadModel` uses the dense one, quantized loaders
 * (`lib/quant/quantized_loaders.ts`) supply their own.
 */
export type LinearFactory = (
  name: string,
  reader: TensorReader,
  shape: [number, number],
) => Promise<Linear>;

/**
 * Full-precision linear layer holding `W: [O, I]` in a `tf.Variable`.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { DenseLinear } from "./linear.ts";
 * await tf.setBackend("cpu");
 * const lin = new DenseLinear("proj", tf.tensor2d([[1, 0], [0, 2], [1, 1]]), { trainable: true });
 * const y = lin.apply(tf.tensor2d([[3, 4]])); // [1, 3]
 * if (y.dataSync().join() !== "3,8,7") throw new Error("bad matmul");
 * lin.dispose();
 * ```
 */
export class DenseLinear implements Linear {
  readonly weight: tf.Variable;
  readonly inFeatures: number;
  readonly outFeatures: number;
  trainable: boolean;

  /** Takes ownership of `weight` `[O, I]`. */
  constructor(readonly name: string, weight: tf.Tensor2D, options: { trainable?: boolean } = {}) {
    if (weight.rank !== 2) {
      throw new TypeError(`${name}: weight must be 2-D [out, in], got [${weight.shape}]`);
    }
    this.trainable = options.trainable ?? true;
    this.weight = tf.variable(weight, this.trainable, `${name}.weight#${crypto.randomUUID()}`);
    weight.dispose();
    [this.outFeatures, this.inFeatures] = weight.shape;
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    if (x.shape[1] !== this.inFeatures) {
      throw new TypeError(`${this.name}: input has ${x.shape[1]} features, expected ${this.inFeatures}`);
    }
    return tf.matMul(x, this.weight as tf.Tensor2D, false, true); // [N, O]
  }

  inputGrad(dy: tf.Tensor2D): tf.Tensor2D {
    return tf.matMul(dy, this.weight as tf.Tensor2D); // [N, I]
  }

  trainableParams(): NamedParam[] {
    return this.trainable ? [{ name: `${this.name}.weight`, variable: this.weight }] : [];
  }

  storage(): StorageInfo[] {
    return [{ params: this.weight.size, bytes: this.weight.size * 4, dtype: "fp32" }];
  }

  denseWeight(): tf.Tensor2D {
    return this.weight.clone() as tf.Tensor2D;
  }

  dispose(): void {
    this.weight.dispose();
  }
}
