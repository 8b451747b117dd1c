/**
 * streamJsonl / readJsonl: incremental reading (records before a bad line are yielded, the file
 * is closed when left early), lines split over read chunks (also inside a multi-byte character),
 * BOM, CRLF, blank lines, and `file:line` in every error.
 */
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { readJsonl, sourceOf, streamJsonl } from "../../lib/io/jsonl.ts";

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const r of it) out.push(r);
  return out;
}

Deno.test("streamJsonl: many chunks, lines and multi-byte characters split across them, same as readJsonl", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  // ~600 KB: many read chunks; "é" and "😀" are 2 and 4 bytes, so some land on a chunk boundary.
  const rows = Array.from(
    { length: 3000 },
    (_, i) => ({ i, text: "é😀".repeat(i % 37) + "x".repeat(i % 101) }),
  );
  await Deno.writeTextFile(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const got = await collect(streamJsonl<{ i: number; text: string }>(path));
  assertEquals(got, rows);
  assertEquals(await readJsonl(path), rows);
  assertEquals(sourceOf(got[2999]), `${path}:3000`);
  await Deno.remove(path);
});

Deno.test("streamJsonl: BOM, CRLF, blank lines (counted in line numbers), no final newline", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(path, '\uFEFF{"a": 1}\r\n  \r\n\n{"a": 2}\r\n{"a": "3\\r"}');
  const got = await collect(streamJsonl<{ a: unknown }>(path));
  assertEquals(got, [{ a: 1 }, { a: 2 }, { a: "3\r" }]);
  assertEquals(got.map(sourceOf), [`${path}:1`, `${path}:4`, `${path}:5`]);
  await Deno.remove(path);
});

Deno.test("streamJsonl: errors name file:line; records before the bad line are yielded first", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(path, '{"a": 1}\r\n\r\n{"a": \r\n');
  const seen: unknown[] = [];
  await assertRejects(
    async () => {
      for await (const r of streamJsonl(path)) seen.push(r);
    },
    SyntaxError,
    `${path}:3: not valid JSON`,
  );
  assertEquals(seen, [{ a: 1 }]);
  // invalid UTF-8 on line 2
  await Deno.writeFile(
    path,
    new Uint8Array([...new TextEncoder().encode('{"a": 1}\n{"a": "'), 0xff, 0x22, 0x7d]),
  );
  await assertRejects(() => readJsonl(path), SyntaxError, `${path}:2: not valid UTF-8`);
  await assertRejects(() => readJsonl(`${path}.missing`), Deno.errors.NotFound);
  await Deno.remove(path);
});

Deno.test("streamJsonl reads incrementally: leaving early never reaches a bad line far down, and closes the file", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  const good = Array.from({ length: 20000 }, (_, i) => JSON.stringify({ i, pad: "p".repeat(40) })).join("\n");
  await Deno.writeTextFile(path, good + "\n{broken\n");
  await assertRejects(() => readJsonl(path), SyntaxError, `${path}:20001`);
  let n = 0;
  for await (const r of streamJsonl<{ i: number }>(path)) {
    assertEquals(r.i, n);
    if (++n === 3) break; // the resource sanitizer fails this test if the file stayed open
  }
  assert(n === 3);
  await Deno.remove(path);
});
