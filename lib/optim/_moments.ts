/**
 * Internal: Adam first/second moments kept as fp32 `tf.Variable`s, keyed by name.
 *
 * `direction()` advances the moments of one key with a gradient and returns the
 * bias-corrected Adam direction `m̂ / (√v̂ + eps)`, the part shared by AdamW, GaLore and
 * the fp32 fallback of 8-bit AdamW. Shapes are fixed by the first call for a key.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { AdamHyper } from "./_options.ts";
import { f32Entry, type StateTensor } from "./optimizer_state.ts";

/** Moments for many keys; the 8-bit store implements the same shape. */
export interface MomentStore {
  /**
   * Updates the moments for `key` with `g` at 1-based step `t` and returns the Adam
   * direction (a new tensor, same shape as `g`; call inside `tf.tidy`).
   */
  direction(key: string, g: tf.Tensor, t: number): tf.Tensor;
  /**
   * The fp32 moments of `key` as variables (created on first use; call inside `tf.tidy`) when this
   * store keeps them so, for an update that assigns them itself (the fused AdamW step); else
   * `undefined` (8-bit state).
   */
  fusedMoments?(key: string, g: tf.Tensor): { m: tf.Variable; v: tf.Variable; h: AdamHyper } | undefined;
  /**
   * Replaces the moments of `key` (if it has any) by `f(m, v)` (same shapes; called inside
   * `tf.tidy`): GaLore's change of basis at a projector refresh, before step `t`'s update.
   */
  transform(key: string, f: (m: tf.Tensor, v: tf.Tensor) => [tf.Tensor, tf.Tensor], t: number): void;
  /** Bytes of moment state held. */
  bytes(): number;
  /** Frees the state of one key. */
  drop(key: string): void;
  /** Frees all state. */
  dispose(): void;
  /** Copies every key's moments into `out` (names `exp_avg/<key>`, …). */
  exportInto(out: Record<string, StateTensor>): void;
  /** Replaces all moments by those in `tensors` (as written by `exportInto`). */
  importFrom(tensors: Record<string, StateTensor>): void;
}

/** Checks that a stored state shape matches the incoming gradient shape. */
export function checkSameShape(key: string, have: readonly number[], got: readonly number[]): void {
  if (have.length !== got.length || have.some((d, i) => d !== got[i])) {
    throw new TypeError(
      `optimizer state for "${key}" has shape [${have}] but the gradient has shape [${got}]; ` +
        `use a new optimizer when parameter shapes change`,
    );
  }
}

/** A non-trainable fp32 variable holding a copy of a state array. */
export function variableFrom(t: StateTensor): tf.Variable {
  const x = tf.tensor(t.data as Float32Array, t.shape, "float32");
  const v = tf.variable(x, false);
  x.dispose(); // the variable keeps its own reference to the data
  return v;
}

/** fp32 moments in tf Variables (PyTorch Adam formulas). */
export class Fp32Moments implements MomentStore {
  #m = new Map<string, tf.Variable>();
  #v = new Map<string, tf.Variable>();
  constructor(private readonly h: AdamHyper) {}

  fusedMoments(key: string, g: tf.Tensor): { m: tf.Variable; v: tf.Variable; h: AdamHyper } {
    return { ...this.pair(key, g), h: this.h };
  }

  /** The moments of `key` (zeros shaped like `g` on first use; call inside `tf.tidy`). */
  pair(key: string, g: tf.Tensor): { m: tf.Variable; v: tf.Variable } {
    let m = this.#m.get(key);
    let v = this.#v.get(key);
    if (!m || !v) {
      m = tf.variable(tf.zerosLike(g), false);
      v = tf.variable(tf.zerosLike(g), false);
      this.#m.set(key, m);
      this.#v.set(key, v);
    }
    checkSameShape(key, m.shape, g.shape);
    return { m, v };
  }

  direction(key: string, g: tf.Tensor, t: number): tf.Tensor {
    const { beta1, beta2, eps } = this.h;
    const { m, v } = this.pair(key, g);
    // m ← β1 m + (1-β1) g ;  v ← β2 v + (1-β2) g²
    m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)));
    v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)));
    const bc1 = 1 - Math.pow(beta1, t);
    const bc2 = 1 - Math.pow(beta2, t);
    // PyTorch: denom = √v / √bc2 + eps ; update = (m / bc1) / denom
    return tf.div(tf.div(m, bc1), tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), eps));
  }

  transform(key: string, f: (m: tf.Tensor, v: tf.Tensor) => [tf.Tensor, tf.Tensor], _t?: number): void {
    const m = this.#m.get(key), v = this.#v.get(key);
    if (!m || !v) return;
    tf.tidy(() => {
      const [m2, v2] = f(m, v);
      checkSameShape(key, m.shape, m2.shape);
      checkSameShape(key, v.shape, v2.shape);
      m.assign(m2);
      v.assign(v2);
    });
  }

  bytes(): number {
    let n = 0;
    for (const m of this.#m.values()) n += 2 * 4 * m.size;
    return n;
  }

  drop(key: string): void {
    this.#m.get(key)?.dispose();
    this.#v.get(key)?.dispose();
    this.#m.delete(key);
    this.#v.delete(key);
  }

  dispose(): void {
    for (const k of [...this.#m.keys()]) this.drop(k);
  }

  exportInto(out: Record<string, StateTensor>): void {
    for (const [k, m] of this.#m) {
      out[`exp_avg/${k}`] = f32Entry(m);
      out[`exp_avg_sq/${k}`] = f32Entry(this.#v.get(k)!);
    }
  }

  importFrom(tensors: Record<string, StateTensor>): void {
    this.dispose();
    for (const [name, t] of Object.entries(tensors)) {
      if (!name.startsWith("exp_avg/")) continue;
      const key = name.slice("exp_avg/".length);
      const v = tensors[`exp_avg_sq/${key}`];
      if (!v || t.dtype !== "F32" || v.dtype !== "F32") {
        throw new TypeError(`optimizer state: "${key}" needs F32 exp_avg and exp_avg_sq`);
      }
      this.#m.set(key, variableFrom(t));
      this.#v.set(key, variableFrom(v));
    }
  }
}
