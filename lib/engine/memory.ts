/**
 * One memory reading for the trainer's reports.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { wasmBackendOrUndefined } from "./_wasm_backend.ts";

import type { MemoryBreakdown } from "./memory_parts.ts";

/** Memory measured at the end of a step (bytes). */
export interface MemoryRecord {
  /** Bytes held by live tfjs tensors (`tf.memory().numBytes`). */
  tensorBytes: number;
  /** Peak tfjs tensor bytes during the step (from `tf.profile`), when measured. */
  peakTensorBytes?: number;
  /** Live tfjs tensors. */
  numTensors: number;
  /** Size of the wasm heap (0 on other backends); it never shrinks. */
  heapBytes: number;
  /** Process resident set size. */
  rssBytes: number;
  /** Bytes by part (the trainer's and the planner's one breakdown type) when known. */
  breakdown?: MemoryBreakdown;
}

/**
 * Live tensor bytes and count (`tf.memory()`), the wasm heap size (0 when the
 * wasm backend has not started; it never shrinks) and the process RSS.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { memorySnapshot } from "./memory.ts";
 * await tf.setBackend("cpu");
 * const m = memorySnapshot();
 * if (!(m.rssBytes > 0) || m.numTensors < 0) throw new Error("bad snapshot");
 * ```
 */
export function memorySnapshot(): MemoryRecord {
  const mem = tf.memory();
  const be = tf.getBackend() === "wasm" ? wasmBackendOrUndefined() : undefined;
  return {
    tensorBytes: mem.numBytes,
    numTensors: mem.numTensors,
    heapBytes: be ? be.wasm.HEAPU8.buffer.byteLength : 0,
    rssBytes: Deno.memoryUsage().rss,
  };
}
