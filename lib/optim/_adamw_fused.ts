/**
 * Internal: the AdamW update of one fp32 parameter as fused passes over its values instead of ~17
 * tfjs ops: the new first and second moments and the new parameter, each one tensor filled from
 * views of the old ones ({@linkcode filledTensor}; on the wasm heap under wasm), with the same
 * formulas as `Fp32Moments.direction` + `adamWStep` (decoupled weight decay first, PyTorch's bias
 * correction). wasm and cpu only: webgpu (the device step) keeps the tfjs-op path, which reads
 * nothing back.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { filledTensor } from "../engine/heap_tensor.ts";
import type { AdamHyper } from "./_options.ts";

/**
 * Whether {@linkcode adamWFused} can update `tensors` on the current backend (wasm or cpu, all
 * float32).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { adamWFusable } from "./_adamw_fused.ts";
 * await tf.setBackend("cpu");
 * if (!adamWFusable([tf.zeros([2])]) || adamWFusable([tf.zeros([2], "int32")])) throw new Error("wrong");
 * ```
 */
export function adamWFusable(tensors: tf.Tensor[]): boolean {
  const be = tf.getBackend();
  return (be === "wasm" || be === "cpu") && tensors.every((t) => t.dtype === "float32");
}

/**
 * One AdamW step at 1-based step `t`: returns the new `m`, `v` and parameter (new tensors, the
 * shape of `p`; the caller assigns them):
 *
 * ```text
 * m' = β1·m + (1−β1)·g ;  v' = β2·v + (1−β2)·g²
 * p' = p·(1 − lr·wd) − lr · (m'/(1−β1ᵗ)) / (√v'/√(1−β2ᵗ) + eps)
 * ```
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { adamWFused } from "./_adamw_fused.ts";
 * await tf.setBackend("cpu");
 * const z = tf.zeros([2]);
 * const u = adamWFused(tf.tensor1d([1, 1]), tf.tensor1d([2, -2]), z, z, { beta1: 0.9, beta2: 0.999, eps: 0 }, 1, 0.1, 0);
 * // first step: m̂/√v̂ = sign(g)
 * if (u.p.dataSync().join() !== "0.8999999761581421,1.100000023841858") throw new Error(`${u.p.dataSync()}`);
 * ```
 */
export function adamWFused(
  p: tf.Tensor,
  g: tf.Tensor,
  m: tf.Tensor,
  v: tf.Tensor,
  h: AdamHyper,
  t: number,
  lr: number,
  weightDecay: number,
): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
  if (!adamWFusable([p, g, m, v])) {
    throw new TypeError(
      `adamWFused: needs float32 tensors on the wasm or cpu backend (backend ${tf.getBackend()}, ` +
        `dtypes ${[p, g, m, v].map((x) => x.dtype).join(", ")}); use the tfjs-op update elsewhere`,
    );
  }
  for (const [name, x] of [["g", g], ["m", m], ["v", v]] as const) {
    if (x.size !== p.size) {
      throw new TypeError(`adamWFused: ${name} [${x.shape}] does not match p [${p.shape}]`);
    }
  }
  const { beta1, beta2, eps } = h;
  const shape = [...p.shape];
  const m2 = filledTensor(shape, (o, [mv, gv]) => {
    for (let i = 0; i < o.length; i++) o[i] = beta1 * mv[i] + (1 - beta1) * gv[i];
  }, [m, g]);
  const v2 = filledTensor(shape, (o, [vv, gv]) => {
    for (let i = 0; i < o.length; i++) o[i] = beta2 * vv[i] + (1 - beta2) * gv[i] * gv[i];
  }, [v, g]);
  const bc1 = 1 - Math.pow(beta1, t), sbc2 = Math.sqrt(1 - Math.pow(beta2, t));
  const decay = weightDecay > 0 ? 1 - lr * weightDecay : 1;
  const p2 = filledTensor(shape, (o, [pv, mv, vv]) => {
    for (let i = 0; i < o.length; i++) {
      o[i] = pv[i] * decay - lr * ((mv[i] / bc1) / (Math.sqrt(vv[i]) / sbc2 + eps));
    }
  }, [p, m2, v2]);
  return { p: p2, m: m2, v: v2 };
}
