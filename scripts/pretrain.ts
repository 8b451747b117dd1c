/**
 * `deno task pretrain`: rebuilds the embedded model from tiny Shakespeare in one go — trains the BPE
 * tokenizer into the model folder (scripts/train_tokenizer.ts), writes the herald task data
 * (scripts/make_task_data.ts), then pretrains the model (scripts/pretrain_embedded.ts).
 * Options: `deno task pretrain --help`.
 * @module
 */
import { defineCli, runCli } from "./_cli.ts";
import { writeHeraldTask } from "./make_task_data.ts";
import { EMBEDDED_CONFIG, PRETRAIN_OPTIONS, pretrainEmbedded } from "./pretrain_embedded.ts";
import { trainTokenizerFile } from "./train_tokenizer.ts";

const PRETRAIN_CLI = defineCli({
  name: "pretrain",
  summary: "Rebuilds the embedded model from tiny Shakespeare: tokenizer, herald task data, then " +
    "pretraining (~800 steps; overwrites the shipped model unless --out and --data point elsewhere).",
  usage: "deno task pretrain [options]",
  options: {
    ...PRETRAIN_OPTIONS,
    data: {
      type: "string",
      default: "notebooks/data",
      placeholder: "DIR",
      description: "folder for herald_train.jsonl and herald_eval.jsonl",
      example: "--data out/task",
    },
  },
  examples: [
    "deno task pretrain",
    "deno task pretrain --out out/tiny-model --data out/task --steps 100",
  ],
});

if (import.meta.main) {
  await runCli(PRETRAIN_CLI, async ({ values }) => {
    const vocabSize = EMBEDDED_CONFIG.vocab_size; // the tokenizer's vocabulary is the model's
    console.log(await trainTokenizerFile(values.corpus, values.out, { vocabSize }));
    for (const line of await writeHeraldTask(values.corpus, values.data)) console.log(line);
    await pretrainEmbedded(values);
  });
}
