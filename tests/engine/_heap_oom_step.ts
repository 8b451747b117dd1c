/**
 * Subprocess for heap_guard_test.ts: fills most of the wasm heap, then runs a small QLoRA-style
 * training step through train() (measureMemory on) that cannot fit; prints one JSON line.
 */
import * as tf from "@tensorflow/tfjs-core";
import { initEngine } from "../../lib/engine/backend.ts";
import { HeapOutOfMemoryError } from "../../lib/engine/heap_guard.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { train } from "../../lib/train/trainer.ts";

await initEngine({ backend: "wasm" });
const model = initModel({
  model_type: "llama",
  vocab_size: 32000,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
}, { seed: 1 });
attachLoRA(model, { r: 4, targetModules: "all-linear" });
const data = Array.from(
  { length: 8 },
  (_, k) => ({ ids: Array.from({ length: 256 }, (_, i) => (i * 7 + k) % 32000) }),
);
const N = 64 * 1024 * 1024; // 256 MiB of float32
const filler: tf.Tensor[] = [];
// Fill the heap, then free 256 MiB: the step's logits ([8, 256, 32000] floats, 250 MiB, several
// copies kept by the tape) need more.
try {
  for (let i = 0; i < 20; i++) filler.push(tf.fill([N], 1));
} catch (e) {
  if (!(e instanceof HeapOutOfMemoryError)) throw e;
}
filler.pop()?.dispose();
const before = tf.memory().numTensors;
let error: unknown;
try {
  await train(model, data, { batchSize: 8, steps: 1, measureMemory: true, gradientCheckpointing: false });
} catch (e) {
  error = e;
}
const leaked = tf.memory().numTensors - before;
filler.forEach((t) => t.dispose());
const history = await train(model, data, { batchSize: 8, steps: 1, measureMemory: true });
console.log(JSON.stringify({
  isGuardError: error instanceof HeapOutOfMemoryError,
  message: (error as Error | undefined)?.message ?? "",
  name: (error as Error | undefined)?.name ?? "",
  leaked,
  recoveredLoss: history[0]?.loss,
}));
