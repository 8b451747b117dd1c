/**
 * The divergence guard: a step whose loss or gradients are NaN/±Infinity, or whose loss
 * is far above its recent level, stops training with a {@linkcode DivergenceError}
 * naming the step, the micro-batch, the first offending parameter and the learning rate,
 * before the optimizer changes any weight.
 *
 * Order of checks in a step: each micro-batch's loss, then its gradients, then the
 * step's loss against the recent mean; only then does the optimizer run. Layer-wise mode
 * updates each block during backward, so a block could be updated before a lower block's
 * gradient turns out non-finite. With `layerwiseCheck: "prepass"` (the default) the
 * trainer first runs the backward pass once without updating anything, checking the loss
 * and every block's gradients, and only then the pass that updates (about 1.7× the step
 * time); with `"per-block"` each block is checked just before its own update (no extra
 * pass), and the error then lists the blocks already updated. After the optimizer runs,
 * the weights are checked too: an update that itself overflows (finite gradients, huge
 * weights) is reported with `weightsChanged: true`.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { defineOptions, either, type FieldsOf, integer, number, object, oneOf } from "../options/schema.ts";

/** Settings of the divergence guard (`train({ divergence })`). */
export interface DivergenceOptions {
  /**
   * Stop when a step's loss exceeds this multiple of the mean loss of the last
   * `lossSpikeWindow` steps (from the second step on) and is `lossSpikeMargin` above it;
   * 0 turns the check off. With an adapter whose steps vary by design (DyLoRA samples a
   * rank per step) the check is off unless this is set.
   * @default {4}
   */
  lossSpikeFactor?: number;
  /**
   * A spike must also exceed the recent mean by this many nats, so the noise of a loss
   * near zero (0.02 after 0.004) is not taken for divergence.
   * @default {1}
   */
  lossSpikeMargin?: number;
  /** Steps in the recent mean the spike check compares with. @default {16} */
  lossSpikeWindow?: number;
  /** Layer-wise mode: check everything before any update ("prepass") or each block before its own ("per-block"). @default {"prepass"} */
  layerwiseCheck?: "prepass" | "per-block";
}

/** Schema fields of `train()`'s `divergence` option. */
export const divergenceFields = {
  lossSpikeFactor: either("Stop when a loss exceeds this multiple of the recent mean; 0 = off.", [
    number("A factor.", { above: 1 }),
    oneOf("Off.", [0] as const),
  ], { default: 4 }),
  lossSpikeMargin: number("Nats a spike must also exceed the recent mean by.", { min: 0, default: 1 }),
  lossSpikeWindow: integer("Steps in the recent mean.", { min: 1, default: 16 }),
  layerwiseCheck: oneOf(
    "Layer-wise: check all gradients before any update (prepass) or each block before its own.",
    ["prepass", "per-block"] as const,
    { default: "prepass" },
  ),
} satisfies FieldsOf<DivergenceOptions>;

/** Messages name the option as `train()` sees it: `divergence.lossSpikeWindow`. */
const divergenceSchema = defineOptions("train", {
  divergence: object("The divergence guard.", divergenceFields, { filled: true }),
});

/** Resolved guard settings. */
export type ResolvedDivergence = Required<DivergenceOptions>;

/** Where and why a step diverged. */
export interface DivergenceInfo {
  /** 1-based optimizer step. */
  step: number;
  /** "k/K" when one micro-batch is to blame. */
  microBatch?: string;
  /** First parameter whose gradient (or value) is non-finite. */
  parameter?: string;
  /** Learning rate of the step. */
  lr: number;
  /** What went wrong, e.g. "the loss is NaN". */
  reason: string;
  /** True only when the optimizer had already changed weights (see the module docs). */
  weightsChanged: boolean;
}

/** Thrown when training diverges; `info` says where. */
export class DivergenceError extends RangeError {
  /** Where and why. */
  readonly info: DivergenceInfo;
  /** Builds the message from `info`. */
  constructor(info: DivergenceInfo) {
    const where = [
      `step ${info.step}`,
      info.microBatch ? `micro-batch ${info.microBatch}` : "",
      info.parameter ? `parameter "${info.parameter}"` : "",
      `lr ${Number(info.lr.toPrecision(6))}`,
    ].filter(Boolean).join(", ");
    super(
      `train diverged at ${where}: ${info.reason}; ${
        info.weightsChanged ? "weights WERE changed by this step" : "no weight was changed by this step"
      }. Lower the learning rate (or check the data) and resume from the last save.`,
    );
    this.name = "DivergenceError";
    this.info = info;
  }
}

/**
 * Index of the first tensor holding NaN or ±Infinity, or -1. One reduction and one read
 * when everything is finite; the tensors are only scanned one by one when something is not.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { firstNonFinite } from "./divergence.ts";
 * await initEngine({ backend: "cpu" });
 * const ts = [tf.ones([2]), tf.tensor1d([1, NaN]), tf.tensor1d([Infinity])];
 * if (firstNonFinite(ts) !== 1 || firstNonFinite([ts[0]]) !== -1) throw new Error("wrong index");
 * tf.dispose(ts);
 * ```
 */
export function firstNonFinite(tensors: tf.Tensor[]): number {
  if (tensors.length === 0) return -1;
  // Any NaN/Inf makes the sum non-finite (a finite overflow only triggers the exact scan).
  const s = tf.tidy(() => tf.addN(tensors.map((t) => tf.sum(tf.abs(t)))).dataSync()[0]);
  if (Number.isFinite(s)) return -1;
  for (let i = 0; i < tensors.length; i++) {
    const ok = tf.tidy(() => tf.all(tf.isFinite(tensors[i])).dataSync()[0]);
    if (!ok) return i;
  }
  return -1;
}

/**
 * Resolves the guard settings.
 *
 * @example
 * ```ts
 * import { resolveDivergence } from "./divergence.ts";
 * const o = resolveDivergence({ lossSpikeFactor: 0 });
 * if (o.lossSpikeWindow !== 16 || o.layerwiseCheck !== "prepass") throw new Error("defaults");
 * ```
 */
export function resolveDivergence(options: DivergenceOptions = {}): ResolvedDivergence {
  return divergenceSchema.parse({ divergence: options }).divergence as ResolvedDivergence;
}

/** What a step needs to check itself: where it is, and the recent losses. */
export interface StepGuard {
  step: number;
  lr: number;
  /** The layer-wise policy. */
  layerwiseCheck: "prepass" | "per-block";
  /** Throws a DivergenceError when `loss` is non-finite or a spike. */
  checkLoss(loss: number, microBatch?: string): void;
}

/**
 * Tracks recent losses and builds each step's {@linkcode StepGuard}.
 *
 * @example
 * ```ts
 * import { DivergenceError, LossHistory } from "./divergence.ts";
 * const h = new LossHistory({ lossSpikeFactor: 4, lossSpikeMargin: 1, lossSpikeWindow: 16, layerwiseCheck: "prepass" });
 * for (const l of [2, 1.8, 1.7]) h.push(l);
 * h.guard(4, 1e-3).checkLoss(2.5); // fine
 * let e: unknown;
 * try { h.guard(4, 1e-3).checkLoss(9); } catch (x) { e = x; }
 * if (!(e instanceof DivergenceError) || e.info.step !== 4) throw new Error("a spike stops training");
 * ```
 */
export class LossHistory {
  #recent: number[] = [];
  constructor(private readonly o: ResolvedDivergence) {}

  /** Records a completed step's loss. */
  push(loss: number): void {
    this.#recent.push(loss);
    if (this.#recent.length > this.o.lossSpikeWindow) this.#recent.shift();
  }

  /** The recent losses (for saving a training state). */
  get recent(): number[] {
    return this.#recent.slice();
  }

  /** The guard for one step. */
  guard(step: number, lr: number): StepGuard {
    const recent = this.#recent, o = this.o;
    return {
      step,
      lr,
      layerwiseCheck: o.layerwiseCheck,
      checkLoss(loss: number, microBatch?: string): void {
        if (!Number.isFinite(loss)) {
          throw new DivergenceError({
            step,
            microBatch,
            lr,
            reason: `the loss is ${loss}`,
            weightsChanged: false,
          });
        }
        if (o.lossSpikeFactor > 0 && recent.length >= 1) {
          const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
          if (loss > o.lossSpikeFactor * mean && loss - mean > o.lossSpikeMargin) {
            throw new DivergenceError({
              step,
              microBatch,
              lr,
              reason: `the loss ${
                loss.toPrecision(4)
              } is more than ${o.lossSpikeFactor}× (and ${o.lossSpikeMargin} nats above) the mean ${
                mean.toPrecision(4)
              } of the last ${recent.length} steps (divergence.lossSpikeFactor)`,
              weightsChanged: false,
            });
          }
        }
      },
    };
  }
}

/**
 * Every gradient exactly 0 at a clearly non-zero loss: the model is saturated (its weights were blown
 * up, e.g. by lr 1e6: the loss then sits at ln(vocab) and nothing can recover). Throws a
 * {@linkcode DivergenceError} then; does nothing without a guard.
 *
 * @example
 * ```ts
 * import { checkSaturated, DivergenceError, LossHistory } from "./divergence.ts";
 * const g = new LossHistory({ lossSpikeFactor: 4, lossSpikeMargin: 1, lossSpikeWindow: 16, layerwiseCheck: "prepass" })
 *   .guard(2, 1e6);
 * checkSaturated(g, 1e-3, 0.5, 2); // non-zero gradients: fine
 * let e: unknown;
 * try { checkSaturated(g, 1e6, 0, 6.2); } catch (x) { e = x; }
 * if (!(e instanceof DivergenceError)) throw new Error("saturation stops training");
 * ```
 */
export function checkSaturated(guard: StepGuard | undefined, lr: number, sumSq: number, loss: number): void {
  if (guard && sumSq === 0 && loss > 1e-3) {
    throw new DivergenceError({
      step: guard.step,
      lr,
      reason: `every gradient is exactly 0 while the loss is ${
        loss.toPrecision(4)
      }: the model is saturated (weights blown up by a too large learning rate?)`,
      weightsChanged: false,
    });
  }
}
