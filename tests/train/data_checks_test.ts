/** Issue 12: data the trainer used to accept silently. */
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { train } from "../../lib/train/trainer.ts";

await initEngine({ backend: "cpu" });
const CONFIG = {
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  max_position_embeddings: 8,
};
const O = { steps: 1, batchSize: 1, measureMemory: false };

Deno.test("token and label ids outside the vocabulary are refused, naming the record and position", async () => {
  const m = initModel(CONFIG, { seed: 1 });
  await assertRejects(
    () => train(m, [{ ids: [1, 2, 3] }, { ids: [1, 40, 2] }], O),
    RangeError,
    "record 1: token id 40 at position 1",
  );
  await assertRejects(
    () => train(m, [{ ids: [1, 2, 3], labels: [-100, 2, 99] }], O),
    RangeError,
    "record 0: label 99 at position 2 is outside the vocabulary [0, 32)",
  );
  await assertRejects(
    () => train(m, [{ ids: [1, 2, 3] }], { ...O, evalData: [{ ids: [1, -3] }] }),
    RangeError,
    "evalData",
  );
  m.dispose();
});

Deno.test("sequences longer than max_position_embeddings are cut with a warning that says how many", async () => {
  const m = initModel(CONFIG, { seed: 1 });
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (msg: string) => warnings.push(msg);
  try {
    const h = await train(m, [{ ids: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] }, { ids: [1, 2, 3] }], O);
    assert(h[0].tokens <= 7, `at most 8 positions (7 targets) per example, got ${h[0].tokens}`);
  } finally {
    console.warn = warn;
  }
  assertEquals(warnings.length, 1);
  assert(
    /1 of 2 examples are longer than the model's max_position_embeddings \(8\)/.test(warnings[0]),
    warnings[0],
  );
  m.dispose();
});

Deno.test("a bad record read from a JSONL file names the file, the line and the field", async () => {
  const { readJsonl } = await import("../../lib/train/recipe.ts");
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(path, '{"ids": [1, 2, 3]}\n\n{"ids": [1, "2", 3]}\n');
  const m = initModel(CONFIG, { seed: 1 });
  await assertRejects(
    () => readJsonl(path).then((d) => train(m, d, O)),
    TypeError,
    `record 1 (${path}:3): field "ids[1]"`,
  );
  await Deno.writeTextFile(path, '{"prompt": "a"}\n');
  await assertRejects(
    () => readJsonl(path).then((d) => train(m, d, O)),
    TypeError,
    `record 0 (${path}:1): field "completion" must be a string, received undefined`,
  );
  m.dispose();
  await Deno.remove(path);
});
