/**
 * Tiny assertions for the planner tests (no network, so no @std/assert).
 * @module
 */

/** Throws unless `cond` holds. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Throws unless `actual === expected`. */
export function assertEquals<T>(actual: T, expected: T, msg = ""): void {
  if (actual !== expected) throw new Error(`${msg} expected ${String(expected)}, got ${String(actual)}`);
}

/** Throws unless |actual - expected| <= tol. */
export function assertNear(actual: number, expected: number, tol: number, msg = ""): void {
  if (!(Math.abs(actual - expected) <= tol)) {
    throw new Error(`${msg} expected ${expected} ± ${tol}, got ${actual}`);
  }
}

/** Throws unless `fn` throws an instance of `cls` whose message includes `includes`. */
export function assertThrows(fn: () => unknown, cls: new (...a: never[]) => Error, includes = ""): Error {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof cls)) throw new Error(`expected ${cls.name}, got ${e}`);
    if (!e.message.includes(includes)) throw new Error(`message "${e.message}" lacks "${includes}"`);
    return e;
  }
  throw new Error(`expected ${cls.name} to be thrown`);
}
