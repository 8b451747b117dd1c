/**
 * Subprocess of `divergence_test.ts` (so that this process's wasm heap does not grow to
 * 4 GiB): trains one step at batch 1024 on a model whose logits alone take 2 GiB, with
 * `measureMemory` as given (`true`/`false` argument), and prints one JSON line: the error's
 * name and message and the live tensors/bytes before and after. (One attempt per process: a
 * second equally large attempt after an out-of-memory error fails inside the wasm backend
 * with "Invalid typed array length", an engine issue reported separately.)
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { initEngine } from "../../lib/engine/backend.ts";
import { HeapOutOfMemoryError } from "../../lib/engine/heap_guard.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { train } from "../../lib/train/trainer.ts";

await initEngine({ backend: "wasm" });
const V = 4096, T = 128;
const model = initModel({
  model_type: "llama",
  vocab_size: V,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
}, { seed: 1 });
const data = Array.from(
  { length: 1024 },
  (_, i) => ({ ids: Array.from({ length: T }, (_, t) => (i * 31 + t * 7) % V) }),
);
{
  const measureMemory = Deno.args[0] === "true";
  const before = tf.memory();
  let name = "none", message = "", isHeapError = false;
  try {
    await train(model, data, { batchSize: 1024, steps: 1, measureMemory });
  } catch (e) {
    name = (e as Error).name;
    message = (e as Error).message;
    isHeapError = e instanceof HeapOutOfMemoryError;
  }
  const after = tf.memory();
  console.log(JSON.stringify({
    measureMemory,
    name,
    message,
    isHeapError,
    tensorsBefore: before.numTensors,
    tensorsAfter: after.numTensors,
    bytesBefore: before.numBytes,
    bytesAfter: after.numBytes,
  }));
}
model.dispose();
