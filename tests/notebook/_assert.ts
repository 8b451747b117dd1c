/** Small assertions for the notebook tests (no remote std imports on CI machines). */

export { assert, assertEquals } from "../_assert.ts";

export function assertIncludes(text: string, part: string): void {
  if (!text.includes(part)) {
    throw new Error(`expected text to include ${JSON.stringify(part)}:\n${text.slice(0, 500)}`);
  }
}

export { assertThrows } from "../_assert.ts";

/** Runs `fn` with console.log captured; returns the printed lines. */
export async function captureLog(fn: () => unknown): Promise<string[]> {
  const printed: string[] = [];
  const log = console.log;
  console.log = (...parts: unknown[]) => printed.push(parts.map(String).join(" "));
  try {
    await fn();
  } finally {
    console.log = log;
  }
  return printed;
}

/** One call to the fake `Deno.jupyter.display`. */
export interface DisplayCall {
  bundle: Record<string, unknown>;
  options: { raw?: boolean; update?: boolean; display_id?: string };
}

/** Runs `fn` as if inside a kernel: `Deno.jupyter.display` records its calls. */
export async function withFakeJupyter(fn: () => unknown): Promise<DisplayCall[]> {
  const calls: DisplayCall[] = [];
  const deno = Deno as unknown as { jupyter: unknown };
  deno.jupyter = {
    display: (bundle: Record<string, unknown>, options: DisplayCall["options"]) => {
      calls.push({ bundle, options });
      return Promise.resolve();
    },
  };
  try {
    await fn();
  } finally {
    deno.jupyter = undefined;
  }
  return calls;
}

/** Forgets that plotly.js was shown in this process (the flag display code keeps per kernel). */
export function forgetPlotlyShown(): void {
  delete (globalThis as Record<symbol, unknown>)[Symbol.for("nbtune.notebook.plotlyShown")];
}

/** How many copies of plotly.js a piece of HTML carries. */
export function libraryCopies(html: string): number {
  return html.split("data-nbtune-plotly=").length - 1;
}

export async function assertRejects(
  fn: () => Promise<unknown>,
  type: new (...args: never[]) => Error,
  includes = "",
): Promise<void> {
  try {
    await fn();
  } catch (error) {
    if (!(error instanceof type)) throw new Error(`expected ${type.name}, got ${error}`);
    if (!String((error as Error).message).includes(includes)) {
      throw new Error(`expected message with "${includes}", got "${(error as Error).message}"`);
    }
    return;
  }
  throw new Error(`expected ${type.name} to be thrown`);
}
