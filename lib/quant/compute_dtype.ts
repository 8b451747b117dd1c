/**
 * The compute dtype of 4-bit layers (bitsandbytes' `bnb_4bit_compute_dtype`): the precision of the
 * matmuls a 4-bit layer runs on its dequantized weight, forward and backward. `"float32"` (the
 * default) is exact fp32 sgemm; `"bfloat16"` rounds both operands to bfloat16 and accumulates in
 * fp32 (the native AVX512-BF16 GEMM, `nb_gemm_bf16`, about twice sgemm's speed), as QLoRA trains.
 * The model's LM head follows it (`LlamaForCausalLM.computeDtype`); adapters, attention and norms stay fp32. Set it with `loadModel`'s `computeDtype`
 * or `model.setComputeDtype()`.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { matmulPrecision, setMatmulPrecision } from "../engine/matmul_kernels.ts";

/** The compute dtypes of 4-bit layers. */
export const COMPUTE_DTYPES = ["float32", "bfloat16"] as const;

/** A compute dtype (see the module doc). */
export type ComputeDtype = typeof COMPUTE_DTYPES[number];

/** A layer whose matmul precision can be chosen (the 4-bit ones). */
export interface HasComputeDtype {
  computeDtype: ComputeDtype;
}

/** Whether a layer has a compute dtype (a 4-bit layer). */
export function hasComputeDtype(l: unknown): l is HasComputeDtype {
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
