/**
 * The other public functions whose options come from a schema, for the option-drift
 * test: each with the file and interface that document its options.
 * @module
 */
import type { AnyField } from "../../lib/options/schema.ts";

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
export const EXTRA_SCHEMAS: DocumentedSchema[] = [];
