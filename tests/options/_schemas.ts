/**
 * The other public functions whose options come from a schema, for the option-drift
 * test: each with the file and interface that document its options.
 * @module
 */
import type { AnyField } from "../../lib/options/schema.ts";
import { generateSchema } from "../../lib/models/generate.ts";
import { fitPlanSchema } from "../../lib/plan/fit_plan.ts";
import { planTableSchema } from "../../lib/plan/plan_table.ts";
import { adamWSchema } from "../../lib/optim/adamw.ts";
import { adamW8bitSchema } from "../../lib/optim/adamw8bit.ts";
import { galoreAdamWSchema } from "../../lib/optim/galore_adamw.ts";
import { galoreProjectorSchema, topSubspaceSchema } from "../../lib/optim/galore_projector.ts";
import { lionSchema } from "../../lib/optim/lion.ts";
import { liveTrainingChartSchema } from "../../lib/notebook/live_chart.ts";
import { tableSchema } from "../../lib/notebook/tables.ts";
import { displaySchema } from "../../lib/notebook/display.ts";
import { chartSchema } from "../../lib/notebook/charts.ts";
import { plotPlansSchema, showPlanTableSchema } from "../../lib/notebook/plan_chart.ts";
import { syntheticHistorySchema } from "../../lib/notebook/synthetic.ts";
import { plotlyBundleSchema, writeHtmlSchema } from "../../lib/notebook/plotly.ts";
import { progressSchema } from "../../lib/notebook/progress.ts";
import { writeSafetensorsSchema } from "../../lib/io/safetensors_writer.ts";
import { writeShardedSchema } from "../../lib/io/checkpoint_files.ts";
import { renderChatTemplateSchema } from "../../lib/io/chat_template.ts";
import {
  applyChatTemplateSchema,
  decodeSchema,
  encodeSchema,
  loadTokenizerSchema,
} from "../../lib/io/tokenizer.ts";
import { dequantizeGptqSchema, packGptqSchema } from "../../lib/quant/gptq.ts";
import { parseBnbSchema } from "../../lib/quant/bnb_format.ts";
import { engineSchema } from "../../lib/engine/backend.ts";
import { blasSchema } from "../../lib/engine/blas.ts";
import { matmulKernelsSchema } from "../../lib/engine/matmul_kernels.ts";
import { mergeSchema } from "../../lib/adapters/merge.ts";
import { saveAdapterSchema } from "../../lib/adapters/peft_format.ts";
import { rankSweepSchema } from "../../lib/adapters/rank_sweep.ts";
import { initModelSchema } from "../../lib/models/init_model.ts";
import { saveCheckpointSchema } from "../../lib/models/save_model.ts";
import { exportMergedSchema } from "../../lib/models/export_merged.ts";
import { evaluateSchema } from "../../lib/train/evaluate.ts";
import { exactMatchSchema } from "../../lib/train/score.ts";
import { rankSweepChartSchema } from "../../lib/notebook/rank_sweep_chart.ts";
import { trainByteLevelBpeSchema } from "../../scripts/train_tokenizer.ts";
import { matmulBenchSchema } from "../../bench/matmul_bench.ts";
import { perplexityReportSchema, quantBenchSchema } from "../../bench/quant_bench.ts";

/** A schema and where its options are documented. */
export interface DocumentedSchema {
  schema: {
    fn: string;
    fields: Readonly<Record<string, AnyField>>;
    renamed: Readonly<Record<string, string>>;
    parse(options: unknown): unknown;
  };
  file: string;
  iface: string;
}

/** Schemas of the helpers outside training, quantization, adapters and planning. */
export const EXTRA_SCHEMAS: DocumentedSchema[] = [
  { schema: generateSchema, file: "lib/models/generate.ts", iface: "GenerateOptions" },
  { schema: fitPlanSchema, file: "lib/plan/fit_plan.ts", iface: "FitPlanOptions" },
  { schema: planTableSchema, file: "lib/plan/plan_table.ts", iface: "PlanTableOptions" },
  { schema: adamWSchema, file: "lib/optim/adamw.ts", iface: "AdamWOptions" },
  { schema: adamW8bitSchema, file: "lib/optim/adamw8bit.ts", iface: "AdamW8bitOptions" },
  { schema: galoreAdamWSchema, file: "lib/optim/galore_adamw.ts", iface: "GaLoreAdamWOptions" },
  { schema: galoreProjectorSchema, file: "lib/optim/galore_projector.ts", iface: "GaLoreProjectorOptions" },
  { schema: topSubspaceSchema, file: "lib/optim/galore_projector.ts", iface: "TopSubspaceOptions" },
  { schema: lionSchema, file: "lib/optim/lion.ts", iface: "LionOptions" },
  { schema: liveTrainingChartSchema, file: "lib/notebook/live_chart.ts", iface: "LiveTrainingChartOptions" },
  { schema: tableSchema, file: "lib/notebook/tables.ts", iface: "TableOptions" },
  { schema: displaySchema, file: "lib/notebook/display.ts", iface: "DisplayOptions" },
  {
    schema: chartSchema("lossChart", "Training loss", 420),
    file: "lib/notebook/charts.ts",
    iface: "ChartOptions",
  },
  { schema: plotPlansSchema, file: "lib/notebook/plan_chart.ts", iface: "PlotPlansOptions" },
  { schema: showPlanTableSchema, file: "lib/notebook/plan_chart.ts", iface: "PlanTableDisplayOptions" },
  { schema: syntheticHistorySchema, file: "lib/notebook/synthetic.ts", iface: "SyntheticHistoryOptions" },
  { schema: plotlyBundleSchema, file: "lib/notebook/plotly.ts", iface: "PlotlyBundleOptions" },
  { schema: writeHtmlSchema, file: "lib/notebook/plotly.ts", iface: "WriteHtmlOptions" },
  { schema: progressSchema, file: "lib/notebook/progress.ts", iface: "ProgressOptions" },
  { schema: writeSafetensorsSchema, file: "lib/io/safetensors_writer.ts", iface: "WriteSafetensorsOptions" },
  { schema: writeShardedSchema, file: "lib/io/checkpoint_files.ts", iface: "WriteShardedOptions" },
  { schema: renderChatTemplateSchema, file: "lib/io/chat_template.ts", iface: "RenderChatTemplateOptions" },
  { schema: loadTokenizerSchema, file: "lib/io/tokenizer.ts", iface: "LoadTokenizerOptions" },
  { schema: encodeSchema, file: "lib/io/tokenizer.ts", iface: "EncodeOptions" },
  { schema: decodeSchema, file: "lib/io/tokenizer.ts", iface: "DecodeOptions" },
  { schema: applyChatTemplateSchema, file: "lib/io/tokenizer.ts", iface: "ApplyChatTemplateOptions" },
  { schema: dequantizeGptqSchema, file: "lib/quant/gptq.ts", iface: "DequantizeGptqOptions" },
  { schema: packGptqSchema, file: "lib/quant/gptq.ts", iface: "PackGptqOptions" },
  { schema: parseBnbSchema, file: "lib/quant/bnb_format.ts", iface: "ParseBnbOptions" },
  { schema: engineSchema, file: "lib/engine/backend.ts", iface: "EngineOptions" },
  { schema: blasSchema, file: "lib/engine/blas.ts", iface: "BlasOptions" },
  { schema: matmulKernelsSchema, file: "lib/engine/matmul_kernels.ts", iface: "MatmulKernelOptions" },
  { schema: mergeSchema, file: "lib/adapters/merge.ts", iface: "MergeOptions" },
  { schema: saveAdapterSchema, file: "lib/adapters/peft_format.ts", iface: "SaveAdapterOptions" },
  { schema: rankSweepSchema, file: "lib/adapters/rank_sweep.ts", iface: "RankSweepOptions" },
  { schema: initModelSchema, file: "lib/models/init_model.ts", iface: "InitModelOptions" },
  { schema: saveCheckpointSchema, file: "lib/models/save_model.ts", iface: "SaveCheckpointOptions" },
  { schema: exportMergedSchema, file: "lib/models/export_merged.ts", iface: "ExportMergedOptions" },
  { schema: evaluateSchema, file: "lib/train/evaluate.ts", iface: "EvaluateOptions" },
  { schema: exactMatchSchema, file: "lib/train/score.ts", iface: "ExactMatchOptions" },
  { schema: rankSweepChartSchema, file: "lib/notebook/rank_sweep_chart.ts", iface: "RankSweepChartOptions" },
  { schema: trainByteLevelBpeSchema, file: "scripts/train_tokenizer.ts", iface: "TrainByteLevelBpeOptions" },
  { schema: matmulBenchSchema, file: "bench/matmul_bench.ts", iface: "MatmulBenchOptions" },
  { schema: quantBenchSchema, file: "bench/quant_bench.ts", iface: "QuantBenchOptions" },
  { schema: perplexityReportSchema, file: "bench/quant_bench.ts", iface: "PerplexityReportOptions" },
];
