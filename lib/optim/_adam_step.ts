/**
 * Internal: the AdamW parameter loop shared by AdamW and 8-bit AdamW.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { ParamGrad } from "./optimizer.ts";
import type { MomentStore } from "./_moments.ts";
import { checkLr, checkUniqueNames } from "./_options.ts";
import { adamWFusable, adamWFused } from "./_adamw_fused.ts";

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
  // wasm/cpu: one fused update per fp32-moment parameter (new m, v and parameter, _adamw_fused.ts);
  // webgpu (the device step): the tfjs ops, which read nothing back.
  const fusable = adamWFusable(params.flatMap((p) => [p.variable, p.grad]));
  for (const { name, variable, grad } of params) {
    const t = (steps.get(name) ?? 0) + 1;
    tf.tidy(() => {
      const fp32 = fusable ? store.fusedMoments?.(name, grad) : undefined;
      if (fp32) {
        const u = adamWFused(variable, grad, fp32.m, fp32.v, fp32.h, t, lr, weightDecay);
        fp32.m.assign(u.m);
        fp32.v.assign(u.v);
        variable.assign(u.p);
        return;
      }
      const dir = store.direction(name, grad, t);
      const decayed = weightDecay > 0 ? tf.mul(variable, 1 - lr * weightDecay) : variable;
      variable.assign(tf.sub(decayed, tf.mul(dir, lr)));
    });
    steps.set(name, t);
  }
}
