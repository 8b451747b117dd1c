/**
 * Training states: what `train({ saveEvery, outputDir })` writes into `outputDir/step-N`
 * so that `train({ resumeFrom })` continues exactly (bit for bit on the same backend):
 *
 * ```text
 * step-N/
 *   adapter_config.json + adapter_model.safetensors   (PEFT, when an adapter is attached)
 *   config.json + model.safetensors                   (else the full checkpoint)
 *   trainable.safetensors     every trainable parameter by its trainer name, F32 (exact,
 *                             also DyLoRA's full-rank factors, which PEFT files truncate)
 *   optimizer.safetensors     optimizer arrays: moments, 8-bit codes and their absmax,
 *                             GaLore projectors (see lib/optim/optimizer_state.ts)
 *   optimizer.json            optimizer name, settings, step and projector counters
 *   trainer_state.json        step, schedule, options that must match, data order and
 *                             position, shuffle count, dropout streams, recent losses, history
 * ```
 *
 * The folder is written atomically (`writeDirAtomic`): a kill leaves the previous
 * complete save or this one. `findLatestSave` skips folders without `trainer_state.json`.
 * @module
 */
import { isFile, recoverInterruptedSave, refuseInterruptedSave, writeDirAtomic } from "../io/atomic_dir.ts";
import { openSafetensors } from "../io/safetensors_reader.ts";
import { type SafetensorsEntry, writeSafetensors } from "../io/safetensors_writer.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";
import { writeAdapterFiles } from "../adapters/peft_format.ts";
import { writeCheckpointFiles } from "../models/save_model.ts";
import type { OptimizerState, StateTensor } from "../optim/optimizer_state.ts";
import type { StepRecord } from "./types.ts";

/** Name of the JSON file that marks a folder as a training state. */
export const TRAINER_STATE_FILE = "trainer_state.json";

/** `trainer_state.json`. */
export interface TrainerStateJson {
  format: "nbtune-training-state";
  version: 1;
  /** Optimizer steps completed. */
  step: number;
  /** Steps of the whole run (the schedule depends on it). */
  totalSteps: number;
  /** Options a resumed run must repeat (checked field by field). */
  fingerprint: Record<string, unknown>;
  /**
   * Data order (indices into the tokenized examples), position in it, and shuffles drawn so far.
   * A streamed run (`train` on an async iterable with `steps`) has no order (`[]`, 0, 0) and
   * records `stream`: how many records it pulled and the {@linkcode DataHasher} digest of their
   * tokenized examples (a resumed run skips that many and compares the digest).
   */
  data: { order: number[]; cursor: number; shuffles: number; stream?: StreamPosition };
  /** Dropout stream positions per adapter layer. */
  layerRng: Record<string, number>;
  /** Losses of the last steps (the divergence guard's recent level). */
  recentLosses: number[];
  /** Whether optimizer.safetensors / optimizer.json were written. */
  hasOptimizerState: boolean;
  /** Every step record so far. */
  history: StepRecord[];
}

/** Where a streamed run is in its data stream. */
export interface StreamPosition {
  /** Records pulled from the stream (also those without target tokens, which are skipped). */
  consumed: number;
  /** {@linkcode DataHasher} digest of those records' tokenized examples. */
  hash: string;
}

/** Checks the types of `trainer_state.json`'s fields (a damaged file fails here, naming the field). */
function checkStateJson(j: TrainerStateJson, path: string): void {
  const bad = (field: string, want: string) => {
    throw new RangeError(`train: ${path}: "${field}" must be ${want}; the training state is damaged`);
  };
  const count = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
  if (!count(j.step)) bad("step", "an integer >= 0");
  if (!count(j.totalSteps)) bad("totalSteps", "an integer >= 0");
  if (typeof j.fingerprint !== "object" || j.fingerprint === null) bad("fingerprint", "an object");
  const d = j.data;
  if (typeof d !== "object" || d === null) bad("data", "an object");
  if (!Array.isArray(d.order) || !d.order.every(count)) bad("data.order", "an array of indices");
  if (!count(d.cursor)) bad("data.cursor", "an integer >= 0");
  if (!count(d.shuffles) || d.shuffles > 1e7) bad("data.shuffles", "an integer >= 0");
  if (
    d.stream !== undefined &&
    (typeof d.stream !== "object" || d.stream === null || !count(d.stream.consumed) ||
      typeof d.stream.hash !== "string")
  ) {
    bad("data.stream", "{ consumed: an integer >= 0, hash: a string }");
  }
  if (typeof j.layerRng !== "object" || j.layerRng === null || Array.isArray(j.layerRng)) {
    bad("layerRng", "an object");
  }
  if (!Object.values(j.layerRng).every(Number.isFinite)) bad("layerRng", "an object of numbers");
  if (!Array.isArray(j.recentLosses) || !j.recentLosses.every(Number.isFinite)) {
    bad("recentLosses", "an array of numbers");
  }
  if (typeof j.hasOptimizerState !== "boolean") bad("hasOptimizerState", "a boolean");
  if (!Array.isArray(j.history) || j.history.length !== j.step) {
    bad("history", `an array of ${j.step} step records`);
  }
}

/** What {@linkcode readTrainingState} returns. */
export interface LoadedTrainingState {
  dir: string;
  json: TrainerStateJson;
  /** Trainable parameters by name. */
  trainable: Map<string, { shape: number[]; data: Float32Array }>;
  optimizer: OptimizerState | null;
}

/**
 * Writes a training state folder atomically (see the module docs).
 *
 * @param optimizerState from `exportOptimizerState`, or null when the optimizer cannot export it.
 */
export async function writeTrainingState(
  dir: string,
  model: LlamaForCausalLM,
  json: TrainerStateJson,
  optimizerState: OptimizerState | null,
): Promise<void> {
  await writeDirAtomic(dir, async (tmp) => {
    if (model.adapter) await writeAdapterFiles(model, tmp);
    else await writeCheckpointFiles(model, tmp);
    const params = model.trainableParams();
    await writeSafetensors(
      `${tmp}/trainable.safetensors`,
      params.map((p) => ({
        name: p.name,
        dtype: "F32" as const,
        shape: p.variable.shape,
        data: () => Float32Array.from(p.variable.dataSync() as Float32Array),
      })),
      { metadata: { format: "nbtune" } },
    );
    if (optimizerState) {
      const entries: SafetensorsEntry[] = Object.entries(optimizerState.tensors).map(([name, t]) => ({
        name,
        dtype: t.dtype,
        shape: t.shape,
        data: t.data,
      }));
      await writeSafetensors(`${tmp}/optimizer.safetensors`, entries, { metadata: { format: "nbtune" } });
      await Deno.writeTextFile(
        `${tmp}/optimizer.json`,
        JSON.stringify({ name: optimizerState.name, meta: optimizerState.meta }) + "\n",
      );
    }
    await Deno.writeTextFile(`${tmp}/${TRAINER_STATE_FILE}`, JSON.stringify(json) + "\n");
  });
}

/**
 * The `step-N` folders of `outputDir` holding a complete training state, oldest first
 * (a save killed between its two renames is restored first; unfinished ones are skipped).
 *
 * @example
 * ```ts
 * import { listSaves } from "./training_state.ts";
 * const out = await Deno.makeTempDir();
 * await Deno.mkdir(`${out}/step-10`);
 * await Deno.writeTextFile(`${out}/step-10/trainer_state.json`, "{}");
 * await Deno.mkdir(`${out}/step-20.tmp-1a2b3c4d`); // an interrupted save
 * const saves = await listSaves(out);
 * if (saves.length !== 1 || saves[0].step !== 10) throw new Error(JSON.stringify(saves));
 * ```
 */
export async function listSaves(outputDir: string): Promise<{ step: number; dir: string }[]> {
  const out: { step: number; dir: string }[] = [];
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(outputDir)) names.push(e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  // A save killed between its two renames waits as step-N.old-*: restore it first.
  for (const n of new Set(names.map((x) => x.match(/^(step-\d+)\.(old|tmp)-/)?.[1]).filter(Boolean))) {
    await recoverInterruptedSave(`${outputDir}/${n}`);
  }
  for (const n of names.filter((x) => /^step-\d+\.del-/.test(x))) {
    await Deno.remove(`${outputDir}/${n}`, { recursive: true }); // a pruning that was killed
  }
  names.length = 0;
  for await (const e of Deno.readDir(outputDir)) names.push(e.name);
  for (const n of names) {
    const m = n.match(/^step-(\d+)$/);
    if (m && await isFile(`${outputDir}/${n}/${TRAINER_STATE_FILE}`)) {
      out.push({ step: Number(m[1]), dir: `${outputDir}/${n}` });
    }
  }
  return out.sort((a, b) => a.step - b.step);
}

/**
 * The folder `resumeFrom` names: itself when it holds `trainer_state.json`, else the
 * latest complete `step-N` inside it.
 */
export async function resolveResumeDir(resumeFrom: string): Promise<string> {
  const path = resumeFrom.replace(/\/+$/, "");
  refuseInterruptedSave(path, "train: resumeFrom");
  await recoverInterruptedSave(path);
  if (await isFile(`${path}/${TRAINER_STATE_FILE}`)) return path;
  const saves = await listSaves(path);
  if (saves.length === 0) {
    throw new Deno.errors.NotFound(
      `train: resumeFrom "${path}" is neither a training state (no ${TRAINER_STATE_FILE}) nor a folder of step-N ` +
        "training states; pass the outputDir of a run with saveEvery, or one of its step-N folders",
    );
  }
  return saves[saves.length - 1].dir;
}

/** Reads a training state folder written by {@linkcode writeTrainingState}. */
export async function readTrainingState(dir: string): Promise<LoadedTrainingState> {
  const path = `${dir}/${TRAINER_STATE_FILE}`;
  let json: TrainerStateJson;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new RangeError(`train: cannot read the training state ${path}: ${(e as Error).message}`);
  }
  if (json?.format !== "nbtune-training-state" || json.version !== 1) {
    throw new RangeError(`train: ${path} is not an nbtune training state (version 1)`);
  }
  checkStateJson(json, path);
  const trainable = new Map<string, { shape: number[]; data: Float32Array }>();
  {
    using f = await openSafetensors(`${dir}/trainable.safetensors`);
    for (const name of f.names()) {
      trainable.set(name, { shape: [...f.info(name).shape], data: await f.readFloat32(name) });
    }
  }
  let optimizer: OptimizerState | null = null;
  if (json.hasOptimizerState) {
    const headPath = `${dir}/optimizer.json`;
    let head: { name?: unknown; meta?: unknown };
    try {
      head = JSON.parse(await Deno.readTextFile(headPath));
    } catch (e) {
      throw new RangeError(`train: cannot read ${headPath}: ${(e as Error).message}`);
    }
    const isObject = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
    if (!isObject(head) || typeof head.name !== "string" || !isObject(head.meta)) {
      throw new RangeError(
        `train: ${headPath} must hold { name: string, meta: object }; the training state is damaged`,
      );
    }
    const tensors: Record<string, StateTensor> = {};
    using f = await openSafetensors(`${dir}/optimizer.safetensors`);
    for (const name of f.names()) {
      const info = f.info(name);
      if (info.dtype !== "F32" && info.dtype !== "U8") {
        throw new TypeError(`${dir}/optimizer.safetensors: "${name}" is ${info.dtype}, expected F32 or U8`);
      }
      const data = info.dtype === "F32" ? await f.readFloat32(name) : await f.readBytes(name);
      tensors[name] = { dtype: info.dtype, shape: [...info.shape], data: data.slice() };
    }
    optimizer = { name: head.name, meta: head.meta as Record<string, unknown>, tensors };
  }
  return { dir, json, trainable, optimizer };
}

/**
 * Removes all but the last `keep` complete saves of `outputDir`, never `protect` and never
 * the save with the lowest eval loss (when evals ran at save steps), as Transformers keeps
 * its best checkpoint.
 */
export async function pruneSaves(outputDir: string, keep: number, protect: string): Promise<void> {
  const saves = await listSaves(outputDir);
  let best: string | undefined, bestLoss = Infinity;
  for (const s of saves) {
    const json = JSON.parse(await Deno.readTextFile(`${s.dir}/${TRAINER_STATE_FILE}`)) as TrainerStateJson;
    const loss = json.history?.at(-1)?.evalLoss;
    if (typeof loss === "number" && loss < bestLoss) [best, bestLoss] = [s.dir, loss];
  }
  for (const s of saves.slice(0, Math.max(0, saves.length - keep))) {
    if (s.dir === protect || s.dir === best) continue;
    // Renamed away first, so a kill during the removal never leaves a half-deleted step-N.
    const trash = `${s.dir}.del-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.rename(s.dir, trash);
    await Deno.remove(trash, { recursive: true });
  }
}

/**
 * {@linkcode dataFingerprint} built one example at a time (for data that arrives as a stream):
 * `add` every example in order, then `digest()` gives the same string as `dataFingerprint`.
 *
 * @example
 * ```ts
 * import { DataHasher, dataFingerprint } from "./training_state.ts";
 * const ex = [{ ids: [1, 2], labels: [1, 2] }, { ids: [3], labels: [-100] }];
 * const h = new DataHasher();
 * for (const e of ex) h.add(e);
 * if (h.digest() !== dataFingerprint(ex)) throw new Error("same hash");
 * ```
 */
export class DataHasher {
  #h = 0x811c9dc5;
  #count = 0;

  #mix(v: number): void {
    let h = this.#h;
    h ^= v & 0xffff;
    h = Math.imul(h, 0x01000193) >>> 0;
    h ^= (v >>> 16) & 0xffff;
    this.#h = Math.imul(h, 0x01000193) >>> 0;
  }

  /** Mixes in one tokenized example. */
  add(e: { ids: number[]; labels: number[] }): void {
    this.#mix(e.ids.length);
    for (const x of e.ids) this.#mix(x);
    for (const y of e.labels) this.#mix(y);
    this.#count++;
  }

  /** `count:hash` of the examples added so far. */
  digest(): string {
    return `${this.#count}:${this.#h.toString(16)}`;
  }
}

/**
 * A short hash of the tokenized data (FNV-1a over every id and label), so that resuming
 * on other data is refused.
 *
 * @example
 * ```ts
 * import { dataFingerprint } from "./training_state.ts";
 * const a = dataFingerprint([{ ids: [1, 2], labels: [1, 2] }]);
 * if (a === dataFingerprint([{ ids: [1, 3], labels: [1, 3] }])) throw new Error("must differ");
 * ```
 */
export function dataFingerprint(examples: { ids: number[]; labels: number[] }[]): string {
  const h = new DataHasher();
  for (const e of examples) h.add(e);
  return h.digest();
}
