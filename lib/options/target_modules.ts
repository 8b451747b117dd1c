/**
 * `targetModules`, the one name and the one default (`"all-linear"`) for which linear layers get
 * adapters, shared by `attachLoRA` / `attachDyLoRA`, recipes and the planner.
 * @module
 */
import { array, custom, either, oneOf, string } from "./schema.ts";

/**
 * The one default adapter target: `"all-linear"` (every attention and MLP linear; the
 * LM head excluded, as PEFT's `"all-linear"`). The QLoRA paper found adapters on every
 * linear layer necessary to match full fine-tuning, and it names no module, so it fits
 * every architecture the planner knows (Falcon's `query_key_value` as Llama's `q_proj`).
 */
export const DEFAULT_TARGET_MODULES = "all-linear" as const;

/**
 * The `targetModules` field for a schema: a non-empty list of module names or
 * `"all-linear"` (the adapters also take a RegExp; pass `regexp: true`).
 * @example
 * ```ts
 * import { defineOptions } from "./schema.ts";
 * import { targetModulesField } from "./target_modules.ts";
 * const s = defineOptions("attachLoRA", { targetModules: targetModulesField() });
 * if (s.parse({}).targetModules !== "all-linear") throw new Error("default");
 * if (String(s.parse({ targetModules: ["q_proj"] }).targetModules) !== "q_proj") throw new Error("list");
 * ```
 */
export function targetModulesField(spec: { regexp?: boolean } = {}) {
  const list = array(
    "Module names (the last path component, e.g. q_proj).",
    string("A name.", { nonEmpty: true }),
    {
      minLength: 1,
    },
  );
  const all = oneOf("Every linear layer.", ["all-linear"] as const);
  const doc = 'Linear layers that get adapters: names (["q_proj", "v_proj"]), "all-linear"' +
    (spec.regexp ? " or a RegExp on the full module path." : ".");
  const regexp = custom<RegExp>("A RegExp on the full module path.", "a RegExp", (v) => v instanceof RegExp, {
    example: /q_proj/,
  });
  const alternatives = spec.regexp ? [list, all, regexp] : [list, all];
  return either(doc, alternatives, {
    default: DEFAULT_TARGET_MODULES as string[] | "all-linear" | RegExp,
  });
}
