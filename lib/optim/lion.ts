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
import type { ParamGrad } from "./optimizer.ts";
import {
  checkStateHeader,
  f32Entry,
  type OptimizerState,
  stateArray,
  type StatefulOptimizer,
  type StateTensor,
} from "./optimizer_state.ts";
import { checkSameShape } from "./_moments.ts";
import { checkLr, checkUniqueNames } from "./_options.ts";
import { adamWFusable } from "./_adamw_fused.ts";
import { filledTensor } from "../engine/heap_tensor.ts";

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

/**
 * A Lion optimizer. Its state saves and loads like AdamW's (`saveState` / `loadState`):
 * one fp32 array `exp_avg/<param>` per parameter (lion-pytorch's name for m) and the
 * betas, checked on load.
 */
export interface LionOptimizer extends StatefulOptimizer {
  /** The resolved hyper-parameters. */
  readonly options: Required<LionOptions>;
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
        if (adamWFusable([variable, grad, moment])) {
          // wasm/cpu: the new parameter and moment as two fused passes instead of ~10 tfjs ops.
          tf.tidy(() => {
            const decay = weightDecay > 0 ? 1 - lr * weightDecay : 1;
            const p2 = filledTensor([...variable.shape], (o, [pv, mv, gv]) => {
              for (let i = 0; i < o.length; i++) {
                o[i] = pv[i] * decay - lr * Math.sign(Math.fround(beta1 * mv[i] + (1 - beta1) * gv[i]));
              }
            }, [variable, moment, grad]);
            const m2 = filledTensor([...moment.shape], (o, [mv, gv]) => {
              for (let i = 0; i < o.length; i++) o[i] = beta2 * mv[i] + (1 - beta2) * gv[i];
            }, [moment, grad]);
            variable.assign(p2);
            moment.assign(m2);
          });
          continue;
        }
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
    saveState(): OptimizerState {
      const tensors: Record<string, StateTensor> = {};
      for (const [k, m] of moments) tensors[`exp_avg/${k}`] = f32Entry(m);
      return { name: "lion", meta: { beta1: o.beta1, beta2: o.beta2 }, tensors };
    },
    loadState(state: OptimizerState): void {
      const where = "Lion.loadState()";
      checkStateHeader(state, "lion", { beta1: o.beta1, beta2: o.beta2 }, where);
      const keys = Object.keys(state.tensors);
      const bad = keys.find((k) => !k.startsWith("exp_avg/"));
      if (bad) throw new TypeError(`${where}: "${bad}" is not a Lion moment (expected exp_avg/<param>)`);
      const arrays = keys.map((k) =>
        [k.slice("exp_avg/".length), stateArray(state, k, "F32", where)] as const
      );
      drop();
      for (const [name, t] of arrays) {
        const init = tf.tensor(t.data as Float32Array, t.shape);
        moments.set(name, tf.variable(init, false));
        init.dispose(); // the variable keeps the buffer
      }
    },
    dispose: drop,
  };
}
