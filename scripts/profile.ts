/**
 * `deno task profile <model dir> [--seq 256] [--batch 1] [--r 16] [--quantize nf4|fp4|none]
 * [--checkpointing auto|on|off] [--compute-dtype float32|bfloat16] [--steps 1] [--md file] [--json file]`:
 * one QLoRA training step (LoRA on all linear layers, AdamW) broken down by kernel family
 * (matmul, NF4 dequantization, softmax, cross-entropy, norms/elementwise, layout, optimizer,
 * JS/tape/other) and by phase, printed as markdown tables. A warm-up step runs first (it builds
 * the optimizer state); the profiled step(s) follow.
 * @module
 */
import { defineCli, parseCli, runCli } from "./_cli.ts";
import { initEngine } from "../lib/engine/backend.ts";
import { heapStats } from "../lib/engine/heap_guard.ts";
import { type KernelProfileResult, startKernelProfile } from "../lib/engine/kernel_timer.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { attachLoRA } from "../lib/adapters/attach.ts";
import { createAdamW } from "../lib/optim/adamw.ts";
import type { MicroBatch } from "../lib/train/batching.ts";
import { runStep, type StepMode } from "../lib/train/step.ts";
import { autoCheckpointing } from "../lib/train/auto_checkpoint.ts";
import { mulberry32 } from "../lib/train/random.ts";

/** Parsed command line of `profile`. */
export interface ProfileArgs {
  dir: string;
  seq: number;
  batch: number;
  r: number;
  quantize: "nf4" | "fp4" | false;
  /** `"auto"`: as `train()` decides (the engine estimate against the wasm heap). */
  checkpointing: boolean | "auto";
  computeDtype: "float32" | "bfloat16";
  steps: number;
  md?: string;
  json?: string;
}

const PROFILE_CLI = defineCli({
  name: "profile",
  summary: "Times one QLoRA training step of a checkpoint by kernel family (matmul, NF4 dequantization, " +
    "attention, norms/elementwise, cross-entropy, optimizer, JS/other) and by phase, as tables.",
  usage: "deno task profile <model_dir> [options]",
  positionals: { min: 1, max: 1, names: "<model_dir>" },
  options: {
    seq: { type: "integer", min: 1, default: 256, description: "sequence length", example: "--seq 128" },
    batch: { type: "integer", min: 1, default: 1, description: "micro-batch size", example: "--batch 2" },
    r: {
      type: "integer",
      min: 1,
      default: 16,
      description: "LoRA rank on all linear layers",
      example: "--r 8",
    },
    quantize: {
      type: "string",
      choices: ["nf4", "fp4", "none"],
      default: "nf4",
      description: "4-bit base format (none: fp32 base, plain LoRA)",
      example: "--quantize none",
    },
    checkpointing: {
      type: "string",
      choices: ["auto", "on", "off"],
      default: "auto",
      description: "gradient checkpointing (auto: as train() decides)",
      example: "--checkpointing off",
    },
    "compute-dtype": {
      type: "string",
      choices: ["float32", "bfloat16"],
      default: "float32",
      description: "computeDtype of the 4-bit layers' matmuls",
      example: "--compute-dtype bfloat16",
    },
    steps: {
      type: "integer",
      min: 1,
      default: 1,
      description: "profiled steps (after one warm-up)",
      example: "--steps 2",
    },
    md: {
      type: "string",
      placeholder: "FILE",
      description: "append the tables to this markdown file",
      example: "--md out/p.md",
    },
    json: {
      type: "string",
      placeholder: "FILE",
      description: "write the raw profile as JSON",
      example: "--json out/p.json",
    },
  },
  examples: [
    "deno task profile out/checkpoints/smollm-135m",
    "deno task profile out/checkpoints/tinyllama-1.1b --seq 128",
  ],
});

/**
 * Parses the command line (a one-line `CliUsageError` on anything unexpected).
 *
 * @example
 * ```ts
 * import { parseProfileArgs } from "./profile.ts";
 * const a = parseProfileArgs(["out/m", "--seq", "128", "--checkpointing", "off"]);
 * if (a.seq !== 128 || a.checkpointing || a.r !== 16 || a.quantize !== "nf4") throw new Error(JSON.stringify(a));
 * if (parseProfileArgs(["out/m"]).checkpointing !== "auto") throw new Error("train()'s default");
 * if (parseProfileArgs(["out/m", "--compute-dtype", "bfloat16"]).computeDtype !== "bfloat16") throw new Error();
 * ```
 */
export function parseProfileArgs(args: string[]): ProfileArgs {
  const { values: v, positionals } = parseCli(PROFILE_CLI, args);
  return {
    dir: positionals[0],
    seq: v.seq,
    batch: v.batch,
    r: v.r,
    quantize: v.quantize === "none" ? false : v.quantize as "nf4" | "fp4",
    checkpointing: v.checkpointing === "auto" ? "auto" : v.checkpointing === "on",
    computeDtype: v["compute-dtype"] as "float32" | "bfloat16",
    steps: v.steps,
    ...(v.md === undefined ? {} : { md: v.md }),
    ...(v.json === undefined ? {} : { json: v.json }),
  };
}

/** Kernel family of a kernel name (phase decides cross-entropy and optimizer). */
export function kernelFamily(name: string, phase: string): string {
  const mm = /^(BatchMatMul|_FusedMatMul)( \[(.*)\])?$/.exec(name);
  if (mm) return `matmul (BLAS sgemm)${mm[3] ? `, ${mm[3]} each` : ""}`;
  if (phase === "optimizer") return "optimizer (AdamW, clipping)";
  if (phase === "head + loss") return "LM head: norm + cross-entropy (non-matmul)";
  if (name === "Softmax") return "attention softmax";
  if (
    /^(Transpose|Reshape|Concat|Slice|GatherV2|Tile|Cast|Pack|Unpack|Identity|OneHot|Fill|ZerosLike|OnesLike|StridedSlice|Pad|MirrorPad|Reverse|Split|SplitV|ScatterNd|UnsortedSegmentSum)$/
      .test(name)
  ) {
    return "layout (transpose/slice/gather/concat/cast)";
  }
  return "norms / RoPE / SiLU / residual (elementwise + reductions)";
}

/** One row of the family table. */
export interface FamilyRow {
  family: string;
  ms: number;
  calls: number;
}

/**
 * Groups a profile into families; the last row is the wall time nothing else explains.
 *
 * @example
 * ```ts
 * import { familyTable } from "./profile.ts";
 * const rows = familyTable({ wallMs: 10, phases: {}, spans: [{ name: "dequantize", phase: "forward", ms: 2, calls: 1 }],
 *   kernels: [{ name: "BatchMatMul [< 10 MFLOP]", phase: "forward", ms: 5, calls: 3 }] });
 * if (rows.at(-1)!.ms !== 3 || rows[0].ms !== 5) throw new Error(JSON.stringify(rows));
 * ```
 */
export function familyTable(p: KernelProfileResult): FamilyRow[] {
  const rows = new Map<string, FamilyRow>();
  const add = (family: string, ms: number, calls: number) => {
    const r = rows.get(family) ?? { family, ms: 0, calls: 0 };
    r.ms += ms;
    r.calls += calls;
    rows.set(family, r);
  };
  for (const k of p.kernels) add(kernelFamily(k.name, k.phase), k.ms, k.calls);
  for (const s of p.spans) {
    add(s.name === "dequantize" ? "NF4/FP4 dequantization (+ copy to heap)" : s.name, s.ms, s.calls);
  }
  const accounted = [...rows.values()].reduce((s, r) => s + r.ms, 0);
  const sorted = [...rows.values()].sort((a, b) => b.ms - a.ms);
  sorted.push({
    family: "JS / autodiff tape / other (wall - above)",
    ms: Math.max(0, p.wallMs - accounted),
    calls: 0,
  });
  return sorted;
}

/** Markdown for the profile. */
export function profileMarkdown(title: string, p: KernelProfileResult, tokens: number): string {
  const rows = familyTable(p);
  const pct = (ms: number) => `${(100 * ms / p.wallMs).toFixed(1)} %`;
  const lines = [
    `### ${title}`,
    "",
    `Step wall time ${(p.wallMs / 1000).toFixed(2)} s, ${(tokens / (p.wallMs / 1000)).toFixed(1)} tokens/s.`,
    "",
    "| kernel family | s | share | calls |",
    "| --- | ---: | ---: | ---: |",
    ...rows.map((r) => `| ${r.family} | ${(r.ms / 1000).toFixed(2)} | ${pct(r.ms)} | ${r.calls || ""} |`),
    "",
    "| phase | s | share |",
    "| --- | ---: | ---: |",
    ...Object.entries(p.phases).map(([k, ms]) => `| ${k} | ${(ms / 1000).toFixed(2)} | ${pct(ms)} |`),
    "",
  ];
  return lines.join("\n");
}

/** A random micro-batch of `batch` sequences of `seq` tokens (every target counts). */
export function randomMicroBatch(batch: number, seq: number, vocab: number, seed = 1): MicroBatch {
  const rand = mulberry32(seed);
  const ids = Array.from(
    { length: batch },
    () => Array.from({ length: seq }, () => Math.floor(rand() * vocab)),
  );
  const targets = new Int32Array(batch * seq);
  ids.forEach((row, b) => row.forEach((_, t) => targets[b * seq + t] = row[(t + 1) % seq]));
  return {
    ids,
    attentionMask: ids.map((r) => r.map(() => 1)),
    targets,
    weights: new Float32Array(batch * seq).fill(1),
    numTargets: batch * seq,
  };
}

if (import.meta.main) {
  await runCli(PROFILE_CLI, async () => {
    const args = parseProfileArgs(Deno.args);
    const info = await initEngine();
    console.log(`[engine] ${info.reason}`);
    const t0 = performance.now();
    const model = await loadModel(args.dir, {
      quantize: args.quantize,
      ...(args.quantize ? { computeDtype: args.computeDtype } : {}),
    });
    const loadS = (performance.now() - t0) / 1000;
    attachLoRA(model, { r: args.r, alpha: 2 * args.r, targetModules: "all-linear" });
    model.setTraining(true);
    const params = model.trainableParams();
    const optimizer = createAdamW({});
    const mb = randomMicroBatch(args.batch, args.seq, model.config.vocabSize);
    const checkpointing = args.checkpointing === "auto"
      ? autoCheckpointing(model, { batchSize: args.batch, seqLen: args.seq, gradAccumSteps: 1 }).on
      : args.checkpointing;
    const mode: StepMode = checkpointing ? "checkpointed" : "full";
    const step = (label: string) =>
      runStep(model, params, [mb], optimizer, { lr: 1e-4, maxGradNorm: 1, mode, label });
    let rssPeak = 0;
    const timer = setInterval(() => rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss), 50);
    const tw = performance.now();
    step("warm-up step");
    const warmS = (performance.now() - tw) / 1000;
    const results: KernelProfileResult[] = [];
    for (let i = 0; i < args.steps; i++) {
      const prof = startKernelProfile();
      try {
        step(`profiled step ${i + 1}`);
      } finally {
        results.push(prof.stop());
      }
    }
    clearInterval(timer);
    rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);
    const name = args.dir.replace(/\/$/, "").split("/").pop();
    const title =
      `${name}: QLoRA ${args.quantize || "fp32"} r=${args.r} all-linear, ${args.batch} x ${args.seq}, ` +
      `checkpointing ${checkpointing ? "on" : "off"}${args.checkpointing === "auto" ? " (auto)" : ""}, ` +
      `computeDtype ${args.quantize ? args.computeDtype : "float32"}`;
    const best = results.reduce((a, b) => (a.wallMs <= b.wallMs ? a : b));
    const md = profileMarkdown(title, best, args.batch * args.seq) +
      `Load ${loadS.toFixed(1)} s, warm-up step ${warmS.toFixed(1)} s, peak RSS ${
        (rssPeak / 2 ** 30).toFixed(2)
      } GiB, ` +
      `wasm heap ${(heapStats().heapBytes / 2 ** 30).toFixed(2)} GiB. ${info.reason}.\n`;
    console.log(md);
    if (args.md) await Deno.writeTextFile(args.md, md + "\n", { append: true });
    if (args.json) {
      await Deno.writeTextFile(
        args.json,
        JSON.stringify({ title, loadS, warmS, rssPeak, profile: best, families: familyTable(best) }, null, 1),
      );
    }
    model.dispose();
  });
}
