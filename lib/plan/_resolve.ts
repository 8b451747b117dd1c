/**
 * Internal helpers of `lib/plan`: option merging with unknown keys rejected, and checks.
 * @module
 */

/**
 * Merges `given` over `defaults`, rejecting keys not in `known` (or in `defaults` when
 * `known` is omitted), so a typo (`loraRnak`) fails loudly instead of being ignored.
 */
export function resolveKeys<T extends object>(
  where: string,
  given: unknown,
  defaults: T,
  known: readonly string[] = Object.keys(defaults),
): T {
  if (given === undefined || given === null) return { ...defaults };
  if (typeof given !== "object" || Array.isArray(given)) {
    throw new TypeError(
      `${where}: options must be an object, received ${Array.isArray(given) ? "array" : typeof given}`,
    );
  }
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) {
      throw new TypeError(`${where}: unknown option "${key}"; known options are ${known.join(", ")}`);
    }
  }
  const out = { ...defaults } as Record<string, unknown>;
  for (const [key, value] of Object.entries(given)) if (value !== undefined) out[key] = value;
  return out as T;
}

/** Throws a RangeError unless `v` is an integer ≥ `min`. */
export function checkInt(where: string, name: string, v: unknown, min = 1): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new RangeError(`${where}: ${name} must be an integer >= ${min}, received ${JSON.stringify(v)}`);
  }
  return v;
}

/** Throws a RangeError unless `v` is one of `allowed`. */
export function checkOneOf<T extends string>(
  where: string,
  name: string,
  v: unknown,
  allowed: readonly T[],
): T {
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
    throw new RangeError(
      `${where}: ${name} must be one of ${allowed.join(", ")}, received ${JSON.stringify(v)}`,
    );
  }
  return v as T;
}

/** Bytes per element of a floating-point storage/compute dtype. */
export type FloatDtype = "fp32" | "fp16" | "bf16";

/** Bytes per element of `dtype`. */
export function dtypeBytes(dtype: FloatDtype): number {
  switch (dtype) {
    case "fp32":
      return 4;
    case "fp16":
    case "bf16":
      return 2;
  }
}
