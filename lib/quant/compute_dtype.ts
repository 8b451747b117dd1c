/**
 * The compute dtype of 4-bit layers (bitsandbytes' `bnb_4bit_compute_dtype`): the precision of the
 * matmuls a 4-bit layer runs on its dequantized weight, forward and backward. `"float32"` (the
 * default) is exact fp32 sgemm; `"bfloat16"` rounds both operands to bfloat16 and accumulates in
 * fp32 (the native AVX512-BF16 GEMM, `nb_gemm_bf16`, about twice sgemm's speed), as QLoRA trains.
 * The adapters, attention, norms and the LM head stay fp32.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { matmulPrecision, setMatmulPrecision } from "../engine/matmul_kernels.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { Linear } from "../models/linear.ts";
import { isAdapterLayer } from "../adapters/adapter_layer.ts";

/** The compute dtypes of 4-bit layers. */
export const COMPUTE_DTYPES = ["float32", "bfloat16"] as const;

/** A compute dtype (see the module doc). */
export type ComputeDtype = typeof COMPUTE_DTYPES[number];

/** A layer whose matmul precision can be chosen (the 4-bit ones). */
export interface HasComputeDtype {
  computeDtype: ComputeDtype;
}

function hasComputeDtype(l: unknown): l is HasComputeDtype {
  return typeof l === "object" && l !== null && "computeDtype" in l;
}

/**
 * Throws, saying what is missing, when `dtype` cannot run on this machine and backend:
 * `"bfloat16"` needs the wasm backend, the native kernel library and a CPU with AVX512-BF16.
 *
 * @example
 * ```ts
 * import { checkComputeDtype } from "./compute_dtype.ts";
 * checkComputeDtype("float32", "example"); // always fine
 * ```
 */
export function checkComputeDtype(dtype: ComputeDtype, where: string): void {
  if (dtype === "float32") return;
  if (dtype !== "bfloat16") {
    throw new RangeError(`${where}: computeDtype must be "float32" or "bfloat16", received ${String(dtype)}`);
  }
  const backend = tf.getBackend();
  if (backend !== "wasm") {
    throw new RangeError(
      `${where}: computeDtype "bfloat16" runs on the wasm backend's native bf16 GEMM; the backend is ` +
        `${backend}. Call initEngine({ backend: "wasm" }) first, or keep computeDtype "float32".`,
    );
  }
  const prev = matmulPrecision();
  try {
    setMatmulPrecision("bfloat16"); // throws naming what is missing (library, CPU feature)
  } catch (e) {
    throw new RangeError(`${where}: computeDtype "bfloat16" cannot run here: ${(e as Error).message}`);
  } finally {
    setMatmulPrecision(prev);
  }
}

/** Runs `fn` with the wasm matmul kernels at `dtype`'s precision, restoring the previous one. */
export function withComputeDtype<T>(dtype: ComputeDtype, fn: () => T): T {
  if (dtype === "float32" && matmulPrecision() === "float32") return fn();
  const prev = matmulPrecision();
  setMatmulPrecision(dtype);
  try {
    return fn();
  } finally {
    setMatmulPrecision(prev);
  }
}

/**
 * Sets the compute dtype of every 4-bit layer of `model` (under adapters too) and returns how many
 * there are. Refuses `"bfloat16"` when the model has no 4-bit layer or when it cannot run here.
 *
 * @example
 * ```ts
 * import { initEngine } from "../engine/backend.ts";
 * import { loadModel } from "../models/load_model.ts";
 * import { EMBEDDED_MODEL_DIR } from "../models/embedded.ts";
 * import { setComputeDtype } from "./compute_dtype.ts";
 * await initEngine({ backend: "cpu" });
 * const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
 * if (setComputeDtype(model, "float32") !== 28) throw new Error("4 layers x 7 projections");
 * model.dispose();
 * ```
 */
export function setComputeDtype(model: LlamaForCausalLM, dtype: ComputeDtype): number {
  checkComputeDtype(dtype, "setComputeDtype");
  const layers: HasComputeDtype[] = [];
  for (const l of model.linears()) {
    const base: Linear = isAdapterLayer(l) ? l.base : l;
    if (hasComputeDtype(base)) layers.push(base);
  }
  if (layers.length === 0 && dtype !== "float32") {
    throw new RangeError(
      `setComputeDtype: computeDtype "${dtype}" applies to 4-bit layers (bitsandbytes' bnb_4bit_compute_dtype) ` +
        'and this model has none; load it with quantize: "nf4" (or a 4-bit checkpoint).',
    );
  }
  for (const l of layers) l.computeDtype = dtype;
  return layers.length;
}
