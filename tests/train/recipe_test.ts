import { assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { parseRecipe, readJsonl } from "../../lib/train/recipe.ts";

Deno.test("parseRecipe() resolves paths against the recipe's folder and keeps train options", () => {
  const r = parseRecipe(
    "model: ../m\nquantize: nf4\ndata: d.jsonl\nadapter: { type: lora, r: 4 }\ntrain: { steps: 3, gradAccumSteps: 2 }\n",
    "/x/recipes",
  );
  assertEquals(r.model, "/x/recipes/../m");
  assertEquals(r.quantize, "nf4");
  assertEquals(r.adapter, { type: "lora", r: 4 });
  assertEquals(r.train, { steps: 3, gradAccumSteps: 2 });
});

Deno.test("bad recipes are rejected with the file and key named", () => {
  assertThrows(
    () => parseRecipe("model: m\ndata: d\nepochs: 3\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: unknown option "epochs"',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\neval_data: e\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: option "eval_data" was renamed to "evalData"',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\ntrain: { lr: '1e-3', steps: 3 }\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: option "train.lr" must be a finite number > 0, received the string "1e-3" (a number given as a string',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\ntrain: { tokenize: { maxLength: 0 } }\n", "/x", "r.yaml"),
    RangeError,
    'r.yaml: option "train.tokenize.maxLength" must be an integer >= 1, received 0',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\ntrain: { galore: { rank: 8 } }\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: option "train.galore.rank" was renamed to "r"',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\nadapter: { type: dylora, maxRank: 8 }\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: option "adapter.maxRank" was renamed to "r"',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\nadapter: { type: dylora, r: 8, useDora: true }\n", "/x", "r.yaml"),
    TypeError,
    'option "adapter.useDora" does not apply to a dylora adapter',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\nquantize: { type: nf4, doubleQuant: yes }\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: option "quantize.doubleQuant" must be true or false, received the string "yes"',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\nquantize: int8\n", "/x", "r.yaml"),
    RangeError,
    "quantize",
  );
  assertThrows(() => parseRecipe("model: [1\n", "/x", "r.yaml"), SyntaxError, "r.yaml: invalid YAML");
  assertThrows(
    () => parseRecipe("data: d\n", "/x", "r.yaml"),
    TypeError,
    'r.yaml: option "model" is required',
  );
});

Deno.test("readJsonl() names the file and line of a malformed record", async () => {
  const p = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(p, '{"text": "a"}\n{"text": \n');
  await assertRejects(() => readJsonl(p), SyntaxError, `${p}:2`);
  await Deno.remove(p);
});

Deno.test("parseRecipe(): computeDtype is float32 by default, bfloat16 when asked, anything else refused", () => {
  assertEquals(parseRecipe("model: m\ndata: d\nquantize: nf4\n", "/x", "r.yaml").computeDtype, "float32");
  const r = parseRecipe("model: m\ndata: d\nquantize: nf4\ncomputeDtype: bfloat16\n", "/x", "r.yaml");
  assertEquals(r.computeDtype, "bfloat16");
  assertThrows(
    () => parseRecipe("model: m\ndata: d\ncomputeDtype: fp16\n", "/x", "r.yaml"),
    Error,
    "computeDtype",
  );
});
