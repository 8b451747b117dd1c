/**
 * Subprocess for heap_guard_test.ts: fills the wasm heap with 256 MiB tensors until
 * the guard throws, checks the earlier tensors are intact, prints one JSON line.
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-wasm";
import { HeapOutOfMemoryError, heapStats, installHeapGuard } from "../../lib/engine/heap_guard.ts";

await tf.setBackend("wasm");
installHeapGuard();
const N = 64 * 1024 * 1024; // 256 MiB of float32
const kept: tf.Tensor[] = [];
let error: unknown;
try {
  for (let i = 0; i < 40; i++) kept.push(tf.fill([N], i + 1));
} catch (e) {
  error = e;
}
// Read a few values of every kept tensor straight from the heap (no new wasm allocation).
const be = tf.backend() as unknown as { readSync(id: object, s: number, e: number): Float32Array };
let intact = true;
kept.forEach((t, i) => {
  for (const at of [0, N >> 1, N - 1]) if (be.readSync(t.dataId, at, at + 1)[0] !== i + 1) intact = false;
});
// After freeing, allocation works again.
kept.pop()?.dispose();
const again = tf.fill([N], 7);
const recovered = be.readSync(again.dataId, N - 1, N)[0] === 7;
console.log(JSON.stringify({
  allocated: kept.length + 1,
  isGuardError: error instanceof HeapOutOfMemoryError,
  isRangeError: error instanceof RangeError,
  message: (error as Error | undefined)?.message ?? "",
  intact,
  recovered,
  stats: heapStats(),
}));
