/**
 * Pins the public API: the names `mod.ts` exports (what a notebook user calls). Adding or
 * removing a public name is a deliberate change to this list; internals stay importable
 * by path from `lib/`.
 */
import { assert, assertEquals } from "./_assert.ts";

/** Runtime exports (functions, classes, constants), sorted. */
const VALUES = [
  "DivergenceError",
  "EMBEDDED_DATA_DIR",
  "EMBEDDED_MODEL_DIR",
  "HeapOutOfMemoryError",
  "OPTIMIZER_NAMES",
  "accumulateGradients",
  "attachDyLoRA",
  "attachLoRA",
  "countTargets",
  "countTrainable",
  "chat",
  "createAdamW",
  "createAdamW8bit",
  "createGaLoreAdamW",
  "createLion",
  "detachAdapter",
  "display",
  "isJupyter",
  "memoryPartsChart",
  "memoryTotalChart",
  "reportLossChart",
  "syntheticHistory",
  "engineInfo",
  "estimateBitsPerParam",
  "estimateTrainingMemory",
  "evaluateLoss",
  "evaluateLossAsync",
  "exactMatch",
  "exportMerged",
  "exportRank",
  "fitPlan",
  "formatBytes",
  "formatPlanTable",
  "generate",
  "generateAsync",
  "heapStats",
  "initEngine",
  "initModel",
  "learningRateAt",
  "listSaves",
  "liveTrainingChart",
  "loadAdapter",
  "loadModel",
  "loadTokenizer",
  "lossChart",
  "makeMicroBatch",
  "memoryChart",
  "memorySnapshot",
  "mergeAdapter",
  "planChartSpec",
  "planForModel",
  "planMemory",
  "planTable",
  "plotLoss",
  "plotMemory",
  "plotPlans",
  "plotlyChart",
  "plotlySetup",
  "presetNames",
  "progress",
  "quantizeCheckpoint",
  "rankSweep",
  "rankSweepChart",
  "readJsonl",
  "saveAdapter",
  "saveCheckpoint",
  "setRank",
  "showMemory",
  "showPlanTable",
  "streamJsonl",
  "table",
  "tokenizeRecords",
  "train",
  "trainableParametersLine",
  "trainingChart",
  "unmergeAdapter",
  "writeHtml",
];

/** Type-only exports, sorted. */
const TYPES = [
  "AdamW8bitOptions",
  "AdamWOptions",
  "BackendName",
  "ChartOptions",
  "ChatMessage",
  "ComputeDtype",
  "DivergenceInfo",
  "DivergenceOptions",
  "DyLoRAConfig",
  "EngineEstimate",
  "EngineInfo",
  "EngineOptions",
  "EvalResult",
  "EvaluateOptions",
  "ExactMatchOptions",
  "ExactMatchResult",
  "ExportMergedOptions",
  "ExportMergedResult",
  "FitPlanOptions",
  "FitSuggestion",
  "GaLoreAdamWOptions",
  "GenerateOptions",
  "HeapStats",
  "InitModelOptions",
  "LionOptions",
  "LiveTrainingChart",
  "LlamaForCausalLM",
  "LoRAConfig",
  "LoadModelOptions",
  "MemoryBreakdown",
  "MemoryPlan",
  "MemoryRecord",
  "MergeOptions",
  "Optimizer",
  "OptimizerName",
  "ParamGrad",
  "PlanSpec",
  "PlotlyFigure",
  "ProgressSink",
  "QuantizeCheckpointOptions",
  "QuantizeOption",
  "RankSweepChartOptions",
  "RankSweepOptions",
  "RankSweepResult",
  "RankSweepRow",
  "RichObject",
  "SaveAdapterOptions",
  "SaveCheckpointOptions",
  "StepRecord",
  "TableOptions",
  "TargetModules",
  "TokenEvent",
  "TokenizeOptions",
  "Tokenizer",
  "TrainOptions",
  "TrainerPlanOptions",
  "TrainingRecord",
];

const SOURCE = await Deno.readTextFile(new URL("../mod.ts", import.meta.url));

Deno.test("mod.ts exports exactly the pinned runtime names", async () => {
  const mod = await import("../mod.ts");
  assertEquals(Object.keys(mod).sort(), [...VALUES].sort());
});

Deno.test("mod.ts exports exactly the pinned type names, each by name (no export *)", () => {
  assert(!/export\s*\*/.test(SOURCE), "mod.ts must name every export (no `export *`)");
  const types = [...SOURCE.matchAll(/export type \{([^}]*)\}/g)]
    .flatMap((m) => m[1].split(","))
    .map((n) => n.trim())
    .filter((n) => n);
  assertEquals(types.sort(), [...TYPES].sort());
});

Deno.test("every public name is documented where it is defined (deno doc finds it)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", "mod.ts"],
    cwd: new URL("..", import.meta.url),
  })
    .output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  // deno doc --json: { nodes: { "<mod.ts URL>": { symbols: [{ name, declarations: [{ jsDoc }] }] } } }
  const doc = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    nodes: Record<string, { symbols: { name: string; declarations: { jsDoc?: { doc?: string } }[] }[] }>;
  };
  const symbols = Object.values(doc.nodes).flatMap((f) => f.symbols);
  const documented = new Set(
    symbols.filter((s) => s.declarations.some((d) => d.jsDoc?.doc?.trim())).map((s) => s.name),
  );
  const undocumented = [...VALUES, ...TYPES].filter((n) => !documented.has(n));
  assertEquals(undocumented, [], "public names without a doc comment");
});
