/**
 * JSON-lines files: one JSON value per line, read incrementally.
 *
 * {@linkcode streamJsonl} reads the file in chunks (a `ReadableStream` over `Deno.open`) and
 * yields one record per line as an `AsyncIterable`, so a dataset larger than memory can be
 * passed to `train(model, streamJsonl(path), { steps })`. {@linkcode readJsonl} collects the
 * same records into an array. Both: a UTF-8 byte order mark at the start of the file is
 * skipped, `\r\n` line ends are accepted, blank (whitespace-only) lines are skipped (line
 * numbers still count them), and every error names `file:line`.
 * @module
 */

/** Where each object read by {@linkcode streamJsonl} / {@linkcode readJsonl} came from (`file:line`). */
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
 * await Deno.remove(path);
 * ```
 */
export function sourceOf(value: unknown): string | undefined {
  return typeof value === "object" && value !== null ? SOURCES.get(value) : undefined;
}

const NEWLINE = 0x0a;
const BOM = [0xef, 0xbb, 0xbf];

/** Joins byte chunks into one array (most lines lie inside one chunk: no copy then). */
function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Reads a JSON-lines file incrementally, yielding one parsed record per non-blank line, in file
 * order; only the current chunk and line are held in memory. The type parameter states the record
 * shape you expect (nothing is checked beyond each line holding one JSON object). Invalid UTF-8 or
 * JSON, or a line holding something else than an object (`5`, `"text"`, `null`, `[…]`), throws a
 * `SyntaxError` naming `file:line`. The file is closed when the iteration ends, also early
 * (`break`) or on an error. Iterate it again (call again) for another pass.
 *
 * @example
 * ```ts
 * import { streamJsonl } from "./jsonl.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '\uFEFF{"text": "a"}\r\n\r\n{"text": "b"}');
 * const texts: string[] = [];
 * for await (const r of streamJsonl<{ text: string }>(path)) texts.push(r.text);
 * if (texts.join() !== "a,b") throw new Error(texts.join());
 * await Deno.writeTextFile(path, '{"text": "a"}\n{oops\n');
 * const seen: unknown[] = [];
 * const err = await (async () => {
 *   for await (const r of streamJsonl(path)) seen.push(r);
 * })().catch((e) => e as Error);
 * if (seen.length !== 1 || !(err instanceof SyntaxError) || !err.message.startsWith(`${path}:2:`)) {
 *   throw new Error("yields the good line, then names the bad one");
 * }
 * await Deno.remove(path);
 * ```
 */
export async function* streamJsonl<T = Record<string, unknown>>(
  path: string,
): AsyncGenerator<T, void, undefined> {
  const file = await Deno.open(path, { read: true });
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let lineNo = 0, first = true;
  const parse = (bytes: Uint8Array): T | undefined => {
    lineNo++;
    if (first) {
      first = false;
      if (BOM.every((b, i) => bytes[i] === b)) bytes = bytes.subarray(3);
    }
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === 0x0d) end--; // CRLF
    let line: string;
    try {
      line = decoder.decode(bytes.subarray(0, end));
    } catch {
      throw new SyntaxError(`${path}:${lineNo}: not valid UTF-8; save the file as UTF-8`);
    }
    if (!line.trim()) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new SyntaxError(`${path}:${lineNo}: not valid JSON: ${(e as Error).message}`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      // A bare value cannot carry its file:line to the record checks that run later: refuse it here.
      const got = Array.isArray(value)
        ? "an array"
        : value === null
        ? "null"
        : `${typeof value} ${line.trim().slice(0, 40)}`;
      throw new SyntaxError(`${path}:${lineNo}: each line must hold one JSON object (a record), got ${got}`);
    }
    SOURCES.set(value, `${path}:${lineNo}`);
    return value as T;
  };
  // Bytes of the line being read, split over chunks.
  let pending: Uint8Array[] = [];
  // Iterating the stream closes the file at its end, and cancels (closes) it when left early.
  for await (const chunk of file.readable) {
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl >= 0; nl = chunk.indexOf(NEWLINE, start)) {
      pending.push(chunk.subarray(start, nl));
      const value = parse(concat(pending));
      pending = [];
      start = nl + 1;
      if (value !== undefined) yield value;
    }
    // The reader may reuse its buffer: keep a copy of the unfinished line.
    if (start < chunk.length) pending.push(chunk.slice(start));
  }
  if (pending.length) {
    const value = parse(concat(pending));
    if (value !== undefined) yield value;
  }
}

/**
 * Reads a whole JSON-lines file into an array ({@linkcode streamJsonl}'s records, collected),
 * naming the file and line of a bad record. The type parameter states the record shape you
 * expect (nothing is checked beyond each line holding one JSON object).
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
  const out: T[] = [];
  for await (const r of streamJsonl<T>(path)) out.push(r);
  return out;
}
