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
];
