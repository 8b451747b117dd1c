/**
 * The training loop: micro-batches, exact gradient accumulation, clipping,
 * schedules, periodic eval, history and callbacks. It loads, plots and prints
 * nothing itself: notebooks and the CLI listen through `onStep`.
 * @module
 */
import { adapterKind } from "../adapters/registry.ts";
import { canReadSync } from "../engine/async_reads.ts";
import { checkDeviceTraining, prefetchVariables, runDeviceStep } from "./device_step.ts";
import { memorySnapshot } from "../engine/memory.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { memoryBreakdown } from "./memory_breakdown.ts";
import { exportOptimizerState, importOptimizerState } from "../optim/optimizer_state.ts";
import { type DivergenceOptions, LossHistory, resolveDivergence } from "./divergence.ts";
import { restoreLayerRng, snapshotLayerRng } from "./layer_rng.ts";
import {
  dataFingerprint,
  pruneSaves,
  readTrainingState,
  resolveResumeDir,
  type TrainerStateJson,
  writeTrainingState,
} from "./training_state.ts";
import { runStep, type StepMode } from "./step.ts";
import type { LayerwiseClip } from "./layerwise_clip.ts";
import { autoCheckpointing } from "./auto_checkpoint.ts";
import { chunk, makeMicroBatch } from "./batching.ts";
import { makePackedMicroBatch, packExamples, paddingFractions } from "./packing.ts";
import {
  countTargets,
  type Example,
  IGNORE_INDEX,
  type TokenizeOptions,
  tokenizeRecords,
  type TrainingRecord,
} from "./data.ts";
import { evaluateLossAsync } from "./evaluate.ts";
import { ExampleStream } from "./example_stream.ts";
import { createOptimizer, type GaLoreTrainOptions, type OptimizerName } from "./optimizers.ts";
import { learningRateAt, type ScheduleKind } from "./schedule.ts";
import type { StepRecord } from "./types.ts";
import { mulberry32 } from "../engine/random.ts";
import { trainOptionsSchema } from "./train_options.ts";

export { mulberry32 };

/** Options for {@linkcode train}. */
export interface TrainOptions {
  /** Needed for text / prompt / messages records. */
  tokenizer?: Tokenizer;
  /** Examples per micro-batch. @default {4} */
  batchSize?: number;
  /** Micro-batches per optimizer step. @default {1} */
  gradAccumSteps?: number;
  /** Optimizer name or instance. @default {"adamw"} */
  optimizer?: OptimizerName | Optimizer;
  /** GaLore settings (for "galore" / "galore8bit"). */
  galore?: GaLoreTrainOptions;
  /** Peak learning rate. @default {2e-4} */
  lr?: number;
  /** Decoupled weight decay. @default {0} */
  weightDecay?: number;
  /** LR schedule after warmup. @default {"cosine"} */
  schedule?: ScheduleKind;
  /** Linear warmup steps. @default {0} */
  warmupSteps?: number;
  /**
   * Optimizer steps to run (takes precedence over `epochs`). With `steps`, `data` given as an
   * `AsyncIterable` is streamed: pulled lazily, step by step, never collected (see {@linkcode train}).
   */
  steps?: number;
  /** Passes over the data when `steps` is not given. @default {1} */
  epochs?: number;
  /** Clip the global gradient norm to this value (0 = off). @default {1} */
  maxGradNorm?: number;
  /** Tokenization (max length, truncation side). */
  tokenize?: TokenizeOptions;
  /** Held-out records for periodic eval. */
  evalData?: TrainingRecord[];
  /** Evaluate every N steps (and at the end). @default {0 = only at the end when evalData is given} */
  evalEvery?: number;
  /**
   * Shuffle each epoch with this seed; `false` keeps the order. Streamed data is read in its own
   * order (a seed is refused there). @default {0}
   */
  shuffleSeed?: number | false;
  /** Keep only block inputs during forward and recompute each block in backward. @default {false} */
  gradientCheckpointing?: boolean;
  /**
   * Pack examples end to end into rows of `tokenize.maxLength` tokens (block-diagonal causal mask,
   * positions restarting per example: the same loss and gradients, far less padding); each step
   * packs its `batchSize · gradAccumSteps` examples and splits the rows into micro-batches of
   * `batchSize`. The padding saved is printed once. @default {false}
   */
  packing?: boolean;
  /**
   * Step each block's parameters as soon as its gradients exist during backward
   * (implies block-wise recomputation; needs `gradAccumSteps: 1`; clipping as
   * `layerwiseClip` says). @default {galore.layerwise, else false}
   */
  layerwise?: boolean;
  /**
   * How layer-wise updates clip to `maxGradNorm`: `"prepass"` (exact global norm from a
   * norm-only backward pass, shared with the divergence guard's prepass), `"previous"` (the
   * previous step's norm × 1.1, no extra pass) or `"per-block"` (each block to its share).
   * See `lib/train/layerwise_clip.ts`. @default {"prepass"}
   */
  layerwiseClip?: LayerwiseClip;
  /** Measure peak memory of each step with `tf.profile` (small overhead). @default {true} */
  measureMemory?: boolean;
  /**
   * Save every N steps (and at the end) into `outputDir/step-N`: the adapter in
   * PEFT format when one is attached, else the full checkpoint. @default {0 = never}
   */
  saveEvery?: number;
  /** Folder for `saveEvery` checkpoints. @default {"out/checkpoints"} */
  outputDir?: string;
  /**
   * Keep only the last K `step-N` saves in `outputDir`, plus the one with the lowest eval
   * loss when evals ran at save steps (0 = keep all). @default {0}
   */
  saveTotalLimit?: number;
  /**
   * Continue a run from a training state: a `step-N` folder written by `saveEvery`, or the
   * `outputDir` itself for its latest complete save. The other options must be the same as
   * the interrupted run's (checked); history and weights then equal an uninterrupted run's.
   */
  resumeFrom?: string;
  /** The divergence guard (loss spikes, layer-wise checking); see `DivergenceOptions`. */
  divergence?: DivergenceOptions;
  /** Called after every optimizer step. */
  onStep?: (record: StepRecord) => void | Promise<void>;
}

/** Options after validation, with defaults filled in. */
export interface ResolvedTrainOptions {
  batchSize: number;
  gradAccumSteps: number;
  lr: number;
  weightDecay: number;
  schedule: ScheduleKind;
  warmupSteps: number;
  epochs: number;
  maxGradNorm: number;
  evalEvery: number;
  shuffleSeed: number | false;
  mode: StepMode;
  layerwiseClip: LayerwiseClip;
  measureMemory: boolean;
  saveEvery: number;
  outputDir: string;
  saveTotalLimit: number;
}

/** Validates options and fills defaults. */
export function resolveTrainOptions(options: TrainOptions): ResolvedTrainOptions {
  // Types, ranges, nested objects and unknown or renamed keys: all from the schema.
  const o = trainOptionsSchema.parse(options);
  const layerwise = options.layerwise ?? options.galore?.layerwise ?? false;
  if (layerwise && o.gradAccumSteps > 1) {
    throw new RangeError(
      "train: layer-wise updates step each block during backward, so gradients are never summed over micro-batches; " +
        "use gradAccumSteps: 1 with layerwise, or turn layerwise off to accumulate.",
    );
  }
  const mode: StepMode = layerwise ? "layerwise" : options.gradientCheckpointing ? "checkpointed" : "full";
  return {
    ...o,
    mode,
    layerwiseClip: options.layerwiseClip ?? "prepass",
    measureMemory: options.measureMemory ?? true,
  };
}

/**
 * Refuses token or label ids outside the vocabulary (they would index garbage or give a NaN
 * loss), and cuts sequences longer than the model's `max_position_embeddings` (on the
 * tokenizer's truncation side), warning how many were cut (unless `quiet`: then the caller
 * warns, e.g. once for a stream). Records are numbered from `offset`. Returns the number cut.
 */
function checkExamples(
  examples: Example[],
  model: LlamaForCausalLM,
  side: "left" | "right",
  where: string,
  offset = 0,
  quiet = false,
): number {
  const V = model.config.vocabSize, P = model.config.maxPositionEmbeddings;
  examples.forEach((e, i) => {
    const bad = e.ids.findIndex((x) => !Number.isInteger(x) || x < 0 || x >= V);
    if (bad >= 0) {
      throw new RangeError(
        `${where}: record ${offset + i}: token id ${
          e.ids[bad]
        } at position ${bad} is outside the vocabulary [0, ${V})`,
      );
    }
    const badLabel = e.labels.findIndex((y) =>
      y !== IGNORE_INDEX && (!Number.isInteger(y) || y < 0 || y >= V)
    );
    if (badLabel >= 0) {
      throw new RangeError(
        `${where}: record ${offset + i}: label ${
          e.labels[badLabel]
        } at position ${badLabel} is outside the vocabulary [0, ${V}) ` +
          `(use ${IGNORE_INDEX} to ignore a position)`,
      );
    }
  });
  let cut = 0;
  for (const e of examples) {
    if (e.ids.length <= P) continue;
    cut++;
    const keep = side === "left" ? (a: number[]) => a.slice(-P) : (a: number[]) => a.slice(0, P);
    e.ids = keep(e.ids);
    e.labels = keep(e.labels);
  }
  if (cut > 0 && !quiet) {
    console.warn(
      `${where}: ${cut} of ${examples.length} examples are longer than the model's max_position_embeddings (${P}) ` +
        `and were cut to ${P} tokens (${side} side); set tokenize.maxLength to ${P} or less to silence this.`,
    );
  }
  return cut;
}

/**
 * Runs `fn` in a tfjs scope: tensors it creates and does not keep are freed, also when it
 * throws. tfjs keeps the tensors a gradient tape saves for backward (`kept` clones) and only
 * frees them when the backward pass completes, so after a failure (out of memory in the
 * middle of a forward pass) the abandoned tape is freed here too.
 */
function scoped<T>(fn: () => T): T {
  let out: T | undefined;
  try {
    tf.tidy(() => {
      out = fn();
    });
  } catch (e) {
    const state = (tf.engine() as unknown as {
      state: { gradientDepth: number; activeTape: { saved?: tf.Tensor[] }[] | null };
    }).state;
    if (state.gradientDepth === 0 && state.activeTape) {
      for (const node of state.activeTape) for (const t of node.saved ?? []) t.dispose();
      state.activeTape = null;
    }
    throw e;
  }
  return out as T;
}

/**
 * `tf.profile(query)`, with errors passed through. The wasm backend times each kernel in an
 * async function, so under the profiler a kernel that throws (out of memory) turns into an
 * unhandled promise rejection plus a TypeError ("Cannot read properties of undefined
 * (reading 'map')") from the profiler; here the kernel's own error is caught and rethrown.
 */
async function profiled<T>(query: () => T): Promise<{ result: T; peakBytes: number }> {
  const rejected: unknown[] = [];
  const onRejection = (e: PromiseRejectionEvent) => {
    rejected.push(e.reason);
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  let result: T | undefined, failed: { error: unknown } | undefined, peakBytes = 0;
  try {
    const prof = await tf.profile(() => {
      try {
        result = query();
      } catch (e) {
        failed = { error: e };
      }
      return [] as tf.Tensor[];
    });
    peakBytes = prof.peakBytes;
  } catch (e) {
    failed ??= { error: e };
  } finally {
    if (failed) await new Promise((r) => setTimeout(r, 0)); // let the kernel's rejection surface
    globalThis.removeEventListener("unhandledrejection", onRejection);
  }
  if (rejected.length > 0) throw rejected[0];
  if (failed) throw failed.error;
  return { result: result as T, peakBytes };
}

function shuffled<T>(items: T[], rand: () => number): T[] {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

async function collect(data: TrainingRecord[] | AsyncIterable<TrainingRecord>): Promise<TrainingRecord[]> {
  if (Array.isArray(data)) return data;
  const out: TrainingRecord[] = [];
  for await (const r of data) out.push(r);
  return out;
}

/**
 * Fine-tunes `model` in place on `data` and returns the per-step history.
 *
 * `data` is an array, or an `AsyncIterable` of records (e.g. `streamJsonl(path)`). An async
 * iterable with `steps` given is **streamed**: each step pulls the `batchSize · gradAccumSteps`
 * examples it needs (records without target tokens are skipped), tokenizing and checking them as
 * they come, so the data is never held in memory as a whole. A stream is read once in its own
 * order: no shuffling (an explicit `shuffleSeed` is refused), no epochs; if it ends before `steps`
 * are done, `train` throws naming the step (steps already run stay applied, and saved when
 * `saveEvery` says so). `train` leaves the iterator when done (`return()`, closing a `streamJsonl`
 * file). `resumeFrom` with a stream skips the records the saved run consumed (their count and
 * hash are in the training state): pass a stream that replays the same records in the same order,
 * e.g. `streamJsonl` of the same file. With `packing`, each step packs the examples it pulled.
 * Without `steps`, an async iterable is collected first (epochs need the whole data). `evalData`
 * is an array (held in memory).
 *
 * @example
 * ```ts
 * import { train } from "./trainer.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const model = initModel({ model_type: "llama", vocab_size: 8, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * const data = [{ ids: [1, 2, 3, 4] }, { ids: [1, 2, 3] }];
 * const history = await train(model, data, { steps: 3, lr: 1e-2, batchSize: 1, gradAccumSteps: 2 });
 * if (history.length !== 3 || history[0].tokens !== 5) throw new Error("bad history");
 * model.dispose();
 * ```
 */
export async function train(
  model: LlamaForCausalLM,
  data: TrainingRecord[] | AsyncIterable<TrainingRecord>,
  options: TrainOptions = {},
): Promise<StepRecord[]> {
  const o = resolveTrainOptions(options);
  // webgpu cannot read synchronously: the steps run as runDeviceStep (async reads, batched).
  const sync = canReadSync();
  const optimizerName = typeof options.optimizer === "object" ? options.optimizer.name : options.optimizer;
  if (!sync) checkDeviceTraining({ mode: o.mode, optimizer: optimizerName ?? "adamw" });
  const tok = options.tokenizer;
  const side = options.tokenize?.truncation ?? "left";
  // An async iterable with `steps` is streamed (pulled step by step); without steps it is collected.
  let stream: ExampleStream<TrainingRecord> | undefined;
  let examples: Example[] = [];
  if (!Array.isArray(data) && options.steps !== undefined) {
    if (options.shuffleSeed !== undefined && options.shuffleSeed !== false) {
      throw new RangeError(
        `train: shuffleSeed ${options.shuffleSeed} cannot shuffle streamed data (an AsyncIterable with steps is ` +
          "read once, in its order); shuffle the records at the source, or pass an array",
      );
    }
    let warned = false;
    stream = new ExampleStream(data, (record, i) => {
      const [ex] = tokenizeRecords([record], tok, options.tokenize, i);
      if (checkExamples([ex], model, side, "train", i, true) > 0 && !warned) {
        warned = true;
        console.warn(
          `train: record ${i} (and maybe later ones) is longer than the model's max_position_embeddings ` +
            `(${model.config.maxPositionEmbeddings}) and was cut (${side} side); set tokenize.maxLength to ` +
            `${model.config.maxPositionEmbeddings} or less to silence this.`,
        );
      }
      return ex;
    });
  } else {
    const tokenized = tokenizeRecords(await collect(data), tok, options.tokenize);
    checkExamples(tokenized, model, side, "train");
    examples = tokenized.filter((e) => countTargets(e) > 0);
    if (examples.length === 0) throw new RangeError("train: no example has target tokens");
  }
  if (sync && o.mode === "full" && options.gradientCheckpointing === undefined) {
    // The engine-aware estimate decides whether the step without recomputation fits the wasm heap.
    // A stream's lengths are unknown ahead: its bound (tokenize.maxLength, capped by the model) counts.
    const auto = autoCheckpointing(model, {
      batchSize: o.batchSize,
      seqLen: stream
        ? Math.min(options.tokenize?.maxLength ?? 512, model.config.maxPositionEmbeddings)
        : examples.reduce((m, e) => Math.max(m, e.ids.length), 0),
      gradAccumSteps: o.gradAccumSteps,
      optimizer: typeof options.optimizer === "string" ? options.optimizer : undefined,
    });
    if (auto.on) {
      o.mode = "checkpointed";
      console.warn(auto.message);
    }
  }
  const evalExamples = options.evalData
    ? tokenizeRecords(options.evalData, tok, options.tokenize)
    : undefined;
  if (evalExamples) {
    checkExamples(evalExamples, model, options.tokenize?.truncation ?? "left", "train: evalData");
  }
  const padId = tok?.padId ?? 0;
  const perStep = o.batchSize * o.gradAccumSteps;
  const packLen = options.tokenize?.maxLength ?? 512;
  const packing = options.packing === true;
  // A stream's padding saved is summed over the steps and printed at the end (positions, unpacked and packed).
  const streamPadding = { tokens: 0, unpacked: 0, packed: 0 };
  if (packing && !stream) {
    const f = paddingFractions(examples, o.batchSize, packLen);
    console.log(
      `[train] packing into rows of ${packLen} tokens: padding ${(100 * f.unpacked).toFixed(1)}% -> ` +
        `${(100 * f.packed).toFixed(1)}% of the positions`,
    );
  }
  const stepsPerEpoch = Math.max(1, Math.floor(examples.length / perStep));
  const totalSteps = options.steps ?? stepsPerEpoch * o.epochs;

  const params = model.trainableParams();
  const optimizer = typeof options.optimizer === "object" ? options.optimizer : await createOptimizer(
    options.optimizer ?? "adamw",
    { weightDecay: o.weightDecay },
    { ...options.galore, defaultRank: Math.max(1, Math.floor(model.config.hiddenSize / 4)) },
  );
  const ownOptimizer = typeof options.optimizer !== "object";
  const rand = o.shuffleSeed === false ? undefined : mulberry32(o.shuffleSeed);
  const indices = examples.map((_, i) => i);
  // The data order as indices, so that it can be saved; `shuffles` counts the reshuffles drawn.
  let orderIdx: number[] = [];
  let cursor = 0, shuffles = 0;
  const reshuffle = () => {
    orderIdx = rand ? shuffled(indices, rand) : indices.slice();
    cursor = 0;
    shuffles++;
  };
  const nextExamples = (n: number): Example[] => {
    const out: Example[] = [];
    while (out.length < n) {
      if (cursor >= orderIdx.length) reshuffle();
      out.push(examples[orderIdx[cursor++]]);
    }
    return out;
  };
  const divergence = resolveDivergence(options.divergence);
  // DyLoRA-like adapters train a different sub-model each step: their step losses differ by design,
  // so the spike check is off for them unless the caller set a factor (non-finite losses still stop).
  const variesPerStep = model.adapter !== undefined && adapterKind(model.adapter.type).variesPerStep;
  if (variesPerStep && options.divergence?.lossSpikeFactor === undefined) divergence.lossSpikeFactor = 0;
  const losses = new LossHistory(divergence);
  // What a resumed run must repeat for its history to equal an uninterrupted run's.
  const fingerprint: Record<string, unknown> = {
    totalSteps,
    batchSize: o.batchSize,
    gradAccumSteps: o.gradAccumSteps,
    lr: o.lr,
    schedule: o.schedule,
    warmupSteps: o.warmupSteps,
    weightDecay: o.weightDecay,
    maxGradNorm: o.maxGradNorm,
    shuffleSeed: stream ? false : o.shuffleSeed,
    mode: o.mode,
    ...(o.mode === "layerwise" ? { layerwiseClip: o.layerwiseClip } : {}),
    optimizer: optimizer.name,
    trainable: params.map((p) => p.name).join(","),
    data: stream ? "stream" : dataFingerprint(examples),
  };

  let history: StepRecord[] = [];
  let startStep = 1;
  if (options.resumeFrom !== undefined) {
    let where = String(options.resumeFrom);
    try {
      where = await resolveResumeDir(options.resumeFrom);
      const st = await readTrainingState(where);
      for (const [k, v] of Object.entries(fingerprint)) {
        if (JSON.stringify(st.json.fingerprint[k]) !== JSON.stringify(v)) {
          const show = (x: unknown) => k === "trainable" ? "(another set of parameters)" : JSON.stringify(x);
          throw new RangeError(
            `train: resumeFrom ${where} was saved with ${k} = ${show(st.json.fingerprint[k])}, this run has ${
              show(v)
            }; resume with the same model, data and options`,
          );
        }
      }
      if (!st.optimizer) {
        throw new RangeError(
          "holds no optimizer state (its optimizer could not export one), so the run cannot continue exactly",
        );
      }
      if (st.json.step > totalSteps) {
        throw new RangeError(`is at step ${st.json.step}, past this run's ${totalSteps} steps`);
      }
      // Everything is checked before the model changes: weights last.
      for (const p of params) {
        const t = st.trainable.get(p.name);
        if (!t || t.data.length !== p.variable.size) {
          throw new RangeError(`trainable.safetensors has no "${p.name}" of shape [${p.variable.shape}]`);
        }
        const bad = t.data.findIndex((v) => !Number.isFinite(v));
        if (bad >= 0) {
          throw new RangeError(`trainable.safetensors: "${p.name}" holds ${t.data[bad]} at element ${bad}`);
        }
      }
      // A moment reshaped with its size kept (e.g. transposed) would fail deep inside the first step.
      const paramShape = new Map(params.map((p) => [p.name, p.variable.shape]));
      for (const [name, t] of Object.entries(st.optimizer.tensors)) {
        const want = paramShape.get(name.slice(name.indexOf("/") + 1));
        const size = t.shape.reduce((a, b) => a * b, 1);
        if (want && size === want.reduce((a, b) => a * b, 1) && t.shape.join() !== want.join()) {
          throw new RangeError(
            `optimizer.safetensors: "${name}" has shape [${t.shape}] but the parameter has [${want}]`,
          );
        }
      }
      importOptimizerState(optimizer, st.optimizer);
      if (stream) {
        // A stream: skip (and check) the records the saved run consumed.
        if (!st.json.data.stream) throw new RangeError("holds no data.stream position (not a streamed run)");
        await stream.skip(st.json.data.stream);
      } else {
        // Data order: replay the shuffles (this also brings the shuffle RNG to the same point).
        if (st.json.data.shuffles > Math.ceil((st.json.step * perStep) / examples.length) + 1) {
          throw new RangeError(
            `data.shuffles ${st.json.data.shuffles} is more than ${st.json.step} steps can draw`,
          );
        }
        for (let i = 0; i < st.json.data.shuffles; i++) reshuffle();
        if (orderIdx.join() !== st.json.data.order.join() || st.json.data.cursor > orderIdx.length) {
          throw new RangeError("the data order differs from the saved one (other data?)");
        }
        cursor = st.json.data.cursor;
      }
      restoreLayerRng(model, st.json.layerRng);
      for (const p of params) {
        const t = st.trainable.get(p.name)!;
        tf.tidy(() => p.variable.assign(tf.tensor(t.data, p.variable.shape, "float32")));
      }
      // Per-step samplers (DyLoRA's rank) advance once per step: replay them.
      for (let s = 1; s <= st.json.step; s++) model.beginStep(s);
      for (const l of st.json.recentLosses) losses.push(l);
      history = st.json.history;
      startStep = st.json.step + 1;
    } catch (e) {
      if (ownOptimizer) optimizer.dispose();
      await stream?.close();
      const err = e as Error;
      if (!err.message.includes(where)) err.message = `train: resumeFrom ${where}: ${err.message}`;
      throw err;
    }
  }

  try {
    for (let step = startStep; step <= totalSteps; step++) {
      const t0 = performance.now();
      const lr = learningRateAt(step, {
        lr: o.lr,
        totalSteps,
        warmupSteps: o.warmupSteps,
        schedule: o.schedule,
      });
      model.setTraining(true);
      model.beginStep(step);
      const batch = stream ? await stream.take(perStep, `step ${step}`) : nextExamples(perStep);
      if (packing && stream) {
        const f = paddingFractions(batch, o.batchSize, packLen);
        streamPadding.tokens += f.tokens;
        streamPadding.unpacked += f.tokens / (1 - f.unpacked);
        streamPadding.packed += f.tokens / (1 - f.packed);
      }
      const micro = packing
        ? chunk(packExamples(batch, packLen), o.batchSize).map((r) => makePackedMicroBatch(r, padId))
        : chunk(batch, o.batchSize).map((g) => makeMicroBatch(g, padId));
      const label = `step ${step}`;
      const guard = losses.guard(step, lr);
      // tidy: a step that throws (out of memory, divergence) leaves no tensor behind.
      const run = () =>
        scoped(() =>
          runStep(model, params, micro, optimizer, {
            lr,
            maxGradNorm: o.maxGradNorm,
            mode: o.mode,
            label,
            guard,
            layerwiseClip: o.layerwiseClip,
            previousGradNorm: history.at(-1)?.gradNorm,
          })
        );
      const before = tf.memory().numBytes;
      let peakBytes = before;
      let result: ReturnType<typeof runStep>;
      if (!sync) {
        result = await runDeviceStep(model, params, micro, optimizer, {
          lr,
          maxGradNorm: o.maxGradNorm,
          label,
          guard,
        });
      } else if (o.measureMemory) {
        ({ result, peakBytes } = await profiled(run));
      } else {
        result = run();
      }
      const snapshot = memorySnapshot();
      const record: StepRecord = {
        step,
        totalSteps,
        loss: result.loss,
        lr,
        tokens: result.tokens,
        seconds: (performance.now() - t0) / 1000,
        gradNorm: result.gradNorm,
        memory: {
          ...snapshot,
          ...(o.measureMemory && sync ? { peakTensorBytes: peakBytes } : {}), // not measured on webgpu
          breakdown: memoryBreakdown(model, optimizer, {
            peakBytes,
            startBytes: before,
            gradientBytes: result.gradientBytes,
          }),
        },
      };
      model.setTraining(false);
      if (evalExamples && ((o.evalEvery > 0 && step % o.evalEvery === 0) || step === totalSteps)) {
        const ev = await evaluateLossAsync(model, evalExamples, { batchSize: o.batchSize, padId });
        record.evalLoss = ev.loss;
      }
      history.push(record);
      losses.push(result.loss);
      if (o.saveEvery > 0 && (step % o.saveEvery === 0 || step === totalSteps)) {
        const dir = `${o.outputDir}/step-${step}`;
        const state: TrainerStateJson = {
          format: "nbtune-training-state",
          version: 1,
          step,
          totalSteps,
          fingerprint,
          data: stream
            ? { order: [], cursor: 0, shuffles: 0, stream: stream.position() }
            : { order: orderIdx, cursor, shuffles },
          layerRng: snapshotLayerRng(model),
          recentLosses: losses.recent,
          hasOptimizerState: false,
          history,
        };
        // webgpu: the save reads weights and optimizer states synchronously; bring them to the host first.
        if (!sync) await prefetchVariables();
        const optState = exportOptimizerState(optimizer) ?? null;
        state.hasOptimizerState = optState !== null;
        await writeTrainingState(dir, model, state, optState);
        if (o.saveTotalLimit > 0) await pruneSaves(o.outputDir, o.saveTotalLimit, dir);
      }
      await options.onStep?.(record);
    }
  } finally {
    model.setTraining(false);
    if (ownOptimizer) optimizer.dispose();
    await stream?.close();
  }
  if (packing && stream && streamPadding.tokens > 0) {
    const pct = (positions: number) => (100 * (1 - streamPadding.tokens / positions)).toFixed(1);
    console.log(
      `[train] packed the stream into rows of ${packLen} tokens: padding ${
        pct(streamPadding.unpacked)
      }% -> ` +
        `${pct(streamPadding.packed)}% of the positions`,
    );
  }
  return history;
}

/** Number of trainable parameters of `model`. */
export function countTrainable(model: LlamaForCausalLM): number {
  return model.trainableParams().reduce((s, p) => s + p.variable.size, 0);
}
