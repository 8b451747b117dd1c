/**
 * nbtune: notebook-first, memory-efficient LLM fine-tuning in TypeScript on Deno.
 *
 * Load a Llama-family checkpoint (optionally quantized to 4 bits), attach
 * adapters, train with exact gradient accumulation or GaLore, and watch loss and
 * memory live in a Jupyter notebook running Deno's kernel.
 *
 * @example
 * ```ts
 * import { EMBEDDED_MODEL_DIR, initEngine, loadModel, loadTokenizer, generate } from "./mod.ts";
 * await initEngine();
 * const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
 * const model = await loadModel(EMBEDDED_MODEL_DIR);
 * const text = generate(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8 });
 * if (typeof text !== "string") throw new Error("expected text");
 * model.dispose();
 * ```
 *
 * This module exports what a notebook user calls; everything else (layers, kernels,
 * file formats, registries, schemas) stays importable by path from `lib/`, e.g.
 * `import { ADAPTER_KINDS } from "./lib/adapters/registry.ts"`. The exported names are
 * pinned by `tests/mod_exports_test.ts`.
 * @module
 */

// engine
export { engineInfo, initEngine } from "./lib/engine/backend.ts";
export type { BackendName, EngineInfo, EngineOptions } from "./lib/engine/backend.ts";
export { HeapOutOfMemoryError, heapStats } from "./lib/engine/heap_guard.ts";
export type { HeapStats } from "./lib/engine/heap_guard.ts";
export { memorySnapshot } from "./lib/engine/memory.ts";
export type { MemoryRecord } from "./lib/engine/memory.ts";

// tokenizer and data files
export { loadTokenizer } from "./lib/io/tokenizer.ts";
export type { Tokenizer } from "./lib/io/tokenizer.ts";
export type { ChatMessage } from "./lib/io/chat_template.ts";
export { readJsonl, streamJsonl } from "./lib/train/recipe.ts";

// models
export { loadModel } from "./lib/models/load_model.ts";
export type { LoadModelOptions } from "./lib/models/load_model.ts";
export { initModel } from "./lib/models/init_model.ts";
export type { InitModelOptions } from "./lib/models/init_model.ts";
export type { LlamaForCausalLM } from "./lib/models/llama.ts";
export { saveCheckpoint } from "./lib/models/save_model.ts";
export type { SaveCheckpointOptions } from "./lib/models/save_model.ts";
export { exportMerged } from "./lib/models/export_merged.ts";
export type { ExportMergedOptions, ExportMergedResult } from "./lib/models/export_merged.ts";
export { chat, generate, generateAsync } from "./lib/models/generate.ts";
export type { GenerateOptions, TokenEvent } from "./lib/models/generate.ts";
export { EMBEDDED_DATA_DIR, EMBEDDED_MODEL_DIR } from "./lib/models/embedded.ts";

// 4-bit quantization
export { quantizeCheckpoint } from "./lib/quant/quantize_checkpoint.ts";
export type { QuantizeCheckpointOptions } from "./lib/quant/quantize_checkpoint.ts";
export type { QuantizeOption } from "./lib/quant/quantize_option.ts";
export type { ComputeDtype } from "./lib/quant/compute_dtype.ts";
export { estimateBitsPerParam } from "./lib/quant/storage.ts";

// adapters
export {
  attachDyLoRA,
  attachLoRA,
  detachAdapter,
  setRank,
  trainableParametersLine,
} from "./lib/adapters/attach.ts";
export type { DyLoRAConfig, LoRAConfig, TargetModules } from "./lib/adapters/attach.ts";
export { mergeAdapter, unmergeAdapter } from "./lib/adapters/merge.ts";
export type { MergeOptions } from "./lib/adapters/merge.ts";
export { exportRank, loadAdapter, saveAdapter } from "./lib/adapters/peft_format.ts";
export type { SaveAdapterOptions } from "./lib/adapters/peft_format.ts";
export { rankSweep } from "./lib/adapters/rank_sweep.ts";
export type { RankSweepOptions, RankSweepResult, RankSweepRow } from "./lib/adapters/rank_sweep.ts";

// optimizers
export type { Optimizer, ParamGrad } from "./lib/optim/optimizer.ts";
export { createAdamW } from "./lib/optim/adamw.ts";
export type { AdamWOptions } from "./lib/optim/adamw.ts";
export { createAdamW8bit } from "./lib/optim/adamw8bit.ts";
export type { AdamW8bitOptions } from "./lib/optim/adamw8bit.ts";
export { createGaLoreAdamW } from "./lib/optim/galore_adamw.ts";
export type { GaLoreAdamWOptions } from "./lib/optim/galore_adamw.ts";
export { createLion } from "./lib/optim/lion.ts";
export type { LionOptions } from "./lib/optim/lion.ts";
export { OPTIMIZER_NAMES } from "./lib/optim/registry.ts";
export type { OptimizerName } from "./lib/optim/registry.ts";

// training
export { countTrainable, train } from "./lib/train/trainer.ts";
export type { TrainOptions } from "./lib/train/trainer.ts";
export type { StepRecord } from "./lib/train/types.ts";
export { DivergenceError } from "./lib/train/divergence.ts";
export type { DivergenceInfo, DivergenceOptions } from "./lib/train/divergence.ts";
export { listSaves } from "./lib/train/training_state.ts";
export { countTargets, tokenizeRecords } from "./lib/train/data.ts";
export type { TokenizeOptions, TrainingRecord } from "./lib/train/data.ts";
export { makeMicroBatch } from "./lib/train/batching.ts";
export { accumulateGradients } from "./lib/train/accumulate.ts";
export { learningRateAt } from "./lib/train/schedule.ts";
export { evaluateLoss, evaluateLossAsync } from "./lib/train/evaluate.ts";
export type { EvalResult, EvaluateOptions, ProgressSink } from "./lib/train/evaluate.ts";
export { exactMatch } from "./lib/train/score.ts";
export type { ExactMatchOptions, ExactMatchResult } from "./lib/train/score.ts";

// memory planning
export { presetNames } from "./lib/plan/presets.ts";
export type { PlanSpec } from "./lib/plan/plan_spec.ts";
export { planMemory } from "./lib/plan/plan_memory.ts";
export type { MemoryBreakdown, MemoryPlan } from "./lib/plan/plan_memory.ts";
export { fitPlan } from "./lib/plan/fit_plan.ts";
export type { FitPlanOptions, FitSuggestion } from "./lib/plan/fit_plan.ts";
export { formatPlanTable, planChartSpec, planTable } from "./lib/plan/plan_table.ts";
export { planForModel } from "./lib/plan/plan_for_model.ts";
export type { TrainerPlanOptions } from "./lib/plan/plan_for_model.ts";
export { estimateTrainingMemory } from "./lib/plan/engine_estimate.ts";
export type { EngineEstimate } from "./lib/plan/engine_estimate.ts";

// notebook helpers
export { display, isJupyter } from "./lib/notebook/display.ts";
export type { RichObject } from "./lib/notebook/display.ts";
export { plotlyChart, plotlySetup, writeHtml } from "./lib/notebook/plotly.ts";
export type { PlotlyFigure } from "./lib/notebook/plotly.ts";
export { lossChart, memoryChart, plotLoss, plotMemory, trainingChart } from "./lib/notebook/charts.ts";
export type { ChartOptions } from "./lib/notebook/charts.ts";
export { liveTrainingChart } from "./lib/notebook/live_chart.ts";
export type { LiveTrainingChart } from "./lib/notebook/live_chart.ts";
export { progress } from "./lib/notebook/progress.ts";
export { formatBytes, showMemory, table } from "./lib/notebook/tables.ts";
export type { TableOptions } from "./lib/notebook/tables.ts";
export { plotPlans, showPlanTable } from "./lib/notebook/plan_chart.ts";
export { rankSweepChart } from "./lib/notebook/rank_sweep_chart.ts";
export { syntheticHistory } from "./lib/notebook/synthetic.ts";
export { memoryPartsChart, memoryTotalChart, reportLossChart } from "./lib/notebook/report_charts.ts";
export type { RankSweepChartOptions } from "./lib/notebook/rank_sweep_chart.ts";
