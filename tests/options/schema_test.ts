import { assertEquals, assertThrows } from "../_assert.ts";
import {
  array,
  boolean,
  custom,
  defineOptions,
  either,
  integer,
  number,
  object,
  oneOf,
  string,
} from "../../lib/options/schema.ts";

const schema = defineOptions("train", {
  lr: number("Peak learning rate.", { above: 0, default: 2e-4 }),
  steps: integer("Optimizer steps.", { min: 1 }),
  schedule: oneOf("LR schedule.", ["cosine", "linear"] as const, { default: "cosine" }),
  layerwise: boolean("Layer-wise updates.", { default: false }),
  outputDir: string("Save folder.", { default: "out/checkpoints" }),
  tokenize: object("Tokenization.", {
    maxLength: integer("Longest sequence.", { min: 1, default: 512 }),
    truncation: oneOf("Side.", ["left", "right"] as const, { default: "right" }),
  }, { filled: true }),
  targetModules: array("Layers.", string("A name."), { minLength: 1 }),
  shuffleSeed: either("Seed or false.", [integer("Seed.", { min: 0 }), oneOf("Off.", [false] as const)], {
    default: 0,
  }),
  onStep: custom<(r: unknown) => void>("Callback.", "a function", (v) => typeof v === "function", {
    example: () => {},
  }),
}, { renamed: { learningRate: "lr" } });

Deno.test("defineOptions() fills defaults, including nested ones, and keeps given values", () => {
  const r = schema.parse(undefined);
  assertEquals(r.lr, 2e-4);
  assertEquals(r.steps, undefined);
  assertEquals(r.tokenize, { maxLength: 512, truncation: "right" });
  assertEquals(schema.parse({ tokenize: { maxLength: 8 } }).tokenize, { maxLength: 8, truncation: "right" });
  assertEquals(schema.parse({ shuffleSeed: false }).shuffleSeed, false);
  assertEquals(schema.parse({ shuffleSeed: 3 }).shuffleSeed, 3);
});

Deno.test("errors name the function and the option path and say what was received", () => {
  assertThrows(
    () => schema.parse({ tokenize: { maxLength: 0 } }),
    RangeError,
    'train: option "tokenize.maxLength" must be an integer >= 1, received 0',
  );
  assertThrows(
    () => schema.parse({ steps: 1.5 }),
    RangeError,
    'option "steps" must be an integer >= 1, received 1.5',
  );
  assertThrows(
    () => schema.parse({ lr: -1 }),
    RangeError,
    'option "lr" must be a finite number > 0, received -1',
  );
  assertThrows(
    () => schema.parse({ lr: NaN }),
    TypeError,
    'option "lr" must be a finite number > 0, received NaN',
  );
  assertThrows(() => schema.parse({ schedule: "cos" }), RangeError, 'must be one of "cosine", "linear"');
  assertThrows(() => schema.parse({ schedule: 3 }), TypeError, 'must be one of "cosine", "linear"');
  assertThrows(() => schema.parse({ targetModules: [] }), RangeError, "an array of at least 1");
  assertThrows(
    () => schema.parse({ targetModules: ["q", 1] }),
    TypeError,
    '"targetModules[1]" must be a string',
  );
  assertThrows(() => schema.parse({ onStep: "f" }), TypeError, 'option "onStep" must be a function');
  assertThrows(() => schema.parse({ shuffleSeed: -1 }), RangeError, "an integer >= 0, received -1");
  assertThrows(() => schema.parse(3), TypeError, "train: options must be an object, received 3");
  assertThrows(() => schema.parse({ tokenize: '{"maxLength":3}' }), TypeError, "JSON given as a string");
});

Deno.test("a number given as a string is pointed out", () => {
  assertThrows(
    () => schema.parse({ lr: "2e-4" }),
    TypeError,
    "a number given as a string: write 0.0002 without quotes",
  );
  assertThrows(() => schema.parse({ lr: "abc" }), TypeError, 'received the string "abc"');
  assertThrows(() => schema.parse({ tokenize: { maxLength: "64" } }), TypeError, "write 64 without quotes");
});

Deno.test("unknown keys are rejected (nested too) with a guess; renamed keys give the new name", () => {
  assertThrows(() => schema.parse({ lrr: 1 }), TypeError, 'train: unknown option "lrr" (did you mean "lr"?)');
  assertThrows(
    () => schema.parse({ tokenize: { maxLen: 3 } }),
    TypeError,
    'unknown option "tokenize.maxLen"',
  );
  assertThrows(
    () => schema.parse({ learningRate: 1 }),
    TypeError,
    'train: option "learningRate" was renamed to "lr"',
  );
});

Deno.test("help() lists every option with type, default and doc, nested ones indented", () => {
  const help = schema.help();
  for (const k of Object.keys(schema.fields)) assertEquals(help.includes(`  ${k}: `), true, k);
  assertEquals(help.includes("    maxLength: an integer >= 1 (default: 512). Longest sequence."), true, help);
});

Deno.test("defineOptions() refuses an undocumented field", () => {
  assertThrows(() => defineOptions("f", { a: number("") }), Error, 'option "a" has no documentation');
});
