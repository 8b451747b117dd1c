import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-wasm";
import {
  HeapOutOfMemoryError,
  heapStats,
  installHeapGuard,
  MAX_WASM_HEAP_BYTES,
} from "../../lib/engine/heap_guard.ts";
import { assert, assertEquals } from "./_helpers.ts";

Deno.test("a full wasm heap throws HeapOutOfMemoryError and leaves earlier tensors intact", async () => {
  // In a subprocess so this process's heap does not grow to 4 GiB.
  const script = new URL("./_fill_heap.ts", import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  assert(out.success, `subprocess failed: ${new TextDecoder().decode(out.stderr)}`);
  const r = JSON.parse(text);
  assert(r.isGuardError && r.isRangeError, `expected HeapOutOfMemoryError, got "${r.message}"`);
  assert(r.allocated >= 10, `only ${r.allocated} tensors of 256 MiB fitted`);
  assert(/268435456 bytes/.test(r.message) && /gradient checkpointing/.test(r.message), r.message);
  assert(r.intact, "earlier tensors were overwritten");
  assert(r.recovered, "allocation after dispose failed");
  assertEquals(r.stats.maxHeapBytes, MAX_WASM_HEAP_BYTES);
});

Deno.test("installHeapGuard() is idempotent and normal allocations still work", async () => {
  await tf.setBackend("wasm");
  assert(installHeapGuard());
  assert(installHeapGuard());
  const before = tf.memory().numTensors;
  const y = tf.tidy(() => tf.add(tf.ones([1000]), 1));
  assertEquals(y.dataSync()[999], 2);
  y.dispose();
  assertEquals(tf.memory().numTensors, before);
  const s = heapStats();
  assert(s.heapBytes > 0 && s.tensorBytes >= 0);
});

Deno.test("HeapOutOfMemoryError names the request, the heap and the tensors", () => {
  const e = new HeapOutOfMemoryError(1024, 2 ** 31, 2 ** 30);
  assert(e instanceof RangeError);
  assertEquals(e.name, "HeapOutOfMemoryError");
  assert(/1024 bytes/.test(e.message) && /2048 MiB/.test(e.message) && /1024 MiB held/.test(e.message));
});

Deno.test("a request of 4 GiB or more is a HeapOutOfMemoryError, not a wrapped-around allocation", async () => {
  await tf.setBackend("wasm");
  installHeapGuard();
  const before = tf.memory().numTensors, heap = heapStats().heapBytes;
  for (const n of [2 ** 30 + 16, 2 ** 31]) {
    let error: unknown;
    try {
      tf.tidy(() => tf.tile(tf.ones([1]), [n])); // [n] float32 = 4n bytes
    } catch (e) {
      error = e;
    }
    assert(error instanceof HeapOutOfMemoryError, `expected HeapOutOfMemoryError, got ${error}`);
    assertEquals(error.requestedBytes, 4 * n);
    assert(
      /no single tensor can exceed/.test(error.message) && /batchSize/.test(error.message),
      error.message,
    );
  }
  assertEquals(tf.memory().numTensors, before);
  assertEquals(heapStats().heapBytes, heap);
});

Deno.test("a training step that overflows the heap raises HeapOutOfMemoryError (measureMemory on), leaks nothing, and training works after", async () => {
  // In a subprocess so this process's heap does not grow to 4 GiB.
  const script = new URL("./_heap_oom_step.ts", import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  assert(out.success, `subprocess failed: ${new TextDecoder().decode(out.stderr)}`);
  const r = JSON.parse(text);
  assert(r.isGuardError, `expected HeapOutOfMemoryError, got ${r.name}: "${r.message}"`);
  assert(/available/.test(r.message) && /gradientCheckpointing/.test(r.message), r.message);
  assertEquals(r.leaked, 0);
  assert(Number.isFinite(r.recoveredLoss), `training after the error gave loss ${r.recoveredLoss}`);
});
