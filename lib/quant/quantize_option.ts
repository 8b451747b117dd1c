/**
 * The one quantization option shape, `quantize`, shared by `loadModel`,
 * `quantizeCheckpoint`, `quantize4bit`, recipes and the planner: `"nf4"`, `"fp4"` or
 * `{ type, doubleQuant, blocksize }`. Double quantization defaults to on everywhere, as
 * in bitsandbytes QLoRA (`bnb_4bit_use_double_quant=True` in the QLoRA paper's setup).
 * @module
 */
import {
  type AnyField,
  boolean,
  either,
  type FieldsOf,
  map,
  object,
  oneOf,
  type Resolved,
} from "../options/schema.ts";
import { QUANT_TYPES_4BIT, type QuantType4bit } from "./codebooks.ts";

/** Blocksizes bitsandbytes accepts for 4-bit weights: powers of two from 32 to 4096 (FORMATS.md §2.2). */
export const BLOCKSIZES_4BIT: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/** The one default for double quantization (QLoRA's). */
export const DOUBLE_QUANT_DEFAULT = true;

/** The long form of the `quantize` option. */
export interface QuantizeSpec {
  /** 4-bit data type. @default {"nf4"} */
  type?: QuantType4bit;
  /** Double-quantize the absmax constants (QLoRA; bitsandbytes' `bnb_4bit_use_double_quant`). @default {true} */
  doubleQuant?: boolean;
  /** Elements per absmax block: a power of two from 32 to 4096. @default {64} */
  blocksize?: number;
}

/** The `quantize` option: a 4-bit type name, or the long form. */
export type QuantizeOption = QuantType4bit | QuantizeSpec;

/** A `quantize` option with every default filled in. */
export interface ResolvedQuantize {
  type: QuantType4bit;
  doubleQuant: boolean;
  blocksize: number;
}

/** Fields of the long form `{ type, doubleQuant, blocksize }`. */
export const quantizeSpecFields = {
  type: oneOf("4-bit data type.", QUANT_TYPES_4BIT, { default: "nf4" }),
  doubleQuant: boolean("Double-quantize the absmax constants (QLoRA).", { default: DOUBLE_QUANT_DEFAULT }),
  blocksize: oneOf("Elements per absmax block (a power of two from 32 to 4096).", BLOCKSIZES_4BIT, {
    default: 64,
  }),
} satisfies FieldsOf<QuantizeSpec>;

/** Old names inside `quantize` and their new ones. */
const SPEC_RENAMED = {
  quantType: "type",
  quant_type: "type",
  double_quant: "doubleQuant",
  blockSize: "blocksize",
};

/**
 * Old top-level names of the quantization settings, for a function's `renamed` table:
 * `quantType` → `quantize`, `doubleQuant` → `quantize.doubleQuant`, and so on.
 */
export const QUANTIZE_RENAMED: Readonly<Record<string, string>> = {
  quantType: "quantize",
  quant: "quantize",
  doubleQuant: "quantize.doubleQuant",
  blocksize: "quantize.blocksize",
};

/**
 * Fills the defaults of a `quantize` option.
 * @example
 * ```ts
 * import { resolveQuantize } from "./quantize_option.ts";
 * const q = resolveQuantize("fp4");
 * if (q.type !== "fp4" || q.doubleQuant !== true || q.blocksize !== 64) throw new Error(JSON.stringify(q));
 * if (resolveQuantize({ doubleQuant: false }).doubleQuant !== false) throw new Error("long form");
 * ```
 */
export function resolveQuantize(option: QuantizeOption = "nf4", fn = "quantize"): ResolvedQuantize {
  return quantizeField("The 4-bit format.").check(option, { fn, path: "quantize" }) as ResolvedQuantize;
}

/** The long form's fields filled from a type name. */
function fromName(type: QuantType4bit): ResolvedQuantize {
  return { type, doubleQuant: DOUBLE_QUANT_DEFAULT, blocksize: 64 };
}

const longForm = object("The long form.", quantizeSpecFields, { renamed: SPEC_RENAMED });

/**
 * The `quantize` field for a function's schema, resolving to {@linkcode ResolvedQuantize}.
 * With `off: true`, `false` is accepted too (no quantization) and is the default unless
 * `default` says otherwise.
 */
export function quantizeField(doc: string, spec: { off?: boolean; default?: QuantizeOption } = {}): AnyField {
  const name = oneOf("A 4-bit type.", QUANT_TYPES_4BIT);
  const alternatives: AnyField[] = spec.off ? [name, longForm, oneOf("No quantization.", [false])] : [
    name,
    longForm,
  ];
  const def = spec.default ?? (spec.off ? false : "nf4");
  const field = either(doc, alternatives, { default: def as never });
  return map(
    field,
    (v: unknown) =>
      v === false
        ? false
        : typeof v === "string"
        ? fromName(v as QuantType4bit)
        : v as Resolved<typeof quantizeSpecFields>,
  );
}
