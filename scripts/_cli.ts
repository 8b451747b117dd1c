/**
 * The command-line helper every `deno task` script uses: options are declared once (type, default,
 * description, example) and parsed with `node:util`'s `parseArgs`; `--help` lists them all.
 *
 * Conventions it enforces (issue 10, item 7):
 * - `--help` / `-h` prints every option with its default and an example, exit code 0;
 * - an unknown option or a bad value is one line on stderr (`demo: unknown option --step (did you mean
 *   --steps?)`), exit code 2;
 * - any other failure is one line on stderr, exit code 1; the stack trace only with `--verbose`;
 * - sizes need a unit (`24GB`, `32GiB`): a bare `24` is refused rather than read as 24 bytes;
 * - library errors that name an API option (`overwrite: true`) are rewritten to the flag (`--overwrite`).
 * @module
 */
import { parseBytes } from "../lib/plan/bytes.ts";
import { parseArgs } from "node:util";

/** How an option's value is read. `size` is bytes from a number with a unit; `list` is comma-separated. */
export type CliOptionType = "string" | "boolean" | "integer" | "number" | "size" | "list";

/** One command-line option. */
export interface CliOption {
  /** How the value is read. */
  type: CliOptionType;
  /** What it does, one short line. */
  description: string;
  /** Value when the flag is absent (a size as text, e.g. `"24GB"`). Booleans default to false. */
  default?: string | number | boolean;
  /** What the help shows as the default when there is no fixed one, e.g. `"the recipe's train.steps"`. */
  defaultText?: string;
  /** A complete example, e.g. `"--steps 20"`. */
  example: string;
  /** Allowed values (of a string, an integer, or each item of a list). */
  choices?: readonly string[];
  /** Smallest allowed value (integer and number). */
  min?: number;
  /** Name shown for the value in the help (`N`, `DIR`); from the type when absent. */
  placeholder?: string;
  /** The library option this flag sets: errors naming it (`overwrite: true`) are rewritten to the flag. */
  api?: string;
}

/** A command: its name (as in `deno task NAME`), what it does, its options and examples. */
export interface CliSpec<O extends Record<string, CliOption> = Record<string, CliOption>> {
  /** Task name, the prefix of every error line. */
  name: string;
  /** What the command does, one or two sentences. */
  summary: string;
  /** Usage line, e.g. `deno task quantize <in_dir> <out_dir> [options]`. */
  usage: string;
  /** Positional arguments: how many are allowed and what they are. @default none */
  positionals?: { min: number; max: number; names: string };
  /** Options by flag name (without `--`). `help` and `verbose` are added. */
  options: O;
  /** Whole command lines shown under "Examples". */
  examples: readonly string[];
  /** Flags that no longer exist, with what to write instead: `{ fp4: "--quantize fp4" }`. */
  renamed?: Record<string, string>;
  /** Rewrites a failure message before it is printed (after the `api` rewrites). */
  rewrite?: (message: string) => string;
}

type ValueOf<T extends CliOptionType> = T extends "boolean" ? boolean
  : T extends "string" ? string
  : T extends "list" ? string[]
  : number;

/** Parsed option values: present when given or defaulted, else undefined. */
export type CliValues<O extends Record<string, CliOption>> = {
  [K in keyof O]: O[K] extends { type: "boolean" } | { default: string | number | boolean }
    ? ValueOf<O[K]["type"]>
    : ValueOf<O[K]["type"]> | undefined;
};

/**
 * Declares a command; only types it (option literals kept, so parsed values are typed per option).
 *
 * @param spec the command
 * @returns `spec`
 * @example
 * ```ts
 * import { defineCli, parseCli } from "./_cli.ts";
 * const cli = defineCli({
 *   name: "plan", summary: "Memory plan.", usage: "deno task plan [options]", examples: ["deno task plan"],
 *   options: { budget: { type: "size", default: "24GB", description: "device memory", example: "--budget 80GB" } },
 * });
 * const bytes: number = parseCli(cli, ["--budget", "80GB"]).values.budget;
 * if (bytes !== 80e9) throw new Error(String(bytes));
 * ```
 */
export function defineCli<const O extends Record<string, CliOption>>(spec: CliSpec<O>): CliSpec<O> {
  return spec;
}

/** The result of {@linkcode parseCli}. */
export interface CliArgs<O extends Record<string, CliOption>> {
  values: CliValues<O>;
  positionals: string[];
  /** `--help` was given (nothing else is checked then). */
  help: boolean;
  /** `--verbose` was given. */
  verbose: boolean;
}

/** A usage mistake (unknown option, bad value, wrong number of arguments): exit code 2. */
export class CliUsageError extends RangeError {
  override name = "CliUsageError";
}

const BUILTIN: Record<string, CliOption> = {
  verbose: { type: "boolean", description: "on failure, print the stack trace too", example: "--verbose" },
  help: { type: "boolean", description: "print this help and exit", example: "--help" },
};

/**
 * Reads a size with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; case-insensitive) as bytes.
 *
 * @param text e.g. `"24GB"`, `"1.5 GiB"`
 * @param flag the flag, for the message
 * @returns bytes
 * @throws {CliUsageError} when the unit is missing or unknown
 * @example
 * ```ts
 * import { parseSize } from "./_cli.ts";
 * if (parseSize("24GB") !== 24e9 || parseSize("1 GiB") !== 2 ** 30) throw new Error("units");
 * let refused = false;
 * try { parseSize("24", "--budget"); } catch (e) { refused = String(e).includes("24GB"); }
 * if (!refused) throw new Error("a bare number must be refused");
 * ```
 */
export function parseSize(text: string, flag = "size"): number {
  const units = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";
  const bare = /^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*$/i.exec(text);
  if (bare) {
    throw new CliUsageError(`${flag} needs a unit: write ${bare[1]}GB or ${bare[1]}GiB (units: ${units})`);
  }
  try {
    return parseBytes(text); // the planner's parser: same units, same number syntax
  } catch {
    throw new CliUsageError(`${flag} needs a size with a unit such as 24GB, got "${text}" (units: ${units})`);
  }
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

function suggest(name: string, names: string[]): string {
  let best = "", bestD = Infinity;
  for (const n of names) {
    const d = n.startsWith(name) || name.startsWith(n) ? 1 : distance(name, n);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return bestD <= Math.ceil(name.length / 3) ? ` (did you mean --${best}?)` : " (see --help)";
}

function readValue(flag: string, o: CliOption, raw: string): string | number | string[] {
  const choice = (v: string) => {
    if (o.choices && !o.choices.includes(v)) {
      throw new CliUsageError(`${flag} must be one of ${o.choices.join(", ")}; got "${v}"`);
    }
    return v;
  };
  const atLeast = (n: number) => {
    if (o.min !== undefined && n < o.min) throw new CliUsageError(`${flag} must be >= ${o.min}, got ${raw}`);
    return n;
  };
  switch (o.type) {
    case "string":
      return choice(raw);
    case "list":
      return raw.split(",").map((s) => s.trim()).filter(Boolean).map(choice);
    case "integer":
      if (!/^[+-]?\d+$/.test(raw.trim())) {
        throw new CliUsageError(`${flag} needs a whole number, got "${raw}"`);
      }
      choice(String(Number(raw)));
      return atLeast(Number(raw));
    case "number":
      if (raw.trim() === "" || !Number.isFinite(Number(raw))) {
        throw new CliUsageError(`${flag} needs a number, got "${raw}"`);
      }
      return atLeast(Number(raw));
    case "size":
      return parseSize(raw, flag);
    case "boolean":
      throw new CliUsageError(`${flag} takes no value`);
  }
}

/**
 * Parses `argv` as `spec` declares, with `node:util`'s `parseArgs` (tokens mode, so every message is
 * ours). Pure: throws instead of exiting, so scripts can be tested in-process.
 *
 * @param spec the command
 * @param argv the arguments (`Deno.args`)
 * @returns values (defaults filled in), positionals, and the help/verbose switches
 * @throws {CliUsageError} unknown option (with a suggestion), bad value, missing value, wrong positionals
 * @example
 * ```ts
 * import { defineCli, parseCli } from "./_cli.ts";
 * const spec = defineCli({
 *   name: "demo", summary: "s", usage: "deno task demo [options]", examples: ["deno task demo"],
 *   options: {
 *     steps: { type: "integer", default: 300, min: 1, description: "steps", example: "--steps 20" },
 *     sweep: { type: "boolean", default: true, description: "rank sweep", example: "--no-sweep" },
 *   },
 * });
 * const a = parseCli(spec, ["--steps=20", "--no-sweep"]);
 * if (a.values.steps !== 20 || a.values.sweep !== false) throw new Error(JSON.stringify(a));
 * let message = "";
 * try { parseCli(spec, ["--step", "5"]); } catch (e) { message = (e as Error).message; }
 * if (message !== "unknown option --step (did you mean --steps?)") throw new Error(message);
 * ```
 */
export function parseCli<O extends Record<string, CliOption>>(spec: CliSpec<O>, argv: string[]): CliArgs<O> {
  const all: Record<string, CliOption> = { ...spec.options, ...BUILTIN };
  const { tokens } = parseArgs({
    args: argv,
    options: Object.fromEntries(
      Object.entries(all).map(([k, o]) => [
        k,
        {
          type: o.type === "boolean" ? "boolean" as const : "string" as const,
          ...(k === "help" ? { short: "h" } : {}),
        },
      ]),
    ),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (tokens.some((t) => t.kind === "option" && t.name === "help")) {
    return { values: {} as CliValues<O>, positionals: [], help: true, verbose: false };
  }
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  for (const t of tokens) {
    if (t.kind === "positional") {
      positionals.push(t.value);
      continue;
    }
    if (t.kind !== "option") continue;
    const negated = t.name.startsWith("no-") && all[t.name.slice(3)]?.type === "boolean";
    const name = negated ? t.name.slice(3) : t.name;
    const o = all[name];
    if (!o) {
      const instead = spec.renamed?.[t.name];
      const hint = instead ? ` (write ${instead} instead)` : suggest(t.name, Object.keys(all));
      throw new CliUsageError(`unknown option ${t.rawName}${hint}`);
    }
    const flag = `--${t.name}`;
    if (o.type === "boolean") {
      if (t.value !== undefined) {
        throw new CliUsageError(
          `${flag} takes no value, got "${t.value}"${negated ? "" : ` (use --no-${name})`}`,
        );
      }
      values[name] = !negated;
      continue;
    }
    if (t.value === undefined || (!t.inlineValue && t.value.startsWith("--"))) {
      throw new CliUsageError(`${flag} needs a value (e.g. ${o.example})`);
    }
    values[name] = readValue(flag, o, t.value);
  }
  for (const [name, o] of Object.entries<CliOption>(spec.options)) {
    if (name in values) continue;
    if (o.type === "boolean") values[name] = o.default === true;
    else if (o.default !== undefined) values[name] = readValue(`--${name}`, o, String(o.default));
  }
  const p = spec.positionals ?? { min: 0, max: 0, names: "" };
  if (positionals.length > p.max) {
    throw new CliUsageError(
      p.max === 0
        ? `unexpected argument "${positionals[0]}" (options start with --; see --help)`
        : `expected ${p.names}, got ${positionals.length} arguments: ${positionals.join(" ")}`,
    );
  }
  if (positionals.length < p.min) throw new CliUsageError(`missing ${p.names} (usage: ${spec.usage})`);
  return { values: values as CliValues<O>, positionals, help: false, verbose: values.verbose === true };
}

/**
 * The `--help` text: summary, usage, every option with its default and an example, examples.
 *
 * @param spec the command
 * @returns the text
 * @example
 * ```ts
 * import { formatHelp } from "./_cli.ts";
 * const text = formatHelp({
 *   name: "plan", summary: "Memory plan.", usage: "deno task plan [options]", examples: ["deno task plan"],
 *   options: { budget: { type: "size", default: "24GB", description: "device memory", example: "--budget 80GB" } },
 * });
 * if (!text.includes("--budget SIZE") || !text.includes("default: 24GB") || !text.includes("--budget 80GB")) {
 *   throw new Error(text);
 * }
 * ```
 */
export function formatHelp<O extends Record<string, CliOption>>(spec: CliSpec<O>): string {
  const placeholder = (o: CliOption) =>
    o.placeholder ??
      { string: "TEXT", integer: "N", number: "X", size: "SIZE", list: "A,B", boolean: "" }[o.type];
  const rows = Object.entries<CliOption>({ ...spec.options, ...BUILTIN }).map(([name, o]) => {
    const flag = o.type === "boolean"
      ? (o.default === true ? `--[no-]${name}` : name === "help" ? "-h, --help" : `--${name}`)
      : `--${name} ${placeholder(o)}`;
    const def = o.defaultText ??
      (o.type === "boolean" ? String(o.default === true) : o.default === undefined ? "none" : o.default);
    const choices = o.choices ? ` (${o.choices.join(", ")})` : "";
    return [flag, `${o.description}${choices}`, `default: ${def}   example: ${o.example}`];
  });
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  const pad = " ".repeat(width + 2);
  return [
    `${spec.name}: ${spec.summary}`,
    "",
    `Usage: ${spec.usage}`,
    "",
    "Options:",
    ...rows.flatMap(([flag, desc, def]) => [`  ${flag.padEnd(width)}${desc}`, `${pad}${def}`]),
    "",
    "Examples:",
    ...spec.examples.map((e) => `  ${e}`),
    "",
    "Exit codes: 0 done, 1 failed, 2 bad usage.",
  ].join("\n");
}

/**
 * A failure as one line: the message with line breaks folded, and every API option the spec maps
 * (`api`) written as its flag (`overwrite: true` → `--overwrite`).
 *
 * @param spec the command
 * @param error what was thrown
 * @returns the line, prefixed with the command name
 * @example
 * ```ts
 * import { defineCli, failureLine } from "./_cli.ts";
 * const spec = defineCli({
 *   name: "quantize", summary: "", usage: "", examples: [],
 *   options: { overwrite: { type: "boolean", description: "", example: "--overwrite", api: "overwrite" } },
 * });
 * const line = failureLine(spec, new RangeError("out is not empty;\nchoose another directory or pass overwrite: true."));
 * if (line !== "quantize: out is not empty; choose another directory or pass --overwrite.") throw new Error(line);
 * ```
 */
export function failureLine<O extends Record<string, CliOption>>(spec: CliSpec<O>, error: unknown): string {
  let text = error instanceof Error ? error.message : String(error);
  text = text.split("\n").map((s) => s.trim()).filter(Boolean).join(" ");
  // Library messages start with the API function ("quantizeCheckpoint: ..."); the command name replaces it.
  text = text.replace(/^[a-z][A-Za-z0-9]*(\(\))?: /, "");
  for (const [name, o] of Object.entries<CliOption>(spec.options)) {
    if (!o.api) continue;
    const api = o.api.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    text = text
      .replace(new RegExp(`\\b${api}: true\\b`, "g"), `--${name}`)
      .replace(
        new RegExp(`\\b${api}: false\\b`, "g"),
        o.type === "boolean" ? `--no-${name}` : `--${name} false`,
      )
      .replace(new RegExp(`\\b${api}: "?([^\\s,;")]+)"?`, "g"), `--${name} $1`)
      .replace(new RegExp(`["\`']${api}["\`']`, "g"), `--${name}`);
    // A bare API name is unambiguous when it is camelCase or dotted ("resumeFrom /x was saved with ...").
    if (/[A-Z.]/.test(o.api)) text = text.replace(new RegExp(`\\b${api}\\b`, "g"), `--${name}`);
  }
  return `${spec.name}: ${spec.rewrite ? spec.rewrite(text) : text}`;
}

/**
 * Runs a command: parses `argv`, prints help (exit 0) or a usage error (exit 2), then awaits `main`;
 * a failure prints one line (the stack too with `--verbose`) and exits 1.
 *
 * @param spec the command
 * @param main the work, given the parsed arguments
 * @param argv the arguments (default `Deno.args`)
 */
export async function runCli<O extends Record<string, CliOption>>(
  spec: CliSpec<O>,
  main: (args: CliArgs<O>) => Promise<void> | void,
  argv: string[] = Deno.args,
): Promise<void> {
  let verbose = argv.includes("--verbose");
  const fail = (error: unknown): never => {
    if (error instanceof CliUsageError) {
      console.error(`${spec.name}: ${error.message}`);
      Deno.exit(2);
    }
    console.error(failureLine(spec, error));
    if (verbose && error instanceof Error && error.stack) console.error(error.stack);
    Deno.exit(1);
  };
  let args: CliArgs<O>;
  try {
    args = parseCli(spec, argv);
  } catch (error) {
    return fail(error);
  }
  if (args.help) {
    console.log(formatHelp(spec));
    Deno.exit(0);
  }
  verbose = args.verbose;
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    fail(e.reason);
  });
  try {
    await main(args);
  } catch (error) {
    fail(error);
  }
}
