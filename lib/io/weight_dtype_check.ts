/**
 * Catches a checkpoint whose header labels its weights with the wrong dtype (issue 12: "BF16
 * relabelled as F16 or I16" loaded garbage silently). A model parameter is always floating point, so
 * an integer dtype is refused outright; and BF16 bits read as F16 have a fingerprint: the F16 exponent
 * field holds the top five bits of the BF16 exponent, so every BF16 magnitude in [2^-23, 2^9) (every
 * real weight) reads back as an F16 magnitude in [0.125, 4). A trained or initialized weight matrix
 * (std around 0.02, or 1 for an embedding) has far fewer of its values in that band.
 * @module
 */
import type { TensorInfo } from "./safetensors_reader.ts";

/** The floating-point safetensors dtypes a model parameter may be stored in. */
export const FLOAT_WEIGHT_DTYPES: readonly string[] = ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"];

/** Smallest matrix the F16 fingerprint is judged on (fewer values say too little). */
const MIN_ELEMENTS = 256;
/** Share of nonzero values in [0.125, 4) above which an F16 matrix is taken for relabelled BF16. */
const BAND_SHARE = 0.99;

/**
 * Refuses a float parameter stored with an integer dtype (e.g. BF16 bits labelled I16), naming the
 * tensor and its file. Call it before reading the data.
 *
 * @param name tensor name.
 * @param info the tensor's header entry.
 * @example
 * ```ts
 * import { checkWeightDtype } from "./weight_dtype_check.ts";
 * const info = { file: "m.safetensors", dtype: "I16" as const, shape: [2], byteOffset: 8, byteLength: 4 };
 * let msg = "";
 * try { checkWeightDtype("model.norm.weight", info); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("m.safetensors") || !msg.includes("BF16")) throw new Error(msg);
 * ```
 */
export function checkWeightDtype(name: string, info: TensorInfo): void {
  if (FLOAT_WEIGHT_DTYPES.includes(info.dtype)) return;
  const guess = info.dtype === "I16" || info.dtype === "U16"
    ? "BF16 or F16"
    : info.dtype === "I32" || info.dtype === "U32"
    ? "F32"
    : info.dtype === "I8" || info.dtype === "U8"
    ? "F8 or a quantized format"
    : "a float dtype";
  throw new TypeError(
    `Tensor "${name}" in ${info.file} is labelled ${info.dtype}, but model weights are floating point: ` +
      `the header's dtype is probably wrong (${guess}?); fix the "dtype" of this tensor in the ` +
      "safetensors header or save the checkpoint again",
  );
}

/**
 * Refuses an F16 weight matrix whose values carry the fingerprint of BF16 bits read as F16 (at least
 * 99% of its nonzero values in [0.125, 4)), naming the tensor and its file. Vectors (norms, biases)
 * and matrices under 256 values are not judged.
 *
 * @param name tensor name.
 * @param info the tensor's header entry.
 * @param values the tensor decoded as its header says.
 * @example
 * ```ts
 * import { checkNotRelabelledBf16 } from "./weight_dtype_check.ts";
 * import { f16BitsToNumber, numberToBf16Bits } from "./dtypes.ts";
 * const weights = Array.from({ length: 512 }, (_, i) => 0.02 * Math.sin(i + 1));
 * const info = {
 *   file: "m.safetensors", dtype: "F16" as const, shape: [16, 32], byteOffset: 8, byteLength: 1024,
 * };
 * checkNotRelabelledBf16("w", info, Float32Array.from(weights)); // genuine F16 values pass
 * const relabelled = Float32Array.from(weights, (v) => f16BitsToNumber(numberToBf16Bits(v)));
 * let msg = "";
 * try { checkNotRelabelledBf16("w", info, relabelled); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("BF16") || !msg.includes("m.safetensors")) throw new Error(msg);
 * ```
 */
export function checkNotRelabelledBf16(name: string, info: TensorInfo, values: Float32Array): void {
  if (info.dtype !== "F16" || info.shape.length < 2 || values.length < MIN_ELEMENTS) return;
  let nonzero = 0, inBand = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (a === 0) continue;
    nonzero++;
    if (a >= 0.125 && a < 4) inBand++;
  }
  if (nonzero < MIN_ELEMENTS || inBand < BAND_SHARE * nonzero) return;
  const share = (100 * inBand / nonzero).toFixed(1);
  throw new TypeError(
    `Tensor "${name}" in ${info.file} is labelled F16, but ${share}% of its values lie in [0.125, 4), the ` +
      "fingerprint of BF16 bits read as F16 (real weight matrices spread over many more magnitudes): the " +
      'header\'s dtype is probably wrong (BF16?); fix the "dtype" of the tensors in the safetensors header ' +
      "or save the checkpoint again",
  );
}
