/**
 * Generates the "herald" fine-tuning task used by the demo, tutorials and tests.
 *
 * The herald repeats a phrase in a fixed ceremonial form:
 *   prompt:     "Herald, proclaim: good night sweet prince\n"
 *   completion: "Hear ye! good night sweet prince!"
 * Phrases are 3–6 word snippets of tiny Shakespeare. Training phrases come from
 * the training part of the corpus, eval phrases from the held-out tail (the last
 * 5 %, never seen in pretraining), so the score measures the learned behaviour,
 * not memorisation. Exact match of the greedy completion is the task score.
 *
 * Usage: deno run -A scripts/make_task_data.ts [--corpus notebooks/data/tinyshakespeare.txt] [--out notebooks/data]
 * @module
 */
import { mulberry32 } from "../lib/train/trainer.ts";

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
  return `Hear ye! ${phrase}!`;
}

function phrases(text: string, count: number, seed: number): string[] {
  const rand = mulberry32(seed);
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.endsWith(":"));
  const seen = new Set<string>();
  const out: string[] = [];
  for (let guard = 0; out.length < count && guard < count * 50; guard++) {
    const words = lines[Math.floor(rand() * lines.length)].replace(/[^A-Za-z' ]/g, " ").split(/\s+/).filter(
      Boolean,
    );
    const n = 3 + Math.floor(rand() * 4);
    if (words.length < n) continue;
    const start = Math.floor(rand() * (words.length - n + 1));
    const phrase = words.slice(start, start + n).join(" ").toLowerCase();
    if (seen.has(phrase)) continue;
    seen.add(phrase);
    out.push(phrase);
  }
  return out;
}

/** Task records `{prompt, completion}` for training and eval. */
export function heraldTask(text: string, sizes = { train: 400, eval: 100 }) {
  const { train, heldOut } = splitCorpus(text);
  const rec = (p: string) => ({ prompt: heraldPrompt(p), completion: heraldCompletion(p) });
  return { train: phrases(train, sizes.train, 1).map(rec), eval: phrases(heldOut, sizes.eval, 2).map(rec) };
}

if (import.meta.main) {
  const args = Deno.args;
  const get = (k: string, d: string) => (args.indexOf(k) >= 0 ? args[args.indexOf(k) + 1] : d);
  const corpus = get("--corpus", "notebooks/data/tinyshakespeare.txt");
  const out = get("--out", "notebooks/data");
  const task = heraldTask(await Deno.readTextFile(corpus));
  for (const [name, rows] of Object.entries(task)) {
    const path = `${out}/herald_${name}.jsonl`;
    await Deno.writeTextFile(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    console.log(`wrote ${rows.length} records to ${path}`);
  }
}
