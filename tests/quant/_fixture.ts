/**
 * Loads the golden fixtures written by tests/reference/quant_ref.py and gptq_ref.py.
 * @module
 */

export const FIXTURE_DIR = new URL("../fixtures/quant/", import.meta.url);

/** Decodes base64 into a fresh, aligned little-endian byte buffer. */
export function bytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export const f32s = (b64: string): Float32Array => new Float32Array(bytes(b64).buffer);
export const i32s = (b64: string): Int32Array => new Int32Array(bytes(b64).buffer);

/** Parses a fixture JSON file by name. */
export function loadFixture<T>(name: string): T {
  return JSON.parse(Deno.readTextFileSync(new URL(name, FIXTURE_DIR)));
}

/** Asserts two typed arrays hold identical bit patterns, reporting the first difference. */
export function assertSameBits(actual: ArrayBufferView, expected: ArrayBufferView, what: string): void {
  const a = new Uint8Array(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = new Uint8Array(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.length !== e.length) throw new Error(`${what}: ${a.length} bytes, expected ${e.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) throw new Error(`${what}: first differing byte ${i}: ${a[i]} != ${e[i]}`);
  }
}

/** Hex SHA-256 of a typed array's bytes. */
export async function sha256(view: ArrayBufferView): Promise<string> {
  const copy = new Uint8Array(view.byteLength);
  copy.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", copy));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Throws unless `actual` and `expected` have the same JSON form (Object.is for numbers). */
export function assertEquals(actual: unknown, expected: unknown, msg = ""): void {
  const same = typeof actual === "number" && typeof expected === "number"
    ? Object.is(actual, expected)
    : JSON.stringify(actual) === JSON.stringify(expected);
  if (!same) {
    throw new Error(`${msg} expected ${JSON.stringify(expected)}, received ${JSON.stringify(actual)}`);
  }
}

/** Throws unless `fn` throws an instance of `cls` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  cls: new (...args: any[]) => Error,
  includes = "",
): Error {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof cls)) throw new Error(`expected ${cls.name}, received ${e}`);
    if (!e.message.includes(includes)) throw new Error(`message "${e.message}" lacks "${includes}"`);
    return e;
  }
  throw new Error(`expected ${cls.name} to be thrown`);
}
