/**
 * Gradient registration. `@tensorflow/tfjs-core` 4.22 registers no op gradients
 * by itself (its `dist/register_all_gradients.js` uses extension-less imports that
 * Deno cannot load); the gradient configs ship only in the union package
 * `@tensorflow/tfjs`, whose bundle registers them into the shared tfjs registry.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/**
 * True when tfjs op gradients are registered; otherwise tries to load them from
 * `@tensorflow/tfjs` (import-map entry `"@tensorflow/tfjs": "npm:@tensorflow/tfjs@4.22.0"`)
 * and returns whether that worked. Never throws.
 *
 * @example
 * ```ts
 * import { ensureGradients } from "./gradients.ts";
 * const ok = await ensureGradients();
 * if (typeof ok !== "boolean") throw new Error("expected a boolean");
 * ```
 */
export async function ensureGradients(): Promise<boolean> {
  if (tf.getGradient("Sum")) return true;
  // A full npm specifier (not the import map), so notebooks outside the repository that
  // import mod.ts by path get the gradients too.
  try {
    await import("npm:@tensorflow/tfjs@4.22.0");
  } catch {
    return false;
  }
  return tf.getGradient("Sum") !== undefined;
}
