/**
 * Private helpers shared by the `lib/quant` modules: value descriptions for messages and float32 rounding.
 * @module
 */

/** Rounds a number to the nearest float32 (ties to even), as CUDA `float` arithmetic does. */
export const f32: (x: number) => number = Math.fround;

/** A short description of a received value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) {
    return `a ${value.constructor.name} of length ${(value as Uint8Array).length}`;
  }
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** Product of a shape's dimensions; throws a TypeError on a non-integer or negative dimension. */
export function shapeSize(shape: readonly number[], fn: string): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new TypeError(`${fn}: shape must hold non-negative integers, received [${shape.join(", ")}].`);
    }
    n *= d;
  }
  return n;
}
