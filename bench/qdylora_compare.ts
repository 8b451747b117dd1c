/**
 * QDyLoRA vs QLoRA on the embedded model (the QDyLoRA paper's claim in
 * miniature): for several seeds, one QLoRA run at rank R and one QDyLoRA run
 * with maxRank R, same steps and data; the QDyLoRA adapter is then scored at
 * every rank 1..R (one training run) and its best rank compared with QLoRA.
 * Run: `deno run -A bench/qdylora_compare.ts [--steps 600] [--seeds 3] [--lr 6e-3]` (prints markdown tables).
 * @module
 */
import {
  attachDyLoRA,
  attachLoRA,
  EMBEDDED_DATA_DIR,
  EMBEDDED_MODEL_DIR,
  exactMatch,
  initEngine,
  loadModel,
  loadTokenizer,
  rankSweep,
  readJsonl,
  train,
} from "../mod.ts";
import type { BenchRow } from "./matmul_bench.ts";

/** Scores of one seed. */
export interface SeedResult {
  seed: number;
  base: number;
  qlora: number;
  /** Score of the QDyLoRA adapter at each rank 1..R. */
  dylora: number[];
  bestRank: number;
}

const TARGETS = "all-linear" as const;

/** Runs the comparison. */
export async function compareQDyLoRA(
  options: { steps?: number; seeds?: number; maxRank?: number; evalSize?: number; lr?: number } = {},
) {
  const lr = options.lr ?? 6e-3;
  const steps = options.steps ?? 600,
    seeds = options.seeds ?? 3,
    R = options.maxRank ?? 8,
    n = options.evalSize ?? 60;
  await initEngine();
  const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const data = await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`);
  const evalSet = (await readJsonl(`${EMBEDDED_DATA_DIR}/herald_eval.jsonl`)).slice(0, n) as {
    prompt: string;
    completion: string;
  }[];
  const trainOpts = { tokenizer, steps, batchSize: 8, gradAccumSteps: 2, lr, warmupSteps: 10 };
  const results: SeedResult[] = [];
  for (let seed = 0; seed < seeds; seed++) {
    const q = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
    const base = exactMatch(q, tokenizer, evalSet).accuracy;
    attachLoRA(q, { r: R, alpha: 2 * R, targetModules: TARGETS, seed });
    await train(q, data, { ...trainOpts, shuffleSeed: seed });
    const qlora = exactMatch(q, tokenizer, evalSet).accuracy;
    q.dispose();
    const d = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
    attachDyLoRA(d, { r: R, alpha: 2 * R, targetModules: TARGETS, seed });
    await train(d, data, { ...trainOpts, shuffleSeed: seed });
    const sweep = rankSweep(d, evalSet, undefined, {
      tokenizer,
      scorer: (m) => exactMatch(m, tokenizer, evalSet).accuracy,
    });
    d.dispose();
    results.push({ seed, base, qlora, dylora: sweep.rows.map((r) => r.score!), bestRank: sweep.best });
  }
  return { results, steps, maxRank: R, evalSize: n };
}

/** Markdown tables for the README. */
export function markdown(r: Awaited<ReturnType<typeof compareQDyLoRA>>): string {
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const lines = [
    `| seed | base | QLoRA r=${r.maxRank} | QDyLoRA best rank | QDyLoRA at best | QDyLoRA at r=${r.maxRank} |`,
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ...r.results.map((s) =>
      `| ${s.seed} | ${pct(s.base)} | ${pct(s.qlora)} | ${s.bestRank} | ${pct(Math.max(...s.dylora))} | ${
        pct(s.dylora.at(-1)!)
      } |`
    ),
    "",
    `| rank | ${r.results.map((s) => `seed ${s.seed}`).join(" | ")} |`,
    `| ---: | ${r.results.map(() => "---:").join(" | ")} |`,
    ...r.results[0].dylora.map((_, i) =>
      `| ${i + 1} | ${r.results.map((s) => pct(s.dylora[i])).join(" | ")} |`
    ),
  ];
  return lines.join("\n");
}

/** Bench rows: mean QDyLoRA best-rank score vs mean QLoRA score. */
export async function runQDyLoRACompare(): Promise<BenchRow[]> {
  const r = await compareQDyLoRA();
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const q = mean(r.results.map((s) => s.qlora)), d = mean(r.results.map((s) => Math.max(...s.dylora)));
  return [
    {
      name: `QLoRA r=${r.maxRank} exact match (mean of ${r.results.length} seeds)`,
      unit: "fraction",
      value: q,
    },
    {
      name: "QDyLoRA best-rank exact match (mean)",
      unit: "fraction",
      value: d,
      baseline: q,
      ratio: q > 0 ? d / q : undefined,
    },
  ];
}

if (import.meta.main) {
  const arg = (
    k: string,
    d: number,
  ) => (Deno.args.includes(k) ? Number(Deno.args[Deno.args.indexOf(k) + 1]) : d);
  console.log(
    markdown(
      await compareQDyLoRA({ steps: arg("--steps", 600), seeds: arg("--seeds", 3), lr: arg("--lr", 6e-3) }),
    ),
  );
}
