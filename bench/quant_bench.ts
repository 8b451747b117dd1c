/**
 * 4-bit quantization benchmarks (no assertions; targets are judged by the bench runner):
 *
 * - `rss`: peak resident memory (VmHWM) of a fresh subprocess that runs quantize-on-load
 *   (`loadModel(dir, {quantize: "nf4"})`), `quantizeCheckpoint`, and a dense load, on a generated
 *   Llama-shaped BF16 checkpoint of a few hundred MB, against the checkpoint and quantized sizes.
 * - `matmul`: `QuantizedLinear.apply` (NF4 dequantize + matmul) vs `DenseLinear.apply` (fp32).
 * - `step`: peak tensor memory of a QLoRA training step (forward + backward) vs the same LoRA step on
 *   the fp32 model, at the embedded model's size.
 * - `ppl`: {@linkcode runPerplexityReport}, held-out perplexity of the embedded model, full vs 4-bit.
 *
 * `deno run -A bench/quant_bench.ts [--only rss,matmul,step,ppl]`
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { attachLoRA } from "../lib/adapters/attach.ts";
import { initEngine } from "../lib/engine/backend.ts";
import { writeSafetensors } from "../lib/io/safetensors_writer.ts";
import { loadTokenizer } from "../lib/io/tokenizer.ts";
import { initModel } from "../lib/models/init_model.ts";
import { DenseLinear } from "../lib/models/linear.ts";
import { linearShape, loadModel } from "../lib/models/load_model.ts";
import type { LlamaForCausalLM } from "../lib/models/llama.ts";
import { BLOCK_LINEAR_NAMES } from "../lib/models/llama_block.ts";
import { parseLlamaConfig } from "../lib/models/llama_config.ts";
import { saveCheckpoint } from "../lib/models/save_model.ts";
import { dequantize4bit, quantize4bit } from "../lib/quant/blockwise_4bit.ts";
import { quantizeCheckpoint } from "../lib/quant/quantize_checkpoint.ts";
import { QuantizedLinear } from "../lib/quant/quantized_linear.ts";
import { fourBitLinear } from "../lib/quant/quantized_loaders.ts";
import { accumulateGradients } from "../lib/train/accumulate.ts";
import { makeMicroBatch } from "../lib/train/batching.ts";
import { evaluateLoss } from "../lib/train/evaluate.ts";
import { EMBEDDED_CONFIG, windows } from "../scripts/pretrain_embedded.ts";
import { splitCorpus } from "../scripts/make_task_data.ts";
import type { BenchRow } from "./matmul_bench.ts";
import {
  array,
  custom,
  defineOptions,
  type FieldsOf,
  integer,
  number,
  oneOf,
  string,
} from "../lib/options/schema.ts";

export type { BenchRow };

/** The parts of {@linkcode runQuantBench}. */
export type QuantBenchPart = "rss" | "matmul" | "step" | "ppl";

/** Options for {@linkcode runQuantBench}. */
export interface QuantBenchOptions {
  /** Which parts to run. @default ["rss", "matmul", "step", "ppl"] */
  parts?: QuantBenchPart[];
  /** HF config of the generated checkpoint for `rss`. @default hidden 1024, intermediate 2816, 12 layers, vocab 8000 (≈ 340 MB BF16) */
  rssConfig?: Record<string, unknown>;
  /** Square weight size for `matmul`. @default 1024 */
  matmulSize?: number;
  /** Input rows for `matmul`. @default 256 */
  matmulRows?: number;
  /** Minimum seconds of the interleaved timing loop. @default 5 */
  minSeconds?: number;
  /** Models and micro-batches for `step`. @default {@linkcode STEP_CASES} */
  stepCases?: StepCase[];
}

/** One `step` measurement: a model config and a micro-batch of `batch[0]` sequences × `batch[1]` tokens. */
export interface StepCase {
  label: string;
  config: Record<string, unknown>;
  batch: [number, number];
}

/**
 * The embedded model with a pretraining-sized micro-batch (activations dominate there), and a
 * 25 M-parameter model with one short sequence (weights dominate), to show both regimes.
 */
export const STEP_CASES: StepCase[] = [
  { label: "embedded model (0.86 M params)", config: EMBEDDED_CONFIG, batch: [4, 128] },
  {
    label: "hidden 512 × 8 layers (33 M params)",
    config: {
      model_type: "llama",
      vocab_size: 8000,
      hidden_size: 512,
      intermediate_size: 1408,
      num_hidden_layers: 8,
      num_attention_heads: 8,
      num_key_value_heads: 8,
      tie_word_embeddings: false,
    },
    batch: [1, 32],
  },
];

const PARTS: readonly QuantBenchPart[] = ["rss", "matmul", "step", "ppl"];
/** The schema of {@linkcode runQuantBench}'s options. */
export const quantBenchSchema = defineOptions(
  "runQuantBench",
  {
    parts: array("Which parts to run.", oneOf("A part.", PARTS), { default: [...PARTS], minLength: 1 }),
    rssConfig: custom<Record<string, unknown>>(
      "HF config of the generated checkpoint for rss.",
      "a config object",
      (v) => typeof v === "object" && v !== null && !Array.isArray(v),
      { example: {} },
    ),
    matmulSize: integer("Square weight size for matmul.", { min: 1, default: 1024 }),
    matmulRows: integer("Input rows for matmul.", { min: 1, default: 256 }),
    minSeconds: number("Minimum seconds of the interleaved timing loop.", { above: 0, default: 5 }),
    stepCases: array(
      "Models and micro-batches for step.",
      custom<StepCase>(
        "A step case.",
        "a step case { label, config, batch }",
        (v) => typeof v === "object" && v !== null && "config" in v && "batch" in v,
        { example: STEP_CASES[0] },
      ),
    ),
  } satisfies FieldsOf<QuantBenchOptions>,
);
const MB = 2 ** 20;

/** Default checkpoint for the RSS measurement: ≈ 170 M parameters, ≈ 340 MB in BF16. */
export const RSS_CONFIG: Record<string, unknown> = {
  model_type: "llama",
  vocab_size: 8000,
  hidden_size: 1024,
  intermediate_size: 2816,
  num_hidden_layers: 12,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
};

/**
 * Runs the selected parts and returns their rows.
 *
 * @example
 * ```ts
 * import { runQuantBench } from "./quant_bench.ts";
 * const rows = await runQuantBench({ parts: ["matmul"], matmulSize: 64, matmulRows: 8, minSeconds: 0.01 });
 * if (!rows.some((r) => r.name.includes("nf4") && r.ratio! > 0)) throw new Error("no ratio row");
 * ```
 */
export async function runQuantBench(options: QuantBenchOptions = {}): Promise<BenchRow[]> {
  const { parts } = quantBenchSchema.parse(options);
  await initEngine();
  const rows: BenchRow[] = [];
  const minSeconds = options.minSeconds ?? 5;
  for (const part of parts) {
    switch (part) {
      case "rss":
        rows.push(...(await rssRows(options.rssConfig ?? RSS_CONFIG)));
        break;
      case "matmul":
        rows.push(...matmulRows(options.matmulSize ?? 1024, options.matmulRows ?? 256, minSeconds));
        break;
      case "step":
        for (const c of options.stepCases ?? STEP_CASES) rows.push(...(await stepRows(c)));
        break;
      case "ppl":
        rows.push(...(await runPerplexityReport()));
        break;
    }
  }
  return rows;
}

// ---------------------------------------------------------------- peak RSS of streaming loads

/** Random BF16 weights with |w| in [2⁻⁷, 2⁻³) (finite by construction), from a xorshift32 stream. */
function randomBf16(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    // sign | exponent 120..123 | 7 mantissa bits
    out[i] = ((s >>> 31) << 15) | ((120 + ((s >>> 7) & 3)) << 7) | (s & 0x7f);
  }
  return out;
}

/**
 * Writes a Llama-shaped BF16 checkpoint of random weights into `dir`, one tensor at a time (lazy data),
 * so generating it needs no more memory than its largest tensor.
 *
 * @returns the size of `model.safetensors` in bytes.
 */
export async function writeRandomCheckpoint(dir: string, config: Record<string, unknown>): Promise<number> {
  const c = parseLlamaConfig(config);
  const D = c.hiddenSize, V = c.vocabSize;
  const shapes: [string, number[]][] = [["model.embed_tokens.weight", [V, D]]];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    shapes.push([`${p}.input_layernorm.weight`, [D]], [`${p}.post_attention_layernorm.weight`, [D]]);
    const attn = BLOCK_LINEAR_NAMES.slice(0, 4), mlp = BLOCK_LINEAR_NAMES.slice(4);
    for (const n of attn) shapes.push([`${p}.self_attn.${n}.weight`, linearShape(c, n)]);
    for (const n of mlp) shapes.push([`${p}.mlp.${n}.weight`, linearShape(c, n)]);
  }
  shapes.push(["model.norm.weight", [D]]);
  if (!c.tieWordEmbeddings) shapes.push(["lm_head.weight", [V, D]]);
  const r = await writeSafetensors(
    `${dir}/model.safetensors`,
    shapes.map(([name, shape], i) => ({
      name,
      dtype: "BF16" as const,
      shape,
      data: () =>
        shape.length === 1 ? new Uint16Array(shape[0]).fill(0x3f80) : randomBf16(shape[0] * shape[1], i + 1),
    })),
    { metadata: { format: "pt" } },
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  return r.fileBytes;
}

interface ChildResult {
  /** Peak resident set (VmHWM), bytes. */
  peak: number;
  seconds: number;
}

/** Runs this file as a subprocess in `mode` and returns its peak RSS. */
async function child(mode: string, ...args: string[]): Promise<ChildResult> {
  const config = new URL("../deno.json", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", config, new URL(import.meta.url).pathname, "--child", mode, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith("{"));
  if (!out.success || !line) {
    throw new Error(
      `quant_bench child "${mode}" failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
    );
  }
  return JSON.parse(line);
}

/** Peak RSS in bytes of this process so far (`VmHWM` of /proc/self/status). */
function vmHWM(): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
  if (!m) throw new Error("VmHWM not found in /proc/self/status (Linux only)");
  return Number(m[1]) * 1024;
}

/** Entry point of the subprocess: does one thing, prints `{peak, seconds}`. */
async function childMain(mode: string, args: string[]): Promise<void> {
  await initEngine();
  const t0 = performance.now();
  let keep: unknown;
  switch (mode) {
    case "baseline":
      break;
    case "load-nf4":
      keep = await loadModel(args[0], { quantize: "nf4" });
      break;
    case "load-dense":
      keep = await loadModel(args[0]);
      break;
    case "load-bnb":
      keep = await loadModel(args[0]);
      break;
    case "quantize":
      keep = await quantizeCheckpoint(args[0], args[1]);
      break;
    default:
      throw new RangeError(`unknown child mode ${mode}`);
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ peak: vmHWM(), seconds, kept: keep !== undefined }));
}

async function rssRows(config: Record<string, unknown>): Promise<BenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_quant_bench_" });
  try {
    const ckptBytes = await writeRandomCheckpoint(`${dir}`, config);
    const base = await child("baseline");
    const onLoad = await child("load-nf4", dir);
    const quant = await child("quantize", dir, `${dir}/nf4`);
    const qBytes = (await Deno.stat(`${dir}/nf4/model.safetensors`)).size;
    const bnb = await child("load-bnb", `${dir}/nf4`);
    const dense = await child("load-dense", dir);
    const above = (r: ChildResult) => (r.peak - base.peak) / MB;
    const ck = ckptBytes / MB, q = qBytes / MB;
    return [
      { name: "rss: generated checkpoint size (BF16)", unit: "MB", value: ck },
      { name: "rss: bnb nf4+dq checkpoint size", unit: "MB", value: q, baseline: ck, ratio: q / ck },
      { name: "rss: runtime baseline (deno + tfjs, nothing loaded)", unit: "MB", value: base.peak / MB },
      {
        name: "rss: quantize-on-load peak RSS",
        unit: "MB",
        value: onLoad.peak / MB,
        baseline: ck,
        ratio: onLoad.peak / ckptBytes,
      },
      {
        name: "rss: quantize-on-load peak above runtime vs checkpoint",
        unit: "MB",
        value: above(onLoad),
        baseline: ck,
        ratio: above(onLoad) / ck,
      },
      {
        name: "rss: quantize-on-load peak above runtime vs quantized size",
        unit: "MB",
        value: above(onLoad),
        baseline: q,
        ratio: above(onLoad) / q,
      },
      { name: "rss: quantize-on-load time", unit: "s", value: onLoad.seconds },
      {
        name: "rss: quantizeCheckpoint peak above runtime vs checkpoint",
        unit: "MB",
        value: above(quant),
        baseline: ck,
        ratio: above(quant) / ck,
      },
      { name: "rss: quantizeCheckpoint time", unit: "s", value: quant.seconds },
      {
        name: "rss: load of the saved bnb dir, peak above runtime vs quantized size",
        unit: "MB",
        value: above(bnb),
        baseline: q,
        ratio: above(bnb) / q,
      },
      {
        name: "rss: dense fp32 load peak above runtime vs checkpoint (contrast)",
        unit: "MB",
        value: above(dense),
        baseline: ck,
        ratio: above(dense) / ck,
      },
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------- dequant + matmul time

/**
 * Median seconds per call of each function, run round-robin (one call of each per round) until
 * `minSeconds` have passed, so load from other processes on a shared machine hits all alike.
 */
function interleavedMedians(fns: (() => void)[], minSeconds: number): number[] {
  for (const f of fns) f(); // warm-up
  const times: number[][] = fns.map(() => []);
  const t0 = performance.now();
  do {
    fns.forEach((f, i) => {
      const t = performance.now();
      f();
      times[i].push((performance.now() - t) / 1000);
    });
  } while (performance.now() - t0 < minSeconds * 1000 || times[0].length < 5);
  return times.map((t) => t.sort((a, b) => a - b)[Math.floor(t.length / 2)]);
}

function matmulRows(n: number, rows: number, minSeconds: number): BenchRow[] {
  const w = tf.tidy(() => tf.randomNormal([n, n], 0, 0.02, "float32", 1).dataSync() as Float32Array);
  const dense = new DenseLinear("dense", tf.tensor2d(w, [n, n]), { trainable: false });
  const state = quantize4bit(w, { shape: [n, n] });
  const q = fourBitLinear("nf4", state);
  const x = tf.randomNormal([rows, n], 0, 1, "float32", 2) as tf.Tensor2D;
  const run = (lin: DenseLinear | QuantizedLinear) => () => tf.tidy(() => lin.apply(x).dataSync());
  const [tDense, tQuant, tDequant] = interleavedMedians(
    [run(dense), run(q), () => dequantize4bit(state)],
    minSeconds,
  );
  x.dispose();
  dense.dispose();
  const ms = 1000;
  return [
    { name: `matmul [${rows}, ${n}] × [${n}, ${n}]ᵀ fp32 DenseLinear.apply`, unit: "ms", value: tDense * ms },
    {
      name: `matmul [${rows}, ${n}] × [${n}, ${n}]ᵀ nf4 QuantizedLinear.apply (dequant + matmul)`,
      unit: "ms",
      value: tQuant * ms,
      baseline: tDense * ms,
      ratio: tQuant / tDense,
    },
    {
      name: `dequantize4bit of ${n}×${n} alone (JS)`,
      unit: "ms",
      value: tDequant * ms,
      baseline: tDense * ms,
      ratio: tDequant / tDense,
    },
  ];
}

// ---------------------------------------------------------------- QLoRA step memory

/**
 * Peak tfjs bytes during one forward + backward LoRA step and the bytes held before it, both counted
 * from `start` (the engine's bytes before the model was loaded, so leftovers of other code are excluded).
 */
async function stepPeak(
  model: LlamaForCausalLM,
  batch: ReturnType<typeof makeMicroBatch>,
  start: number,
): Promise<{ peak: number; held: number }> {
  const held = tf.memory().numBytes - start;
  const info = await tf.profile(() => {
    const { grads } = accumulateGradients(model, model.trainableParams(), [batch]);
    grads.forEach((g) => g.dispose());
  });
  return { peak: info.peakBytes - start, held };
}

async function stepRows({ label, config, batch: [B, T] }: StepCase): Promise<BenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_quant_step_" });
  try {
    const m = initModel(config, { seed: 0 });
    await saveCheckpoint(m, dir);
    m.dispose();
    const V = Number(config.vocab_size);
    const examples = Array.from({ length: B }, (_, b) => {
      const ids = Array.from({ length: T }, (_, t) => (b * 131 + t * 17) % V);
      return { ids, labels: ids };
    });
    const batch = makeMicroBatch(examples, 0);
    const measure = async (quantize: boolean) => {
      const start = tf.memory().numBytes;
      const model = await loadModel(dir, quantize ? { quantize: "nf4" } : {});
      attachLoRA(model, { r: 8, targetModules: "all-linear" });
      await stepPeak(model, batch, start); // warm-up (kernel setup)
      const r = await stepPeak(model, batch, start);
      // 4-bit weights live in host memory, outside tfjs: count them too.
      const packed = model.linears().flatMap((l) => ("base" in l ? (l as { base: unknown }).base : l))
        .filter((l) => l instanceof QuantizedLinear)
        .reduce((s, l) => s + (l as QuantizedLinear).storage()[0].bytes, 0);
      model.dispose();
      return { ...r, packed, total: r.peak + packed };
    };
    const full = await measure(false);
    const qlora = await measure(true);
    const name = `step ${label} [${B}×${T}] LoRA r8 all-linear`;
    return [
      { name: `${name} fp32 base: peak tensor bytes`, unit: "MB", value: full.total / MB },
      { name: `${name} fp32 base: weights held before the step`, unit: "MB", value: full.held / MB },
      {
        name: `${name} nf4 base (QLoRA): peak tensor bytes + packed weights`,
        unit: "MB",
        value: qlora.total / MB,
        baseline: full.total / MB,
        ratio: qlora.total / full.total,
      },
      {
        name: `${name} nf4 base: weights held (tensors + packed)`,
        unit: "MB",
        value: (qlora.held + qlora.packed) / MB,
        baseline: full.held / MB,
        ratio: (qlora.held + qlora.packed) / full.held,
      },
      {
        name: `${name} activations + transient (peak − held), nf4 vs fp32`,
        unit: "MB",
        value: (qlora.peak - qlora.held) / MB,
        baseline: (full.peak - full.held) / MB,
        ratio: (qlora.peak - qlora.held) / (full.peak - full.held),
      },
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------- perplexity

/** Options for {@linkcode runPerplexityReport}. */
export interface PerplexityReportOptions {
  /** HF model directory with `tokenizer.json`. @default notebooks/models/tiny-shakespeare-llama */
  modelDir?: string;
  /** Corpus whose last 5 % is the held-out text (`splitCorpus`). @default notebooks/data/tinyshakespeare.txt */
  textPath?: string;
  /** Tokens per window (as in pretraining). @default 128 */
  seqLen?: number;
  /** Evaluate only the first N windows. @default all */
  maxWindows?: number;
}

/** The schema of {@linkcode runPerplexityReport}'s options. */
export const perplexityReportSchema = defineOptions(
  "runPerplexityReport",
  {
    modelDir: string("HF model directory with tokenizer.json.", { nonEmpty: true }),
    textPath: string("Corpus whose last 5 % is the held-out text.", { nonEmpty: true }),
    seqLen: integer("Tokens per window (as in pretraining).", { min: 2, default: 128 }),
    maxWindows: integer("Evaluate only the first N windows.", { min: 1 }),
  } satisfies FieldsOf<PerplexityReportOptions>,
);

/**
 * Held-out perplexity of a model in full precision and loaded as NF4 + double quant, FP4 + double quant
 * and NF4 without double quant (quantize-on-load), on the windows `scripts/pretrain_embedded.ts`
 * evaluates. Rows carry the full-precision perplexity as baseline.
 *
 * @example
 * ```ts
 * import { runPerplexityReport } from "./quant_bench.ts";
 * import { initEngine } from "../lib/engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const rows = await runPerplexityReport({ maxWindows: 2, seqLen: 16 });
 * if (rows.length !== 4 || !(rows[1].ratio! > 0.9 && rows[1].ratio! < 1.5)) throw new Error(JSON.stringify(rows));
 * ```
 */
export async function runPerplexityReport(options: PerplexityReportOptions = {}): Promise<BenchRow[]> {
  perplexityReportSchema.parse(options);
  const dir = options.modelDir ??
    new URL("../notebooks/models/tiny-shakespeare-llama", import.meta.url).pathname;
  const textPath = options.textPath ??
    new URL("../notebooks/data/tinyshakespeare.txt", import.meta.url).pathname;
  const seqLen = options.seqLen ?? 128;
  const tok = await loadTokenizer(dir);
  const { heldOut } = splitCorpus(await Deno.readTextFile(textPath));
  let data = windows(tok.encode(heldOut, { addSpecialTokens: false }), seqLen);
  if (options.maxWindows !== undefined) data = data.slice(0, options.maxWindows);
  if (data.length === 0) {
    throw new RangeError(`runPerplexityReport(): no held-out window of ${seqLen} tokens`);
  }
  const variants: [string, Parameters<typeof loadModel>[1]][] = [
    ["full precision (checkpoint dtype → fp32)", {}],
    ["nf4 + double quant", { quantize: { type: "nf4", doubleQuant: true } }],
    ["fp4 + double quant", { quantize: { type: "fp4", doubleQuant: true } }],
    ["nf4, no double quant", { quantize: { type: "nf4", doubleQuant: false } }],
  ];
  const rows: BenchRow[] = [];
  let full = 0;
  for (const [label, opts] of variants) {
    const model = await loadModel(dir, opts);
    const { perplexity, tokens } = evaluateLoss(model, data, { batchSize: 16 });
    model.dispose();
    if (rows.length === 0) full = perplexity;
    rows.push({
      name: `held-out perplexity ${label} (${tokens} tokens)`,
      unit: "ppl",
      value: perplexity,
      ...(rows.length === 0 ? {} : { baseline: full, ratio: perplexity / full }),
    });
  }
  return rows;
}

if (import.meta.main) {
  const a = Deno.args;
  if (a[0] === "--child") {
    await childMain(a[1], a.slice(2));
  } else {
    const parts = a.includes("--only")
      ? a[a.indexOf("--only") + 1].split(",") as QuantBenchPart[]
      : undefined;
    for (const r of await runQuantBench(parts ? { parts } : {})) {
      const ratio = r.ratio !== undefined ? `  ratio ${r.ratio.toFixed(3)}` : "";
      console.log(`${r.name.padEnd(80)} ${r.value.toPrecision(5).padStart(10)} ${r.unit}${ratio}`);
    }
  }
}
