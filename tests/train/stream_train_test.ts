/**
 * `train` on an async iterable with `steps`: streamed step by step, never collected. The same
 * records as an array (no shuffling) give the same history and weights; only the examples each
 * step needs are pulled; resuming a streamed run equals the uninterrupted run bit for bit; a
 * stream that ends early, a shuffleSeed, or a resume on another stream are refused by name.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { train, type TrainOptions } from "../../lib/train/trainer.ts";
import type { TrainingRecord } from "../../lib/train/data.ts";
import type { StepRecord } from "../../lib/train/types.ts";
import { readJsonl, streamJsonl } from "../../lib/train/recipe.ts";

await initEngine({ backend: "cpu" });

const CONFIG = {
  model_type: "llama",
  vocab_size: 40,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
/** 40 records of varied lengths; every 7th has no target token (skipped by both paths). */
const DATA: TrainingRecord[] = Array.from({ length: 40 }, (_, i) => {
  const ids = Array.from({ length: 4 + (i % 5) }, (_, t) => (i * 7 + t * 3) % 40);
  return i % 7 === 3 ? { ids, labels: ids.map(() => -100) } : { ids };
});
const BASE: TrainOptions = { lr: 1e-2, batchSize: 2, gradAccumSteps: 2, steps: 5, measureMemory: false };

/** A stream of `records` that counts what was pulled and whether it was closed. */
function counted(records: TrainingRecord[]) {
  const s = { pulled: 0, closed: false, records: undefined as unknown as AsyncIterable<TrainingRecord> };
  s.records = (async function* () {
    try {
      for (const r of records) {
        s.pulled++;
        yield r;
      }
    } finally {
      s.closed = true;
    }
  })();
  return s;
}

function comparable(h: StepRecord[]) {
  return h.map((r) => ({ step: r.step, loss: r.loss, lr: r.lr, tokens: r.tokens, gradNorm: r.gradNorm }));
}

function weights(model: LlamaForCausalLM): Map<string, number[]> {
  return new Map(model.trainableParams().map((p) => [p.name, [...p.variable.dataSync()]]));
}

Deno.test("a stream gives the array's history and weights (shuffleSeed: false), pulling only what each step needs", async () => {
  const before = tf.memory().numTensors;
  for (const packing of [false, true]) {
    const o: TrainOptions = { ...BASE, packing, tokenize: { maxLength: 16 } };
    const ref = initModel(CONFIG, { seed: 1 });
    const want = await train(ref, DATA, { ...o, shuffleSeed: false });
    const m = initModel(CONFIG, { seed: 1 });
    const s = counted(DATA);
    const pulledAt: number[] = [];
    const got = await train(m, s.records, { ...o, onStep: () => void pulledAt.push(s.pulled) });
    assertEquals(comparable(got), comparable(want), `history (packing ${packing})`);
    assertEquals(weights(m), weights(ref), `weights (packing ${packing})`);
    // 4 examples per step; records 3, 10, 17 (no targets) are pulled and skipped on the way.
    const skippedBy = (n: number) => [3, 10, 17, 24].filter((i) => i < n).length;
    const expected = [1, 2, 3, 4, 5].map((step) => {
      let n = 0, usable = 0;
      while (usable < step * 4) if (n++ % 7 !== 3) usable++;
      return n;
    });
    assertEquals(pulledAt, expected, "records pulled after each step");
    assertEquals(expected[4], 20 + skippedBy(expected[4]));
    assert(
      s.pulled < DATA.length && s.closed,
      `pulled ${s.pulled} of ${DATA.length}, then the stream was closed`,
    );
    ref.dispose();
    m.dispose();
  }
  assertEquals(tf.memory().numTensors, before, "no tensor leaked");
});

Deno.test("train(model, streamJsonl(path), { steps }) equals the collected file; a bad record names its line", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(path, DATA.map((r) => JSON.stringify(r)).join("\r\n") + "\r\n");
  const ref = initModel(CONFIG, { seed: 2 });
  const want = await train(ref, await readJsonl(path), { ...BASE, shuffleSeed: false });
  const m = initModel(CONFIG, { seed: 2 });
  const got = await train(m, streamJsonl(path), BASE); // the sanitizer fails the test if the file stays open
  assertEquals(comparable(got), comparable(want));
  const lines = DATA.map((r) => JSON.stringify(r));
  lines[9] = '{"ids": [1, "x", 3]}';
  await Deno.writeTextFile(path, lines.join("\n"));
  await assertRejects(
    () => train(m, streamJsonl(path), BASE),
    TypeError,
    `record 9 (${path}:10): field "ids[1]"`,
  );
  lines[9] = "{broken";
  await Deno.writeTextFile(path, lines.join("\n"));
  await assertRejects(() => train(m, streamJsonl(path), BASE), SyntaxError, `${path}:10: not valid JSON`);
  ref.dispose();
  m.dispose();
  await Deno.remove(path);
});

Deno.test("a stream that ends before the steps are done, or a shuffleSeed with a stream, is refused by name", async () => {
  const m = initModel(CONFIG, { seed: 3 });
  const s = counted(DATA.slice(0, 14)); // 12 usable examples: 3 steps of 4
  const done: number[] = [];
  await assertRejects(
    () => train(m, s.records, { ...BASE, onStep: (r) => void done.push(r.step) }),
    RangeError,
    "the data stream ended at step 4 after 14 records (12 with target tokens), but each step needs 4 examples",
  );
  assertEquals(done, [1, 2, 3], "the steps before the end ran");
  assert(s.closed, "stream closed");
  const t = counted(DATA);
  await assertRejects(() => train(m, t.records, { ...BASE, shuffleSeed: 3 }), RangeError, "shuffleSeed 3");
  assertEquals(t.pulled, 0, "refused before reading");
  // Without steps the iterable is collected (epochs need the whole data): one epoch is 34 usable / 4 = 8 steps.
  const all = counted(DATA);
  const h = await train(m, all.records, { ...BASE, steps: undefined, shuffleSeed: false });
  assertEquals([h.length, all.pulled], [8, 40]);
  m.dispose();
});

class Crash extends Error {}

Deno.test("resuming a streamed run (LoRA with dropout) equals the uninterrupted run bit for bit; another stream is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbtune_stream_resume_" });
  const make = () => attachLoRA(initModel(CONFIG, { seed: 4 }), { r: 4, dropout: 0.2, seed: 3 });
  const o: TrainOptions = { ...BASE, steps: 6, warmupSteps: 2 };
  const ref = make();
  const want = comparable(await train(ref, counted(DATA).records, o));
  const wantW = weights(ref);
  ref.dispose();
  for (const cut of [2, 4]) {
    const out = `${root}/cut-${cut}`;
    const first = make();
    await assertRejects(
      () =>
        train(first, counted(DATA).records, {
          ...o,
          saveEvery: 1,
          outputDir: out,
          onStep: (r) => {
            if (r.step === cut) throw new Crash("killed");
          },
        }),
      Crash,
    );
    first.dispose();
    const second = make();
    const s = counted(DATA);
    const got = comparable(
      await train(second, s.records, { ...o, saveEvery: 1, outputDir: out, resumeFrom: out }),
    );
    assertEquals(got, want, `history after resuming from step ${cut}`);
    assertEquals(weights(second), wantW, `weights after resuming from step ${cut}`);
    second.dispose();
  }
  const m = make();
  const reordered = [DATA[1], DATA[0], ...DATA.slice(2)];
  await assertRejects(
    () =>
      train(m, counted(reordered).records, { ...o, outputDir: `${root}/cut-2`, resumeFrom: `${root}/cut-2` }),
    RangeError,
    "records of the data stream differ from the ones the saved run consumed",
  );
  await assertRejects(
    () => train(m, DATA, { ...o, shuffleSeed: false, resumeFrom: `${root}/cut-2` }),
    RangeError,
    'data = "stream"',
  );
  await assertRejects(
    () => train(m, counted(DATA.slice(0, 5)).records, { ...o, resumeFrom: `${root}/cut-4` }),
    RangeError,
    "the data stream ended after 5 records, but the saved run had consumed",
  );
  m.dispose();
  await Deno.remove(root, { recursive: true });
});
