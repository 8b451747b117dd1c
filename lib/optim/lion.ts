/**
 * Lion ("EvoLved Sign Momentum", Chen et al. 2023, "Symbolic Discovery of Optimization
 * Algorithms", arXiv:2302.06675). One fp32 moment per parameter (half of AdamW's state)
 * and an update of the same size for every element:
 *
 * ```text
 * p ← p·(1 − lr·wd)                  (decoupled weight decay first, as lucidrains/lion-pytorch)
 * c = β1·m + (1−β1)·g
 * p ← p − lr·sign(c)
 * m ← β2·m + (1−β2)·g
 * ```
 *
 * `sign(0) = 0`, as PyTorch. The paper advises a learning rate 3–10× smaller than AdamW's
 * and a weight decay 3–10× larger, so that `lr·wd` stays similar. State (the moment as an
 * fp32 `tf.Variable`) is keyed by {@linkcode ParamGrad.name}, so stepping once per block
 * (layer-wise) is exactly one call with all parameters.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { defineOptions, number } from "../options/schema.ts";
import type { Optimizer, ParamGrad } from "./optimizer.ts";
import { checkSameShape } from "./_moments.ts";
import { checkLr, checkUniqueNames } from "./_options.ts";

/** Options for {@linkcode createLion}. */
export interface LionOptions {
  /** Interpolation of moment and gradient for the update direction. @default {0.9} */
  beta1?: number;
  /** Decay of the moment. @default {0.99} */
  beta2?: number;
  /** Decoupled weight decay (multiplied by lr). @default {0} */
  weightDecay?: number;
}

/** The schema of {@linkcode createLion}'s options (validation, defaults, messages). */
export const lionSchema = defineOptions("createLion()", {
  beta1: number("Interpolation of moment and gradient for the update direction.", {
    min: 0,
    below: 1,
    default: 0.9,
  }),
  beta2: number("Decay of the moment.", { min: 0, below: 1, default: 0.99 }),
  weightDecay: number("Decoupled weight decay (multiplied by lr).", { min: 0, default: 0 }),
});

/** A Lion optimizer; its moments can be read and restored for resuming. */
export interface LionOptimizer extends Optimizer {
  /** The resolved hyper-parameters. */
  readonly options: Required<LionOptions>;
  /** A copy of every moment `m` (same shape as its parameter), keyed by parameter name. */
  exportState(): Map<string, { shape: number[]; m: Float32Array }>;
  /** Replaces the moments by `state` (as returned by {@linkcode LionOptimizer.exportState}). */
  importState(state: Map<string, { shape: number[]; m: Float32Array }>): void;
}

/**
 * Creates a Lion optimizer.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { createLion } from "./lion.ts";
 * await initEngine({ backend: "cpu" });
 * const w = tf.variable(tf.tensor1d([1, -2, 3]));
 * const opt = createLion({ weightDecay: 0.5 });
 * const g = tf.tensor1d([0.5, -3, 0]);
 * opt.step([{ name: "w", variable: w, grad: g }], 0.1);
 * // first step (m = 0): p·(1 − lr·wd) − lr·sign(g)
 * const got = w.dataSync();
 * const want = [1 * 0.95 - 0.1, -2 * 0.95 + 0.1, 3 * 0.95];
 * if (got.some((v, i) => Math.abs(v - want[i]) > 1e-6)) throw new Error(`w=${got}`);
 * if (opt.stateBytes() !== 3 * 4) throw new Error("one fp32 moment of 3 elements");
 * opt.dispose(); g.dispose(); w.dispose();
 * ```
 */
export function createLion(options: LionOptions = {}): LionOptimizer {
  const o = lionSchema.parse(options) as Required<LionOptions>;
  const moments = new Map<string, tf.Variable>();
  const drop = () => {
    for (const m of moments.values()) m.dispose();
    moments.clear();
  };
  return {
    name: "lion",
    options: o,
    step(params: ParamGrad[], lr: number): void {
      checkLr("Lion.step()", lr);
      checkUniqueNames("Lion.step()", params.map((p) => p.name));
      const { beta1, beta2, weightDecay } = o;
      for (const { name, variable, grad } of params) {
        let m = moments.get(name);
        if (!m) {
          const zeros = tf.zerosLike(grad);
          m = tf.variable(zeros, false);
          zeros.dispose(); // the variable keeps the buffer
          moments.set(name, m);
        }
        checkSameShape(name, m.shape, grad.shape);
        const moment = m;
        tf.tidy(() => {
          const c = tf.add(tf.mul(moment, beta1), tf.mul(grad, 1 - beta1));
          const decayed = weightDecay > 0 ? tf.mul(variable, 1 - lr * weightDecay) : variable;
          variable.assign(tf.sub(decayed, tf.mul(tf.sign(c), lr)));
          moment.assign(tf.add(tf.mul(moment, beta2), tf.mul(grad, 1 - beta2)));
        });
      }
    },
    stateBytes(): number {
      let n = 0;
      for (const m of moments.values()) n += 4 * m.size;
      return n;
    },
    exportState() {
      return new Map(
        [...moments].map(([k, m]) => [k, { shape: [...m.shape], m: m.dataSync().slice() as Float32Array }]),
      );
    },
    importState(state) {
      for (const [k, s] of state) {
        const size = s.shape.reduce((a, b) => a * b, 1);
        if (s.m.length !== size) {
          throw new TypeError(`Lion.importState(): "${k}" has ${s.m.length} values for shape [${s.shape}]`);
        }
      }
      drop();
      for (const [k, s] of state) {
        const t = tf.tensor(s.m, s.shape);
        moments.set(k, tf.variable(t, false));
        t.dispose(); // the variable keeps the buffer
      }
    },
    dispose: drop,
  };
}
