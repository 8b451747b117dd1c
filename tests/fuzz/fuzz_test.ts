/**
 * The seeded file-format fuzz (issue 12, item 6) with a small budget: every format of
 * `tests/fuzz/targets.ts` (sharded safetensors, GGUF, a BF16 model, a tokenizer folder, bitsandbytes
 * 4-bit, GPTQ, PEFT adapters, training states, YAML recipes, JSON lines) damaged in `FUZZ_CASES` ways
 * each (default 60; training states a quarter of that, each resume trains a step; GGUF half) and
 * loaded. Every case must end in our own error naming the file (`refused`), a valid load
 * (`accepted`) or the divergence guard (`diverged`): none in `internal` (an engine TypeError /
 * RangeError from deep inside) or `unnamed` (no file in the message). `FUZZ_SEED` sets the seed
 * (default 2026). The long run is `deno task fuzz --cases 2000`.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { classifyError, formatReport, runFuzz } from "./harness.ts";
import { FUZZ_FORMATS } from "./targets.ts";
import { FormatError } from "../../lib/io/format_error.ts";

await initEngine({ backend: "cpu" });
const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 60);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 2026);
/** Slower formats get fewer cases: a resume trains a step, a GGUF case copies and reads 1.7 MB. */
const SHARE: Partial<Record<string, number>> = { state: 1 / 4, gguf: 1 / 2 };

Deno.test("the classifier tells our errors from internal and unnamed ones", () => {
  const file = "/data/x.safetensors";
  assertEquals(classifyError(new FormatError("bad dtype", { file, tensor: "w" }), file), "refused");
  assertEquals(classifyError(new TypeError(`${file}: field "r" must be a number`), file), "refused");
  assertEquals(classifyError(new RangeError("record 3: a record must be an object"), file), "unnamed");
  assertEquals(
    classifyError(new TypeError(`${file}: Cannot read properties of undefined (reading 'map')`), file),
    "internal",
  );
  assertEquals(classifyError(new RangeError("Invalid typed array length: -4"), file), "internal");
  assertEquals(classifyError("a thrown string", file), "internal");
  assertEquals(
    classifyError(new SyntaxError(`${file}:3: not valid JSON`), file, /x\.safetensors:\d+/),
    "refused",
  );
  assertEquals(
    classifyError(new SyntaxError(`${file}: not valid JSON`), file, /x\.safetensors:\d+/),
    "unnamed",
  );
});

Deno.test(`file-format fuzz: ${CASES} damaged files per format end in our error naming the file`, async () => {
  const before = tf.memory().numTensors;
  const cases = Object.fromEntries(
    FUZZ_FORMATS.map((f) => [f, Math.max(1, Math.round(CASES * (SHARE[f] ?? 1)))]),
  );
  const reports = await runFuzz({ cases, seed: SEED });
  console.log(formatReport(reports));
  assertEquals(reports.map((r) => r.format), [...FUZZ_FORMATS]);
  for (const r of reports) {
    assertEquals(Object.values(r.outcomes).reduce((a, b) => a + b, 0), r.cases, r.format);
    // the damage must reach the checks: most cases of every format are refused
    assert(
      r.outcomes.refused >= r.cases / 3,
      `${r.format}: only ${r.outcomes.refused} of ${r.cases} refused`,
    );
  }
  const failures = reports.flatMap((r) => r.failures);
  assertEquals(failures.length, 0, formatReport(reports));
  assertEquals(tf.memory().numTensors, before, "tensors leaked by refused loads");
});
