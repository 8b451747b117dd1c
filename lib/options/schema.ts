/**
 * A small in-house options schema: one schema per public function, from which
 * validation, defaults, error messages and help text all come, so documented and
 * accepted options cannot drift apart.
 *
 * Field builders: {@linkcode number} / {@linkcode integer} (ranges), {@linkcode string},
 * {@linkcode oneOf} (enums), {@linkcode boolean}, {@linkcode object} (nested, unknown
 * keys rejected), {@linkcode array}, {@linkcode either} (unions) and {@linkcode custom}
 * (functions, class instances). {@linkcode defineOptions} turns a field table into a
 * schema whose `parse()` returns the options with defaults filled in.
 *
 * Errors name the function and the field path, say what was received, point out numbers
 * given as strings and give the new name of a renamed option:
 * `train: option "tokenize.maxLength" must be an integer >= 1, received 0`.
 * Wrong types and unknown or renamed keys throw `TypeError`; values out of range or
 * outside an enum throw `RangeError`.
 * @module
 */

/** Where a value sits: the function name and the dotted option path. */
interface At {
  fn: string;
  path: string;
}

/** One option: how to check it, its default and its documentation. */
export interface Field<T, HasDefault extends boolean = boolean> {
  /** Type text for messages and help, e.g. `integer >= 1` or `"cosine" | "linear"`. */
  readonly type: string;
  /** What the option does (one sentence, shown in help). */
  readonly doc: string;
  /** Whether a missing value is filled with {@linkcode Field.defaultValue}. */
  readonly hasDefault: HasDefault;
  /** The value used when the option is missing or `undefined`. */
  readonly defaultValue: T | undefined;
  /** Whether the option must be given (no default, not optional). */
  readonly required: boolean;
  /** Nested fields when this is an object option (for docs and drift tests). */
  readonly fields?: Readonly<Record<string, AnyField>>;
  /** Renamed keys of a nested object option: old name -> new name. */
  readonly renamed?: Readonly<Record<string, string>>;
  /** A valid value, used by help text and by tests that walk every option. */
  readonly example: unknown;
  /** Checks `value` (never `undefined`) and returns it, with nested defaults filled in. */
  check(value: unknown, at: At): T;
}

/** Any field, whatever its value type. */
// deno-lint-ignore no-explicit-any
export type AnyField = Field<any, boolean>;

/** The resolved value of a field: its type, or `T | undefined` when it has no default. */
export type ValueOf<F> = F extends Field<infer T, true> ? T
  : F extends Field<infer T, boolean> ? T | undefined
  : never;

/** The checked value type of a field, whether or not it has a default. */
export type InnerOf<F> = F extends Field<infer T, boolean> ? T : never;

/** The resolved options of a field table: defaults filled in. */
export type Resolved<F extends Record<string, AnyField>> = { [K in keyof F]: ValueOf<F[K]> };

/**
 * A field table that names exactly the keys of interface `I` (use with `satisfies`,
 * so that TypeScript flags a documented option without a field and a field that the
 * interface does not document).
 */
export type FieldsOf<I> = { [K in keyof Required<I>]: AnyField };

/** Common settings of every builder. */
interface Base<T> {
  /** Default value used when the option is missing. */
  default?: T;
  /** The option must be given (ignored when there is a default). */
  required?: boolean;
  /** A valid value for help text and walking tests (derived when not given). */
  example?: unknown;
}

/** Error thrown for an option of the wrong type, an unknown key or a renamed key. */
export class OptionTypeError extends TypeError {
  /** The function whose option is wrong. */
  readonly fn: string;
  /** Dotted path of the option (`tokenize.maxLength`). */
  readonly path: string;
  constructor(fn: string, path: string, message: string) {
    super(message);
    this.name = "TypeError";
    this.fn = fn;
    this.path = path;
  }
}

/** Error thrown for an option value out of its range or outside its allowed values. */
export class OptionRangeError extends RangeError {
  /** The function whose option is wrong. */
  readonly fn: string;
  /** Dotted path of the option (`tokenize.maxLength`). */
  readonly path: string;
  constructor(fn: string, path: string, message: string) {
    super(message);
    this.name = "RangeError";
    this.fn = fn;
    this.path = path;
  }
}

/** Describes a received value for an error message (`the string "2e-4"`, `an array of 3`). */
export function received(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (typeof value === "string") {
    return `the string ${JSON.stringify(value.length > 60 ? value.slice(0, 57) + "..." : value)}`;
  }
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  const name = (value as object).constructor?.name;
  return name && name !== "Object" ? `a ${name}` : "an object";
}

function typeError(at: At, expected: string, value: unknown): never {
  let hint = "";
  if (typeof value === "string" && /number|integer/.test(expected)) {
    const n = Number(value.trim());
    if (value.trim() !== "" && Number.isFinite(n)) {
      hint = ` (a number given as a string: write ${n} without quotes)`;
    }
  }
  throw new OptionTypeError(
    at.fn,
    at.path,
    `${at.fn}: option "${at.path}" must be ${expected}, received ${received(value)}${hint}`,
  );
}

function rangeError(at: At, expected: string, value: unknown): never {
  throw new OptionRangeError(
    at.fn,
    at.path,
    `${at.fn}: option "${at.path}" must be ${expected}, received ${received(value)}`,
  );
}

function make<T>(
  type: string,
  doc: string,
  base: Base<T>,
  example: unknown,
  check: (value: unknown, at: At) => T,
  extra: Partial<Pick<AnyField, "fields" | "renamed">> = {},
): AnyField {
  const hasDefault = base.default !== undefined;
  return {
    type,
    doc,
    hasDefault,
    defaultValue: base.default,
    required: !hasDefault && (base.required ?? false),
    example: base.example ?? (hasDefault ? base.default : example),
    check,
    ...extra,
  };
}

/** Settings of {@linkcode number}. */
export interface NumberSpec extends Base<number> {
  /** Smallest allowed value (inclusive). */
  min?: number;
  /** Largest allowed value (inclusive). */
  max?: number;
  /** Values must be strictly greater than this. */
  above?: number;
  /** Values must be strictly less than this. */
  below?: number;
  /** Only whole numbers. */
  integer?: boolean;
}

function numberType(spec: NumberSpec): string {
  const parts: string[] = [];
  if (spec.min !== undefined) parts.push(`>= ${spec.min}`);
  if (spec.above !== undefined) parts.push(`> ${spec.above}`);
  if (spec.max !== undefined) parts.push(`<= ${spec.max}`);
  if (spec.below !== undefined) parts.push(`< ${spec.below}`);
  const noun = spec.integer ? "an integer" : "a finite number";
  return parts.length ? `${noun} ${parts.join(" and ")}` : noun;
}

/**
 * A finite number, optionally bounded and whole.
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, number } from "./schema.ts";
 * const s = defineOptions("train", { lr: number("Peak learning rate.", { above: 0, default: 2e-4 }) });
 * if (s.parse({}).lr !== 2e-4) throw new Error("default not filled");
 * throws(() => s.parse({ lr: "1e-3" }), (e: Error) => e instanceof TypeError && e.message.includes("write 0.001 without quotes"));
 * ```
 */
export function number(doc: string, spec: NumberSpec & { default: number }): Field<number, true>;
export function number(doc: string, spec?: NumberSpec): Field<number, false>;
export function number(doc: string, spec: NumberSpec = {}): AnyField {
  const type = numberType(spec);
  const example = spec.min ?? (spec.above !== undefined ? spec.above + 1 : spec.max ?? 1);
  return make(type, doc, spec, example, (v, at) => {
    if (typeof v !== "number" || !Number.isFinite(v)) return typeError(at, type, v);
    if (spec.integer && !Number.isInteger(v)) return rangeError(at, type, v);
    if (spec.min !== undefined && v < spec.min) return rangeError(at, type, v);
    if (spec.max !== undefined && v > spec.max) return rangeError(at, type, v);
    if (spec.above !== undefined && !(v > spec.above)) return rangeError(at, type, v);
    if (spec.below !== undefined && !(v < spec.below)) return rangeError(at, type, v);
    return v;
  });
}

/**
 * A whole number (shorthand for `number(doc, { ...spec, integer: true })`).
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, integer, object } from "./schema.ts";
 * const s = defineOptions("train", {
 *   tokenize: object("Tokenization.", { maxLength: integer("Longest sequence.", { min: 1, default: 512 }) }),
 * });
 * throws(
 *   () => s.parse({ tokenize: { maxLength: 0 } }),
 *   (e: Error) => e.message === 'train: option "tokenize.maxLength" must be an integer >= 1, received 0',
 * );
 * ```
 */
export function integer(doc: string, spec: NumberSpec & { default: number }): Field<number, true>;
export function integer(doc: string, spec?: NumberSpec): Field<number, false>;
export function integer(doc: string, spec: NumberSpec = {}): AnyField {
  return number(doc, { ...spec, integer: true });
}

/** Settings of {@linkcode string}. */
export interface StringSpec extends Base<string> {
  /** Reject the empty string. */
  nonEmpty?: boolean;
}

/**
 * A string.
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, string } from "./schema.ts";
 * const s = defineOptions("train", { outputDir: string("Folder for saves.", { default: "out", nonEmpty: true }) });
 * throws(() => s.parse({ outputDir: "" }), (e: Error) => e instanceof RangeError && e.message.includes("a non-empty string"));
 * ```
 */
export function string(doc: string, spec: StringSpec & { default: string }): Field<string, true>;
export function string(doc: string, spec?: StringSpec): Field<string, false>;
export function string(doc: string, spec: StringSpec = {}): AnyField {
  const type = spec.nonEmpty ? "a non-empty string" : "a string";
  return make(type, doc, spec, "text", (v, at) => {
    if (typeof v !== "string") return typeError(at, type, v);
    if (spec.nonEmpty && v.length === 0) return rangeError(at, type, v);
    return v;
  });
}

/**
 * One of a fixed list of values (strings, numbers or booleans).
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, oneOf } from "./schema.ts";
 * const s = defineOptions("train", {
 *   schedule: oneOf("LR schedule.", ["cosine", "linear", "constant"] as const, { default: "cosine" }),
 * });
 * throws(() => s.parse({ schedule: "cos" }), (e: Error) => e instanceof RangeError && e.message.includes('one of "cosine", "linear", "constant"'));
 * ```
 */
export function oneOf<const V extends string | number | boolean>(
  doc: string,
  values: readonly V[],
  spec: Base<V> & { default: V },
): Field<V, true>;
export function oneOf<const V extends string | number | boolean>(
  doc: string,
  values: readonly V[],
  spec?: Base<V>,
): Field<V, false>;
export function oneOf<V extends string | number | boolean>(
  doc: string,
  values: readonly V[],
  spec: Base<V> = {},
): AnyField {
  const type = `one of ${values.map((v) => JSON.stringify(v)).join(", ")}`;
  return make(type, doc, spec, values[0], (v, at) => {
    if (values.includes(v as V)) return v as V;
    const kinds = new Set(values.map((x) => typeof x));
    return kinds.has(typeof v as "string") ? rangeError(at, type, v) : typeError(at, type, v);
  });
}

/**
 * `true` or `false`.
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { boolean, defineOptions } from "./schema.ts";
 * const s = defineOptions("train", { layerwise: boolean("Step each block in backward.", { default: false }) });
 * throws(() => s.parse({ layerwise: "yes" }), (e: Error) => e instanceof TypeError && e.message.includes("must be true or false"));
 * ```
 */
export function boolean(doc: string, spec: Base<boolean> & { default: boolean }): Field<boolean, true>;
export function boolean(doc: string, spec?: Base<boolean>): Field<boolean, false>;
export function boolean(doc: string, spec: Base<boolean> = {}): AnyField {
  return make("true or false", doc, spec, true, (v, at) => {
    if (typeof v !== "boolean") return typeError(at, "true or false", v);
    return v;
  });
}

/** Settings of {@linkcode object} and {@linkcode defineOptions}. */
export interface ObjectSpec {
  /** Old key -> new name; an old key is rejected with a message naming the new one. */
  renamed?: Record<string, string>;
  /** The object must be given. */
  required?: boolean;
  /** Fill a missing object with its fields' defaults instead of leaving it `undefined`. */
  filled?: boolean;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j];
      d[j] = Math.min(
        d[j] + 1,
        d[j - 1] + 1,
        prev + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1),
      );
      prev = cur;
    }
  }
  return d[b.length];
}

function checkObject(
  fields: Readonly<Record<string, AnyField>>,
  renamed: Readonly<Record<string, string>>,
  value: unknown,
  at: At,
): Record<string, unknown> {
  const here = at.path === "" ? "options" : `option "${at.path}"`;
  if (!isPlainObject(value)) {
    const hint = typeof value === "string" && /^\s*\{/.test(value)
      ? " (JSON given as a string: parse it first)"
      : "";
    throw new OptionTypeError(
      at.fn,
      at.path,
      `${at.fn}: ${here} must be an object, received ${received(value)}${hint}`,
    );
  }
  const prefix = at.path === "" ? "" : `${at.path}.`;
  const known = Object.keys(fields);
  for (const key of Object.keys(value)) {
    if (key in fields) continue;
    if (Object.hasOwn(renamed, key)) {
      throw new OptionTypeError(
        at.fn,
        prefix + key,
        `${at.fn}: option "${prefix}${key}" was renamed to ${
          /^[\w.]+$/.test(renamed[key]) ? `"${renamed[key]}"` : renamed[key]
        }`,
      );
    }
    const near = known.filter((k) => editDistance(k, key) <= Math.max(1, Math.floor(key.length / 4)));
    const guess = near.length ? ` (did you mean "${prefix}${near[0]}"?)` : "";
    throw new OptionTypeError(
      at.fn,
      prefix + key,
      `${at.fn}: unknown option "${prefix}${key}"${guess}; known options${
        at.path === "" ? "" : ` of "${at.path}"`
      } are ${known.join(", ")}`,
    );
  }
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(fields)) {
    const v = value[key];
    const path = prefix + key;
    if (v === undefined) {
      if (field.hasDefault) out[key] = field.defaultValue;
      else if (field.required) {
        throw new OptionTypeError(
          at.fn,
          path,
          `${at.fn}: option "${path}" is required (${field.type}: ${field.doc})`,
        );
      } else out[key] = undefined;
      continue;
    }
    out[key] = field.check(v, { fn: at.fn, path });
  }
  return out;
}

function defaultsOf(fields: Readonly<Record<string, AnyField>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(fields)) out[k] = f.hasDefault ? f.defaultValue : undefined;
  return out;
}

/**
 * A nested options object: unknown keys rejected, renamed keys named, defaults filled.
 * With `filled: true` a missing object resolves to its fields' defaults.
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, integer, object } from "./schema.ts";
 * const s = defineOptions("train", {
 *   galore: object("GaLore settings.", { r: integer("Projection rank.", { min: 1, default: 128 }) }, {
 *     renamed: { rank: "r" },
 *   }),
 * });
 * throws(() => s.parse({ galore: { rank: 4 } }), (e: Error) => e instanceof TypeError && e.message.includes('option "galore.rank" was renamed to "r"'));
 * throws(() => s.parse({ galore: { rr: 4 } }), (e: Error) => e instanceof TypeError && e.message.includes('unknown option "galore.rr"'));
 * ```
 */
export function object<F extends Record<string, AnyField>>(
  doc: string,
  fields: F,
  spec: ObjectSpec & { filled: true },
): Field<Resolved<F>, true>;
export function object<F extends Record<string, AnyField>>(
  doc: string,
  fields: F,
  spec?: ObjectSpec,
): Field<Resolved<F>, false>;
export function object(doc: string, fields: Record<string, AnyField>, spec: ObjectSpec = {}): AnyField {
  const renamed = spec.renamed ?? {};
  const field = make(
    "an object",
    doc,
    { required: spec.required },
    {},
    (v, at) => checkObject(fields, renamed, v, at),
    {
      fields,
      renamed,
    },
  );
  if (!spec.filled) return field;
  return { ...field, hasDefault: true, defaultValue: defaultsOf(fields) };
}

/**
 * An object with any keys whose every value passes `value` (a string map, for example).
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, record, string } from "./schema.ts";
 * const s = defineOptions("writeSafetensors", { metadata: record("String map.", string("A value.")) });
 * throws(() => s.parse({ metadata: { format: 1 } }), (e: Error) => e.message.includes('"metadata.format" must be a string'));
 * ```
 */
export function record<T>(doc: string, value: Field<T>, spec: Base<Record<string, T>> = {}): AnyField {
  const type = `an object of ${value.type}`;
  return make(type, doc, spec, { key: value.example }, (v, at) => {
    if (!isPlainObject(v)) return typeError(at, type, v);
    const out: Record<string, T> = {};
    for (const [k, x] of Object.entries(v)) out[k] = value.check(x, { fn: at.fn, path: `${at.path}.${k}` });
    return out;
  });
}

/** Settings of {@linkcode array}. */
export interface ArraySpec<T> extends Base<T[]> {
  /** Fewest items allowed. */
  minLength?: number;
}

/**
 * An array whose every item passes `item`.
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { array, defineOptions, string } from "./schema.ts";
 * const s = defineOptions("attachLoRA", { targetModules: array("Layers to adapt.", string("A name."), { minLength: 1 }) });
 * throws(() => s.parse({ targetModules: ["q_proj", 3] }), (e: Error) => e instanceof TypeError && e.message.includes('option "targetModules[1]" must be a string'));
 * ```
 */
export function array<T>(
  doc: string,
  item: Field<T>,
  spec: ArraySpec<T> & { default: T[] },
): Field<T[], true>;
export function array<T>(doc: string, item: Field<T>, spec?: ArraySpec<T>): Field<T[], false>;
export function array<T>(doc: string, item: Field<T>, spec: ArraySpec<T> = {}): AnyField {
  const min = spec.minLength ?? 0;
  const type = min > 0 ? `an array of at least ${min} (${item.type})` : `an array (${item.type})`;
  return make(type, doc, spec, [item.example], (v, at) => {
    if (!Array.isArray(v)) return typeError(at, type, v);
    if (v.length < min) return rangeError(at, type, v);
    return v.map((x, i) => item.check(x, { fn: at.fn, path: `${at.path}[${i}]` }));
  }, item.fields ? { fields: item.fields } : {});
}

/**
 * A value accepted by the first of several fields whose type matches (e.g. a seed or
 * `false`, an optimizer name or an optimizer object). Each alternative is tried in order
 * and the first error of the alternative whose type matched is reported.
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { defineOptions, either, integer, oneOf } from "./schema.ts";
 * const s = defineOptions("train", {
 *   shuffleSeed: either("Shuffle seed, or false.", [integer("Seed.", { min: 0 }), oneOf("Off.", [false])], {
 *     default: 0,
 *   }),
 * });
 * if (s.parse({ shuffleSeed: false }).shuffleSeed !== false) throw new Error("false rejected");
 * throws(() => s.parse({ shuffleSeed: "3" }), (e: Error) => e instanceof TypeError && e.message.includes("an integer >= 0 or one of false, received the string"));
 * ```
 */
export function either<const O extends readonly AnyField[]>(
  doc: string,
  options: O,
  spec: Base<InnerOf<O[number]>> & { default: InnerOf<O[number]> },
): Field<InnerOf<O[number]>, true>;
export function either<const O extends readonly AnyField[]>(
  doc: string,
  options: O,
  spec?: Base<InnerOf<O[number]>>,
): Field<InnerOf<O[number]>, false>;
export function either(doc: string, options: readonly AnyField[], spec: Base<unknown> = {}): AnyField {
  const type = options.map((o) => o.type).join(" or ");
  const withFields = options.find((o) => o.fields);
  return make(type, doc, spec, options[0].example, (v, at) => {
    let rangeFailure: unknown;
    for (const option of options) {
      try {
        return option.check(v, at);
      } catch (e) {
        // A RangeError means the type matched but the value did not: report that one.
        if (e instanceof RangeError || (e instanceof OptionTypeError && e.path !== at.path)) {
          rangeFailure ??= e;
        } else if (!(e instanceof TypeError)) throw e;
      }
    }
    if (rangeFailure) throw rangeFailure;
    return typeError(at, type, v);
  }, withFields ? { fields: withFields.fields, renamed: withFields.renamed } : {});
}

/**
 * A value checked by a predicate: functions, class instances, anything the builders above
 * cannot describe. `type` is the text used in messages (`a Tokenizer`).
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { custom, defineOptions } from "./schema.ts";
 * const s = defineOptions("train", {
 *   onStep: custom("Called after every step.", "a function", (v) => typeof v === "function", { example: () => {} }),
 * });
 * throws(() => s.parse({ onStep: 3 }), (e: Error) => e instanceof TypeError && e.message.includes('option "onStep" must be a function, received 3'));
 * ```
 */
export function custom<T>(
  doc: string,
  type: string,
  accepts: (value: unknown) => boolean,
  spec: Base<T> & { example: unknown },
): Field<T, false> {
  return make(
    type,
    doc,
    spec,
    spec.example,
    (v, at) => accepts(v) ? v as T : typeError(at, type, v),
  ) as Field<
    T,
    false
  >;
}

/**
 * A field whose checked value (and default) is turned into another form, e.g. a
 * shorthand `"nf4"` into `{ type: "nf4", doubleQuant: true, blocksize: 64 }`.
 * @example
 * ```ts
 * import { defineOptions, map, oneOf } from "./schema.ts";
 * const s = defineOptions("f", {
 *   side: map(oneOf("Side.", ["l", "r"] as const, { default: "l" }), (v) => (v === "l" ? "left" : "right")),
 * });
 * if (s.parse({}).side !== "left" || s.parse({ side: "r" }).side !== "right") throw new Error("map");
 * ```
 */
export function map<T, U, D extends boolean>(field: Field<T, D>, to: (value: T) => U): Field<U, D> {
  return {
    ...field,
    defaultValue: field.hasDefault ? to(field.defaultValue as T) : undefined,
    check: (v, at) => to(field.check(v, at)),
  };
}

/** A schema for the options object of one public function. */
export interface OptionsSchema<F extends Record<string, AnyField>> {
  /** Function name used in messages. */
  readonly fn: string;
  /** The field table, for docs, help text and tests that walk every option. */
  readonly fields: F;
  /** Old key -> new name. */
  readonly renamed: Readonly<Record<string, string>>;
  /** Validates `options` (`undefined` means `{}`) and returns them with defaults filled in. */
  parse(options: unknown): Resolved<F>;
  /** One line per option (nested ones indented): name, type, default and doc. */
  help(): string;
}

function helpLines(fields: Readonly<Record<string, AnyField>>, indent: string): string[] {
  const lines: string[] = [];
  for (const [name, f] of Object.entries(fields)) {
    const def = f.hasDefault && f.defaultValue !== undefined && !f.fields
      ? ` (default: ${JSON.stringify(f.defaultValue)})`
      : f.required
      ? " (required)"
      : "";
    lines.push(`${indent}${name}: ${f.type}${def}. ${f.doc}`);
    if (f.fields) lines.push(...helpLines(f.fields, indent + "  "));
  }
  return lines;
}

/**
 * Builds the schema of one function's options from a field table.
 * @example
 * ```ts
 * import { deepStrictEqual, throws } from "node:assert/strict";
 * import { defineOptions, integer, oneOf } from "./schema.ts";
 * const loadSchema = defineOptions("loadModel", {
 *   quantize: oneOf("4-bit format.", ["nf4", "fp4"] as const),
 *   blocksize: integer("Values per scale.", { min: 16, default: 64 }),
 * }, { renamed: { quantType: "quantize" } });
 * deepStrictEqual(loadSchema.parse({ quantize: "nf4" }), { quantize: "nf4", blocksize: 64 });
 * throws(() => loadSchema.parse({ quantType: "nf4" }), (e: Error) => e instanceof TypeError && e.message.includes('loadModel: option "quantType" was renamed to "quantize"'));
 * ```
 */
export function defineOptions<F extends Record<string, AnyField>>(
  fn: string,
  fields: F,
  spec: Pick<ObjectSpec, "renamed"> = {},
): OptionsSchema<F> {
  const renamed = spec.renamed ?? {};
  for (const [k, f] of Object.entries(fields)) {
    if (!f.doc.trim()) throw new Error(`defineOptions(${fn}): option "${k}" has no documentation`);
  }
  return {
    fn,
    fields,
    renamed,
    parse(options: unknown): Resolved<F> {
      return checkObject(fields, renamed, options ?? {}, { fn, path: "" }) as Resolved<F>;
    },
    help(): string {
      return helpLines(fields, "  ").join("\n");
    },
  };
}
