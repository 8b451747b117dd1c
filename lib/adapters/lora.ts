/**
 * LoRA: a frozen base linear plus a trainable low-rank update
 * `y = base(x) + scaling · (dropout(x) Aᵀ) Bᵀ`, `A: [R, I]`, `B: [O, R]`,
 * `scaling = alpha / R` (or `alpha / √R` with rsLoRA). Initialised like PEFT:
 * A Kaiming-uniform(a=√5) i.e. U(−1/√I, 1/√I), B zeros, so training starts at the base.
 *
 * Dimension legend: N rows, I in features, O out features, R rank.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import {
  DenseLinear,
  type Linear,
  type LowRankForm,
  type NamedParam,
  type StorageInfo,
} from "../models/linear.ts";
import type { AdapterLayer, PeftLayerConfig, PeftTensor } from "./adapter_layer.ts";

/** Options for {@linkcode LoRALinear}. */
export interface LoRALayerOptions {
  /** Rank R. */
  r: number;
  /** Scaling numerator. */
  alpha: number;
  /** Dropout on the adapter input while training. @default {0} */
  dropout?: number;
  /** Use alpha/√r (rsLoRA) instead of alpha/r. @default {false} */
  rslora?: boolean;
  /** Seed for A's initialisation and dropout. @default {0} */
  seed?: number;
}

/** Uniform Kaiming(a=√5) init for `[rows, fanIn]`, as PyTorch/PEFT. */
export function kaimingUniformA(rows: number, fanIn: number, seed: number): tf.Tensor2D {
  const bound = 1 / Math.sqrt(fanIn);
  return tf.randomUniform([rows, fanIn], -bound, bound, "float32", seed) as tf.Tensor2D;
}

/**
 * Trainable factors for `base` at rank `r`, initialised like PEFT:
 * `A: [r, I]` Kaiming-uniform, `B: [O, r]` zeros (shared by LoRA and DyLoRA).
 */
export function initFactors(
  base: Linear,
  r: number,
  seed: number,
): [tf.Variable<tf.Rank.R2>, tf.Variable<tf.Rank.R2>] {
  const id = crypto.randomUUID();
  const a0 = kaimingUniformA(r, base.inFeatures, seed);
  const b0 = tf.zeros([base.outFeatures, r]) as tf.Tensor2D;
  // tf.variable shares the initial buffer; dispose the handles so only the variables own it.
  const a = tf.variable(a0, true, `${base.name}.lora_A#${id}`);
  const b = tf.variable(b0, true, `${base.name}.lora_B#${id}`);
  a0.dispose();
  b0.dispose();
  return [a, b];
}

/** A linear layer with a LoRA adapter. */
export class LoRALinear implements AdapterLayer {
  /** Registry key (`ADAPTER_KINDS`). */
  readonly kind: string = "lora";
  readonly loraA: tf.Variable<tf.Rank.R2>; // [R, I]
  readonly loraB: tf.Variable<tf.Rank.R2>; // [O, R]
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly rslora: boolean;
  training = false;
  /** Original base weight while merged (host memory), so unmerge is exact. */
  protected mergedFrom?: Float32Array;
  protected dropoutSeed: number;

  constructor(readonly base: Linear, options: LoRALayerOptions) {
    const { r, alpha } = options;
    if (!Number.isInteger(r) || r <= 0) {
      throw new RangeError(`${base.name}: LoRA rank must be a positive integer, got ${r}`);
    }
    if (!(alpha > 0)) throw new RangeError(`${base.name}: lora alpha must be > 0, got ${alpha}`);
    this.r = r;
    this.alpha = alpha;
    this.dropout = options.dropout ?? 0;
    if (!(this.dropout >= 0 && this.dropout < 1)) {
      throw new RangeError(`${base.name}: dropout must be in [0, 1)`);
    }
    this.rslora = options.rslora ?? false;
    const seed = options.seed ?? 0;
    this.dropoutSeed = seed * 7919 + 1;
    [this.loraA, this.loraB] = initFactors(base, r, seed);
  }

  get name(): string {
    return this.base.name;
  }
  get inFeatures(): number {
    return this.base.inFeatures;
  }
  get outFeatures(): number {
    return this.base.outFeatures;
  }
  /** `alpha / r` (or `alpha / √r`). */
  get scaling(): number {
    return this.rslora ? this.alpha / Math.sqrt(this.r) : this.alpha / this.r;
  }
  /** True while the update is folded into a dense base weight. */
  get merged(): boolean {
    return this.mergedFrom !== undefined;
  }
  /** A dense base can absorb the update in place. */
  get mergeable(): boolean {
    return this.base instanceof DenseLinear;
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const y = this.base.apply(x); // [N, O]
      if (this.merged) return y;
      const xin = this.training && this.dropout > 0
        ? tf.dropout(x, this.dropout, undefined, this.dropoutSeed++)
        : x;
      const low = tf.matMul(xin, this.loraA as tf.Tensor2D, false, true); // [N, R]
      return tf.add(
        y,
        tf.mul(tf.matMul(low, this.loraB as tf.Tensor2D, false, true), this.scaling),
      ) as tf.Tensor2D;
    });
  }

  /** The plain low-rank form for the hand-written block backward, or why this layer has none. */
  lowRank(): LowRankForm | string {
    if (this.kind !== "lora") return `${this.name} carries a ${this.kind} adapter`;
    if (this.merged) return `${this.name}'s adapter is merged`;
    const dropout = this.training && this.dropout > 0
      ? { rate: this.dropout, nextSeed: () => this.dropoutSeed++ }
      : undefined;
    return { base: this.base, a: this.loraA, b: this.loraB, scale: this.scaling, dropout };
  }

  /** `ΔW = scaling · B A`, `[O, I]`. */
  delta(): tf.Tensor2D {
    return tf.tidy(() => tf.mul(tf.matMul(this.loraB, this.loraA), this.scaling) as tf.Tensor2D);
  }

  trainableParams(): NamedParam[] {
    if (this.merged) return [];
    return [
      { name: `${this.name}.lora_A.weight`, variable: this.loraA },
      { name: `${this.name}.lora_B.weight`, variable: this.loraB },
    ];
  }

  storage(): StorageInfo[] {
    const n = this.loraA.size + this.loraB.size;
    return [...this.base.storage(), { params: n, bytes: n * 4, dtype: "adapter-fp32" }];
  }

  denseWeight(): tf.Tensor2D {
    return tf.tidy(() => {
      const w = this.base.denseWeight();
      return this.merged ? w : tf.add(w, this.delta()) as tf.Tensor2D;
    });
  }

  /**
   * Folds the update into a dense base weight (`W ← W + ΔW`). The original is kept
   * in host memory so {@linkcode unmerge} restores it bit for bit.
   */
  merge(): void {
    if (this.merged) return;
    if (!(this.base instanceof DenseLinear)) {
      throw new TypeError(
        `${this.name}: the base layer is not dense (quantized?); use mergeAdapter(model, { dequantize: true })`,
      );
    }
    const w = this.base.weight;
    this.mergedFrom = w.dataSync().slice() as Float32Array;
    tf.tidy(() => w.assign(tf.add(w, this.delta())));
  }

  /** Restores the base weight saved by {@linkcode merge}. */
  unmerge(): void {
    if (!this.mergedFrom) return;
    const w = (this.base as DenseLinear).weight;
    tf.tidy(() => w.assign(tf.tensor(this.mergedFrom!, w.shape)));
    this.mergedFrom = undefined;
  }

  /** PEFT's tensors (`lora_A.weight [R, I]`, `lora_B.weight [O, R]`) and config fields. */
  exportPeft(rank?: number): { config: PeftLayerConfig; tensors: PeftTensor[] } {
    if (rank !== undefined && rank !== this.r) {
      throw new RangeError(
        `${this.name}: exporting at rank ${rank} needs a DyLoRA adapter (this is r=${this.r})`,
      );
    }
    if (this.merged) {
      throw new Error(`${this.name}: adapter is merged; unmergeAdapter(model) before saving it`);
    }
    return {
      config: { r: this.r, alpha: this.alpha, rslora: this.rslora, dropout: this.dropout, useDora: false },
      tensors: [
        {
          suffix: "lora_A.weight",
          shape: [...this.loraA.shape],
          data: this.loraA.dataSync().slice() as Float32Array,
        },
        {
          suffix: "lora_B.weight",
          shape: [...this.loraB.shape],
          data: this.loraB.dataSync().slice() as Float32Array,
        },
      ],
    };
  }

  /** Sets A and B from PEFT tensors (shapes checked by the loader). */
  importPeft(tensors: ReadonlyMap<string, Float32Array>): void {
    const get = (suffix: string) => {
      const t = tensors.get(suffix);
      if (!t) throw new RangeError(`${this.name}: the adapter file has no "${suffix}"`);
      return t;
    };
    const a = get("lora_A.weight"), b = get("lora_B.weight");
    tf.tidy(() => {
      this.loraA.assign(tf.tensor(a, this.loraA.shape));
      this.loraB.assign(tf.tensor(b, this.loraB.shape));
    });
  }

  /** Frees the adapter's own tensors (not the base layer). */
  disposeAdapter(): void {
    this.loraA.dispose();
    this.loraB.dispose();
  }

  dispose(): void {
    this.disposeAdapter();
    this.base.dispose();
  }
}
