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
 * @module
 */

// engine
export {
  type BackendName,
  type EngineInfo,
  engineInfo,
  type EngineOptions,
  initEngine,
} from "./lib/engine/backend.ts";
export {
  HeapOutOfMemoryError,
  type HeapStats,
  heapStats,
  MAX_WASM_HEAP_BYTES,
} from "./lib/engine/heap_guard.ts";
export { memorySnapshot } from "./lib/engine/memory.ts";

// io
export * from "./lib/io/format_error.ts";
export * from "./lib/io/dtypes.ts";
export * from "./lib/io/safetensors_reader.ts";
export * from "./lib/io/safetensors_writer.ts";
export * from "./lib/io/checkpoint_files.ts";
export * from "./lib/io/tokenizer.ts";
export * from "./lib/io/chat_template.ts";
export * from "./lib/io/gguf.ts";

// models
export * from "./lib/models/llama_config.ts";
export * from "./lib/models/linear.ts";
export * from "./lib/models/rms_norm.ts";
export * from "./lib/models/rope.ts";
export * from "./lib/models/llama_block.ts";
export * from "./lib/models/llama.ts";
export * from "./lib/models/load_model.ts";
export * from "./lib/models/init_model.ts";
export * from "./lib/models/save_model.ts";
export * from "./lib/models/generate.ts";
export * from "./lib/models/embedded.ts";

// 4-bit quantization
export * from "./lib/quant/codebooks.ts";
export * from "./lib/quant/blockwise_4bit.ts";
export * from "./lib/quant/double_quant.ts";
export * from "./lib/quant/storage.ts";
export * from "./lib/quant/bnb_format.ts";
export * from "./lib/quant/gptq.ts";
export * from "./lib/quant/quantized_linear.ts";
export * from "./lib/quant/quantized_loaders.ts";
export * from "./lib/quant/quantize_checkpoint.ts";

// adapters
export * from "./lib/adapters/lora.ts";
export * from "./lib/adapters/dylora.ts";
export * from "./lib/adapters/attach.ts";
export * from "./lib/adapters/merge.ts";
export * from "./lib/adapters/peft_format.ts";
export * from "./lib/adapters/rank_sweep.ts";

// optimizers
export type { Optimizer, ParamGrad } from "./lib/optim/optimizer.ts";
export * from "./lib/optim/adamw.ts";
export * from "./lib/optim/adamw8bit.ts";
export * from "./lib/optim/galore_projector.ts";
export * from "./lib/optim/galore_adamw.ts";

// training
export * from "./lib/train/types.ts";
export * from "./lib/train/data.ts";
export * from "./lib/train/batching.ts";
export * from "./lib/train/loss.ts";
export * from "./lib/train/accumulate.ts";
export * from "./lib/train/schedule.ts";
export * from "./lib/train/evaluate.ts";
export * from "./lib/train/optimizers.ts";
export * from "./lib/train/trainer.ts";
export * from "./lib/train/score.ts";
export * from "./lib/train/recipe.ts";

// memory planning
export * from "./lib/plan/presets.ts";
export * from "./lib/plan/model_shape.ts";
export * from "./lib/plan/plan_spec.ts";
export * from "./lib/plan/plan_memory.ts";
export * from "./lib/plan/fit_plan.ts";
export * from "./lib/plan/plan_table.ts";
export * from "./lib/plan/plan_for_model.ts";
export * from "./lib/plan/engine_estimate.ts";

// notebook helpers
export * from "./lib/notebook/display.ts";
export * from "./lib/notebook/plotly.ts";
export * from "./lib/notebook/charts.ts";
export * from "./lib/notebook/live_chart.ts";
export * from "./lib/notebook/progress.ts";
export * from "./lib/notebook/tables.ts";
export * from "./lib/notebook/plan_chart.ts";
