/**
 * Task scores: exact match of greedy completions.
 * @module
 */
import type { Tokenizer } from "../io/tokenizer.ts";
import { generate } from "../models/generate.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";

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

/**
 * Greedy-decodes each prompt and compares with the expected completion
 * (whitespace-trimmed, up to the first newline).
 */
export function exactMatch(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  records: { prompt: string; completion: string }[],
  options: { maxNewTokens?: number } = {},
): ExactMatchResult {
  if (records.length === 0) throw new RangeError("exactMatch: no records to score");
  const examples = records.map((r) => {
    const maxNewTokens = options.maxNewTokens ??
      tokenizer.encode(r.completion, { addSpecialTokens: false }).length + 4;
    const got = generate(model, tokenizer, r.prompt, { maxNewTokens, stop: ["\n"] }).trim();
    const expected = r.completion.trim();
    return { prompt: r.prompt, expected, got, correct: got === expected };
  });
  return { accuracy: examples.filter((e) => e.correct).length / examples.length, examples };
}
