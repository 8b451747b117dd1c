/**
 * `deno task bench:scale [--models smollm-135m,tinyllama-1.1b] [--7b] [--steps 2] [--skip-torch]`:
 * speed at real model sizes (issue 11). For each model shape (random-weight checkpoints from
 * `deno task make-checkpoint`, generated when missing): nbtune QLoRA (NF4 + double quant, LoRA
 * r=16 on all linear layers, AdamW, 1 x 256 tokens, `train()` with its default options) against
 * PyTorch CPU fp32 LoRA of the same shape (`bench/torch_lora.py`, the better of 1 and 2 threads),
 * each in its own process (peak RSS from the kernel's high-water mark), plus the OpenBLAS sgemm
 * ceiling measured in the same run. `--7b` then loads the Llama-2-7B shape with stream
 * quantization and runs 3 QLoRA steps with gradient checkpointing, reporting load time, seconds
 * per step, peak RSS per step, the wasm heap high-water mark and the planner's predictions.
 * Results are merged into `bench/results/latest.json` (key `scale`) and written as a table to
 * `bench/results/scale.md`. Not part of CI. The machine is shared: compare ratios from one run.
 * @module
 */
import { CliUsageError, defineCli, parseCli, runCli } from "../scripts/_cli.ts";
import { initEngine } from "../lib/engine/backend.ts";
import { type Gemm, loadBlas } from "../lib/engine/blas.ts";
import { heapStats } from "../lib/engine/heap_guard.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { attachLoRA } from "../lib/adapters/attach.ts";
import { train } from "../lib/train/trainer.ts";
import { autoCheckpointing } from "../lib/train/auto_checkpoint.ts";
import { estimateTrainingMemory } from "../lib/plan/engine_estimate.ts";
import { nativeKernels } from "../lib/engine/native.ts";

/** A benchmark case: a model directory (or checkpoint name) and its batch shape. */
interface Case {
  name: string;
  batch: number;
  seq: number;
  r: number;
  quantize: boolean;
}

const CASES: Record<string, Case> = {
  "smollm-135m": { name: "smollm-135m", batch: 1, seq: 256, r: 16, quantize: true },
  "tinyllama-1.1b": { name: "tinyllama-1.1b", batch: 1, seq: 256, r: 16, quantize: true },
  // The embedded model, LoRA (fp32 base: it is tiny) batch 4 x 128, as in the issue.
  embedded: { name: "embedded", batch: 4, seq: 128, r: 8, quantize: false },
  // The 7B step of `--7b` (forced checkpointing, 3 steps).
  "llama-7b": { name: "llama-2-7b", batch: 1, seq: 256, r: 16, quantize: true },
};
const here = (p: string) => new URL(p, import.meta.url).pathname;

/** Peak and current RSS from /proc (Linux), in bytes. */
function procRss(): { peak: number; now: number } {
  const s = Deno.readTextFileSync("/proc/self/status");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { peak: kb("VmHWM"), now: kb("VmRSS") };
}

/** Matmul FLOPs of one step per token: linear layers (incl. the LM head) and attention. */
function flopsPerToken(c: Record<string, number>, checkpointed: boolean, seq: number): number {
  const d = c.hidden_size, f = c.intermediate_size, h = c.num_attention_heads;
  const g = c.num_key_value_heads ?? h, dh = d / h, v = c.vocab_size;
  const linear = c.num_hidden_layers * (2 * d * h * dh + 2 * d * g * dh + 3 * d * f);
  const attn = c.num_hidden_layers * 2 * h * dh * seq; // q·k and p·v per token (causal half counted full)
  const fwd = 2 * (linear + d * v + attn);
  // Forward + input-gradient backward (frozen base); checkpointing recomputes the blocks once more.
  return fwd * 2 + (checkpointed ? 2 * (linear + attn) : 0);
}

/** A GEMM's ceiling on this machine now: the best of a few large products (NT, as the training matmuls). */
function gemmCeiling(gemm: Gemm): number {
  let best = 0;
  for (const [m, n, k] of [[256, 5632, 2048], [1024, 1024, 1024], [256, 2048, 5632]]) {
    const A = new Float32Array(m * k).fill(0.01), B = new Float32Array(k * n).fill(0.01);
    const C = new Float32Array(m * n);
    gemm(false, true, m, n, k, 1, A, k, B, k, 0, C, n);
    const t = performance.now();
    for (let i = 0; i < 3; i++) gemm(false, true, m, n, k, 1, A, k, B, k, 0, C, n);
    best = Math.max(best, (3 * 2 * m * n * k) / ((performance.now() - t) / 1000));
  }
  return best;
}

/** OpenBLAS sgemm's ceiling now, or NaN without BLAS. */
function sgemmCeiling(): number {
  const blas = loadBlas();
  return blas ? gemmCeiling(blas.sgemm) : NaN;
}

/** The native bf16 GEMM's ceiling now (same shapes), or NaN without it. */
function bf16Ceiling(): number {
  const k = nativeKernels();
  return k.bf16Gemm ? gemmCeiling(k.gemmBf16.bind(k)) : NaN;
}

/** Worker: one nbtune model run in this process; prints one JSON line. */
async function nbtuneWorker(
  dir: string,
  steps: number,
  forceCheckpointing: boolean,
  c: Case,
  computeDtype: "float32" | "bfloat16",
) {
  const SEQ = c.seq, R = c.r, B = c.batch;
  const info = await initEngine();
  const config = JSON.parse(Deno.readTextFileSync(`${dir}/config.json`));
  const t0 = performance.now();
  const model = await loadModel(dir, c.quantize ? { quantize: "nf4", computeDtype } : {});
  const loadSeconds = (performance.now() - t0) / 1000;
  attachLoRA(model, { r: R, alpha: 2 * R, targetModules: "all-linear" });
  const ids = (k: number) =>
    Array.from({ length: SEQ }, (_, i) => (i * 7919 + k * 104729) % config.vocab_size);
  const data = Array.from({ length: B * (steps + 1) }, (_, k) => ({ ids: ids(k) }));
  const auto = autoCheckpointing(model, { batchSize: B, seqLen: SEQ, gradAccumSteps: 1 });
  const checkpointed = forceCheckpointing || auto.on;
  const perStep: { seconds: number; rss: number; heap: number }[] = [];
  await train(model, data, {
    batchSize: B,
    steps: steps + 1,
    lr: 1e-4,
    ...(forceCheckpointing ? { gradientCheckpointing: true } : {}),
    onStep: (r) => {
      perStep.push({ seconds: r.seconds, rss: procRss().now, heap: heapStats().heapBytes });
    },
  });
  const timed = perStep.slice(1);
  const best = Math.min(...timed.map((s) => s.seconds));
  let predicted: { tensorBytes: number; hostBytes: number } | undefined;
  try {
    const e = estimateTrainingMemory(
      model,
      {
        method: c.quantize ? "qlora" : "lora",
        r: R,
        targetModules: "all-linear",
        ...(c.quantize ? { quantize: "nf4" } : {}),
        batchSize: B,
        seqLen: SEQ,
        gradientCheckpointing: checkpointed,
      } as Parameters<typeof estimateTrainingMemory>[1],
    );
    predicted = { tensorBytes: e.peakTensorBytes, hostBytes: e.hostBytes };
  } catch (e) {
    console.error(`planner estimate failed: ${(e as Error).message}`);
  }
  console.log(JSON.stringify({
    engine: info.reason,
    native: nativeKernels().source,
    computeDtype: c.quantize ? computeDtype : "float32",
    loadSeconds,
    checkpointed,
    autoCheckpointing: auto.on,
    secondsPerStep: timed.map((s) => s.seconds),
    warmupSeconds: perStep[0]?.seconds,
    tokensPerSecond: B * SEQ / best,
    flopsPerToken: flopsPerToken(config, checkpointed, SEQ),
    rssPerStep: perStep.map((s) => s.rss),
    peakRssBytes: procRss().peak,
    heapBytes: heapStats().heapBytes,
    predicted,
  }));
  model.dispose();
}

async function runJson(cmd: string, args: string[]): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr).slice(-3000)}`);
  }
  return JSON.parse(text);
}

async function ensureCheckpoint(name: string): Promise<string> {
  if (name === "embedded") return here("../notebooks/models/tiny-shakespeare-llama");
  const dir = here(`../out/checkpoints/${name}`);
  try {
    Deno.statSync(`${dir}/config.json`);
  } catch {
    console.log(`[scale] writing ${dir} (deno task make-checkpoint ${name})`);
    await runJson(Deno.execPath(), ["run", "-A", here("../scripts/make_checkpoint.ts"), name, "--out", dir])
      .catch(() => ({}));
  }
  return dir;
}

const gb = (n: number) => (n / 1e9).toFixed(2);

/** One row of `bench/results/latest.json` (the format `bench/run.ts` writes). */
export interface ResultRow {
  suite: string;
  name: string;
  unit: string;
  value: number;
  baseline?: number;
  ratio?: number;
}

/**
 * The `suite: "scale"` rows for `latest.json` from a run's model rows and its 7B result.
 *
 * @example
 * ```ts
 * import { resultRows } from "./scale.ts";
 * const rows = resultRows([{ model: "m", batch: 1, seq: 8, nbtuneTokensPerSecond: 2, torchTokensPerSecond: 1,
 *   nbtunePeakRssBytes: 5, torchPeakRssBytes: 10, shareOfCeiling: 0.5 }], undefined);
 * if (rows[0].ratio !== 2 || rows.length !== 3) throw new Error(JSON.stringify(rows));
 * ```
 */
export function resultRows(
  rows: Record<string, unknown>[],
  big: Record<string, unknown> | undefined,
): ResultRow[] {
  const out: ResultRow[] = [];
  const n = (v: unknown) => v as number;
  for (const r of rows) {
    const shape = `${r.model} ${r.batch}x${r.seq}${r.computeDtype === "bfloat16" ? " bf16" : ""}`;
    const torch = r.torchTokensPerSecond === undefined ? {} : {
      baseline: n(r.torchTokensPerSecond),
      ratio: n(r.nbtuneTokensPerSecond) / n(r.torchTokensPerSecond),
    };
    out.push({
      suite: "scale",
      name: `${shape}: nbtune (Q)LoRA tokens/s vs PyTorch CPU fp32 LoRA`,
      unit: "tokens/s",
      value: n(r.nbtuneTokensPerSecond),
      ...torch,
    });
    if (r.torchBf16TokensPerSecond !== undefined) {
      out.push({
        suite: "scale",
        name: `${shape}: nbtune (Q)LoRA tokens/s vs PyTorch CPU bf16-autocast LoRA`,
        unit: "tokens/s",
        value: n(r.nbtuneTokensPerSecond),
        baseline: n(r.torchBf16TokensPerSecond),
        ratio: n(r.nbtuneTokensPerSecond) / n(r.torchBf16TokensPerSecond),
      });
    }
    out.push({
      suite: "scale",
      name: `${shape}: peak RSS, nbtune vs PyTorch`,
      unit: "bytes",
      value: n(r.nbtunePeakRssBytes),
      ...(r.torchPeakRssBytes === undefined ? {} : {
        baseline: n(r.torchPeakRssBytes),
        ratio: n(r.nbtunePeakRssBytes) / n(r.torchPeakRssBytes),
      }),
    });
    out.push({
      suite: "scale",
      name: `${shape}: nbtune share of the sgemm ceiling measured in the same run`,
      unit: "fraction",
      value: n(r.shareOfCeiling),
    });
  }
  if (big) {
    const p = big.predicted as { tensorBytes: number; hostBytes: number } | undefined;
    const steps = big.secondsPerStep as number[];
    out.push(
      { suite: "scale", name: "llama-2-7b: load + stream-quantize", unit: "s", value: n(big.loadSeconds) },
      {
        suite: "scale",
        name: "llama-2-7b 1x256 QLoRA r=16: seconds per step (mean of the timed steps)",
        unit: "s",
        value: steps.reduce((a, b) => a + b, 0) / steps.length,
      },
      {
        suite: "scale",
        name: "llama-2-7b: peak RSS vs the planner (tensors + 4-bit host bytes)",
        unit: "bytes",
        value: n(big.peakRssBytes),
        ...(p
          ? {
            baseline: p.tensorBytes + p.hostBytes,
            ratio: n(big.peakRssBytes) / (p.tensorBytes + p.hostBytes),
          }
          : {}),
      },
      {
        suite: "scale",
        name: "llama-2-7b: wasm heap high-water vs the planner's peak tensor bytes",
        unit: "bytes",
        value: n(big.heapBytes),
        ...(p ? { baseline: p.tensorBytes, ratio: n(big.heapBytes) / p.tensorBytes } : {}),
      },
    );
  }
  return out;
}

/** Replaces this run's rows (same suite and name) in `latest.json`, keeping every other row. */
export function mergeLatest(path: string, rows: ResultRow[]): void {
  let latest: ResultRow[] = [];
  try {
    latest = JSON.parse(Deno.readTextFileSync(path));
  } catch {
    latest = [];
  }
  if (!Array.isArray(latest)) throw new TypeError(`${path} must hold a JSON array of result rows`);
  const names = new Set(rows.map((r) => `${r.suite}\u0000${r.name}`));
  const kept = latest.filter((r) => !names.has(`${r.suite}\u0000${r.name}`));
  Deno.writeTextFileSync(path, JSON.stringify([...kept, ...rows], null, 1) + "\n");
}

const SCALE_CLI = defineCli({
  name: "bench:scale",
  summary:
    "nbtune QLoRA vs PyTorch CPU fp32 LoRA (its better of 1 and 2 threads) at real model shapes, side " +
    "by side in one run: tokens/s, peak RSS, the ratio and the share of the sgemm ceiling; then optionally " +
    "the Llama-2-7B shape. Makes the checkpoints it needs (out/checkpoints). Not part of CI.",
  usage: "deno task bench:scale [options]",
  options: {
    models: {
      type: "list",
      choices: ["smollm-135m", "tinyllama-1.1b", "embedded"],
      default: "smollm-135m,tinyllama-1.1b,embedded",
      description: "shapes to compare with PyTorch",
      example: "--models smollm-135m",
    },
    steps: {
      type: "integer",
      min: 1,
      default: 2,
      description: "timed steps after one warm-up",
      example: "--steps 3",
    },
    "skip-torch": { type: "boolean", description: "nbtune only", example: "--skip-torch" },
    "compute-dtype": {
      type: "list",
      choices: ["float32", "bfloat16"],
      default: "float32,bfloat16",
      description: "computeDtype(s) of the 4-bit layers to run (one nbtune row each; the 7B uses the last)",
      example: "--compute-dtype bfloat16",
    },
    "7b": {
      type: "boolean",
      description: "then the Llama-2-7B shape: stream-quantized load + 3 timed QLoRA steps",
      example: "--7b",
    },
  },
  examples: ["deno task bench:scale", "deno task bench:scale --models smollm-135m --7b"],
});

async function main() {
  const args = Deno.args;
  if (args[0] === "--worker") {
    return await nbtuneWorker(
      args[1],
      Number(args[2]),
      args[3] === "ckpt",
      CASES[args[4]] ?? CASES["llama-7b"],
      args[5] === "bfloat16" ? "bfloat16" : "float32",
    );
  }
  const { values: v } = parseCli(SCALE_CLI, args);
  const flag = (name: "skip-torch" | "7b") => v[name];
  const models = v.models;
  for (const m of models) {
    if (!CASES[m] || m === "llama-7b") {
      throw new CliUsageError(`unknown model "${m}": use smollm-135m, tinyllama-1.1b, embedded (and --7b)`);
    }
  }
  const steps = v.steps;
  const dtypes = v["compute-dtype"] as ("float32" | "bfloat16")[];
  const ceiling = sgemmCeiling();
  const ceilingBf16 = bf16Ceiling();
  console.log(
    `[scale] OpenBLAS sgemm ceiling now: ${(ceiling / 1e9).toFixed(0)} GFLOP/s; native bf16 GEMM: ${
      (ceilingBf16 / 1e9).toFixed(0)
    } GFLOP/s`,
  );
  const rows: Record<string, unknown>[] = [];
  for (const name of models) {
    const c = CASES[name], SEQ = c.seq, R = c.r;
    const dir = await ensureCheckpoint(name);
    const nbs: Record<string, unknown>[] = [];
    for (const dtype of c.quantize ? dtypes : ["float32"]) {
      console.log(
        `[scale] ${name}: nbtune ${c.quantize ? `QLoRA (${dtype})` : "LoRA"} ${c.batch} x ${SEQ}...`,
      );
      nbs.push(
        await runJson(Deno.execPath(), [
          "run",
          "-A",
          here("./scale.ts"),
          "--worker",
          dir,
          String(steps),
          "auto",
          name,
          dtype,
        ]),
      );
    }
    const torch: Record<string, unknown>[] = [];
    const torchBf16: Record<string, unknown>[] = [];
    if (!flag("skip-torch")) {
      const autocast = c.quantize && dtypes.includes("bfloat16") ? [false, true] : [false];
      for (const bf16 of autocast) {
        for (const threads of [1, 2]) {
          console.log(
            `[scale] ${name}: PyTorch ${bf16 ? "bf16-autocast" : "fp32"} LoRA, ${threads} thread(s)...`,
          );
          (bf16 ? torchBf16 : torch).push(
            await runJson("/usr/bin/python3", [
              here("./torch_lora.py"),
              dir,
              "--seq",
              String(SEQ),
              "--batch",
              String(c.batch),
              "--r",
              String(R),
              "--steps",
              String(steps),
              "--threads",
              String(threads),
              ...(bf16 ? ["--autocast-bf16"] : []),
            ]),
          );
        }
      }
    }
    const bestBf16 = torchBf16.reduce<Record<string, unknown> | undefined>(
      (a, b) => (!a || (b.tokensPerSecond as number) > (a.tokensPerSecond as number) ? b : a),
      undefined,
    );
    const bestTorch = torch.reduce<Record<string, unknown> | undefined>(
      (a, b) => (!a || (b.tokensPerSecond as number) > (a.tokensPerSecond as number) ? b : a),
      undefined,
    );
    for (const nb of nbs) {
      const tps = nb.tokensPerSecond as number;
      const bf16 = nb.computeDtype === "bfloat16";
      const row = {
        model: name,
        computeDtype: nb.computeDtype,
        batch: c.batch,
        seq: SEQ,
        r: R,
        nbtuneTokensPerSecond: tps,
        nbtunePeakRssBytes: nb.peakRssBytes,
        nbtuneCheckpointed: nb.checkpointed,
        nbtuneSecondsPerStep: nb.secondsPerStep,
        torchTokensPerSecond: bestTorch?.tokensPerSecond,
        torchThreads: bestTorch?.threads,
        torchPeakRssBytes: bestTorch?.peakRssBytes,
        torchAll: torch.map((t) => ({ threads: t.threads, tokensPerSecond: t.tokensPerSecond })),
        ratio: bestTorch ? tps / (bestTorch.tokensPerSecond as number) : undefined,
        // PyTorch with bf16 autocast (the like-for-like baseline of computeDtype "bfloat16").
        torchBf16TokensPerSecond: bestBf16?.tokensPerSecond,
        torchBf16Threads: bestBf16?.threads,
        ratioBf16: bestBf16 ? tps / (bestBf16.tokensPerSecond as number) : undefined,
        sgemmCeilingFlops: ceiling,
        shareOfCeiling: (tps * (nb.flopsPerToken as number)) / ceiling,
        bf16CeilingFlops: ceilingBf16,
        ...(bf16 ? { shareOfBf16Ceiling: (tps * (nb.flopsPerToken as number)) / ceilingBf16 } : {}),
        engine: nb.engine,
        native: nb.native,
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
  let big: Record<string, unknown> | undefined;
  if (flag("7b")) {
    const dir = await ensureCheckpoint("llama-2-7b");
    const dtype = dtypes[dtypes.length - 1];
    console.log(`[scale] llama-2-7b: stream-quantize on load + 3 QLoRA steps (${dtype})...`);
    const nb = await runJson(Deno.execPath(), [
      "run",
      "-A",
      here("./scale.ts"),
      "--worker",
      dir,
      "3",
      "auto",
      "llama-7b",
      dtype,
    ]);
    big = { model: "llama-2-7b", seq: 256, r: 16, ...nb, sgemmCeilingFlops: ceiling };
    console.log(JSON.stringify(big));
  }
  const when = new Date().toISOString();
  mergeLatest(here("./results/latest.json"), resultRows(rows, big));
  const md = [
    `# bench:scale (${when})`,
    "",
    `\`deno task bench:scale ${args.join(" ")}\`. OpenBLAS sgemm ceiling in this run: ${
      (ceiling / 1e9).toFixed(0)
    } GFLOP/s, native bf16 GEMM ${
      (ceilingBf16 / 1e9).toFixed(0)
    } GFLOP/s. The ratios come from the same run.`,
    "",
    "| model (batch x seq) | computeDtype | nbtune (Q)LoRA tok/s | PyTorch fp32 LoRA tok/s (threads) | ratio | PyTorch bf16-autocast tok/s (threads) | ratio | nbtune % of sgemm ceiling | nbtune peak RSS GB | PyTorch peak RSS GB |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((r) =>
      `| ${r.model} (${r.batch} x ${r.seq}) | ${r.computeDtype} | ${
        (r.nbtuneTokensPerSecond as number).toFixed(1)
      } | ${
        r.torchTokensPerSecond === undefined
          ? "-"
          : `${(r.torchTokensPerSecond as number).toFixed(1)} (${r.torchThreads})`
      } | ${r.ratio === undefined ? "-" : (r.ratio as number).toFixed(2) + "x"} | ${
        r.torchBf16TokensPerSecond === undefined
          ? "-"
          : `${(r.torchBf16TokensPerSecond as number).toFixed(1)} (${r.torchBf16Threads})`
      } | ${r.ratioBf16 === undefined ? "-" : (r.ratioBf16 as number).toFixed(2) + "x"} | ${
        (100 * (r.shareOfCeiling as number)).toFixed(0)
      } % | ${gb(r.nbtunePeakRssBytes as number)} | ${
        r.torchPeakRssBytes === undefined ? "-" : gb(r.torchPeakRssBytes as number)
      } |`
    ),
    "",
  ];
  if (big) {
    const p = big.predicted as { tensorBytes: number; hostBytes: number } | undefined;
    md.push(
      `| 7B shape (QLoRA r=16 all linear, 1 x 256, computeDtype ${big.computeDtype}, checkpointing ${
        big.checkpointed ? "on (auto)" : "off"
      }) | measured | planner |`,
      "| --- | ---: | ---: |",
      `| load + stream-quantize, s | ${(big.loadSeconds as number).toFixed(0)} | |`,
      `| seconds per step (steps 2-${(big.secondsPerStep as number[]).length + 1}; step 1 ${
        (big.warmupSeconds as number).toFixed(0)
      } s) | ${(big.secondsPerStep as number[]).map((s) => s.toFixed(0)).join(", ")} | |`,
      `| peak RSS GB (RSS after each step) | ${gb(big.peakRssBytes as number)} (${
        (big.rssPerStep as number[]).map(gb).join(", ")
      }) | ${p ? gb(p.tensorBytes + p.hostBytes) + " (tensors + 4-bit host)" : "-"} |`,
      `| wasm heap high-water GB | ${gb(big.heapBytes as number)} | ${
        p ? gb(p.tensorBytes) + " (tensor bytes)" : "-"
      } |`,
      "",
    );
  }
  Deno.writeTextFileSync(here("./results/scale.md"), md.join("\n"));
  console.log(md.join("\n"));
}

if (import.meta.main) {
  // "--worker" is the internal per-model subprocess; everything else is the CLI.
  if (Deno.args[0] === "--worker") await main();
  else await runCli(SCALE_CLI, () => main());
}
