/**
 * Minimal assertions for the optimizer tests (no network access to JSR here).
 * @module
 */

/** Throws when `cond` is falsy. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Throws unless `a === b`. */
export function assertEquals<T>(a: T, b: T, msg = ""): void {
  if (a !== b) throw new Error(`expected ${String(b)}, received ${String(a)}${msg ? ` (${msg})` : ""}`);
}

/** Throws unless `fn` throws an instance of `cls` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  cls: new (...args: never[]) => Error,
  includes = "",
): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof cls)) throw new Error(`expected ${cls.name}, received ${e}`);
    if (!e.message.includes(includes)) throw new Error(`message "${e.message}" lacks "${includes}"`);
    return;
  }
  throw new Error(`expected ${cls.name} to be thrown`);
}
