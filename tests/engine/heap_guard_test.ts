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
