/**
 * The seeded file-format fuzzer (issue 12, item 6). For each format of `targets.ts` it builds a valid
 * template, then per case copies it, damages one file (`mutations.ts`, or deletes it) and loads the
 * copy. Each case ends in one outcome class:
 *
 * - `refused`: OUR error: its message names the damaged case (the file, or the folder for directory
 *   formats; for JSON lines `file:LINE`) and it is none of the engine's internal errors (see
 *   {@linkcode INTERNAL_ERROR});
 * - `accepted`: the damage left a valid input (a flipped bit in a weight's mantissa, a deleted optional key);
 * - `diverged`: a damaged training state resumed and the divergence guard stopped it (our error too);
 * - `internal`: a TypeError / RangeError from deep inside (`Cannot read properties of undefined`,
 *   `Invalid typed array length`, a stack overflow, an allocation failure): a bug;
 * - `unnamed`: our kind of error but without the file: a bug.
 *
 * The per-format random stream depends only on the seed and the format, so `--only F --seed S`
 * replays the cases of format F of a full run with seed S.
 * @module
 */
import { mulberry32 } from "../../lib/engine/random.ts";
import { type FileKind, int, mutateFile } from "./mutations.ts";
import { FUZZ_FORMATS, FUZZ_TARGETS, type FuzzFormat, SeveralErrors } from "./targets.ts";

/** What a case ended in (see the module doc). */
export type FuzzOutcome = "refused" | "accepted" | "diverged" | "internal" | "unnamed";
/** Every outcome class, good ones first. */
export const FUZZ_OUTCOMES: readonly FuzzOutcome[] = [
  "refused",
  "accepted",
  "diverged",
  "internal",
  "unnamed",
];

/** Messages of errors raised by the runtime or a library rather than by our checks. */
export const INTERNAL_ERROR = new RegExp(
  [
    "Cannot read propert",
    "Cannot set propert",
    "Cannot destructure",
    "is not a function",
    "is not iterable",
    "is not a constructor",
    "undefined is not",
    "null is not",
    "Maximum call stack",
    "Invalid array length",
    "Invalid typed array length",
    "Invalid string length",
    "Array buffer allocation failed",
    "out of memory",
    "outside the bounds",
    "Offset is outside",
    "offset is out of bounds",
    "Cannot convert",
    "Cannot mix BigInt",
  ].join("|"),
);

/** One case that ended in `internal` or `unnamed`. */
export interface FuzzFailure {
  format: FuzzFormat;
  /** Case number within the format. */
  index: number;
  /** Damaged file (relative to the template). */
  file: string;
  /** What the mutation did. */
  what: string;
  outcome: FuzzOutcome;
  /** `Name: message` of the offending error. */
  error: string;
}

/** Counts for one format. */
export interface FuzzFormatReport {
  format: FuzzFormat;
  cases: number;
  outcomes: Record<FuzzOutcome, number>;
  failures: FuzzFailure[];
  /** The slowest case, in milliseconds (a hang would show here; reported, never asserted). */
  slowestMs: number;
}

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  /** Cases per format (a number for all, or per format). */
  cases: number | Partial<Record<FuzzFormat, number>>;
  /** Seed of the random streams. */
  seed: number;
  /** Formats to run. @default every format */
  only?: readonly FuzzFormat[];
  /** Work folder (created; removed at the end unless `keep`). @default a new temporary folder */
  root?: string;
  /** Keep the failing cases' folders for inspection. @default false */
  keep?: boolean;
  /** Called before each case is loaded (to see which case hangs). */
  beforeCase?(format: FuzzFormat, index: number, file: string, what: string): void;
  /** Called after each case. */
  onCase?(format: FuzzFormat, index: number, outcome: FuzzOutcome, what: string): void;
}

/** Classifies a refusal: `refused` when it names `mustName` (and matches `mustMatch`) and is not internal. */
export function classifyError(error: unknown, mustName: string, mustMatch?: RegExp): FuzzOutcome {
  const errors = error instanceof SeveralErrors ? error.errors : [error];
  let outcome: FuzzOutcome = "refused";
  for (const e of errors) {
    const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    if (INTERNAL_ERROR.test(text) || !(e instanceof Error)) return "internal";
    if (!text.includes(mustName) || (mustMatch && !mustMatch.test(text))) outcome = "unnamed";
  }
  return outcome;
}

async function copyDir(src: string, dst: string): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    if (e.isDirectory) await copyDir(`${src}/${e.name}`, `${dst}/${e.name}`);
    else await Deno.copyFile(`${src}/${e.name}`, `${dst}/${e.name}`);
  }
}

function seedFor(seed: number, format: FuzzFormat): number {
  let h = seed >>> 0;
  for (const c of format) h = Math.imul(h ^ c.charCodeAt(0), 0x9e3779b1) >>> 0;
  return h;
}

/**
 * Runs the fuzzer and returns one report per format. The engine must be initialized by the caller
 * (the tests and `deno task fuzz` use the cpu backend).
 */
export async function runFuzz(options: FuzzOptions): Promise<FuzzFormatReport[]> {
  const formats = options.only ?? FUZZ_FORMATS;
  const root = options.root ?? await Deno.makeTempDir({ prefix: "nbtune_fuzz_" });
  await Deno.mkdir(root, { recursive: true });
  const reports: FuzzFormatReport[] = [];
  try {
    for (const format of formats) {
      const target = FUZZ_TARGETS[format];
      const n = typeof options.cases === "number" ? options.cases : options.cases[format] ?? 0;
      const template = `${root}/${format}-template`;
      await Deno.mkdir(template);
      await target.setup(template);
      const rand = mulberry32(seedFor(options.seed, format));
      const report: FuzzFormatReport = {
        format,
        cases: n,
        outcomes: { refused: 0, accepted: 0, diverged: 0, internal: 0, unnamed: 0 },
        failures: [],
        slowestMs: 0,
      };
      for (let k = 0; k < n; k++) {
        const dir = `${root}/${format}-case-${k}`;
        await copyDir(template, dir);
        const { path, kind } = target.files[int(rand, target.files.length)];
        const file = `${dir}/${path}`;
        let what: string;
        if (rand() < 0.04) {
          await Deno.remove(file);
          what = "deleted";
        } else {
          const m = mutateFile(rand, kind as FileKind, await Deno.readFile(file));
          await Deno.writeFile(file, m.bytes);
          what = m.what;
        }
        options.beforeCase?.(format, k, path, what);
        const t0 = performance.now();
        let outcome: FuzzOutcome;
        let error = "";
        try {
          outcome = await target.load(dir);
        } catch (e) {
          outcome = classifyError(e, target.mustName?.(dir) ?? dir, target.mustMatch?.(dir));
          error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
          if (e instanceof SeveralErrors) {
            error = e.errors.map((x) => `${(x as Error).name}: ${x}`).join(" | ");
          }
        }
        report.slowestMs = Math.max(report.slowestMs, performance.now() - t0);
        report.outcomes[outcome]++;
        const bad = outcome === "internal" || outcome === "unnamed";
        if (bad) {
          report.failures.push({ format, index: k, file: path, what, outcome, error: error.slice(0, 600) });
        }
        options.onCase?.(format, k, outcome, what);
        if (!(bad && options.keep)) await Deno.remove(dir, { recursive: true });
      }
      target.dispose?.();
      reports.push(report);
    }
  } finally {
    if (!options.keep) await Deno.remove(root, { recursive: true }).catch(() => {});
  }
  return reports;
}

/** One line per format: cases and outcome counts, e.g. `gptq 40 cases: 31 refused, 9 accepted`. */
export function formatReport(reports: readonly FuzzFormatReport[]): string {
  const lines = reports.map((r) => {
    const parts = FUZZ_OUTCOMES.filter((o) => r.outcomes[o] > 0).map((o) => `${r.outcomes[o]} ${o}`);
    return `${r.format.padEnd(12)} ${String(r.cases).padStart(5)} cases: ${parts.join(", ") || "none"}` +
      ` (slowest ${r.slowestMs.toFixed(0)} ms)`;
  });
  const total = reports.reduce((n, r) => n + r.cases, 0);
  const failures = reports.reduce((n, r) => n + r.failures.length, 0);
  lines.push(`total        ${String(total).padStart(5)} cases, ${failures} internal or unnamed error(s)`);
  for (const r of reports) {
    for (const f of r.failures) {
      lines.push(`  ${f.outcome}: ${f.format} case ${f.index}, ${f.file} ${f.what}: ${f.error}`);
    }
  }
  return lines.join("\n");
}
