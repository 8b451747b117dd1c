/**
 * Permission-aware reads for the FFI loaders (BLAS, native kernels): they never prompt and never
 * throw when a permission is missing, so the engine falls back instead.
 * @module
 */

/**
 * An environment variable, or undefined when it is unset or `--allow-env` does not cover it.
 *
 * @example
 * ```ts
 * import { envGet } from "./permissions.ts";
 * if (envGet("NBTUNE_SURELY_UNSET_VARIABLE") !== undefined) throw new Error("unset");
 * ```
 */
export function envGet(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Whether foreign libraries may be loaded (`--allow-ffi`).
 *
 * @example
 * ```ts
 * import { ffiGranted } from "./permissions.ts";
 * if (typeof ffiGranted() !== "boolean") throw new Error("a boolean");
 * ```
 */
export function ffiGranted(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}
