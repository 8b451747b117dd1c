import { assert, assertEquals, assertThrows } from "../_assert.ts";
import {
  CliUsageError,
  defineCli,
  failureLine,
  formatHelp,
  parseCli,
  parseSize,
} from "../../scripts/_cli.ts";

const SPEC = defineCli({
  name: "demo",
  summary: "A test command.",
  usage: "deno task demo [options] <in>",
  positionals: { min: 1, max: 1, names: "<in>" },
  options: {
    steps: { type: "integer", default: 300, min: 1, description: "steps", example: "--steps 20" },
    lr: { type: "number", default: 6e-3, description: "learning rate", example: "--lr 1e-3" },
    budget: { type: "size", default: "24GB", description: "memory", example: "--budget 80GB" },
    backend: { type: "string", choices: ["cpu", "wasm"], description: "backend", example: "--backend cpu" },
    only: {
      type: "list",
      choices: ["a", "b", "c"],
      default: "a,b",
      description: "suites",
      example: "--only a",
    },
    sweep: { type: "boolean", default: true, description: "sweep", example: "--no-sweep" },
    overwrite: { type: "boolean", api: "overwrite", description: "replace", example: "--overwrite" },
    blocksize: {
      type: "integer",
      default: 64,
      choices: ["32", "64"],
      api: "blocksize",
      description: "block",
      example: "--blocksize 32",
    },
  },
  renamed: { fp4: "--quantize fp4" },
  examples: ["deno task demo in"],
});

const usage = (args: string[]) => assertThrows(() => parseCli(SPEC, args), CliUsageError).message;

Deno.test("parseCli() fills defaults, reads every type, --flag=value and --no-flag", () => {
  const a = parseCli(SPEC, ["in"]);
  assertEquals(
    a.values,
    {
      steps: 300,
      lr: 6e-3,
      budget: 24e9,
      only: ["a", "b"],
      sweep: true,
      overwrite: false,
      blocksize: 64,
    } as unknown as typeof a.values,
  );
  assertEquals([a.values.backend, a.positionals, a.help, a.verbose], [undefined, ["in"], false, false]);
  const b = parseCli(SPEC, ["--steps=20", "--lr", "1e-3", "--budget", "1.5GiB", "--backend", "cpu", "in"]);
  assertEquals([b.values.steps, b.values.lr, b.values.budget, b.values.backend], [
    20,
    1e-3,
    1.5 * 2 ** 30,
    "cpu",
  ]);
  const c = parseCli(SPEC, ["--no-sweep", "--overwrite", "--only", "c,a", "--verbose", "in"]);
  assertEquals([c.values.sweep, c.values.overwrite, c.values.only, c.verbose], [
    false,
    true,
    ["c", "a"],
    true,
  ]);
});

Deno.test("parseCli() answers --help and -h before checking anything else", () => {
  assert(parseCli(SPEC, ["--help", "--bogus"]).help);
  assert(parseCli(SPEC, ["-h"]).help);
});

Deno.test("parseCli() rejects unknown options with a suggestion, or the renamed flag's replacement", () => {
  assertEquals(usage(["--step", "5", "in"]), "unknown option --step (did you mean --steps?)");
  assertEquals(usage(["--budegt", "1GB", "in"]), "unknown option --budegt (did you mean --budget?)");
  assertEquals(usage(["--zzzzzz", "in"]), "unknown option --zzzzzz (see --help)");
  assertEquals(usage(["-x", "in"]), "unknown option -x (see --help)");
  assertEquals(usage(["--fp4", "in"]), "unknown option --fp4 (write --quantize fp4 instead)");
});

Deno.test("parseCli() rejects bad values, missing values and wrong positionals in one line", () => {
  const cases: [string[], string][] = [
    [["--steps", "x", "in"], '--steps needs a whole number, got "x"'],
    [["--steps", "1.5", "in"], '--steps needs a whole number, got "1.5"'],
    [["--steps", "0", "in"], "--steps must be >= 1, got 0"],
    [["--lr", "fast", "in"], '--lr needs a number, got "fast"'],
    [
      ["--budget", "24", "in"],
      "--budget needs a unit: write 24GB or 24GiB (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
    ],
    [
      ["--budget", "24XB", "in"],
      '--budget needs a size with a unit such as 24GB, got "24XB" (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)',
    ],
    [["--backend", "gpu", "in"], '--backend must be one of cpu, wasm; got "gpu"'],
    [["--only", "a,z", "in"], '--only must be one of a, b, c; got "z"'],
    [["--blocksize", "100", "in"], '--blocksize must be one of 32, 64; got "100"'],
    [["--sweep=yes", "in"], '--sweep takes no value, got "yes" (use --no-sweep)'],
    [["in", "--steps"], "--steps needs a value (e.g. --steps 20)"],
    [["--steps", "--lr", "1", "in"], "--steps needs a value (e.g. --steps 20)"],
    [[], "missing <in> (usage: deno task demo [options] <in>)"],
    [["a", "b"], "expected <in>, got 2 arguments: a b"],
  ];
  for (const [args, message] of cases) {
    assertEquals(usage(args), message, args.join(" "));
    assert(!message.includes("\n"));
  }
});

Deno.test("parseSize() needs a unit and knows decimal and binary units", () => {
  assertEquals([parseSize("24GB"), parseSize("24 gib"), parseSize("512MiB"), parseSize("1e3KB")], [
    24e9,
    24 * 2 ** 30,
    512 * 2 ** 20,
    1e6,
  ]);
  assertThrows(() => parseSize("24", "--budget"), CliUsageError, "--budget needs a unit: write 24GB");
  assertThrows(() => parseSize("lots"), CliUsageError, "needs a size with a unit");
});

Deno.test("formatHelp() lists every option with its default and example, and the examples", () => {
  const text = formatHelp(SPEC);
  for (const [name, o] of Object.entries(SPEC.options)) {
    assert(text.includes(`--${name}`) || text.includes(`--[no-]${name}`), name);
    assert(text.includes(`example: ${o.example}`), name);
  }
  for (
    const line of [
      "default: 300",
      "default: 24GB",
      "default: none",
      "--[no-]sweep",
      "-h, --help",
      "--verbose",
    ]
  ) {
    assert(text.includes(line), line);
  }
  assert(text.includes("Usage: deno task demo [options] <in>") && text.includes("  deno task demo in"));
});

Deno.test("failureLine() folds lines, drops the API function prefix and writes API options as flags", () => {
  const e = new RangeError(
    "quantizeCheckpoint: out is not empty;\n  choose another or pass overwrite: true.",
  );
  assertEquals(failureLine(SPEC, e), "demo: out is not empty; choose another or pass --overwrite.");
  assertEquals(
    failureLine(SPEC, new RangeError('bad "blocksize"; blocksize: 100 is not allowed; overwrite: false')),
    "demo: bad --blocksize; --blocksize 100 is not allowed; --no-overwrite",
  );
  assertEquals(failureLine(SPEC, "plain text"), "demo: plain text");
  const resume = defineCli({
    ...SPEC,
    options: { resume: { type: "string", api: "resumeFrom", description: "", example: "--resume DIR" } },
  });
  assertEquals(
    failureLine(resume, new Error("train: resumeFrom out/a was saved with lr = 0.1")),
    "demo: --resume out/a was saved with lr = 0.1",
  );
});
