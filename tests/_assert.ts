/**
 * The assertions the tests use, with `@std/assert`'s names (JSR is not reachable
 * from our machines, so this small local copy stands in for it).
 * @module
 */
import { deepStrictEqual } from "node:assert/strict";

/** Error thrown by failed assertions. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Asserts `cond` is truthy. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

/** Deep strict equality. */
export function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  try {
    deepStrictEqual(actual, expected);
  } catch (e) {
    throw new AssertionError(`${msg ? msg + ": " : ""}${(e as Error).message}`);
  }
}

/** `|actual − expected| <= tolerance` (absolute). */
export function assertAlmostEquals(actual: number, expected: number, tolerance = 1e-7, msg?: string): void {
  if (!(Math.abs(actual - expected) <= tolerance)) {
    throw new AssertionError(`${msg ? msg + ": " : ""}expected ${expected} ± ${tolerance}, got ${actual}`);
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

function check(e: unknown, cls?: ErrorClass, includes?: string): Error {
  if (!(e instanceof Error)) throw new AssertionError(`expected an Error to be thrown, got ${String(e)}`);
  if (cls && !(e instanceof cls)) {
    throw new AssertionError(
      `expected ${cls.name}, got ${(e as Error).constructor.name}: ${(e as Error).message}`,
    );
  }
  if (includes && !e.message.includes(includes)) {
    throw new AssertionError(`expected message to include "${includes}", got "${e.message}"`);
  }
  return e;
}

/** Asserts `fn` throws (optionally of class `cls` with a message including `includes`). */
export function assertThrows(fn: () => unknown, cls?: ErrorClass, includes?: string): Error {
  try {
    fn();
  } catch (e) {
    return check(e, cls, includes);
  }
  throw new AssertionError("expected function to throw");
}

/** Asserts the promise returned by `fn` rejects. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls?: ErrorClass,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return check(e, cls, includes);
  }
  throw new AssertionError("expected promise to reject");
}

/** Largest relative error `max|a−b| / max|b|` between two arrays. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new AssertionError(`length ${a.length} != ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}
