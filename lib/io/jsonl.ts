/**
 * JSON-lines files: one JSON value per line, blank lines skipped.
 * @module
 */

/** Where each object read by {@linkcode readJsonl} came from (`file:line`). */
const SOURCES = new WeakMap<object, string>();

/**
 * The `file:line` an object was read from by {@linkcode readJsonl} (for error messages
 * about records found bad later, e.g. while tokenizing), or undefined.
 *
 * @example
 * ```ts
 * import { readJsonl, sourceOf } from "./jsonl.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '{"text": "a"}\n\n{"text": 3}\n');
 * const rows = await readJsonl(path);
 * if (sourceOf(rows[1]) !== `${path}:3`) throw new Error(String(sourceOf(rows[1])));
 * ```
 */
export function sourceOf(value: unknown): string | undefined {
  return typeof value === "object" && value !== null ? SOURCES.get(value) : undefined;
}

/**
 * Reads a JSON-lines file, naming the file and line of a bad record. The type parameter
 * states the record shape you expect (nothing is checked beyond valid JSON).
 *
 * @example
 * ```ts
 * import { readJsonl } from "./jsonl.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '{"text": "a"}\n\n{"text": "b"}\n');
 * const rows = await readJsonl<{ text: string }>(path);
 * if (rows.map((r) => r.text).join() !== "a,b") throw new Error("bad rows");
 * await Deno.writeTextFile(path, '{"text": "a"}\n{oops\n');
 * const err = await readJsonl(path).catch((e) => e as Error);
 * if (!(err instanceof SyntaxError) || !err.message.includes(`${path}:2:`)) throw new Error("names the line");
 * await Deno.remove(path);
 * ```
 */
export async function readJsonl<T = Record<string, unknown>>(path: string): Promise<T[]> {
  const text = await Deno.readTextFile(path);
  const out: T[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new SyntaxError(`${path}:${i + 1}: not valid JSON: ${(e as Error).message}`);
    }
    if (typeof value === "object" && value !== null) SOURCES.set(value, `${path}:${i + 1}`);
    out.push(value as T);
  });
  return out;
}
