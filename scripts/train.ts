/**
 * `deno task train <recipe.yaml>`: fine-tunes a model as a YAML recipe says and
 * saves the result (the full checkpoint, or the adapter when one is attached).
 * @module
 */
import { initEngine } from "../lib/engine/backend.ts";
import { loadTokenizer } from "../lib/io/tokenizer.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { saveCheckpoint } from "../lib/models/save_model.ts";
import { parseRecipe, readJsonl } from "../lib/train/recipe.ts";
import { train } from "../lib/train/trainer.ts";
import { progress } from "../lib/notebook/progress.ts";
import { attachDyLoRA, attachLoRA, type DyLoRAConfig, type LoRAConfig } from "../lib/adapters/attach.ts";
import { saveAdapter } from "../lib/adapters/peft_format.ts";

const path = Deno.args[0];
if (!path) {
  console.error("usage: deno task train <recipe.yaml>");
  Deno.exit(2);
}
const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
const recipe = parseRecipe(await Deno.readTextFile(path), dir, path);
const info = await initEngine();
console.log(`[engine] ${info.reason}`);
const tokenizer = await loadTokenizer(recipe.model);
const model = await loadModel(recipe.model, recipe.quantize ? { quantize: recipe.quantize } : {});
if (recipe.adapter) {
  const { type, ...config } = recipe.adapter as { type?: string } & Record<string, unknown>;
  switch (type) {
    case "lora":
      attachLoRA(model, config as LoRAConfig);
      break;
    case "dylora":
      attachDyLoRA(model, config as DyLoRAConfig);
      break;
    default:
      throw new RangeError(`${path}: adapter.type must be "lora" or "dylora", got ${JSON.stringify(type)}`);
  }
}
const data = await readJsonl(recipe.data);
const evalData = recipe.evalData ? await readJsonl(recipe.evalData) : undefined;
let bar: ReturnType<typeof progress> | undefined;
const history = await train(model, data, {
  ...recipe.train,
  tokenizer,
  evalData,
  onStep: (r) => {
    bar ??= progress(r.totalSteps ?? 0, { label: "train" });
    bar.tick(
      1,
      `loss ${r.loss.toFixed(3)}${r.evalLoss !== undefined ? ` eval ${r.evalLoss.toFixed(3)}` : ""}`,
    );
  },
});
await bar?.done();
await Deno.mkdir(recipe.output, { recursive: true });
await Deno.writeTextFile(`${recipe.output}/history.json`, JSON.stringify(history, null, 1));
if (recipe.adapter) await saveAdapter(model, recipe.output);
else await saveCheckpoint(model, recipe.output);
const last = history[history.length - 1];
console.log(`done: ${history.length} steps, final loss ${last.loss.toFixed(4)}; saved to ${recipe.output}`);
model.dispose();
