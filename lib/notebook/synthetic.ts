/**
 * Made-up training histories for demos, docs and tests of the notebook helpers (no model involved).
 *
 * @module
 */

import type { StepRecord } from "../train/types.ts";
import { defineOptions, type FieldsOf, integer } from "../options/schema.ts";

/** Options for {@linkcode syntheticHistory}. */
export interface SyntheticHistoryOptions {
  /** Add an eval loss every this many steps (0 for none).
   * @default 0 */
  evalEvery?: number;
  /** Seed of the noise on the loss.
   * @default 1 */
  seed?: number;
}

/** The schema of {@linkcode syntheticHistory}'s options. */
export const syntheticHistorySchema = defineOptions(
  "syntheticHistory",
  {
    evalEvery: integer("Add an eval loss every this many steps (0 for none).", { min: 0, default: 0 }),
    seed: integer("Seed of the noise on the loss.", { min: 0, default: 1 }),
  } satisfies FieldsOf<SyntheticHistoryOptions>,
);

/**
 * `steps` plausible StepRecords: loss decaying from about 3 with noise, warmup + cosine lr, and a memory
 * breakdown that grows a little (activations) over the run.
 *
 * @example
 * ```ts
 * const history = syntheticHistory(30, { evalEvery: 10 });
 * if (history.length !== 30 || history[29].step !== 30) throw new Error("wrong steps");
 * if (history.filter((r) => r.evalLoss !== undefined).length !== 3) throw new Error("wrong evals");
 * if (!(history[29].loss < history[0].loss)) throw new Error("loss should fall");
 * ```
 */
export function syntheticHistory(steps: number, options: SyntheticHistoryOptions = {}): StepRecord[] {
  const { evalEvery } = syntheticHistorySchema.parse(options);
  if (!Number.isInteger(steps) || steps < 0) {
    throw new RangeError(`steps must be an integer ≥ 0; got ${steps}`);
  }
  let state = (options.seed ?? 1) >>> 0 || 1;
  const noise = () => {
    // xorshift32: enough for a wiggle on a demo curve.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) / 2 ** 32) - 0.5;
  };
  const MiB = 2 ** 20;
  const warmup = Math.max(1, Math.round(steps * 0.1));
  return Array.from({ length: steps }, (_, i) => {
    const step = i + 1;
    const progress = step / Math.max(1, steps);
    const lr = step <= warmup
      ? 2e-4 * step / warmup
      : 1e-5 + (2e-4 - 1e-5) * 0.5 * (1 + Math.cos(Math.PI * progress));
    const loss = 1.2 + 1.8 * Math.exp(-4 * progress) + 0.15 * noise();
    const breakdown = {
      weights: 48 * MiB,
      quantConstants: 0,
      adapters: 2 * MiB,
      gradients: 2 * MiB,
      optimizerStates: 4 * MiB,
      activations: (20 + 6 * Math.sin(step / 3) ** 2) * MiB,
      workspace: 0,
      hostOffloaded: 0,
    };
    const tensorBytes = Object.values(breakdown).reduce((a, b) => a + b, 0);
    const record: StepRecord = {
      step,
      loss,
      lr,
      tokens: 2048,
      seconds: 0.5 + 0.05 * noise(),
      gradNorm: 1 + 0.5 * Math.exp(-3 * progress),
      memory: { tensorBytes, numTensors: 180, heapBytes: 128 * MiB, rssBytes: 300 * MiB, breakdown },
    };
    if (evalEvery > 0 && step % evalEvery === 0) record.evalLoss = loss + 0.1 + 0.05 * noise();
    return record;
  });
}
