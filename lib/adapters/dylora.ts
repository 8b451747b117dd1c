/**
 * DyLoRA: one adapter trained for every rank 1..R at once (Valipour et al. 2023;
 * on a 4-bit base this is QDyLoRA). Each training step samples a rank b and uses
 * only the first b rows of A and the first b columns of B, scaled by `alpha / b`,
 * so after training any prefix rank can be served or exported as a plain LoRA.
 *
 * Update modes:
 * - `"prefix"` (default): every component ≤ b receives gradient, so each step
 *   trains the whole truncated adapter and every rank keeps improving; it costs
 *   nothing extra over `"last"`.
 * - `"last"`: only the b-th component is trained (components < b are
 *   stop-gradient), DyLoRA's "frozen" variant: earlier ranks are never disturbed by
 *   later ones, at the cost of slower training.
 *
 * Dimension legend: N rows, I in, O out, R max rank, b active rank.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Linear, NamedParam, StorageInfo } from "../models/linear.ts";
import type { AdapterLayer, PeftLayerConfig, PeftTensor } from "./adapter_layer.ts";
import { initFactors } from "./lora.ts";

/** Identity in the forward pass, zero gradient in the backward pass (tfjs has no stopGradient op). */
function stopGradient<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad((v) => ({
    value: (v as tf.Tensor).clone(),
    gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
  }));
  return f(x) as T;
}

/** Which components a step trains. */
export type DyLoRAMode = "prefix" | "last";

/** Options for {@linkcode DyLoRALinear}. */
export interface DyLoRALayerOptions {
  maxRank: number;
  alpha: number;
  dropout?: number;
  mode?: DyLoRAMode;
  seed?: number;
  /** The training rank of each step (shared by all layers of a model); none: keep `trainRank`. */
  rankSampler?: (step: number) => number;
}

/** A linear layer with a DyLoRA adapter. */
export class DyLoRALinear implements AdapterLayer {
  /** Registry key (`ADAPTER_KINDS`). */
  readonly kind: string = "dylora";
  /** DyLoRA is never merged in place (it serves any rank); see `mergeAdapter({ dequantize: true })`. */
  readonly merged = false;
  readonly mergeable = false;
  readonly loraA: tf.Variable<tf.Rank.R2>; // [R, I]
  readonly loraB: tf.Variable<tf.Rank.R2>; // [O, R]
  readonly maxRank: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly mode: DyLoRAMode;
  training = false;
  /** Rank used while training this step (set by the rank sampler). */
  trainRank: number;
  /** Rank served at inference (see `setRank`). */
  evalRank: number;
  private dropoutSeed: number;
  private readonly rankSampler?: (step: number) => number;

  constructor(readonly base: Linear, options: DyLoRALayerOptions) {
    const R = options.maxRank;
    if (!Number.isInteger(R) || R <= 0) {
      throw new RangeError(`${base.name}: DyLoRA maxRank must be a positive integer, got ${R}`);
    }
    if (!(options.alpha > 0)) throw new RangeError(`${base.name}: alpha must be > 0, got ${options.alpha}`);
    this.maxRank = R;
    this.alpha = options.alpha;
    this.dropout = options.dropout ?? 0;
    if (!(this.dropout >= 0 && this.dropout < 1)) {
      throw new RangeError(`${base.name}: dropout must be in [0, 1), got ${this.dropout}`);
    }
    this.mode = options.mode ?? "prefix";
    const seed = options.seed ?? 0;
    this.dropoutSeed = seed * 7919 + 1;
    this.trainRank = R;
    this.evalRank = R;
    this.rankSampler = options.rankSampler;
    [this.loraA, this.loraB] = initFactors(base, R, seed);
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
  /** The rank in use now (sampled while training, `evalRank` otherwise). */
  get rank(): number {
    return this.training ? this.trainRank : this.evalRank;
  }

  /** The first `b` rows of A `[b, I]` and columns of B `[O, b]`, with the mode's stop-gradients. */
  factors(b: number, forTraining = this.training): { a: tf.Tensor2D; bMat: tf.Tensor2D } {
    if (!Number.isInteger(b) || b < 1 || b > this.maxRank) {
      throw new RangeError(`${this.name}: rank ${b} is outside 1..${this.maxRank}`);
    }
    return tf.tidy(() => {
      let a: tf.Tensor2D = tf.slice(this.loraA, [0, 0], [b, -1]);
      let bMat: tf.Tensor2D = tf.slice(this.loraB, [0, 0], [-1, b]);
      if (forTraining && this.mode === "last" && b > 1) {
        const O = this.outFeatures;
        a = tf.concat([
          stopGradient(tf.slice(this.loraA, [0, 0], [b - 1, -1])),
          tf.slice(this.loraA, [b - 1, 0], [1, -1]),
        ], 0);
        bMat = tf.concat([
          stopGradient(tf.slice(this.loraB, [0, 0], [O, b - 1])),
          tf.slice(this.loraB, [0, b - 1], [O, 1]),
        ], 1);
      }
      return { a, bMat };
    });
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const b = this.rank;
      const y = this.base.apply(x); // [N, O]
      const { a, bMat } = this.factors(b);
      const xin = this.training && this.dropout > 0
        ? tf.dropout(x, this.dropout, undefined, this.dropoutSeed++)
        : x;
      const low = tf.matMul(xin, a, false, true); // [N, b]
      return tf.add(y, tf.mul(tf.matMul(low, bMat, false, true), this.alpha / b)) as tf.Tensor2D;
    });
  }

  /** `ΔW` at rank `b`: `(alpha / b) · B[:, :b] A[:b]`, `[O, I]`. */
  delta(b = this.evalRank): tf.Tensor2D {
    return tf.tidy(() => {
      const { a, bMat } = this.factors(b, false);
      return tf.mul(tf.matMul(bMat, a), this.alpha / b) as tf.Tensor2D;
    });
  }

  trainableParams(): NamedParam[] {
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
    return tf.tidy(() => tf.add(this.base.denseWeight(), this.delta()) as tf.Tensor2D);
  }

  /** Samples this step's training rank. */
  beginStep(step: number): void {
    if (this.rankSampler) this.trainRank = this.rankSampler(step);
  }

  /** Throws: a DyLoRA update depends on the rank served, so it is not folded in place. */
  merge(): void {
    throw new TypeError(
      `${this.name}: a DyLoRA adapter is not merged in place; mergeAdapter(model, { dequantize: true }) ` +
        "replaces the layer by a dense fp32 copy at the serving rank",
    );
  }

  /** Nothing to restore (never merged). */
  unmerge(): void {}

  /** The factors truncated to `rank` (default: the serving rank), as a plain PEFT LoRA. */
  exportPeft(rank: number = this.evalRank): { config: PeftLayerConfig; tensors: PeftTensor[] } {
    const { a, bMat } = this.factors(rank, false);
    const tensors = [
      { suffix: "lora_A.weight", shape: [...a.shape], data: a.dataSync().slice() as Float32Array },
      { suffix: "lora_B.weight", shape: [...bMat.shape], data: bMat.dataSync().slice() as Float32Array },
    ];
    a.dispose();
    bMat.dispose();
    // scaling alpha / rank, as in training at that rank
    return {
      config: { r: rank, alpha: this.alpha, rslora: false, dropout: this.dropout, useDora: false },
      tensors,
    };
  }

  /** Sets the full-rank factors (`[maxRank, I]`, `[O, maxRank]`). */
  importPeft(tensors: ReadonlyMap<string, Float32Array>): void {
    const a = tensors.get("lora_A.weight"), b = tensors.get("lora_B.weight");
    if (!a || !b || a.length !== this.loraA.size || b.length !== this.loraB.size) {
      throw new RangeError(`${this.name}: DyLoRA needs lora_A/lora_B at its maximum rank ${this.maxRank}`);
    }
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
