/**
 * Every `deno task` that runs a script behaves as a CLI (issue 10, item 7): `--help` exits 0 with usage,
 * an unknown option or a bad value is one line on stderr with exit code 2, and a failing run is one line
 * with exit code 1 and no stack trace (unless --verbose). Runs the real tasks as subprocesses.
 */
import { assert, assertEquals } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TASKS: Record<string, string> = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
/** Tasks that are Deno's own commands (deno test, fmt, lint), not our scripts. */
const NOT_SCRIPTS = ["test", "ok"];
const SCRIPT_TASKS = Object.keys(TASKS).filter((t) => !NOT_SCRIPTS.includes(t));
/** The script tasks checked here, by running them. */
const COVERED = [
  "bench",
  "bench:gpu",
  "bench:scale",
  "bench:gemm-bf16",
  "make-checkpoint",
  "profile",
  "demo",
  "fuzz",
  "kernel:install",
  "merge",
  "notebooks",
  "plan",
  "pretrain",
  "quantize",
  "train",
];
/** Script tasks not run here, with the reason (none today: every task is on scripts/_cli.ts). */
const PENDING: Record<string, string> = {};

async function task(
  name: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", name, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Asserts exit `code` and exactly one stderr line starting with `prefix` (and no stack trace). */
async function oneLine(code: number, prefix: string, name: string, ...args: string[]): Promise<string> {
  const r = await task(name, ...args);
  const lines = r.stderr.trimEnd().split("\n");
  const where = `deno task ${name} ${args.join(" ")}:\n${r.stderr}${r.stdout.slice(-2000)}`;
  assertEquals(r.code, code, where);
  assertEquals(lines.length, 1, where);
  assert(lines[0].startsWith(prefix), `expected "${prefix}..."; ${where}`);
  assert(!/\n\s+at /.test(r.stderr) && !r.stderr.includes("Traceback"), where);
  return lines[0];
}

Deno.test("every script task in deno.json is covered here (a new task must get --help and a line in COVERED)", () => {
  assertEquals(SCRIPT_TASKS.filter((t) => !(t in PENDING)).sort(), [...COVERED].sort());
});

for (const name of [...COVERED, ...Object.keys(PENDING)]) {
  const pending = PENDING[name] ? ` (ignored: ${PENDING[name]})` : "";
  Deno.test({
    name: `deno task ${name} --help exits 0 with usage, defaults and examples${pending}`,
    ignore: pending !== "",
  }, async () => {
    const r = await task(name, "--help");
    assertEquals(r.code, 0, r.stderr);
    assert(/usage:/i.test(r.stdout) && r.stdout.includes("default") && /example/i.test(r.stdout), r.stdout);
    assert(r.stdout.includes(`deno task ${name}`), r.stdout);
  });

  Deno.test({
    name: `deno task ${name} --no-such-option exits 2 with one line${pending}`,
    ignore: pending !== "",
  }, async () => {
    await oneLine(2, `${name}: unknown option --no-such-option`, name, "--no-such-option");
  });
}

Deno.test("a typo gets a suggestion instead of starting the full run", async () => {
  assertEquals(
    await oneLine(2, "demo:", "demo", "--step", "5"),
    "demo: unknown option --step (did you mean --steps?)",
  );
});

Deno.test("bad values exit 2 with one line", async () => {
  const cases: [string, string[], string][] = [
    ["demo", ["--steps", "x"], 'demo: --steps needs a whole number, got "x"'],
    ["demo", ["--backend", "gpu"], "demo: --backend must be one of"],
    ["train", ["recipe.yaml", "--steps", "0"], "train: --steps must be >= 1, got 0"],
    ["train", [], "train: missing <recipe.yaml>"],
    ["quantize", ["in", "out", "--blocksize", "100"], "quantize: --blocksize must be one of 32, 64"],
    ["quantize", ["in", "out", "--fp4"], "quantize: unknown option --fp4 (write --quantize fp4 instead)"],
    ["plan", ["--model", "9B"], 'plan: --model: unknown model preset "9B"'],
    ["bench", ["--only", "nope"], "bench: --only must be one of"],
    ["pretrain", ["--lr", "fast"], 'pretrain: --lr needs a number, got "fast"'],
    ["kernel:install", ["--name", "a b"], "kernel:install: --name must be [A-Za-z0-9._-]"],
    ["notebooks", ["--timeout", "x", "notebooks/"], "notebooks: argument --timeout: needs a whole number"],
    ["make-checkpoint", ["gpt-5"], 'make-checkpoint: unknown model "gpt-5"'],
    [
      "make-checkpoint",
      ["smollm-135m", "--max-shard-size", "2"],
      "make-checkpoint: --max-shard-size needs a unit",
    ],
    ["profile", ["dir", "--quantize", "int3"], "profile: --quantize must be one of"],
    ["bench:scale", ["--models", "gpt-5"], "bench:scale: --models must be one of"],
  ];
  for (const [name, args, prefix] of cases) await oneLine(2, prefix, name, ...args);
});

Deno.test("deno task plan --budget 24 is refused: sizes need a unit", async () => {
  assertEquals(
    await oneLine(2, "plan:", "plan", "--budget", "24"),
    "plan: --budget needs a unit: write 24GB or 24GiB (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
  );
  const r = await task("plan", "--budget", "24GiB", "--method", "qlora");
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes("budget 25.8 GB"), r.stdout);
});

Deno.test("failing runs exit 1 with one line and no stack trace; --verbose adds the stack", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_cli_" });
  try {
    await oneLine(1, "train: cannot read the recipe /nonexistent/r.yaml", "train", "/nonexistent/r.yaml");
    await oneLine(
      1,
      "quantize: /nonexistent/config.json does not exist",
      "quantize",
      "/nonexistent",
      `${dir}/q`,
    );
    await oneLine(
      1,
      "pretrain: No such file",
      "pretrain",
      "--corpus",
      "/nonexistent.txt",
      "--out",
      `${dir}/m`,
    );
    await oneLine(1, "notebooks: no such notebook: /nonexistent.ipynb", "notebooks", "/nonexistent.ipynb");
    const verbose = await task("train", "/nonexistent/r.yaml", "--verbose");
    assertEquals(verbose.code, 1);
    assert(/\n\s+at /.test(verbose.stderr), verbose.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("library errors are told in flags: quantize into a non-empty folder asks for --overwrite", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_cli_" });
  try {
    await Deno.writeTextFile(`${dir}/keep.txt`, "x");
    const line = await oneLine(
      1,
      "quantize:",
      "quantize",
      `${ROOT}notebooks/models/tiny-shakespeare-llama`,
      dir,
    );
    assertEquals(line, `quantize: ${dir} is not empty; choose another directory or pass --overwrite.`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
