/**
 * Displaying MIME bundles: in a Deno Jupyter kernel through `Deno.jupyter.display`, elsewhere by printing
 * the `text/plain` part. Nothing here needs Jupyter to be present.
 *
 * @module
 */

import { plainText } from "./_html.ts";
import { boolean, defineOptions, type FieldsOf, string } from "../options/schema.ts";

/** A Jupyter MIME bundle: MIME type → data (strings, or JSON objects for `application/*+json`). */
export type MimeBundle = Record<string, string | object>;

/** The symbol the Deno kernel looks for on a cell's last expression (`Deno.jupyter.$display`). */
export const JUPYTER_DISPLAY: unique symbol = Symbol.for("Jupyter.display");

const INSPECT = Symbol.for("Deno.customInspect");

/** An object that renders as its MIME bundle when it is a cell's last expression, and as text elsewhere. */
export interface RichObject {
  /** The bundle (built on first access when a builder function was given). */
  readonly bundle: MimeBundle;
  /** Called by the Deno kernel to render the object. */
  [JUPYTER_DISPLAY](): MimeBundle;
}

/** Options for {@linkcode display}. */
export interface DisplayOptions {
  /** Jupyter display id; give the same id with `update: true` to replace the output in place.
   * @default undefined (a new output that cannot be updated) */
  id?: string;
  /** Replace the output that holds `id` instead of adding a new one (requires `id`).
   * @default false */
  update?: boolean;
}

/** The schema of {@linkcode display}'s options. */
export const displaySchema = defineOptions(
  "display",
  {
    id: string("Jupyter display id; give the same id with update: true to replace the output.", {
      nonEmpty: true,
    }),
    update: boolean("Replace the output that holds id instead of adding a new one (requires id).", {
      default: false,
    }),
  } satisfies FieldsOf<DisplayOptions>,
);

function resolveDisplayOptions(options: DisplayOptions): { id?: string; update: boolean } {
  const { update } = displaySchema.parse(options);
  if (update && !options.id) throw new TypeError("display() with update: true needs an id; got none");
  return { id: options.id, update };
}

interface JupyterApi {
  display(obj: unknown, options?: { raw?: boolean; update?: boolean; display_id?: string }): Promise<void>;
}

/** `Deno.jupyter`, or `undefined` outside a kernel (where reading it throws). */
function jupyterApi(): JupyterApi | undefined {
  try {
    const api = (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
    return typeof api?.display === "function" ? api : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether this code runs inside a Deno Jupyter kernel (`deno jupyter --kernel`).
 *
 * @example Outside a kernel (tests, scripts, the REPL) it is false
 * ```ts
 * if (isJupyter()) throw new Error("expected to run outside a kernel");
 * ```
 */
export function isJupyter(): boolean {
  return jupyterApi() !== undefined;
}

/**
 * Accepts a bundle or a {@linkcode RichObject} and returns the bundle.
 *
 * @example
 * ```ts
 * const bundle = { "text/plain": "x" };
 * if (toBundle(bundle) !== bundle || toBundle(richObject(bundle)) !== bundle) throw new Error("wrong bundle");
 * ```
 */
export function toBundle(value: MimeBundle | RichObject): MimeBundle {
  return isRichObject(value) ? value[JUPYTER_DISPLAY]() : value;
}

function isRichObject(value: unknown): value is RichObject {
  return typeof value === "object" && value !== null &&
    typeof (value as Record<symbol, unknown>)[JUPYTER_DISPLAY] === "function";
}

/**
 * Shows a MIME bundle: in a kernel as a display output (optionally with an id so it can be updated in
 * place), elsewhere by printing its `text/plain` part (updates print again).
 *
 * @example Outside a kernel the text part is printed
 * ```ts
 * const printed: string[] = [];
 * const log = console.log;
 * console.log = (line: string) => printed.push(line);
 * try {
 *   await display({ "text/plain": "hello", "text/html": "<b>hello</b>" });
 * } finally {
 *   console.log = log;
 * }
 * if (printed.join("|") !== "hello") throw new Error(`printed ${printed}`);
 * ```
 */
export async function display(value: MimeBundle | RichObject, options: DisplayOptions = {}): Promise<void> {
  const { id, update } = resolveDisplayOptions(options);
  const bundle = toBundle(value);
  const api = jupyterApi();
  if (api === undefined) {
    console.log(plainText(bundle));
    return;
  }
  await api.display(bundle, { raw: true, update, ...(id === undefined ? {} : { display_id: id }) });
}

/**
 * Wraps a bundle (or a function building it when first shown) so that it renders when it is a cell's last
 * expression; `console.log` of it prints the `text/plain` part.
 *
 * @example
 * ```ts
 * const shown = richObject({ "text/plain": "3 rows", "text/html": "<table></table>" });
 * if (shown[JUPYTER_DISPLAY]()["text/plain"] !== "3 rows") throw new Error("wrong bundle");
 * if (Deno.inspect(shown) !== "3 rows") throw new Error("wrong text");
 * ```
 */
export function richObject(bundle: MimeBundle | (() => MimeBundle)): RichObject {
  let built: MimeBundle | undefined = typeof bundle === "function" ? undefined : bundle;
  const get = (): MimeBundle => built ??= (bundle as () => MimeBundle)();
  return {
    get bundle() {
      return get();
    },
    [JUPYTER_DISPLAY]: get,
    // Printing in a terminal shows the text part rather than the object's shape.
    [INSPECT]: () => plainText(get()),
  } as RichObject;
}
