import * as tf from "@tensorflow/tfjs-core";
import { memorySnapshot } from "../../lib/engine/memory.ts";
import { assert, assertEquals, on } from "./_helpers.ts";

Deno.test("memorySnapshot() reports live tensors, the wasm heap and rss", async () => {
  await on("wasm", () => {});
  const before = memorySnapshot();
  const t = tf.zeros([256, 256]);
  const after = memorySnapshot();
  assertEquals(after.numTensors, before.numTensors + 1);
  assertEquals(after.tensorBytes - before.tensorBytes, 256 * 256 * 4);
  assert(after.heapBytes >= after.tensorBytes && after.rssBytes > 0);
  t.dispose();
  await on("cpu", () => {});
  assertEquals(memorySnapshot().heapBytes, 0);
});
