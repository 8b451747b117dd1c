/**
 * Optimizer state as plain data, for training states and exact resume: named typed arrays
 * (moments, 8-bit codes and their per-block absmax, GaLore projectors) plus JSON values
 * (step counters, projector counters, settings that must match). Written by the trainer as
 * `optimizer.safetensors` + `optimizer.json`.
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Optimizer } from "./optimizer.ts";

/** One array of optimizer state. */
export interface StateTensor {
  dtype: "F32" | "U8";
  shape: number[];
  data: Float32Array | Uint8Array;
}

/** An optimizer's whole state. */
export interface OptimizerState {
  /** The optimizer's `name`; loading into another kind is refused. */
  name: string;
  /** JSON values: step counters, projector counters, settings checked on import. */
  meta: Record<string, unknown>;
  /** Arrays by unique name (e.g. `exp_avg/<param>`). */
  tensors: Record<string, StateTensor>;
}

/** An optimizer whose state can be saved and restored exactly. */
export interface StatefulOptimizer extends Optimizer {
  /** Copies the whole state out (host arrays; the optimizer is unchanged). */
  saveState(): OptimizerState;
  /** Replaces the whole state by `state` (as returned by `saveState` of the same kind and settings). */
  loadState(state: OptimizerState): void;
}

/** Reads an fp32 tensor into a state entry (a copy). */
export function f32Entry(t: tf.Tensor): StateTensor {
  return { dtype: "F32", shape: [...t.shape], data: Float32Array.from(t.dataSync() as Float32Array) };
}

/** Checks that `state` holds an array `key` of `dtype` and returns it. */
export function stateArray(
  state: OptimizerState,
  key: string,
  dtype: "F32" | "U8",
  where: string,
): StateTensor {
  const t = state.tensors[key];
  if (!t) {
    throw new RangeError(
      `${where}: the saved optimizer state has no "${key}"; was it saved by this optimizer?`,
    );
  }
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.dtype !== dtype || t.data.length !== n) {
    throw new TypeError(
      `${where}: "${key}" is ${t.dtype} with ${t.data.length} values for shape [${t.shape}], expected ${dtype}`,
    );
  }
  return t;
}

/** Refuses a state saved by another optimizer kind or with other settings. */
export function checkStateHeader(
  state: OptimizerState,
  name: string,
  settings: Record<string, unknown>,
  where: string,
): void {
  if (state.name !== name) {
    throw new TypeError(
      `${where}: the saved optimizer state is "${state.name}", this optimizer is "${name}"`,
    );
  }
  for (const [k, v] of Object.entries(settings)) {
    if (JSON.stringify(state.meta[k]) !== JSON.stringify(v)) {
      throw new RangeError(
        `${where}: the state was saved with ${k} = ${JSON.stringify(state.meta[k])}, this optimizer has ${
          JSON.stringify(v)
        }; resume with the same optimizer settings`,
      );
    }
  }
}

/** Step counters as JSON and back. */
export function stepsToJson(steps: Map<string, number>): Record<string, number> {
  return Object.fromEntries(steps);
}

/** Replaces `steps` by the saved counters. */
export function stepsFromJson(steps: Map<string, number>, json: unknown, where: string): void {
  if (typeof json !== "object" || json === null) {
    throw new TypeError(`${where}: the state has no step counters`);
  }
  steps.clear();
  for (const [k, v] of Object.entries(json)) {
    if (!Number.isInteger(v) || (v as number) < 0) {
      throw new TypeError(`${where}: step counter of "${k}" is ${v}`);
    }
    steps.set(k, v as number);
  }
}

/**
 * The state of any optimizer this toolkit ships (`saveState`, or Lion's `exportState`), or
 * undefined for one that cannot export its state.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { createAdamW } from "./adamw.ts";
 * import { exportOptimizerState, importOptimizerState } from "./optimizer_state.ts";
 * await initEngine({ backend: "cpu" });
 * const w = tf.variable(tf.tensor1d([1, 2])), g = tf.tensor1d([0.5, -1]);
 * const a = createAdamW(), b = createAdamW();
 * a.step([{ name: "w", variable: w, grad: g }], 0.1);
 * importOptimizerState(b, exportOptimizerState(a)!);
 * const wa = tf.variable(w.clone()), wb = tf.variable(w.clone());
 * a.step([{ name: "w", variable: wa, grad: g }], 0.1);
 * b.step([{ name: "w", variable: wb, grad: g }], 0.1);
 * if (wa.dataSync().join() !== wb.dataSync().join()) throw new Error("same state, same step");
 * a.dispose(); b.dispose(); tf.dispose([w, g, wa, wb]);
 * ```
 */
export function exportOptimizerState(opt: Optimizer): OptimizerState | undefined {
  const o = opt as Partial<StatefulOptimizer> & {
    exportState?: () => Map<string, { shape: number[]; m: Float32Array }>;
  };
  if (typeof o.saveState === "function") return o.saveState();
  if (typeof o.exportState === "function") { // Lion: one moment per parameter, no step counter
    const tensors: Record<string, StateTensor> = {};
    for (const [k, s] of o.exportState()) {
      tensors[`exp_avg/${k}`] = { dtype: "F32", shape: s.shape, data: s.m };
    }
    return { name: opt.name, meta: {}, tensors };
  }
  return undefined;
}

/** Restores a state from {@linkcode exportOptimizerState} into an optimizer of the same kind. */
export function importOptimizerState(opt: Optimizer, state: OptimizerState): void {
  const o = opt as Partial<StatefulOptimizer> & {
    importState?: (s: Map<string, { shape: number[]; m: Float32Array }>) => void;
  };
  if (state.name !== opt.name) {
    throw new TypeError(`the saved optimizer state is "${state.name}", this optimizer is "${opt.name}"`);
  }
  if (typeof o.loadState === "function") return o.loadState(state);
  if (typeof o.importState === "function") {
    const m = new Map<string, { shape: number[]; m: Float32Array }>();
    for (const [k, t] of Object.entries(state.tensors)) {
      m.set(k.replace(/^exp_avg\//, ""), { shape: t.shape, m: t.data as Float32Array });
    }
    return o.importState(m);
  }
  throw new TypeError(`optimizer "${opt.name}" cannot restore a saved state (it has no loadState)`);
}
