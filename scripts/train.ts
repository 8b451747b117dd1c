/**
 * `deno task train <recipe.yaml>`: fine-tunes a model as a YAML recipe says and
 * saves the result (the full checkpoint, or the adapter when one is attached).
 * `--steps`, `--output` and `--resume` override the recipe; see `deno task train --help`.
 * @module
 */
import { defineCli, runCli } from "./_cli.ts";

const TRAIN_CLI = defineCli({
  name: "train",
  summary: "Fine-tunes a model as a YAML recipe says (model, quantize, data, adapter, train options) " +
    "and saves the adapter (PEFT layout) or the full checkpoint, with history.json.",
  usage: "deno task train <recipe.yaml> [options]",
  positionals: { min: 1, max: 1, names: "<recipe.yaml>" },
  options: {
    steps: {
      type: "integer",
      min: 1,
      api: "steps",
      description: "optimizer steps, replacing the recipe's train.steps",
      defaultText: "the recipe's train.steps",
      example: "--steps 50",
    },
    output: {
      type: "string",
      placeholder: "DIR",
      description: "where to save, replacing the recipe's output (relative to the current folder)",
      defaultText: "the recipe's output",
      example: "--output out/run2",
    },
    "save-every": {
      type: "integer",
      min: 0,
      api: "saveEvery",
      description:
        "save a training state every N steps into <output>/checkpoints/step-N (for --resume); 0 = never",
      defaultText: "the recipe's train.saveEvery, else 0",
      example: "--save-every 10",
    },
    resume: {
      type: "string",
      placeholder: "DIR",
      api: "resumeFrom",
      description: "continue an interrupted run with the same recipe and options: DIR is its --output " +
        "(its latest save in checkpoints/ is used), a checkpoints folder, or one step-N folder",
      defaultText: "none (a fresh start)",
      example: "--resume out/run1",
    },
  },
  // The trainer's messages name its outputDir: here it is <output>/checkpoints unless the recipe sets one.
  rewrite: (m) => m.replace(/\boutputDir\b/g, "checkpoints folder"),
  examples: [
    "deno task train notebooks/recipes/qlora_herald.yaml",
    "deno task train notebooks/recipes/qlora_herald.yaml --steps 20 --output out/short",
    "deno task train notebooks/recipes/qlora_herald.yaml --output out/run1 --save-every 10",
    "deno task train notebooks/recipes/qlora_herald.yaml --output out/run1 --save-every 10 --resume out/run1",
  ],
});

if (import.meta.main) {
  await runCli(TRAIN_CLI, ({ values, positionals }) => trainFromRecipe(positionals[0], values));
}

async function trainFromRecipe(
  path: string,
  overrides: { steps?: number; output?: string; resume?: string; "save-every"?: number },
): Promise<void> {
  // Loaded after parsing, so --help and usage errors answer without loading tfjs.
  const { initEngine } = await import("../lib/engine/backend.ts");
  const { loadTokenizer } = await import("../lib/io/tokenizer.ts");
  const { loadModel } = await import("../lib/models/load_model.ts");
  const { saveCheckpoint } = await import("../lib/models/save_model.ts");
  const { readJsonl, readRecipe } = await import("../lib/train/recipe.ts");
  const { train } = await import("../lib/train/trainer.ts");
  const { progress } = await import("../lib/notebook/progress.ts");
  const { attachDyLoRA, attachLoRA } = await import("../lib/adapters/attach.ts");
  const { saveAdapter } = await import("../lib/adapters/peft_format.ts");
  type TrainOptions = import("../lib/train/trainer.ts").TrainOptions;
  type LoRAConfig = import("../lib/adapters/attach.ts").LoRAConfig;
  type DyLoRAConfig = import("../lib/adapters/attach.ts").DyLoRAConfig;

  const recipe = await readRecipe(path); // UTF-8 checked, paths resolved against its folder
  const output = overrides.output ?? recipe.output;
  const info = await initEngine();
  console.log(`[engine] ${info.reason}`);
  const tokenizer = await loadTokenizer(recipe.model);
  const model = await loadModel(
    recipe.model,
    {
      ...(recipe.quantize ? { quantize: recipe.quantize } : {}),
      ...(recipe.computeDtype !== "float32" ? { computeDtype: recipe.computeDtype } : {}),
    },
  );
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
  // A run's --output holds its training states in checkpoints/ (unless the recipe names train.outputDir).
  const resumeFrom = overrides.resume === undefined
    ? undefined
    : await isDir(`${overrides.resume}/checkpoints`)
    ? `${overrides.resume}/checkpoints`
    : overrides.resume;
  const options = {
    ...recipe.train,
    ...(overrides.steps !== undefined ? { steps: overrides.steps } : {}),
    ...(overrides["save-every"] !== undefined ? { saveEvery: overrides["save-every"] } : {}),
    outputDir: recipe.train.outputDir ?? `${output}/checkpoints`,
    ...(resumeFrom !== undefined ? { resumeFrom } : {}),
    tokenizer,
    evalData,
    onStep: (r) => {
      bar ??= progress(r.totalSteps ?? 0, { label: "train" });
      bar.tick(
        1,
        `loss ${r.loss.toFixed(3)}${r.evalLoss !== undefined ? ` eval ${r.evalLoss.toFixed(3)}` : ""}`,
      );
    },
  } as TrainOptions;
  const history = await train(model, data, options);
  await bar?.done();
  await Deno.mkdir(output, { recursive: true });
  await Deno.writeTextFile(`${output}/history.json`, JSON.stringify(history, null, 1));
  if (recipe.adapter) await saveAdapter(model, output);
  else await saveCheckpoint(model, output);
  const last = history[history.length - 1];
  console.log(`done: ${history.length} steps, final loss ${last.loss.toFixed(4)}; saved to ${output}`);
  model.dispose();
}

async function isDir(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}
