/**
 * `deno task bench:gpu [--models smollm-135m,tinyllama-1.1b] [--layers N] [--steps 3] [--seq 256]`:
 * QLoRA on the webgpu backend (NF4 + double quant base with its 4-bit codes on the GPU, LoRA r=16 on
 * all linear layers, AdamW, batch 1) at the 135M and 1.1B shapes, on whatever adapter Deno reports:
 * tokens/s (best timed step after one warm-up step) and GPU memory (tfjs-webgpu's buffers in use and
 * allocated, and the 4-bit weights held). Checkpoints are random-weight ones from
 * `deno task make-checkpoint` (generated when missing; `--layers N` makes a cut-down one, which is
 * what a software adapter such as lavapipe can run: `--models smollm-135m --layers 1 --steps 1
 * --seq 16` is the smoke run). Prints one JSON line per model and a table; results go to
 * `bench/results/gpu.json`. Never part of CI: it needs an adapter, and is slow without a real GPU.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { initEngine } from "../lib/engine/backend.ts";
import { deviceQuantBytes } from "../lib/engine/webgpu_dequant.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { attachLoRA } from "../lib/adapters/attach.ts";
import { train } from "../lib/train/trainer.ts";
import { defineCli, runCli } from "../scripts/_cli.ts";

const CLI = defineCli({
  name: "bench:gpu",
  summary: "QLoRA tokens/s and GPU memory on the webgpu backend at the 135M and 1.1B shapes, on whatever " +
    "WebGPU adapter is present (a software one only manages a cut-down smoke run).",
  usage: "deno task bench:gpu [options]",
  options: {
    models: {
      type: "list",
      default: "smollm-135m,tinyllama-1.1b",
      choices: ["smollm-135m", "tinyllama-1.1b"],
      description: "model shapes (checkpoints under out/checkpoints, made when missing)",
      example: "--models smollm-135m",
    },
    layers: {
      type: "integer",
      min: 1,
      defaultText: "all of the model's layers",
      description: "use a checkpoint cut to N decoder layers (the smoke run on a software adapter)",
      example: "--layers 1",
    },
    steps: {
      type: "integer",
      min: 1,
      default: 3,
      description: "timed steps (after 1 warm-up)",
      example: "--steps 1",
    },
    seq: { type: "integer", min: 2, default: 256, description: "tokens per example", example: "--seq 16" },
    r: { type: "integer", min: 1, default: 16, description: "LoRA rank", example: "--r 8" },
    dir: {
      type: "string",
      defaultText: "none (the --models checkpoints)",
      description: "run this checkpoint folder instead of --models (the CI smoke run uses a tiny fixture)",
      example: "--dir tests/fixtures/external/tiny-random-llama-2",
    },
    out: {
      type: "string",
      default: "bench/results/gpu.json",
      description: "where the JSON results are written",
      example: "--out out/gpu.json",
    },
  },
  examples: [
    "deno task bench:gpu",
    "deno task bench:gpu --models smollm-135m --layers 1 --steps 1 --seq 16",
    "deno task bench:gpu --dir tests/fixtures/external/tiny-random-llama-2 --steps 1 --seq 8 --out out/gpu.json",
  ],
});

/** One model's result. */
interface GpuResult {
  model: string;
  layers: number;
  adapter: string;
  hardware: boolean;
  seq: number;
  steps: number;
  tokensPerSecond: number;
  secondsPerStep: number[];
  losses: number[];
  gpuBytesInUse: number;
  gpuBytesAllocated: number;
  fourBitBytes: number;
  loadSeconds: number;
}

async function ensureCheckpoint(name: string, layers: number | undefined): Promise<string> {
  const dir = `out/checkpoints/${name}${layers ? `-L${layers}` : ""}`;
  try {
    await Deno.stat(`${dir}/config.json`);
    return dir;
  } catch {
    // made below
  }
  const args = [
    "task",
    "-q",
    "make-checkpoint",
    name,
    "--out",
    dir,
    ...(layers ? ["--layers", `${layers}`] : []),
  ];
  const r = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" }).output();
  if (!r.success) throw new Error(`deno task make-checkpoint ${name} failed (exit ${r.code}); see above`);
  return dir;
}

async function runModel(
  name: string,
  o: { layers?: number; steps: number; seq: number; r: number; dir?: string },
): Promise<GpuResult> {
  const info = await initEngine({ backend: "webgpu" });
  const dir = o.dir ?? await ensureCheckpoint(name, o.layers);
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const t0 = performance.now();
  const model = await loadModel(dir, { quantize: "nf4" });
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    attachLoRA(model, { r: o.r, alpha: 2 * o.r, targetModules: "all-linear" });
    const ids = (k: number) =>
      Array.from({ length: o.seq }, (_, i) => (i * 7919 + k * 104729) % config.vocab_size);
    const data = Array.from({ length: o.steps + 1 }, (_, k) => ({ ids: ids(k) }));
    let inUse = 0, allocated = 0;
    const history = await train(model, data, {
      batchSize: 1,
      steps: o.steps + 1,
      lr: 1e-4,
      shuffleSeed: false,
      gradientCheckpointing: false,
      onStep: () => {
        const m = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
        inUse = Math.max(inUse, m.numBytesInGPU ?? 0);
        allocated = Math.max(allocated, m.numBytesAllocatedInGPU ?? 0);
      },
    });
    const timed = history.slice(1).map((h) => h.seconds);
    return {
      model: name,
      layers: config.num_hidden_layers,
      adapter: info.adapter?.name ?? "?",
      hardware: info.adapter?.hardware ?? false,
      seq: o.seq,
      steps: o.steps,
      tokensPerSecond: o.seq / Math.min(...timed),
      secondsPerStep: timed,
      losses: history.map((h) => h.loss),
      gpuBytesInUse: inUse,
      gpuBytesAllocated: allocated,
      fourBitBytes: deviceQuantBytes(),
      loadSeconds,
    };
  } finally {
    model.dispose();
  }
}

if (import.meta.main) {
  await runCli(CLI, async ({ values: v }) => {
    const results: GpuResult[] = [];
    for (const name of v.dir ? [v.dir] : v.models) {
      const r = await runModel(name, { layers: v.layers, steps: v.steps, seq: v.seq, r: v.r, dir: v.dir });
      console.log(JSON.stringify(r));
      results.push(r);
    }
    const mib = (n: number) => (n / 2 ** 20).toFixed(1);
    console.log(
      "| model | layers | adapter | tokens/s | GPU MiB in use (peak) | GPU MiB allocated | 4-bit MiB |",
    );
    console.log("|---|---|---|---|---|---|---|");
    for (const r of results) {
      console.log(
        `| ${r.model} | ${r.layers} | ${r.adapter}${r.hardware ? "" : " (software)"} | ${
          r.tokensPerSecond.toFixed(1)
        } | ${mib(r.gpuBytesInUse)} | ${mib(r.gpuBytesAllocated)} | ${mib(r.fourBitBytes)} |`,
      );
    }
    await Deno.writeTextFile(
      v.out,
      JSON.stringify({ date: new Date().toISOString(), results }, null, 2) + "\n",
    );
  });
}
