/**
 * Internal helpers of `lib/plan`: float dtypes and their sizes (options are checked by
 * each function's schema, `lib/options/schema.ts`).
 * @module
 */

/** Bytes per element of a floating-point storage/compute dtype. */
export type FloatDtype = "fp32" | "fp16" | "bf16";

/** Bytes per element of `dtype`. */
export function dtypeBytes(dtype: FloatDtype): number {
  switch (dtype) {
    case "fp32":
      return 4;
    case "fp16":
    case "bf16":
      return 2;
  }
}
