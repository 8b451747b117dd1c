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
    'r.yaml: unknown key "epochs"',
  );
  assertThrows(
    () => parseRecipe("model: m\ndata: d\nquantize: int8\n", "/x", "r.yaml"),
    RangeError,
    "quantize",
  );
  assertThrows(() => parseRecipe("model: [1\n", "/x", "r.yaml"), SyntaxError, "r.yaml: invalid YAML");
  assertThrows(() => parseRecipe("data: d\n", "/x", "r.yaml"), TypeError, '"model"');
});

Deno.test("readJsonl() names the file and line of a malformed record", async () => {
  const p = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(p, '{"text": "a"}\n{"text": \n');
  await assertRejects(() => readJsonl(p), SyntaxError, `${p}:2`);
  await Deno.remove(p);
});
