/**
 * Task scores: exact match of greedy completions.
 * @module
 */
import type { Tokenizer } from "../io/tokenizer.ts";
import { generate } from "../models/generate.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";
import { defineOptions, type FieldsOf, integer } from "../options/schema.ts";
import { progressField, type ProgressSink } from "./evaluate.ts";

/** One scored example. */
export interface ScoredExample {
  prompt: string;
  expected: string;
  got: string;
  correct: boolean;
}

/** Result of {@linkcode exactMatch}. */
export interface ExactMatchResult {
  /** Fraction of examples whose completion equals the expected one (after trimming). */
  accuracy: number;
  examples: ScoredExample[];
}

/** Options of {@linkcode exactMatch}. */
export interface ExactMatchOptions {
  /** Most tokens generated per prompt. Default: the expected completion's length + 4. */
  maxNewTokens?: number;
  /** A progress bar (`progress(records.length)`) ticked once per scored prompt. */
  progress?: ProgressSink;
}

/** The schema of {@linkcode exactMatch}'s options. */
export const exactMatchSchema = defineOptions(
  "exactMatch",
  {
    maxNewTokens: integer("Most tokens generated per prompt (default: the completion's length + 4).", {
      min: 1,
    }),
    progress: progressField("A progress bar ticked once per scored prompt."),
  } satisfies FieldsOf<ExactMatchOptions>,
);

/**
 * Greedy-decodes each prompt and compares with the expected completion
 * (whitespace-trimmed, up to the first newline); `progress` is ticked per prompt.
 */
export function exactMatch(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  records: { prompt: string; completion: string }[],
  options: ExactMatchOptions = {},
): ExactMatchResult {
  const o = exactMatchSchema.parse(options);
  if (records.length === 0) throw new RangeError("exactMatch: no records to score");
  const examples = records.map((r) => {
    const maxNewTokens = o.maxNewTokens ??
      tokenizer.encode(r.completion, { addSpecialTokens: false }).length + 4;
    const got = generate(model, tokenizer, r.prompt, { maxNewTokens, stop: ["\n"] }).trim();
    const expected = r.completion.trim();
    o.progress?.tick(1);
    return { prompt: r.prompt, expected, got, correct: got === expected };
  });
  return { accuracy: examples.filter((e) => e.correct).length / examples.length, examples };
}
