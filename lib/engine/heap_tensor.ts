/**
 * Tensors filled in place: on the wasm backend the float32 buffer is allocated
 * on the wasm heap and handed to a fill function as a view, so a producer
 * (e.g. a native dequantizer) writes straight where BLAS will read it, with no
 * intermediate JS array and no copy. Other backends get a JS array copied in.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { wasmBackendOrUndefined } from "./_wasm_backend.ts";

/**
 * The values of a float32 tensor without a copy when it lives on the wasm heap (valid until the
 * next allocation), else `dataSync()`.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
 * import { heapValues } from "./heap_tensor.ts";
 * await tf.setBackend("wasm");
 * const t = tf.tensor1d([1, 2]);
 * if (heapValues(t)[1] !== 2) throw new Error();
 * t.dispose();
 * ```
 */
export function heapValues(t: tf.Tensor): Float32Array {
  if (t.dtype !== "float32") {
    throw new TypeError(`heapValues(): expected a float32 tensor, received ${t.dtype}`);
  }
  const be = tf.getBackend() === "wasm" ? wasmBackendOrUndefined() : undefined;
  return be ? be.typedArrayFromHeap(t) as Float32Array : t.dataSync() as Float32Array;
}

/**
 * A new float32 tensor of `shape` whose values `fill` writes into the view it receives, along with
 * the values of `inputs` (views valid only during the call: the heap may grow afterwards).
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
 * import { filledTensor } from "./heap_tensor.ts";
 * await tf.setBackend("wasm");
 * const t = filledTensor([2, 2], (v) => v.set([1, 2, 3, 4]));
 * if (t.dataSync().join() !== "1,2,3,4") throw new Error("wrong values");
 * t.dispose();
 * ```
 */
export function filledTensor(
  shape: number[],
  fill: (view: Float32Array, inputs: Float32Array[]) => void,
  inputs: tf.Tensor[] = [],
): tf.Tensor {
  const be = tf.getBackend() === "wasm" ? wasmBackendOrUndefined() : undefined;
  if (!be) {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    fill(values, inputs.map((t) => t.dataSync() as Float32Array));
    return tf.tensor(values, shape, "float32");
  }
  const info = be.makeOutput(shape, "float32");
  try {
    // Input views after the allocation, which may have grown (and detached) the heap.
    fill(be.typedArrayFromHeap(info) as Float32Array, inputs.map((t) => heapValues(t)));
  } catch (e) {
    be.disposeData(info.dataId, true);
    throw e;
  }
  return tf.engine().makeTensorFromTensorInfo(info);
}
