/**
 * Seeded fuzz of saved training states (issue 12): truncations, bit flips, random bytes,
 * deleted files and JSON fields of the wrong type in a `step-N` folder. Resuming from each
 * either works (a flipped bit in weight data is still a valid state, which the divergence
 * guard may then stop) or fails with an error that names the folder, never an internal
 * TypeError ("Cannot read properties…").
 * `FUZZ_CASES` sets the budget (default 60), `FUZZ_SEED` the seed (default 2026).
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { train, type TrainOptions } from "../../lib/train/trainer.ts";
import { mulberry32 } from "../../lib/engine/random.ts";
import { DivergenceError } from "../../lib/train/divergence.ts";

await initEngine({ backend: "cpu" });
const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 60);
const CONFIG = {
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
};
const DATA = Array.from({ length: 4 }, (_, i) => ({ ids: [1 + i, 2 + i, 3 + i, 4 + i, 5] }));
const OPTIONS: TrainOptions = {
  lr: 1e-2,
  batchSize: 2,
  steps: 3,
  measureMemory: false,
  optimizer: "adamw8bit",
};
const FILES = [
  "trainer_state.json",
  "optimizer.json",
  "trainable.safetensors",
  "optimizer.safetensors",
  "adapter_config.json",
];
const INTERNAL =
  /Cannot read properties|is not a function|is not iterable|undefined is not|Maximum call stack/;

const make = () => attachLoRA(initModel(CONFIG, { seed: 1 }), { r: 2, targetModules: ["q_proj"] });

Deno.test(`${CASES} corrupted training states: resuming works or fails naming the folder, never an internal error`, async () => {
  const root = await Deno.makeTempDir({ prefix: "nbtune_fuzz_state_" });
  const m0 = make();
  await train(m0, DATA, {
    ...OPTIONS,
    saveEvery: 1,
    outputDir: `${root}/good`,
    onStep: (r) => {
      if (r.step === 2) throw new Error("stop after the save of step 2");
    },
  }).catch(() => {});
  m0.dispose();
  const template = `${root}/good/step-2`;
  const rand = mulberry32(Number(Deno.env.get("FUZZ_SEED") ?? 2026));
  const int = (n: number) => Math.floor(rand() * n);
  const counts = { resumed: 0, refused: 0, diverged: 0 };
  const before = tf.memory().numTensors;
  for (let k = 0; k < CASES; k++) {
    const dir = `${root}/case-${k}/step-2`;
    await Deno.mkdir(`${root}/case-${k}`);
    const cp = await new Deno.Command("cp", { args: ["-r", template, dir] }).output();
    assert(cp.success);
    const file = `${dir}/${FILES[int(FILES.length)]}`;
    const bytes = await Deno.readFile(file);
    const kind = int(5);
    let what = "";
    if (kind === 0) {
      const n = int(bytes.length);
      await Deno.writeFile(file, bytes.subarray(0, n));
      what = `truncated to ${n}`;
    } else if (kind === 1) {
      const b = bytes.slice();
      for (let i = 0, flips = 1 + int(8); i < flips; i++) b[int(b.length)] ^= 1 << int(8);
      await Deno.writeFile(file, b);
      what = "bit flips";
    } else if (kind === 2) {
      const b = bytes.slice();
      const at = int(Math.min(64, b.length)); // the header / the start of the JSON
      for (let i = at; i < Math.min(b.length, at + 8); i++) b[i] = int(256);
      await Deno.writeFile(file, b);
      what = `random bytes at ${at}`;
    } else if (kind === 3) {
      await Deno.remove(file);
      what = "deleted";
    } else {
      const json = file.endsWith(".json") ? JSON.parse(new TextDecoder().decode(bytes)) : undefined;
      if (json && typeof json === "object") {
        // a top-level field, or (half the time) one inside a nested object
        let obj = json as Record<string, unknown>, path = "";
        for (let depth = 0; depth < 3; depth++) {
          const keys = Object.keys(obj);
          const key = keys[int(keys.length)];
          const inner = obj[key];
          if (depth < 2 && inner && typeof inner === "object" && !Array.isArray(inner) && rand() < 0.5) {
            obj = inner as Record<string, unknown>;
            path += `${key}.`;
            continue;
          }
          const values = [null, "x", -1, 1e308, [], {}, true, 2.5];
          obj[key] = values[int(values.length)];
          path += key;
          what = `field ${path} = ${JSON.stringify(obj[key])}`;
          break;
        }
        await Deno.writeTextFile(file, JSON.stringify(json));
      } else {
        await Deno.writeFile(file, new Uint8Array(0));
        what = "emptied";
      }
    }
    const m = make();
    try {
      await train(m, DATA, { ...OPTIONS, resumeFrom: dir });
      counts.resumed++;
    } catch (e) {
      if (e instanceof DivergenceError) { // damaged weights that still load; the guard then stopped
        counts.diverged++;
        continue;
      }
      const msg = `${(e as Error).name}: ${(e as Error).message}`;
      assert(!INTERNAL.test(msg), `case ${k} (${file.split("/").pop()} ${what}): internal error ${msg}`);
      assert(
        msg.includes(`case-${k}`),
        `case ${k} (${file.split("/").pop()} ${what}): the error does not name the folder: ${msg}`,
      );
      counts.refused++;
    } finally {
      m.dispose();
    }
  }
  assertEquals(tf.memory().numTensors, before, "tensors leaked by refused resumes");
  console.log(
    `training-state fuzz: ${CASES} cases, ${counts.refused} refused with the folder named, ${counts.resumed} resumed, ${counts.diverged} resumed and stopped by the divergence guard`,
  );
  await Deno.remove(root, { recursive: true });
});
