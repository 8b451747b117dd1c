/**
 * Rank sweep for DyLoRA / QDyLoRA: after one training run, evaluate every rank
 * and pick the best (or the smallest good) one — the QDyLoRA paper's payoff.
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import { tokenizeRecords, type TrainingRecord } from "../train/data.ts";
import { evaluateLoss } from "../train/evaluate.ts";
import { adapterLayers, setRank } from "./attach.ts";
import type { DyLoRALinear } from "./dylora.ts";
import { custom, defineOptions, type FieldsOf, integer } from "../options/schema.ts";

/** One row of the sweep. */
export interface RankSweepRow {
  rank: number;
  /** Mean eval loss per target token. */
  loss: number;
  /** Task score from `scorer`, when given. */
  score?: number;
}

/** Options for {@linkcode rankSweep}. */
export interface RankSweepOptions {
  /** Needed for text / prompt records. */
  tokenizer?: Tokenizer;
  /** Returns a task score (higher is better) for the model at the current rank. */
  scorer?: (model: LlamaForCausalLM) => number;
  /** Examples per eval batch. @default {8} */
  batchSize?: number;
}

/** The schema of {@linkcode rankSweep}'s options. */
export const rankSweepSchema = defineOptions(
  "rankSweep",
  {
    tokenizer: custom<Tokenizer>(
      "Needed for text / prompt records.",
      "a Tokenizer (from loadTokenizer)",
      (v) => typeof v === "object" && v !== null && typeof (v as Tokenizer).encode === "function",
      { example: { encode: () => [] } },
    ),
    scorer: custom<(model: LlamaForCausalLM) => number>(
      "Returns a task score (higher is better) for the model at the current rank.",
      "a function",
      (v) => typeof v === "function",
      { example: () => 0 },
    ),
    batchSize: integer("Examples per eval batch.", { min: 1, default: 8 }),
  } satisfies FieldsOf<RankSweepOptions>,
);

/** Result of {@linkcode rankSweep}: table rows and the best rank (draw it with `rankSweepChart` from `lib/notebook/`). */
export interface RankSweepResult {
  rows: RankSweepRow[];
  /** Rank with the best score (or lowest loss without a scorer). */
  best: number;
}

/**
 * Evaluates the model at each rank in `ranks` (default 1..maxRank) and restores
 * the serving rank afterwards.
 */
export function rankSweep(
  model: LlamaForCausalLM,
  evalData: TrainingRecord[],
  ranks?: number[],
  options: RankSweepOptions = {},
): RankSweepResult {
  const o = rankSweepSchema.parse(options);
  const dy = adapterLayers(model).filter((l) => l.kind === "dylora") as DyLoRALinear[];
  if (dy.length === 0) throw new Error("rankSweep: the model has no DyLoRA adapter (attachDyLoRA first)");
  const max = dy[0].maxRank;
  const list = ranks ?? Array.from({ length: max }, (_, i) => i + 1);
  const examples = tokenizeRecords(evalData, options.tokenizer);
  const restore = dy[0].evalRank;
  const rows: RankSweepRow[] = [];
  try {
    for (const r of list) {
      setRank(model, r);
      const loss = evaluateLoss(model, examples, {
        batchSize: o.batchSize,
        padId: options.tokenizer?.padId ?? 0,
      }).loss;
      rows.push(options.scorer ? { rank: r, loss, score: options.scorer(model) } : { rank: r, loss });
    }
  } finally {
    setRank(model, restore);
  }
  // Best score; ties (and runs without a scorer) go to the lower eval loss.
  const better = (r: RankSweepRow, b: RankSweepRow) =>
    options.scorer ? r.score! > b.score! || (r.score === b.score && r.loss < b.loss) : r.loss < b.loss;
  const best = rows.reduce((b, r) => (better(r, b) ? r : b)).rank;
  return { rows, best };
}
