/**
 * Internal helpers shared by the optimizers: the Adam hyperparameter fields of their
 * option schemas and checks of step arguments.
 * @module
 */
import { number } from "../options/schema.ts";

/** Schema fields of the Adam hyperparameters shared by the AdamW family. */
export const adamFields = {
  beta1: number("Decay of the first moment.", { min: 0, below: 1, default: 0.9 }),
  beta2: number("Decay of the second moment.", { min: 0, below: 1, default: 0.999 }),
  eps: number("Added to the bias-corrected sqrt(v).", { above: 0, default: 1e-8 }),
  weightDecay: number("Decoupled weight decay (multiplied by lr).", { min: 0, default: 0 }),
};

/** Adam moment hyperparameters. */
export interface AdamHyper {
  beta1: number;
  beta2: number;
  eps: number;
}

/** Throws a RangeError unless `lr` is a finite number >= 0. */
export function checkLr(where: string, lr: number): void {
  if (typeof lr !== "number" || !Number.isFinite(lr) || lr < 0) {
    throw new RangeError(`${where}: lr must be a finite number >= 0, received ${lr}`);
  }
}

/** Throws a TypeError when a name occurs twice in one step. */
export function checkUniqueNames(where: string, names: string[]): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) throw new TypeError(`${where}: parameter "${n}" appears twice in one step call`);
    seen.add(n);
  }
}
