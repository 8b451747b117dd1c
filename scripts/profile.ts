/**
 * `deno task profile <model dir> [--seq 256] [--batch 1] [--r 16] [--quantize nf4|fp4|none]
 * [--checkpointing on|off] [--steps 1] [--md file] [--json file]`:
 * one QLoRA training step (LoRA on all linear layers, AdamW) broken down by kernel family
 * (matmul, NF4 dequantization, softmax, cross-entropy, norms/elementwise, layout, optimizer,
 * JS/tape/other) and by phase, printed as markdown tables. A warm-up step runs first (it builds
 * the optimizer state); the profiled step(s) follow.
 * @module
 */
import { initEngine } from "../lib/engine/backend.ts";
import { heapStats } from "../lib/engine/heap_guard.ts";
import { type KernelProfileResult, startKernelProfile } from "../lib/engine/kernel_timer.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { attachLoRA } from "../lib/adapters/attach.ts";
import { createAdamW } from "../lib/optim/adamw.ts";
import type { MicroBatch } from "../lib/train/batching.ts";
import { runStep, type StepMode } from "../lib/train/step.ts";
import { mulberry32 } from "../lib/train/random.ts";

/** Parsed command line of `profile`. */
export interface ProfileArgs {
  dir: string;
  seq: number;
  batch: number;
  r: number;
  quantize: "nf4" | "fp4" | false;
  checkpointing: boolean;
  steps: number;
  md?: string;
  json?: string;
}

const USAGE =
  "usage: deno task profile <model dir> [--seq 256] [--batch 1] [--r 16] [--quantize nf4|fp4|none] " +
  "[--checkpointing on|off] [--steps 1] [--md file] [--json file]";

/**
 * Parses the command line (TypeError with the usage line on anything unexpected).
 *
 * @example
 * ```ts
 * import { parseProfileArgs } from "./profile.ts";
 * const a = parseProfileArgs(["out/m", "--seq", "128", "--checkpointing", "off"]);
 * if (a.seq !== 128 || a.checkpointing || a.r !== 16 || a.quantize !== "nf4") throw new Error(JSON.stringify(a));
 * ```
 */
export function parseProfileArgs(args: string[]): ProfileArgs {
  const out: ProfileArgs = {
    dir: "",
    seq: 256,
    batch: 1,
    r: 16,
    quantize: "nf4",
    checkpointing: true,
    steps: 1,
  };
  const pos: string[] = [];
  const int = (flag: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) {
      throw new TypeError(`${flag} needs a positive integer, got ${v}\n${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--seq") out.seq = int(a, args[++i]);
    else if (a === "--batch") out.batch = int(a, args[++i]);
    else if (a === "--r") out.r = int(a, args[++i]);
    else if (a === "--steps") out.steps = int(a, args[++i]);
    else if (a === "--md") out.md = args[++i];
    else if (a === "--json") out.json = args[++i];
    else if (a === "--quantize") {
      const q = args[++i];
      if (q !== "nf4" && q !== "fp4" && q !== "none") {
        throw new TypeError(`--quantize: nf4, fp4 or none\n${USAGE}`);
      }
      out.quantize = q === "none" ? false : q;
    } else if (a === "--checkpointing") {
      const v = args[++i];
      if (v !== "on" && v !== "off") throw new TypeError(`--checkpointing: on or off\n${USAGE}`);
      out.checkpointing = v === "on";
    } else if (a.startsWith("--")) throw new TypeError(`unknown flag ${a}\n${USAGE}`);
    else pos.push(a);
  }
  if (pos.length !== 1) throw new TypeError(`expected one model directory\n${USAGE}`);
  out.dir = pos[0];
  return out;
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
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(
      `${USAGE}\n  --seq 256 --batch 1 --r 16 --quantize nf4 --checkpointing on --steps 1 (defaults)\n` +
        `  --md FILE / --json FILE  append the tables / write the raw profile\n` +
        `example: deno task profile out/checkpoints/smollm-135m`,
    );
    Deno.exit(0);
  }
  let args: ProfileArgs;
  try {
    args = parseProfileArgs(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  const info = await initEngine();
  console.log(`[engine] ${info.reason}`);
  const t0 = performance.now();
  const model = await loadModel(args.dir, { quantize: args.quantize });
  const loadS = (performance.now() - t0) / 1000;
  attachLoRA(model, { r: args.r, alpha: 2 * args.r, targetModules: "all-linear" });
  model.setTraining(true);
  const params = model.trainableParams();
  const optimizer = createAdamW({});
  const mb = randomMicroBatch(args.batch, args.seq, model.config.vocabSize);
  const mode: StepMode = args.checkpointing ? "checkpointed" : "full";
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
    `checkpointing ${args.checkpointing ? "on" : "off"}`;
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
}
