/**
 * The tensor set transformers `save_pretrained` writes for a bitsandbytes 4-bit Linear
 * (`Linear4bit._save_to_state_dict` + `QuantState.as_dict(packed=True)`, FORMATS.md §2.1–2.2, §2.8),
 * to and from a {@linkcode Quant4bitState}. No file I/O: entries are plain `{name, dtype, shape, data}`.
 *
 * For a weight named `W` (e.g. `model.layers.0.self_attn.q_proj.weight`):
 *
 * | name | dtype | shape |
 * | --- | --- | --- |
 * | `W` | U8 | `[ceil(N / 2), 1]` packed codes, high nibble first |
 * | `W.absmax` | F32 `[NB]`, or U8 `[NB]` when nested | per-block scales |
 * | `W.quant_map` | F32 | `[16]` |
 * | `W.nested_absmax` | F32 | `[ceil(NB / 256)]` (nested only) |
 * | `W.nested_quant_map` | F32 | `[256]` (nested only) |
 * | `W.quant_state.bitsandbytes__nf4` (or `__fp4`) | U8 | `[len(json)]` UTF-8 of `json.dumps` |
 * @module
 */

import {
  checkBlocksize4bit,
  checkQuant4bitState,
  type Quant4bitState,
  WEIGHT_DTYPES,
  type WeightDtype,
} from "./blockwise_4bit.ts";
import { QUANT_TYPES_4BIT, type QuantType4bit } from "./codebooks.ts";
import { doubleDequantize, type DoubleQuantState } from "./double_quant.ts";
import { FormatError } from "../io/format_error.ts";
import { pyFloatRepr } from "./_py_json.ts";
import { describe } from "./_options.ts";
import { array, defineOptions, either, type FieldsOf, oneOf, string } from "../options/schema.ts";
import {
  QUANTIZE_RENAMED,
  quantizeField,
  type QuantizeOption,
  type ResolvedQuantize,
} from "./quantize_option.ts";

/** One tensor of a checkpoint, ready for the safetensors writer. */
export interface TensorEntry {
  /** Full tensor name. */
  name: string;
  /** safetensors dtype, e.g. `"U8"`, `"F32"`, `"BF16"`. */
  dtype: string;
  /** Tensor shape. */
  shape: number[];
  /** Little-endian data: a `Uint8Array` for U8, a `Float32Array` (or its raw bytes) for F32. */
  data: ArrayBufferView;
}

/** Keys `QuantState.from_dict` accepts (`QuantState.valid_qs_keys`). */
const VALID_QS_KEYS = [
  "absmax",
  "quant_map",
  "nested_absmax",
  "nested_quant_map",
  "quant_state",
  "quant_type",
  "blocksize",
  "dtype",
  "shape",
  "nested_blocksize",
  "nested_dtype",
  "nested_offset",
];

/**
 * The JSON string bitsandbytes stores in `quant_state.bitsandbytes__<type>`: `json.dumps` of
 * `{quant_type, blocksize, dtype, shape[, nested_blocksize, nested_dtype, nested_offset]}` in that
 * order, with Python's separators and float formatting (byte-identical).
 *
 * @param state a 4-bit state.
 * @returns the JSON text.
 * @example
 * ```ts
 * import { quantStateJson } from "./bnb_format.ts";
 * import { quantize4bit } from "./blockwise_4bit.ts";
 * const q = quantize4bit(new Float32Array(128).fill(1), { shape: [4, 32], dtype: "bfloat16" });
 * const want = '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4, 32], ' +
 *   '"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 1.0}';
 * if (quantStateJson(q) !== want) throw new Error(quantStateJson(q));
 * ```
 */
export function quantStateJson(state: Quant4bitState): string {
  let json =
    `{"quant_type": "${state.quantType}", "blocksize": ${state.blocksize}, "dtype": "${state.dtype}", ` +
    `"shape": [${state.shape.join(", ")}]`;
  if (state.nested !== undefined) {
    json += `, "nested_blocksize": ${state.nested.blocksize}, "nested_dtype": "float32", ` +
      `"nested_offset": ${pyFloatRepr(state.nested.offset)}`;
  }
  return json + "}";
}

/**
 * The tensors transformers saves for one 4-bit weight, in `state_dict` order.
 *
 * @param weightName full name of the packed weight, e.g. `"model.layers.0.mlp.up_proj.weight"`.
 * @param state the quantized weight.
 * @returns 4 entries, or 6 when double-quantized.
 * @example
 * ```ts
 * import { bnbTensors } from "./bnb_format.ts";
 * import { quantize4bit } from "./blockwise_4bit.ts";
 * const q = quantize4bit(new Float32Array(96).fill(0.25), { shape: [3, 32], quantize: { doubleQuant: false } });
 * const t = bnbTensors("m.weight", q);
 * if (t.map((e) => e.name).join() !== "m.weight,m.weight.absmax,m.weight.quant_map,m.weight.quant_state.bitsandbytes__nf4") {
 *   throw new Error("names");
 * }
 * if (t[0].shape.join() !== "48,1" || t[1].dtype !== "F32" || t[1].shape[0] !== 2) throw new Error("shapes");
 * ```
 */
export function bnbTensors(weightName: string, state: Quant4bitState): TensorEntry[] {
  checkQuant4bitState(state, "bnbTensors");
  const w = weightName;
  const out: TensorEntry[] = [{ name: w, dtype: "U8", shape: [state.packed.length, 1], data: state.packed }];
  const nested = state.nested;
  if (nested === undefined) {
    out.push({ name: `${w}.absmax`, dtype: "F32", shape: [state.absmax.length], data: state.absmax });
  } else {
    out.push({ name: `${w}.absmax`, dtype: "U8", shape: [nested.codes.length], data: nested.codes });
  }
  out.push({ name: `${w}.quant_map`, dtype: "F32", shape: [16], data: state.quantMap });
  if (nested !== undefined) {
    out.push(
      { name: `${w}.nested_absmax`, dtype: "F32", shape: [nested.scales.length], data: nested.scales },
      { name: `${w}.nested_quant_map`, dtype: "F32", shape: [256], data: nested.codebook },
    );
  }
  const json = new TextEncoder().encode(quantStateJson(state));
  out.push({
    name: `${w}.quant_state.bitsandbytes__${state.quantType}`,
    dtype: "U8",
    shape: [json.length],
    data: json,
  });
  return out;
}

/** Options of {@linkcode parseBnbWeight}. */
export interface ParseBnbOptions {
  /** File name used in error messages. @default "<checkpoint>" */
  file?: string;
}

/** The schema of {@linkcode parseBnbWeight}'s options. */
export const parseBnbSchema = defineOptions(
  "parseBnbWeight",
  {
    file: string("File name used in error messages.", { default: "<checkpoint>" }),
  } satisfies FieldsOf<ParseBnbOptions>,
);

function bytesOf(view: ArrayBufferView): Uint8Array {
  return view instanceof Uint8Array ? view : new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * Reads a bitsandbytes 4-bit weight back into a {@linkcode Quant4bitState}, validating every tensor
 * against the JSON quant state. With double quantization the float32 absmax is reconstructed exactly as
 * bitsandbytes does, from the stored maps. A packed weight saved with a non-U8 `quant_storage`
 * (e.g. BF16) is read as its raw bytes.
 *
 * @param weightName full name of the packed weight, e.g. `"model.layers.0.mlp.up_proj.weight"`.
 * @param get returns the entry of a tensor name, or `undefined` if the checkpoint lacks it.
 * @param options file name for error messages.
 * @returns the state; throws a `FormatError` (a SyntaxError) naming the tensor when one is missing or inconsistent.
 * @example
 * ```ts
 * import { bnbTensors, parseBnbWeight } from "./bnb_format.ts";
 * import { quantize4bit } from "./blockwise_4bit.ts";
 * const q = quantize4bit(Float32Array.from({ length: 130 }, (_, i) => Math.sin(i)), { quantize: "fp4" });
 * const byName = new Map(bnbTensors("w", q).map((e) => [e.name, e]));
 * const back = parseBnbWeight("w", (name) => byName.get(name));
 * if (back.quantType !== "fp4" || back.absmax.join() !== q.absmax.join()) throw new Error("round trip");
 * let threw = false;
 * try { parseBnbWeight("w", (name) => name.includes("quant_state") ? undefined : byName.get(name)); } catch (e) { threw = e instanceof SyntaxError; }
 * if (!threw) throw new Error("a missing quant_state must throw");
 * ```
 */
export function parseBnbWeight(
  weightName: string,
  get: (name: string) => TensorEntry | undefined,
  options: ParseBnbOptions = {},
): Quant4bitState {
  parseBnbSchema.parse(options);
  const file = options.file ?? "<checkpoint>";
  const fail = (tensor: string, detail: string): never => {
    throw new FormatError(detail, { file, tensor });
  };
  const found = QUANT_TYPES_4BIT
    .map((t) => ({ t, e: get(`${weightName}.quant_state.bitsandbytes__${t}`) }))
    .filter((x) => x.e !== undefined);
  if (found.length !== 1) {
    fail(
      weightName,
      found.length === 0
        ? `no "${weightName}.quant_state.bitsandbytes__nf4" or "__fp4" tensor; this is not a bitsandbytes 4-bit weight`
        : "both __nf4 and __fp4 quant states are present; keep the one matching the packed data",
    );
  }
  const suffixType: QuantType4bit = found[0].t;
  const qsName = `${weightName}.quant_state.bitsandbytes__${suffixType}`;
  let qs: Record<string, unknown>;
  try {
    qs = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytesOf(found[0].e!.data)));
  } catch (cause) {
    throw new FormatError(`the quant state is not UTF-8 JSON (${(cause as Error).message})`, {
      file,
      tensor: qsName,
      cause,
    });
  }
  if (qs === null || typeof qs !== "object" || Array.isArray(qs)) {
    fail(qsName, "the quant state must be a JSON object");
  }
  for (const k of Object.keys(qs)) {
    if (!VALID_QS_KEYS.includes(k)) {
      fail(qsName, `unknown quant state key "${k}"; bitsandbytes accepts ${VALID_QS_KEYS}`);
    }
  }
  const quantType = qs.quant_type as QuantType4bit;
  if (!QUANT_TYPES_4BIT.includes(quantType)) {
    fail(qsName, `quant_type must be "nf4" or "fp4", received ${describe(qs.quant_type)}`);
  }
  if (quantType !== suffixType) fail(qsName, `quant_type "${quantType}" contradicts the tensor name suffix`);
  let blocksize = 0;
  try {
    blocksize = checkBlocksize4bit(qs.blocksize, "quant state");
  } catch (e) {
    fail(qsName, (e as Error).message);
  }
  const dtype = qs.dtype as WeightDtype;
  if (!WEIGHT_DTYPES.includes(dtype)) {
    fail(qsName, `dtype must be one of ${WEIGHT_DTYPES}, received ${describe(qs.dtype)}`);
  }
  const shape = qs.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(qsName, `shape must be a list of non-negative integers, received ${describe(shape)}`);
  }
  const shapeArr = shape as number[];
  const numel = shapeArr.reduce((a, b) => a * b, 1);
  const nBlocks = Math.ceil(numel / blocksize);

  const tensor = (suffix: string, dtype: string, length: number): ArrayBufferView => {
    const name = suffix === "" ? weightName : `${weightName}.${suffix}`;
    const e = get(name);
    if (e === undefined) return fail(name, `missing; a bitsandbytes 4-bit weight needs it`);
    const bytes = dtype === "F32" ? 4 : 1;
    if (dtype === "U8" && suffix === "") {
      // quant_storage may be any dtype; the packed data is its raw bytes.
      if (e.data.byteLength !== length) {
        fail(
          name,
          `holds ${e.data.byteLength} bytes but shape [${
            shapeArr.join(", ")
          }] needs ceil(${numel} / 2) = ${length}`,
        );
      }
      return bytesOf(e.data);
    }
    if (e.dtype !== dtype) fail(name, `dtype must be ${dtype}, received ${describe(e.dtype)}`);
    if (e.data.byteLength !== length * bytes) {
      fail(
        name,
        `holds ${e.data.byteLength / bytes} values, expected ${length} (blocksize ${blocksize}, shape [${
          shapeArr.join(", ")
        }])`,
      );
    }
    if (dtype === "U8") return bytesOf(e.data);
    if (e.data instanceof Float32Array) return e.data;
    const dv = new DataView(e.data.buffer, e.data.byteOffset, e.data.byteLength);
    return Float32Array.from({ length }, (_, i) => dv.getFloat32(4 * i, true));
  };

  const packed = tensor("", "U8", Math.ceil(numel / 2)) as Uint8Array;
  const quantMap = tensor("quant_map", "F32", 16) as Float32Array;
  const nestedKeys = ["nested_blocksize", "nested_dtype", "nested_offset"].filter((k) => k in qs);
  if (nestedKeys.length !== 0 && nestedKeys.length !== 3) {
    fail(
      qsName,
      `has ${nestedKeys} but double quantization needs nested_blocksize, nested_dtype and nested_offset`,
    );
  }
  let absmax: Float32Array;
  let nested: DoubleQuantState | undefined;
  if (nestedKeys.length === 3) {
    const nb = qs.nested_blocksize;
    if (!Number.isSafeInteger(nb) || (nb as number) <= 0) {
      fail(qsName, `nested_blocksize must be a positive integer, received ${describe(nb)}`);
    }
    if (qs.nested_dtype !== "float32") {
      fail(qsName, `nested_dtype must be "float32", received ${describe(qs.nested_dtype)}`);
    }
    if (typeof qs.nested_offset !== "number") {
      fail(qsName, `nested_offset must be a number, received ${describe(qs.nested_offset)}`);
    }
    nested = {
      codes: tensor("absmax", "U8", nBlocks) as Uint8Array,
      scales: tensor("nested_absmax", "F32", Math.ceil(nBlocks / (nb as number))) as Float32Array,
      offset: Math.fround(qs.nested_offset as number),
      blocksize: nb as number,
      codebook: tensor("nested_quant_map", "F32", 256) as Float32Array,
    };
    absmax = doubleDequantize(nested);
  } else {
    absmax = tensor("absmax", "F32", nBlocks) as Float32Array;
  }
  const state: Quant4bitState = {
    quantType,
    blocksize,
    shape: [...shapeArr],
    numel,
    dtype,
    packed,
    quantMap,
    absmax,
  };
  if (nested !== undefined) state.nested = nested;
  return state;
}

/** Options of {@linkcode bnbQuantizationConfig}. */
export interface BnbQuantizationConfigOptions {
  /** The 4-bit format (type and double quantization are recorded; blocksize is not). @default "nf4" */
  quantize?: QuantizeOption;
  /** Compute dtype recorded for the 4-bit matmuls. @default "bfloat16" */
  computeDtype?: WeightDtype;
  /** Modules left unquantized (`llm_int8_skip_modules`). @default null */
  skipModules?: string[] | null;
}

/** The schema of {@linkcode bnbQuantizationConfig}'s options. */
export const bnbQuantizationConfigSchema = defineOptions(
  "bnbQuantizationConfig",
  {
    quantize: quantizeField('The 4-bit format: "nf4", "fp4" or { type, doubleQuant, blocksize }.'),
    computeDtype: oneOf("Compute dtype recorded for the 4-bit matmuls.", WEIGHT_DTYPES, {
      default: "bfloat16",
    }),
    skipModules: either("Modules left unquantized (llm_int8_skip_modules).", [
      array("Module names.", string("A name.", { nonEmpty: true })),
      oneOf("None.", [null as unknown as string]),
    ], { default: null as unknown as string[] }),
  } satisfies FieldsOf<BnbQuantizationConfigOptions>,
  { renamed: QUANTIZE_RENAMED },
);

/**
 * The `quantization_config` object of `config.json` for a bitsandbytes 4-bit checkpoint, as
 * transformers `BitsAndBytesConfig.to_dict` writes it (FORMATS.md §2.8). Blocksize is not part of it;
 * the per-tensor quant state is authoritative.
 *
 * @param options type, double quantization, compute dtype, skipped modules.
 * @returns a plain JSON-ready object.
 * @example
 * ```ts
 * import { bnbQuantizationConfig } from "./bnb_format.ts";
 * const c = bnbQuantizationConfig({ quantize: { type: "nf4", doubleQuant: true } });
 * if (c.quant_method !== "bitsandbytes" || c.load_in_4bit !== true || c.bnb_4bit_quant_type !== "nf4") throw new Error();
 * if (c.bnb_4bit_use_double_quant !== true || c.bnb_4bit_quant_storage !== "uint8") throw new Error();
 * ```
 */
export function bnbQuantizationConfig(options: BnbQuantizationConfigOptions = {}): Record<string, unknown> {
  const o = bnbQuantizationConfigSchema.parse(options);
  const q = o.quantize as ResolvedQuantize;
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: o.computeDtype,
    bnb_4bit_quant_storage: "uint8",
    bnb_4bit_quant_type: q.type,
    bnb_4bit_use_double_quant: q.doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: o.skipModules ?? null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: "bitsandbytes",
  };
}
