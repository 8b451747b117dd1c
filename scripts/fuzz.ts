/**
 * `deno task fuzz`: the seeded file-format fuzzer of issue 12 (`tests/fuzz/harness.ts`) as a long run.
 * Damages copies of a valid sharded safetensors checkpoint, GGUF file, bitsandbytes 4-bit checkpoint, GPTQ
 * directory, PEFT adapter, training state, YAML recipe and JSON-lines file (truncation, bit flips,
 * huge lengths, overlapping offsets, wrong dtypes, non-UTF-8, BOMs, duplicate keys, deep nesting,
 * wrong field types) and loads each as a user would. Prints the cases per format and their outcome
 * classes (refused / accepted / diverged / internal / unnamed) and every failing case; exits 1 when a
 * case ended in an internal or unnamed error. Options: `deno task fuzz --help`.
 * @module
 */
import { defineCli, runCli } from "./_cli.ts";
import { FUZZ_FORMATS, type FuzzFormat } from "../tests/fuzz/formats.ts";

const FUZZ_CLI = defineCli({
  name: "fuzz",
  summary: "Seeded fuzz of every file format the toolkit reads: each damaged file must end in our own " +
    "error naming it (never an internal TypeError/RangeError, a hang or an out-of-memory).",
  usage: "deno task fuzz [options]",
  options: {
    cases: {
      type: "integer",
      default: 500,
      min: 1,
      description: "cases per format (training states run a step each: a quarter of them)",
      example: "--cases 2000",
    },
    seed: {
      type: "integer",
      default: 2026,
      min: 0,
      description: "seed of the random streams",
      example: "--seed 7",
    },
    only: {
      type: "list",
      choices: FUZZ_FORMATS,
      defaultText: "every format",
      description: "formats to run (a format's cases do not depend on the others)",
      example: "--only gptq,peft",
    },
    keep: {
      type: "boolean",
      description: "keep the folders of failing cases (printed) for inspection",
      example: "--keep",
    },
    progress: {
      type: "boolean",
      description: "print each case before it is loaded (to find a case that hangs)",
      example: "--progress",
    },
  },
  examples: [
    "deno task fuzz",
    "deno task fuzz --cases 5000 --seed 1",
    "deno task fuzz --only safetensors,gptq --cases 200",
  ],
});

if (import.meta.main) {
  await runCli(FUZZ_CLI, async ({ values }) => {
    // Loaded after parsing, so --help and usage errors answer without loading tfjs.
    const { initEngine } = await import("../lib/engine/backend.ts");
    const { formatReport, runFuzz } = await import("../tests/fuzz/harness.ts");
    await initEngine({ backend: "cpu" });
    const only = (values.only ?? [...FUZZ_FORMATS]) as FuzzFormat[];
    const cases = Object.fromEntries(
      only.map((f) => [f, f === "state" ? Math.max(1, Math.round(values.cases / 4)) : values.cases]),
    );
    const root = await Deno.makeTempDir({ prefix: "nbtune_fuzz_" });
    const t0 = performance.now();
    const reports = await runFuzz({
      cases,
      seed: values.seed,
      only,
      root,
      keep: values.keep,
      beforeCase: values.progress
        ? (f, k, file, what) => console.log(`${f} case ${k}: ${file} ${what}`)
        : undefined,
    });
    console.log(
      `fuzz: seed ${values.seed}, ${((performance.now() - t0) / 1000).toFixed(1)} s, RSS ${
        (Deno.memoryUsage().rss / 2 ** 20).toFixed(0)
      } MiB`,
    );
    console.log(formatReport(reports));
    const failures = reports.reduce((n, r) => n + r.failures.length, 0);
    if (values.keep && failures > 0) console.log(`failing cases kept under ${root}`);
    if (failures > 0) {
      throw new Error(`${failures} case(s) ended in an internal or unnamed error (listed above)`);
    }
  });
}
