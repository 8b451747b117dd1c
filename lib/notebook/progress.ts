/**
 * A progress bar with an ETA: an HTML bar updated in place in a notebook, a `\r` bar on a terminal, and
 * plain lines (about every 10%) when stdout is not a terminal (CI logs).
 *
 * @module
 */

import { display, isJupyter } from "./display.ts";
import { escapeHtml, uniqueId } from "./_html.ts";
import { defineOptions, type FieldsOf, string } from "../options/schema.ts";

/** Options for {@linkcode progress}. */
export interface ProgressOptions {
  /** Text before the bar.
   * @default "" */
  label?: string;
}

/** The schema of {@linkcode progress}'s options. */
export const progressSchema = defineOptions(
  "progress",
  {
    label: string("Text before the bar.", { default: "" }),
  } satisfies FieldsOf<ProgressOptions>,
);

/** A running progress bar. */
export interface Progress {
  /** Adds `n` finished items (default 1); `info` is shown after the ETA (e.g. the current loss). */
  tick(n?: number, info?: string): void;
  /** Marks the bar complete (shows the total time); resolves once the last update was sent. */
  done(info?: string): Promise<void>;
}

/**
 * Seconds left at the average rate so far: `elapsed / done * (total - done)`; `undefined` before the
 * first item, 0 when finished.
 *
 * @example
 * ```ts
 * if (estimateEta(25, 100, 10) !== 30) throw new Error("25 items in 10 s → 75 more take 30 s");
 * if (estimateEta(0, 100, 3) !== undefined) throw new Error("no rate yet");
 * if (estimateEta(120, 100, 9) !== 0) throw new Error("overshoot is finished");
 * ```
 */
export function estimateEta(done: number, total: number, elapsedSeconds: number): number | undefined {
  if (done <= 0) return undefined;
  return done >= total ? 0 : elapsedSeconds / done * (total - done);
}

/**
 * Seconds as `m:ss` or `h:mm:ss`.
 *
 * @example
 * ```ts
 * if (formatDuration(65) !== "1:05" || formatDuration(3723) !== "1:02:03") throw new Error("wrong");
 * ```
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(r).padStart(2, "0")}`;
}

/**
 * One line of text: label, bar, count, percent, elapsed `<` ETA (or the total time when complete), info.
 *
 * @example
 * ```ts
 * const line = progressLine("train", 25, 100, 10, "loss 2.31");
 * if (line !== "train  [#####···············]  25/100   25%  0:10 < 0:30  loss 2.31") throw new Error(line);
 * ```
 */
export function progressLine(
  label: string,
  count: number,
  total: number,
  elapsedSeconds: number,
  info = "",
): string {
  const fraction = total > 0 ? Math.min(1, count / total) : 1;
  const width = 20, filled = Math.round(fraction * width);
  const eta = estimateEta(count, total, elapsedSeconds);
  const time = count >= total
    ? `${formatDuration(elapsedSeconds)} total`
    : `${formatDuration(elapsedSeconds)} < ${eta === undefined ? "?" : formatDuration(eta)}`;
  const bar = `[${"#".repeat(filled)}${"·".repeat(width - filled)}]`;
  const pct = `${Math.floor(fraction * 100)}%`.padStart(4);
  return [label, bar, `${count}/${total}`, pct, time, info].filter((p) => p !== "").join("  ");
}

type Mode = "jupyter" | "tty" | "lines";

function currentMode(): Mode {
  if (isJupyter()) return "jupyter";
  try {
    return Deno.stdout.isTerminal() ? "tty" : "lines";
  } catch {
    return "lines";
  }
}

function progressHtml(label: string, count: number, total: number, line: string): string {
  return `<div class="nbtune-progress" style="font-family:monospace">` +
    (label ? `<span>${escapeHtml(label)}</span> ` : "") +
    `<progress value="${
      Math.min(count, total)
    }" max="${total}" style="width:40%;vertical-align:middle"></progress> ` +
    `<span>${escapeHtml(line.slice(line.indexOf("]") + 1).trim())}</span></div>`;
}

/**
 * Starts a progress bar over `total` items.
 *
 * @example Outside a notebook and a terminal it prints plain lines
 * ```ts
 * const printed: string[] = [];
 * const log = console.log;
 * console.log = (line: string) => printed.push(line);
 * try {
 *   const bar = progress(4, { label: "tokenize" });
 *   for (let i = 0; i < 4; i++) bar.tick();
 *   await bar.done();
 * } finally {
 *   console.log = log;
 * }
 * if (!printed.at(-1)!.startsWith("tokenize  [####################]  4/4  100%")) throw new Error(printed.join("\n"));
 * ```
 */
export function progress(total: number, options: ProgressOptions = {}): Progress {
  const { label } = progressSchema.parse(options);
  if (!Number.isFinite(total) || total < 0) {
    throw new RangeError(`progress() total must be ≥ 0; got ${total}`);
  }
  const mode = currentMode();
  const id = uniqueId("nbtune-progress");
  const started = performance.now();
  let count = 0, lastInfo = "", lastShown = -Infinity, lastDecile = 0, finished = false;
  let queue: Promise<void> = Promise.resolve();

  const show = (final: boolean) => {
    const elapsed = (performance.now() - started) / 1000;
    const line = progressLine(label, final ? Math.max(count, total) : count, total, elapsed, lastInfo);
    switch (mode) {
      case "jupyter": {
        const bundle = { "text/html": progressHtml(label, count, total, line), "text/plain": line };
        const first = lastShown === -Infinity;
        // Updates go one after another so the final one always lands last.
        queue = queue.then(() => display(bundle, { id, update: !first })).catch((e) => console.error(e));
        break;
      }
      case "tty":
        Deno.stdout.writeSync(new TextEncoder().encode(`\r${line}\x1b[K${final ? "\n" : ""}`));
        break;
      case "lines":
        console.log(line);
        break;
    }
    lastShown = performance.now();
  };

  show(false);
  return {
    tick(n = 1, info?: string) {
      if (finished) return;
      count += n;
      if (info !== undefined) lastInfo = info;
      if (mode === "lines") {
        // About ten lines per bar in logs.
        const decile = total > 0 ? Math.floor(10 * count / total) : 10;
        if (decile > lastDecile && count < total) {
          lastDecile = decile;
          show(false);
        }
      } else if (performance.now() - lastShown >= 100 && count < total) {
        show(false);
      }
    },
    async done(info?: string) {
      if (finished) return await queue;
      finished = true;
      if (info !== undefined) lastInfo = info;
      show(true);
      await queue;
    },
  };
}
