/**
 * Internal helpers shared by the optimizers: option resolution (unknown keys rejected)
 * and validation of Adam hyperparameters.
 * @module
 */

/**
 * Merges `given` over `defaults`, rejecting keys that `defaults` does not name, so that a
 * typo (`betta1`) fails loudly instead of being ignored.
 */
export function resolveOptions<T extends object>(
  where: string,
  given: Partial<T> | undefined,
  defaults: T,
): T {
  if (given === undefined || given === null) return { ...defaults };
  if (typeof given !== "object") {
    throw new TypeError(`${where}: options must be an object, received ${typeof given}`);
  }
  const known = Object.keys(defaults);
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) {
      throw new TypeError(`${where}: unknown option "${key}"; known options are ${known.join(", ")}`);
    }
  }
  const out = { ...defaults } as Record<string, unknown>;
  for (const [key, value] of Object.entries(given)) if (value !== undefined) out[key] = value;
  return out as T;
}

/** Adam moment hyperparameters. */
export interface AdamHyper {
  beta1: number;
  beta2: number;
  eps: number;
}

/** Throws a RangeError unless betas are in [0, 1), eps > 0 and weightDecay >= 0. */
export function checkAdamHyper(where: string, h: AdamHyper & { weightDecay: number }): void {
  for (const key of ["beta1", "beta2"] as const) {
    const b = h[key];
    if (typeof b !== "number" || !(b >= 0 && b < 1)) {
      throw new RangeError(`${where}: ${key} must be a number in [0, 1), received ${b}`);
    }
  }
  if (typeof h.eps !== "number" || !(h.eps > 0) || !Number.isFinite(h.eps)) {
    throw new RangeError(`${where}: eps must be a positive finite number, received ${h.eps}`);
  }
  if (typeof h.weightDecay !== "number" || !(h.weightDecay >= 0) || !Number.isFinite(h.weightDecay)) {
    throw new RangeError(`${where}: weightDecay must be a finite number >= 0, received ${h.weightDecay}`);
  }
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
