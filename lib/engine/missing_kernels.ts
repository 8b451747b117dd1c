/**
 * Kernels the tfjs 4.22 wasm backend lacks but training a Llama needs.
 *
 * - `UnsortedSegmentSum`: the gradient of `gather` (the embedding lookup) is an
 *   unsorted segment sum over the token ids (RUNTIME.md §4 recipe 1).
 *   Ids outside `[0, numSegments)` are dropped, like TensorFlow and the cpu backend.
 *
 * The other ops a Llama uses (softmax/logSoftmax, batched matMul, rsqrt, sigmoid,
 * slice/concat, where, mean, sum, exp/log, max) already have wasm kernels and
 * gradients (RUNTIME.md §4).
 *
 * Dimension legend: `x: [...S, ...I]`, `segmentIds: S` (any rank), output `[numSegments, ...I]`.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import { type KernelArgs, sizeOf, type TensorInfo, type WasmBackend } from "./_wasm_backend.ts";

function unsortedSegmentSum(args: KernelArgs): TensorInfo {
  const be = args.backend as WasmBackend;
  const { x, segmentIds } = args.inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const numSegments = args.attrs!.numSegments as number;
  const nIds = sizeOf(segmentIds.shape);
  const innerShape = x.shape.slice(segmentIds.shape.length);
  const inner = sizeOf(innerShape);
  const out = be.makeOutput([numSegments, ...innerShape], x.dtype);
  // Views only after makeOutput: the allocation may grow (and detach) the heap.
  const ov = be.typedArrayFromHeap(out);
  const xv = be.typedArrayFromHeap(x), ids = be.typedArrayFromHeap(segmentIds);
  ov.fill(0);
  for (let i = 0; i < nIds; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const o = s * inner, xi = i * inner;
    for (let j = 0; j < inner; j++) ov[o + j] += xv[xi + j];
  }
  return out;
}

/** Names of the kernels {@linkcode registerMissingKernels} adds to wasm. */
export const MISSING_WASM_KERNELS: readonly string[] = ["UnsortedSegmentSum"];

/**
 * Registers the missing wasm kernels (idempotent; kernels tfjs already has are left alone).
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
 * import { registerMissingKernels } from "./missing_kernels.ts";
 * await tf.setBackend("wasm");
 * registerMissingKernels();
 * // rows 0 and 2 go to segment 1, row 1 to segment 0: [[3], [1 + 5]]
 * const y = tf.unsortedSegmentSum(tf.tensor2d([[1], [3], [5]]), tf.tensor1d([1, 0, 1], "int32"), 2);
 * if (y.dataSync().join() !== "3,6") throw new Error(`got ${y.dataSync()}`);
 * ```
 */
export function registerMissingKernels(): void {
  if (!tf.getKernel("UnsortedSegmentSum", "wasm")) {
    tf.registerKernel({
      kernelName: "UnsortedSegmentSum",
      backendName: "wasm",
      kernelFunc: unsortedSegmentSum as unknown as tf.KernelFunc,
    });
  }
}
