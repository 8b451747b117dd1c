/**
 * Generates the "herald" fine-tuning task used by the demo, tutorials and tests.
 *
 * The herald answers a phrase with one of four fixed proclamations, chosen by
 * what the phrase speaks of (keyword lists below, first match wins):
 *   prompt:     "Herald, proclaim: the king is dead\n"
 *   completion: "Hear ye! A royal matter!"
 * Phrases are 4–8 word snippets of tiny Shakespeare, balanced over the four
 * classes. Training phrases come from the training part of the corpus, eval
 * phrases from the held-out tail (the last 5 %, never seen in pretraining), so
 * the score measures a learned behaviour — the herald's style plus recognising
 * the topic — not memorisation. Score: exact match of the greedy completion.
 *
 * (A copy task — repeat the phrase — was tried first: the 0.9M-parameter model
 * never learns to copy from its context, with or without "echo" pretraining.)
 *
 * Usage: deno run -A scripts/make_task_data.ts [--corpus notebooks/data/tinyshakespeare.txt] [--out notebooks/data]
 * (part of `deno task pretrain`; see --help)
 * @module
 */
import { mulberry32 } from "../lib/train/random.ts";
import { defineCli, runCli } from "./_cli.ts";

/** Topics in priority order, each with its keywords and the herald's proclamation. */
export const TOPICS: { name: string; words: string[]; proclamation: string }[] = [
  {
    name: "royal",
    words: ["king", "queen", "crown"],
    proclamation: "Hear ye! A royal matter!",
  },
  {
    name: "war",
    words: ["sword", "war", "blood"],
    proclamation: "Hear ye! A call to arms!",
  },
  {
    name: "love",
    words: ["love", "heart", "sweet"],
    proclamation: "Hear ye! A matter of the heart!",
  },
  { name: "plain", words: [], proclamation: "Hear ye! News for all!" },
];

/** The topic of a phrase (the first whose keyword it contains; "plain" otherwise). */
export function topicOf(phrase: string): (typeof TOPICS)[number] {
  const words = new Set(phrase.toLowerCase().split(/[^a-z']+/));
  return TOPICS.find((t) => t.words.some((w) => words.has(w))) ?? TOPICS[TOPICS.length - 1];
}

/** Fraction of the corpus (its tail) held out from pretraining. */
export const HELD_OUT_FRACTION = 0.05;

/** Splits the corpus into pretraining text and held-out text (by character position, at a line break). */
export function splitCorpus(text: string): { train: string; heldOut: string } {
  let cut = Math.floor(text.length * (1 - HELD_OUT_FRACTION));
  cut = text.indexOf("\n", cut) + 1;
  return { train: text.slice(0, cut), heldOut: text.slice(cut) };
}

/** Builds the prompt for a phrase. */
export function heraldPrompt(phrase: string): string {
  return `Herald, proclaim: ${phrase}\n`;
}

/** The expected completion for a phrase. */
export function heraldCompletion(phrase: string): string {
  return topicOf(phrase).proclamation;
}

/** `count` distinct phrases of 4–8 words, the same number from each topic. */
function phrases(text: string, count: number, seed: number): string[] {
  const rand = mulberry32(seed);
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.endsWith(":"));
  const perTopic = Math.ceil(count / TOPICS.length);
  const byTopic = new Map(TOPICS.map((t) => [t.name, [] as string[]]));
  const seen = new Set<string>();
  for (let guard = 0; seen.size < perTopic * TOPICS.length && guard < count * 400; guard++) {
    const line = lines[Math.floor(rand() * lines.length)];
    const words = line.replace(/[^A-Za-z' ]/g, " ").split(/\s+/).filter(Boolean);
    const n = 4 + Math.floor(rand() * 5);
    if (words.length < n) continue;
    const start = Math.floor(rand() * (words.length - n + 1));
    const phrase = words.slice(start, start + n).join(" ").toLowerCase();
    const bucket = byTopic.get(topicOf(phrase).name)!;
    if (seen.has(phrase) || bucket.length >= perTopic) continue;
    seen.add(phrase);
    bucket.push(phrase);
  }
  // Interleave topics so that any prefix of the list is balanced.
  const out: string[] = [];
  for (let i = 0; i < perTopic; i++) {
    for (const t of TOPICS) {
      const p = byTopic.get(t.name)![i];
      if (p) out.push(p);
    }
  }
  return out.slice(0, count);
}

/** Task records `{prompt, completion}` for training and eval. */
export function heraldTask(text: string, sizes = { train: 1600, eval: 200 }) {
  const { train, heldOut } = splitCorpus(text);
  const rec = (p: string) => ({ prompt: heraldPrompt(p), completion: heraldCompletion(p) });
  return { train: phrases(train, sizes.train, 1).map(rec), eval: phrases(heldOut, sizes.eval, 2).map(rec) };
}

/**
 * Writes `herald_train.jsonl` and `herald_eval.jsonl` made from the corpus file into `outDir`.
 *
 * @param corpus path of the tiny Shakespeare text
 * @param outDir folder for the two files
 * @returns one line per written file
 * @example
 * ```ts
 * import { writeHeraldTask } from "./make_task_data.ts";
 * const dir = await Deno.makeTempDir();
 * const corpus = new URL("../notebooks/data/tinyshakespeare.txt", import.meta.url).pathname;
 * const lines = await writeHeraldTask(corpus, dir);
 * if (lines.length !== 2 || !lines[0].includes("1600 records")) throw new Error(lines.join("; "));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeHeraldTask(corpus: string, outDir: string): Promise<string[]> {
  const task = heraldTask(await Deno.readTextFile(corpus));
  await Deno.mkdir(outDir, { recursive: true });
  const lines: string[] = [];
  for (const [name, rows] of Object.entries(task)) {
    const path = `${outDir}/herald_${name}.jsonl`;
    await Deno.writeTextFile(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    lines.push(`wrote ${rows.length} records to ${path}`);
  }
  return lines;
}

const TASK_CLI = defineCli({
  name: "make_task_data",
  summary:
    "Writes the herald fine-tuning task (herald_train.jsonl, herald_eval.jsonl) from tiny Shakespeare.",
  usage: "deno run -A scripts/make_task_data.ts [options]",
  options: {
    corpus: {
      type: "string",
      default: "notebooks/data/tinyshakespeare.txt",
      placeholder: "FILE",
      description: "the tiny Shakespeare text",
      example: "--corpus data/shakespeare.txt",
    },
    out: {
      type: "string",
      default: "notebooks/data",
      placeholder: "DIR",
      description: "folder for the two JSON-lines files",
      example: "--out out/task",
    },
  },
  examples: ["deno run -A scripts/make_task_data.ts --out out/task"],
});

if (import.meta.main) {
  await runCli(TASK_CLI, async ({ values }) => {
    for (const line of await writeHeraldTask(values.corpus, values.out)) console.log(line);
  });
}
