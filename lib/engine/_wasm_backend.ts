/**
 * The parts of tfjs-backend-wasm 4.22's `BackendWasm` that the engine's kernels
 * use (private to lib/engine/). See `backend_wasm.js` in the package: tensors
 * live in the Emscripten heap at `dataIdMap.get(dataId).memoryOffset`.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** A tensor as kernels see it. */
export type TensorInfo = tf.TensorInfo;

/** Emscripten module fields we touch. */
export interface WasmModule {
  HEAPU8: Uint8Array;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
}

/** The slice of `BackendWasm` used here. */
export interface WasmBackend {
  wasm: WasmModule;
  dataIdMap: { get(dataId: object): { memoryOffset: number; id: number } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object, force?: boolean): boolean;
}

/** Kernel function signature as registered with tfjs. */
export type KernelArgs = {
  inputs: Record<string, TensorInfo | undefined>;
  backend: unknown;
  attrs?: Record<string, unknown>;
};

/** Product of a shape's dimensions (1 for a scalar). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** The wasm backend instance when it has been initialised, else undefined. */
export function wasmBackendOrUndefined(): WasmBackend | undefined {
  try {
    // engine().registry holds only initialised backends (findBackend() would start one).
    const b = (tf.engine().registry as Record<string, unknown>)["wasm"] as WasmBackend | undefined;
    return b && b.wasm ? b : undefined;
  } catch {
    return undefined;
  }
}
