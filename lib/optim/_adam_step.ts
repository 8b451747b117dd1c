/**
 * Internal: the AdamW parameter loop shared by AdamW and 8-bit AdamW.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { ParamGrad } from "./optimizer.ts";
import type { MomentStore } from "./_moments.ts";
import { checkLr, checkUniqueNames } from "./_options.ts";

/**
 * For each parameter: advance its own step counter, then
 * `p ← p·(1 − lr·wd) − lr · direction` with `direction` from the moment store.
 */
export function adamWStep(
  where: string,
  params: ParamGrad[],
  lr: number,
  store: MomentStore,
  steps: Map<string, number>,
  weightDecay: number,
): void {
  checkLr(where, lr);
  checkUniqueNames(where, params.map((p) => p.name));
  for (const { name, variable, grad } of params) {
    const t = (steps.get(name) ?? 0) + 1;
    tf.tidy(() => {
      const dir = store.direction(name, grad, t);
      const decayed = weightDecay > 0 ? tf.mul(variable, 1 - lr * weightDecay) : variable;
      variable.assign(tf.sub(decayed, tf.mul(dir, lr)));
    });
    steps.set(name, t);
  }
}
