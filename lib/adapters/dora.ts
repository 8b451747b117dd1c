/**
 * DoRA: weight-decomposed LoRA (Liu et al. 2024, arXiv:2402.09353; PEFT's `use_dora: true`).
 * The adapted weight is a magnitude times a direction:
 *
 * ```text
 * V  = W + s·B A                 [O, I]   (s = alpha / r, or alpha / √r with rsLoRA)
 * W' = m ⊙ V / ‖V‖_row           m: [O], ‖V‖_row: the L2 norm of each output row over I
 * y  = x W'ᵀ = c ⊙ (x Wᵀ + s·x Aᵀ Bᵀ),   c = m / ‖V‖_row
 * ```
 *
 * `m` (PEFT's `lora_magnitude_vector`) starts at the row norms of the base weight, so
 * with `B = 0` the layer equals its base. As PEFT does (paper section 4.3), `‖V‖_row` is
 * detached: a constant for backpropagation, recomputed from the current factors on every
 * forward. Works on dense and 4-bit bases: the norm is that of the dequantized weight.
 *
 * The norm is computed without forming `V`: `‖V_o‖² = ‖W_o‖² + 2s·(B ⊙ W Aᵀ)_o·1 +
 * s²·(B (A Aᵀ) ⊙ B)_o·1`, with `‖W_o‖²` cached at attach time (the base is frozen) and
 * `W Aᵀ` taken from the base layer's own matmul, so a 4-bit base is not dequantized
 * into a second `[O, I]` tensor. With dropout while training, PEFT's formula is kept:
 * `y = x Wᵀ + (c − 1) ⊙ x̃ Wᵀ + c ⊙ s·x̃ Aᵀ Bᵀ` with `x̃ = dropout(x)`.
 *
 * Dimension legend: N rows, I in features, O out features, R rank.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Linear, NamedParam, StorageInfo } from "../models/linear.ts";
import type { PeftLayerConfig, PeftTensor } from "./adapter_layer.ts";
import { type LoRALayerOptions, LoRALinear } from "./lora.ts";

/** A linear layer with a DoRA adapter (a LoRA adapter plus a trainable magnitude per output row). */
export class DoRALinear extends LoRALinear {
  override readonly kind: string = "dora";
  /** PEFT's `lora_magnitude_vector`, `[O]`. */
  readonly magnitude: tf.Variable<tf.Rank.R1>;
  /** `‖W_o‖²` of the frozen (dequantized) base weight, `[O]`. */
  private readonly baseNormSq: tf.Tensor1D;

  /**
   * @example
   * ```ts
   * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
   * import { initEngine } from "../engine/backend.ts";
   * import { DenseLinear } from "../models/linear.ts";
   * import { DoRALinear } from "./dora.ts";
   * await initEngine({ backend: "cpu" });
   * const base = new DenseLinear("proj", tf.tensor2d([[3, 4], [0, 2]]), { trainable: false });
   * const dora = new DoRALinear(base, { r: 1, alpha: 1 });
   * // m starts at the row norms of W, so the layer equals its base while B = 0
   * if (dora.magnitude.dataSync().join() !== "5,2") throw new Error("magnitude init");
   * const y = dora.apply(tf.tensor2d([[1, 1]]));
   * if (y.dataSync().join() !== "7,2") throw new Error(`y=${y.dataSync()}`);
   * y.dispose();
   * dora.dispose();
   * ```
   */
  constructor(base: Linear, options: LoRALayerOptions) {
    super(base, options);
    try {
      this.baseNormSq = tf.tidy(() => tf.sum(tf.square(base.denseWeight()), 1) as tf.Tensor1D);
      const m0 = tf.sqrt(this.baseNormSq) as tf.Tensor1D;
      this.magnitude = tf.variable(m0, true, `${base.name}.lora_magnitude_vector#${crypto.randomUUID()}`);
      m0.dispose();
    } catch (e) {
      super.disposeAdapter();
      throw e;
    }
  }

  /**
   * `‖W + s·B A‖` per output row, `[O]`, from the current factors; detached (its
   * gradient is zero), as PEFT's `weight_norm.detach()`.
   */
  weightNorm(): tf.Tensor1D {
    const s = this.scaling;
    const f = tf.customGrad((a, b) => {
      const value = tf.tidy(() => {
        const a2 = a as tf.Tensor2D, b2 = b as tf.Tensor2D; // [R, I], [O, R]
        const wAt = tf.transpose(this.base.apply(a2)); // (A Wᵀ)ᵀ = W Aᵀ: [O, R]
        const cross = tf.sum(tf.mul(b2, wAt), 1); // [O]
        const quad = tf.sum(tf.mul(tf.matMul(b2, tf.matMul(a2, a2, false, true)), b2), 1); // [O]
        const sq = tf.add(this.baseNormSq, tf.add(tf.mul(cross, 2 * s), tf.mul(quad, s * s)));
        return tf.sqrt(tf.relu(sq)); // relu: a rounding error must not make √ NaN
      });
      return { value, gradFunc: () => [tf.zerosLike(a as tf.Tensor), tf.zerosLike(b as tf.Tensor)] };
    });
    return f(this.loraA, this.loraB) as tf.Tensor1D;
  }

  override apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const y = this.base.apply(x); // [N, O]
      if (this.merged) return y;
      const c = tf.div(this.magnitude, this.weightNorm()); // [O]
      const dropping = this.training && this.dropout > 0;
      const xin = dropping ? tf.dropout(x, this.dropout, undefined, this.dropoutSeed++) as tf.Tensor2D : x;
      const low = tf.matMul(tf.matMul(xin, this.loraA as tf.Tensor2D, false, true), this.loraB, false, true);
      const lora = tf.mul(low, this.scaling); // [N, O]
      if (!dropping) return tf.mul(tf.add(y, lora), c) as tf.Tensor2D;
      return tf.add(y, tf.add(tf.mul(this.base.apply(xin), tf.sub(c, 1)), tf.mul(lora, c))) as tf.Tensor2D;
    });
  }

  /**
   * The effective update `W' − W = c ⊙ (W + s·B A) − W`, `[O, I]` (not low-rank:
   * DoRA rescales every row), so `merge()` and `denseWeight()` give PEFT's merged weight.
   */
  override delta(): tf.Tensor2D {
    return tf.tidy(() => {
      const w = this.base.denseWeight();
      const v = tf.add(w, tf.mul(tf.matMul(this.loraB, this.loraA), this.scaling)); // [O, I]
      const norm = tf.sqrt(tf.sum(tf.square(v), 1)); // [O]
      const c = tf.reshape(tf.div(this.magnitude, norm), [-1, 1]); // [O, 1]
      return tf.sub(tf.mul(v, c), w) as tf.Tensor2D;
    });
  }

  override trainableParams(): NamedParam[] {
    if (this.merged) return [];
    return [
      ...super.trainableParams(),
      { name: `${this.name}.lora_magnitude_vector`, variable: this.magnitude },
    ];
  }

  /** The factors and the magnitude (params), plus the cached `‖W_o‖²` `[O]` in the bytes. */
  override storage(): StorageInfo[] {
    const n = this.loraA.size + this.loraB.size + this.magnitude.size;
    return [...this.base.storage(), {
      params: n,
      bytes: (n + this.baseNormSq.size) * 4,
      dtype: "adapter-fp32",
    }];
  }

  /** LoRA's tensors plus `lora_magnitude_vector [O]` (PEFT's saved key), with `use_dora: true`. */
  override exportPeft(rank?: number): { config: PeftLayerConfig; tensors: PeftTensor[] } {
    const out = super.exportPeft(rank);
    return {
      config: { ...out.config, useDora: true },
      tensors: [...out.tensors, {
        suffix: "lora_magnitude_vector",
        shape: [...this.magnitude.shape],
        data: this.magnitude.dataSync().slice() as Float32Array,
      }],
    };
  }

  /** Sets A, B and the magnitude from PEFT tensors. */
  override importPeft(tensors: ReadonlyMap<string, Float32Array>): void {
    const m = tensors.get("lora_magnitude_vector");
    if (!m) {
      throw new RangeError(`${this.name}: use_dora is true but the file has no "lora_magnitude_vector"`);
    }
    super.importPeft(tensors);
    tf.tidy(() => this.magnitude.assign(tf.tensor1d(m)));
  }

  override disposeAdapter(): void {
    super.disposeAdapter();
    this.magnitude.dispose();
    this.baseNormSq.dispose();
  }
}
