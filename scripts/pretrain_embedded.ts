/**
 * Pretrains the embedded default model (a small Llama with grouped-query
 * attention) on tiny Shakespeare, using the toolkit's own trainer.
 *
 * Usage: deno run -A scripts/pretrain_embedded.ts [--steps 800] [--echo 0] [--init DIR] [--lr 3e-3] [--out notebooks/models/tiny-shakespeare-llama]
 * The tokenizer is trained first by scripts/train_tokenizer.ts into the same folder; `deno task pretrain`
 * (scripts/pretrain.ts) runs the tokenizer, the task data and this step in one go.
 * @module
 */
import { CliUsageError, type CliValues, defineCli, runCli } from "./_cli.ts";
import { initEngine } from "../lib/engine/backend.ts";
import { loadTokenizer } from "../lib/io/tokenizer.ts";
import { initModel } from "../lib/models/init_model.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { saveCheckpoint } from "../lib/models/save_model.ts";
import { evaluateLoss } from "../lib/train/evaluate.ts";
import { train } from "../lib/train/trainer.ts";
import { splitCorpus } from "./make_task_data.ts";
import { mulberry32 } from "../lib/train/random.ts";

/** Architecture of the embedded model (HF config fields). */
export const EMBEDDED_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: 512,
  hidden_size: 128,
  intermediate_size: 344,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 32,
  hidden_act: "silu",
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  rope_scaling: null,
  max_position_embeddings: 512,
  tie_word_embeddings: false,
  attention_bias: false,
  bos_token_id: 0,
  eos_token_id: 1,
  pad_token_id: 2,
  initializer_range: 0.02,
};

/**
 * "Echo" windows (`--echo FRACTION`, off by default): a random span repeated
 * to fill the window. Tiny Shakespeare almost never repeats itself, so the
 * model never learns to copy from its context; we tried mixing 25–50 % echo
 * windows into pretraining (1000 + 400 steps) to grow that skill for a copy
 * task, and the model still did not copy (teacher-forced copy accuracy 26 %,
 * the same as without). The shipped model is pretrained without them.
 */
export function echoWindows(
  ids: number[],
  length: number,
  count: number,
  seed: number,
): { ids: number[]; labels: number[] }[] {
  const rand = mulberry32(seed);
  return Array.from({ length: count }, () => {
    // Spans of 8..length/2 tokens, repeated until the window is full (short and long copies).
    const spanLength = 8 + Math.floor(rand() * (length / 2 - 7));
    const start = Math.floor(rand() * (ids.length - spanLength));
    const span = ids.slice(start, start + spanLength);
    const w: number[] = [];
    while (w.length < length) w.push(...span);
    w.length = length;
    return { ids: w, labels: w };
  });
}

/** Token windows of `length` from `ids` (non-overlapping). */
export function windows(ids: number[], length: number): { ids: number[]; labels: number[] }[] {
  const out: { ids: number[]; labels: number[] }[] = [];
  for (let i = 0; i + length <= ids.length; i += length) {
    const w = ids.slice(i, i + length);
    out.push({ ids: w, labels: w });
  }
  return out;
}

/** Options of the pretraining step, shared with `deno task pretrain`. */
export const PRETRAIN_OPTIONS = {
  out: {
    type: "string",
    default: "notebooks/models/tiny-shakespeare-llama",
    placeholder: "DIR",
    description: "model folder: reads its tokenizer, writes the checkpoint",
    example: "--out out/my-model",
  },
  corpus: {
    type: "string",
    default: "notebooks/data/tinyshakespeare.txt",
    placeholder: "FILE",
    description: "tiny Shakespeare text (its last 5% is held out)",
    example: "--corpus data/shakespeare.txt",
  },
  steps: { type: "integer", default: 800, min: 1, description: "pretraining steps", example: "--steps 100" },
  seq: {
    type: "integer",
    default: 128,
    min: 2,
    description: "tokens per training window",
    example: "--seq 64",
  },
  lr: { type: "number", default: 3e-3, description: "peak learning rate", example: "--lr 1e-3" },
  echo: {
    type: "number",
    default: 0,
    min: 0,
    description: "fraction of repeated-span (echo) windows, below 1",
    example: "--echo 0.25",
  },
  init: {
    type: "string",
    placeholder: "DIR",
    description: "continue from this checkpoint",
    defaultText: "a fresh initialisation (seed 0)",
    example: "--init notebooks/models/tiny-shakespeare-llama",
  },
} as const;

const PRETRAIN_STEP_CLI = defineCli({
  name: "pretrain_embedded",
  summary: "Pretrains the embedded model on tiny Shakespeare (the tokenizer must already be in --out).",
  usage: "deno run -A scripts/pretrain_embedded.ts [options]",
  options: PRETRAIN_OPTIONS,
  examples: ["deno run -A scripts/pretrain_embedded.ts --steps 100 --out out/my-model"],
});

/**
 * Pretrains the embedded model with the options of {@linkcode PRETRAIN_OPTIONS} and saves it (BF16) with
 * its generation config and `pretrain_log.json` into `out`. Runs for minutes: no example here.
 *
 * @param o the parsed options
 */
export async function pretrainEmbedded(o: CliValues<typeof PRETRAIN_OPTIONS>): Promise<void> {
  const { out, steps, seq: seqLen, echo: echoFraction } = o;
  if (echoFraction >= 1) throw new CliUsageError(`--echo must be below 1, got ${echoFraction}`);
  const info = await initEngine();
  console.log(`[engine] ${info.reason}`);
  const tok = await loadTokenizer(out);
  const { train: trainText, heldOut } = splitCorpus(
    await Deno.readTextFile(o.corpus),
  );
  const trainIds = tok.encode(trainText, { addSpecialTokens: false });
  const plain = windows(trainIds, seqLen);
  const trainData = [
    ...plain,
    ...echoWindows(trainIds, seqLen, Math.round(plain.length * echoFraction / (1 - echoFraction)), 7),
  ];
  const evalData = windows(tok.encode(heldOut, { addSpecialTokens: false }), seqLen);
  console.log(
    `train windows ${trainData.length} (${plain.length} plain + echo), held-out windows ${evalData.length} (${seqLen} tokens each)`,
  );
  const model = o.init ? await loadModel(o.init) : initModel(EMBEDDED_CONFIG, { seed: 0 });
  const t0 = performance.now();
  await train(model, trainData, {
    steps,
    batchSize: 16,
    lr: o.lr,
    warmupSteps: 50,
    schedule: "cosine",
    weightDecay: 0.01,
    maxGradNorm: 1,
    onStep: (r) => {
      if (r.step % 25 === 0 || r.step <= 5) {
        const el = (performance.now() - t0) / 1000;
        console.log(
          `step ${r.step}/${steps} loss ${r.loss.toFixed(3)} lr ${r.lr.toExponential(2)} ` +
            `${(r.tokens / r.seconds).toFixed(0)} tok/s elapsed ${el.toFixed(0)} s`,
        );
      }
    },
  });
  const ev = evaluateLoss(model, evalData, { batchSize: 16 });
  console.log(
    `held-out loss ${ev.loss.toFixed(4)} (perplexity ${ev.perplexity.toFixed(2)}) on ${ev.tokens} tokens`,
  );
  await saveCheckpoint(model, out, {
    dtype: "BF16",
    metadata: { "nbtune.pretrain_steps": String(steps), "nbtune.heldout_loss": ev.loss.toFixed(4) },
  });
  await Deno.writeTextFile(
    `${out}/generation_config.json`,
    JSON.stringify(
      { bos_token_id: 0, eos_token_id: 1, pad_token_id: 2, do_sample: false, max_new_tokens: 64 },
      null,
      2,
    ) +
      "\n",
  );
  await Deno.writeTextFile(
    `${out}/pretrain_log.json`,
    JSON.stringify(
      {
        steps,
        seqLen,
        echoFraction,
        heldOutLoss: ev.loss,
        heldOutPerplexity: ev.perplexity,
        heldOutTokens: ev.tokens,
      },
      null,
      2,
    ) + "\n",
  );
  model.dispose();
}

if (import.meta.main) await runCli(PRETRAIN_STEP_CLI, ({ values }) => pretrainEmbedded(values));
