/**
 * The schema of `train()`'s options: validation, defaults and messages all come from
 * it, and `satisfies FieldsOf<TrainOptions>` makes TypeScript flag an option that is
 * documented in {@linkcode TrainOptions} but missing here (how `saveEvery` once got lost),
 * or accepted here but not documented there.
 * @module
 */
import {
  array,
  boolean,
  custom,
  defineOptions,
  either,
  type FieldsOf,
  integer,
  number,
  object,
  oneOf,
  type Resolved,
  string,
} from "../options/schema.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import type { TokenizeOptions, TrainingRecord } from "./data.ts";
import { type GaLoreTrainOptions, OPTIMIZER_NAMES } from "./optimizers.ts";
import { LAYERWISE_CLIPS } from "./layerwise_clip.ts";
import type { TrainOptions } from "./trainer.ts";
import type { StepRecord } from "./types.ts";
import { divergenceFields } from "./divergence.ts";

/** Schedules after warmup. */
export const SCHEDULES = ["cosine", "linear", "constant"] as const;

/** Fields of `tokenize` (train's `tokenize` option). */
export const tokenizeFields = {
  maxLength: integer("Longest sequence kept (tokens).", { min: 1, default: 512 }),
  truncation: oneOf(
    'Which side is cut when too long ("left" keeps the end, like the QLoRA seed).',
    ["left", "right"] as const,
    { default: "left" },
  ),
  addEos: boolean("Append eos after text / completion.", { default: true }),
} satisfies FieldsOf<TokenizeOptions>;

/** Fields of `galore` (train's and recipes' GaLore settings). */
export const galoreFields = {
  r: integer("Projection rank. Default: floor(hidden / 4).", { min: 1 }),
  updateProjGap: integer("Steps between projector refreshes.", { min: 1, default: 200 }),
  scale: number("Update scale (like LoRA's alpha).", { above: 0, default: 0.25 }),
  projType: oneOf(
    "Which side to project.",
    ["std", "reverse_std", "left", "right", "full"] as const,
    { default: "std" },
  ),
  layerwise: boolean("Update each block as soon as its gradients exist (no accumulation).", {
    default: false,
  }),
  residual: boolean("Also apply the gradient outside the subspace, scaled like Fira (no extra state).", {
    default: false,
  }),
} satisfies FieldsOf<GaLoreTrainOptions>;

/** Old GaLore option names and their new ones. */
export const GALORE_RENAMED: Readonly<Record<string, string>> = { rank: "r" };

const isFunction = (v: unknown) => typeof v === "function";

/** Fields of `train()`'s options, in the order they are documented. */
export const trainFields = {
  tokenizer: custom<Tokenizer>(
    "Tokenizer for text / prompt / messages records.",
    "a Tokenizer (from loadTokenizer)",
    (v) => typeof v === "object" && v !== null && typeof (v as Tokenizer).encode === "function",
    { example: { encode: () => [] } },
  ),
  batchSize: integer("Examples per micro-batch.", { min: 1, default: 4 }),
  gradAccumSteps: integer("Micro-batches per optimizer step.", { min: 1, default: 1 }),
  optimizer: either("Optimizer name or an optimizer object.", [
    oneOf("Optimizer name.", OPTIMIZER_NAMES),
    custom<Optimizer>(
      "An optimizer object.",
      "an Optimizer (with step, stateBytes and dispose)",
      (v) => typeof v === "object" && v !== null && typeof (v as Optimizer).step === "function",
      { example: { name: "x", step: () => {}, stateBytes: () => 0, dispose: () => {} } },
    ),
  ], { default: "adamw" }),
  galore: object('GaLore settings (for optimizer "galore" / "galore8bit").', galoreFields, {
    renamed: GALORE_RENAMED,
  }),
  lr: number("Peak learning rate.", { above: 0, default: 2e-4 }),
  weightDecay: number("Decoupled weight decay.", { min: 0, default: 0 }),
  schedule: oneOf("LR schedule after warmup.", SCHEDULES, { default: "cosine" }),
  warmupSteps: integer("Linear warmup steps.", { min: 0, default: 0 }),
  steps: integer("Optimizer steps to run (takes precedence over epochs).", { min: 1 }),
  epochs: integer("Passes over the data when steps is not given.", { min: 1, default: 1 }),
  maxGradNorm: number("Clip the global gradient norm to this value (0 = off).", { min: 0, default: 1 }),
  tokenize: object("Tokenization (max length, truncation side, eos).", tokenizeFields, { filled: true }),
  evalData: array(
    "Held-out records for periodic eval.",
    custom<TrainingRecord>(
      "A training record.",
      "a record object",
      (v) => typeof v === "object" && v !== null && !Array.isArray(v),
      { example: { ids: [1, 2] } },
    ),
  ),
  evalEvery: integer("Evaluate every N steps (and at the end); 0 = only at the end.", { min: 0, default: 0 }),
  shuffleSeed: either("Shuffle each epoch with this seed; false keeps the order.", [
    integer("Seed.", { min: 0 }),
    oneOf("Keep the order.", [false] as const),
  ], { default: 0 }),
  gradientCheckpointing: boolean("Keep only block inputs in forward; recompute each block in backward.", {
    default: false,
  }),
  packing: boolean(
    "Pack examples end to end into rows of tokenize.maxLength (block-diagonal mask, positions restarting).",
    { default: false },
  ),
  layerwise: boolean(
    "Step each block's parameters during backward (needs gradAccumSteps 1; clips as layerwiseClip says). galore.layerwise sets it too.",
  ),
  layerwiseClip: oneOf(
    "Layer-wise clipping to maxGradNorm: exact norm from a norm-only prepass, the previous step's norm, or per block.",
    LAYERWISE_CLIPS,
    { default: "prepass" },
  ),
  measureMemory: boolean("Measure the peak memory of each step with tf.profile.", { default: true }),
  saveEvery: integer("Save every N steps (and at the end) into outputDir/step-N; 0 = never.", {
    min: 0,
    default: 0,
  }),
  outputDir: string("Folder for saveEvery saves.", { default: "out/checkpoints", nonEmpty: true }),
  saveTotalLimit: integer("Keep the last K step-N saves in outputDir (and the best by eval loss); 0 = all.", {
    min: 0,
    default: 0,
  }),
  resumeFrom: string("Continue from a step-N training state, or from outputDir's latest.", {
    nonEmpty: true,
  }),
  divergence: object("The divergence guard (non-finite loss or gradients, loss spikes).", divergenceFields),
  onStep: custom<(record: StepRecord) => void | Promise<void>>(
    "Called after every optimizer step.",
    "a function",
    isFunction,
    { example: () => {} },
  ),
} satisfies FieldsOf<TrainOptions>;

/**
 * The schema of `train()`'s options.
 * @example
 * ```ts
 * import { trainOptionsSchema } from "./train_options.ts";
 * const o = trainOptionsSchema.parse({ saveEvery: 10, tokenize: { maxLength: 64 } });
 * if (o.batchSize !== 4 || o.saveEvery !== 10 || o.tokenize.truncation !== "left") throw new Error("defaults");
 * let msg = "";
 * try { trainOptionsSchema.parse({ galore: { rank: 8 } }); } catch (e) { msg = (e as Error).message; }
 * if (msg !== 'train: option "galore.rank" was renamed to "r"') throw new Error(msg);
 * ```
 */
export const trainOptionsSchema = defineOptions("train", trainFields, {
  renamed: { galoreRank: "galore.r", gradientAccumulationSteps: "gradAccumSteps", learningRate: "lr" },
});

/** `train()`'s options with defaults filled in. */
export type ParsedTrainOptions = Resolved<typeof trainFields>;
