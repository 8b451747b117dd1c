/**
 * Training throughput and peak memory of the demo fine-tune (embedded model,
 * herald task, micro-batch 8 × 2 accumulated) on wasm + OpenBLAS, wasm without
 * BLAS, and the cpu backend. Each configuration runs in its own process so the
 * engines do not share state. Run: `deno run -A bench/train_bench.ts`.
 * @module
 */
import type { BenchRow } from "./matmul_bench.ts";

/** One engine configuration. */
interface Config {
  name: string;
  backend: "wasm" | "cpu";
  blas: boolean;
}

const CONFIGS: Config[] = [
  { name: "wasm+BLAS", backend: "wasm", blas: true },
  { name: "wasm (no BLAS)", backend: "wasm", blas: false },
  { name: "cpu", backend: "cpu", blas: false },
];

/** Measures one configuration in this process and prints `{tokensPerSecond, peakBytes}` as JSON. */
async function child(backend: "wasm" | "cpu", steps: number): Promise<void> {
  const { initEngine, loadModel, loadTokenizer, readJsonl, train, EMBEDDED_MODEL_DIR, EMBEDDED_DATA_DIR } =
    await import(
      "../mod.ts"
    );
  const info = await initEngine({ backend });
  const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const data = await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`);
  const history = await train(model, data, {
    tokenizer,
    steps: steps + 1,
    batchSize: 8,
    gradAccumSteps: 2,
    lr: 1e-3,
  });
  const timed = history.slice(1); // the first step includes kernel warm-up
  const tokens = timed.reduce((s, h) => s + h.tokens, 0), secs = timed.reduce((s, h) => s + h.seconds, 0);
  const peak = Math.max(...history.map((h) => h.memory.peakTensorBytes ?? h.memory.tensorBytes));
  console.log(JSON.stringify({ reason: info.reason, tokensPerSecond: tokens / secs, peakBytes: peak }));
  model.dispose();
}

/** Runs every configuration and returns bench rows (ratios against wasm without BLAS). */
export async function runTrainBench(options: { steps?: number } = {}): Promise<BenchRow[]> {
  const steps = options.steps ?? 4;
  const results = new Map<string, { tokensPerSecond: number; peakBytes: number; reason: string }>();
  for (const c of CONFIGS) {
    const cmd = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--child", c.backend, String(steps)],
      env: { NBTUNE_BLAS: c.blas ? "" : "off", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
      stdout: "piped",
      stderr: "piped",
    });
    const out = await cmd.output();
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (!out.success) {
      throw new Error(`${c.name} failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    }
    results.set(c.name, JSON.parse(line));
  }
  const base = results.get("wasm (no BLAS)")!;
  const rows: BenchRow[] = [];
  for (const [name, r] of results) {
    rows.push({
      name: `demo fine-tune tokens/s, ${name}`,
      unit: "tokens/s",
      value: r.tokensPerSecond,
      baseline: base.tokensPerSecond,
      ratio: r.tokensPerSecond / base.tokensPerSecond,
    });
    rows.push({ name: `demo fine-tune peak tensor bytes, ${name}`, unit: "bytes", value: r.peakBytes });
  }
  return rows;
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    await child(Deno.args[1] as "wasm" | "cpu", Number(Deno.args[2]));
  } else {
    for (const r of await runTrainBench()) {
      console.log(
        `${r.name.padEnd(48)} ${r.value.toFixed(1).padStart(14)} ${r.unit}${
          r.ratio ? `  (x${r.ratio.toFixed(2)})` : ""
        }`,
      );
    }
  }
}
