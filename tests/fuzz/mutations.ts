/**
 * Seeded mutations for the file-format fuzzer (issue 12, item 6): byte-level damage (truncation, bit
 * flips, random bytes, non-UTF-8, byte-order marks), safetensors header surgery (huge header length,
 * wrong dtypes, huge shapes, huge / overlapping / reversed offsets, duplicate keys, deep nesting),
 * tensor-level surgery that keeps a valid container but breaks what a loader expects (relabelled
 * dtypes, changed shapes, renamed / missing / extra tensors, NaN data, a damaged embedded JSON), and
 * structured edits of JSON / YAML / JSON-lines documents (wrong types, numbers as strings, huge values,
 * deleted or unknown keys, duplicate keys, deep nesting).
 *
 * Every function takes the random source `rand` (uniform in [0, 1)) and returns the damaged bytes
 * plus a one-line description of what was done, so a failing case can be reproduced and read.
 * @module
 */
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { decodeSafetensors } from "../../lib/io/safetensors_reader.ts";
import { encodeSafetensors, type SafetensorsEntry } from "../../lib/io/safetensors_writer.ts";
import { DTYPES, type SafetensorsDtype } from "../../lib/io/dtypes.ts";
import { MAX_HEADER_BYTES } from "../../lib/io/safetensors_reader.ts";
import { parseGgufHeader } from "../../lib/io/gguf.ts";

/** A random source in [0, 1). */
export type Rand = () => number;

/** Damaged bytes and what was done to them. */
export interface Mutation {
  bytes: Uint8Array;
  what: string;
}

/** How a file is interpreted, which decides the mutations that apply to it. */
export type FileKind = "safetensors" | "gguf" | "json" | "yaml" | "jsonl";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Integer in [0, n). */
export function int(rand: Rand, n: number): number {
  return Math.floor(rand() * n);
}

/** One element of `items`. */
export function pick<T>(rand: Rand, items: readonly T[]): T {
  return items[int(rand, items.length)];
}

/** Nesting deep enough to break a recursive walker (JSON.parse itself copes). */
export const DEEP_DEPTH = 20_000;

/** A JSON text of `depth` nested arrays around a 1. */
export function deepJson(depth = DEEP_DEPTH): string {
  return "[".repeat(depth) + "1" + "]".repeat(depth);
}

/** Invalid UTF-8 sequences: a lone 0xFF, a bad continuation, an encoded surrogate, an overlong NUL. */
const NON_UTF8: readonly number[][] = [[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xc0, 0x80], [0xf8, 0x88]];

/** Values of the wrong type or range for any field. */
function wrongValue(rand: Rand, old: unknown): { value: unknown; what: string } {
  const numberAsString = typeof old === "number" ? String(old) : "12";
  const candidates: [unknown, string][] = [
    [null, "null"],
    ["x", '"x"'],
    [numberAsString, `the number as a string ${JSON.stringify(numberAsString)}`],
    [-1, "-1"],
    [0, "0"],
    [1e308, "1e308"],
    [2 ** 53 + 2, "2^53+2"],
    [2 ** 31, "2^31"],
    [2.5, "2.5"],
    [true, "true"],
    [[], "[]"],
    [{}, "{}"],
    [JSON.parse(deepJson(2_000)), "2000 nested arrays"],
    ["\uFEFFx", "a string with a BOM"],
    ["a".repeat(100_000), "a 100 kB string"],
  ];
  const [value, what] = pick(rand, candidates);
  return { value, what };
}

/**
 * Replaces, deletes or adds a field somewhere in a parsed document (objects and arrays, up to four
 * levels down). Returns a description; `doc` is edited in place (the root is returned for a bare value).
 */
export function mutateValue(rand: Rand, doc: unknown): { doc: unknown; what: string } {
  if (doc === null || typeof doc !== "object") {
    const w = wrongValue(rand, doc);
    return { doc: w.value, what: `the document replaced by ${w.what}` };
  }
  let node = doc as Record<string, unknown>;
  let path = "";
  for (let depth = 0; depth < 4; depth++) {
    const keys = Object.keys(node);
    if (keys.length === 0) break;
    const key = pick(rand, keys);
    const inner = node[key];
    if (inner !== null && typeof inner === "object" && Object.keys(inner).length > 0 && rand() < 0.6) {
      node = inner as Record<string, unknown>;
      path += `${key}.`;
      continue;
    }
    const r = rand();
    if (r < 0.15 && !Array.isArray(node)) {
      delete node[key];
      return { doc, what: `field ${path}${key} deleted` };
    }
    if (r < 0.25 && !Array.isArray(node)) {
      node[`unknown_${int(rand, 100)}`] = wrongValue(rand, undefined).value;
      return { doc, what: `unknown field added next to ${path}${key}` };
    }
    const w = wrongValue(rand, inner);
    node[key] = w.value;
    return { doc, what: `field ${path}${key} = ${w.what}` };
  }
  const w = wrongValue(rand, undefined);
  node[`unknown_${int(rand, 100)}`] = w.value;
  return { doc, what: `unknown field ${path}unknown = ${w.what}` };
}

/** Byte-level damage that applies to any file. */
export function mutateBytes(rand: Rand, bytes: Uint8Array): Mutation {
  const b = bytes.slice();
  switch (int(rand, 7)) {
    case 0: {
      const n = int(rand, b.length);
      return { bytes: b.subarray(0, n), what: `truncated to ${n} of ${b.length} bytes` };
    }
    case 1: {
      const flips = 1 + int(rand, 8);
      for (let i = 0; i < flips; i++) b[int(rand, b.length)] ^= 1 << int(rand, 8);
      return { bytes: b, what: `${flips} bit flip(s)` };
    }
    case 2: {
      const at = int(rand, b.length);
      const n = 1 + int(rand, 16);
      for (let i = at; i < Math.min(b.length, at + n); i++) b[i] = int(rand, 256);
      return { bytes: b, what: `${n} random byte(s) at ${at}` };
    }
    case 3: {
      const at = int(rand, b.length + 1);
      const seq = pick(rand, NON_UTF8);
      return {
        bytes: concat(b.subarray(0, at), new Uint8Array(seq), b.subarray(at)),
        what: `non-UTF-8 at ${at}`,
      };
    }
    case 4: {
      const bom = pick(rand, [[0xef, 0xbb, 0xbf], [0xff, 0xfe], [0xfe, 0xff]]);
      return {
        bytes: concat(new Uint8Array(bom), b),
        what: `BOM ${bom.map((x) => x.toString(16))} prepended`,
      };
    }
    case 5:
      return { bytes: new Uint8Array(0), what: "emptied" };
    default: {
      const extra = Uint8Array.from({ length: 1 + int(rand, 64) }, () => int(rand, 256));
      return { bytes: concat(b, extra), what: `${extra.length} garbage byte(s) appended` };
    }
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Splits a safetensors file into its header object and data buffer (the template is valid). */
function splitSafetensors(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return {
    header: JSON.parse(dec.decode(bytes.subarray(8, 8 + n))),
    data: bytes.subarray(8 + n),
  };
}

/** Reassembles a safetensors file from header text bytes (their length is written) and data. */
function joinSafetensors(headerBytes: Uint8Array, data: Uint8Array): Uint8Array {
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  return concat(prefix, headerBytes, data);
}

const BAD_DIMS: readonly [unknown, string][] = [
  [2 ** 53, "2^53"],
  [2 ** 31, "2^31"],
  [-1, "-1"],
  [1.5, "1.5"],
  ["3", '"3"'],
  [1e308, "1e308"],
  [null, "null"],
];

/** Edits the safetensors header (the length prefix is kept consistent unless that is the mutation). */
export function mutateSafetensorsHeader(rand: Rand, bytes: Uint8Array): Mutation {
  const { header, data } = splitSafetensors(bytes);
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const name = pick(rand, names);
  const entry = header[name] as { dtype: unknown; shape: unknown; data_offsets: unknown };
  const [begin, end] = entry.data_offsets as [number, number];
  let what: string;
  let text: string | undefined;
  switch (int(rand, 12)) {
    case 0: {
      const n = pick(rand, [
        2n ** 64n - 1n,
        2n ** 53n + 1n,
        BigInt(MAX_HEADER_BYTES) + 1n,
        BigInt(MAX_HEADER_BYTES),
        BigInt(bytes.length),
        BigInt(bytes.length - 7),
        0n,
        1n,
      ]);
      const out = bytes.slice();
      new DataView(out.buffer).setBigUint64(0, n, true);
      return { bytes: out, what: `header length set to ${n}` };
    }
    case 1: {
      const dtype = pick(rand, [...DTYPES, "F8", "Q4_0", "", 7, null] as unknown[]);
      entry.dtype = dtype;
      what = `${name} dtype = ${JSON.stringify(dtype)}`;
      break;
    }
    case 2: {
      const [dim, label] = pick(rand, BAD_DIMS);
      const shape = [...(entry.shape as number[])];
      shape[int(rand, shape.length + 1)] = dim as number;
      entry.shape = shape;
      what = `${name} shape dimension ${label}`;
      break;
    }
    case 3: {
      entry.shape = pick(rand, [[2 ** 26, 2 ** 26, 2 ** 26], [2 ** 40, 2 ** 40], "4", null, [[2]]]);
      what = `${name} shape = ${JSON.stringify(entry.shape)}`;
      break;
    }
    case 4: {
      const huge = pick(rand, [2 ** 53 - 1, 2 ** 40, data.length + 1, Number.MAX_VALUE]);
      entry.data_offsets = rand() < 0.5 ? [begin, huge] : [huge, huge + (end - begin)];
      what = `${name} data_offsets = ${JSON.stringify(entry.data_offsets)} (huge)`;
      break;
    }
    case 5: {
      const other = header[pick(rand, names)] as { data_offsets: number[] };
      entry.data_offsets = [...other.data_offsets];
      what = `${name} data_offsets overlap another tensor's ${JSON.stringify(other.data_offsets)}`;
      break;
    }
    case 6: {
      entry.data_offsets = pick(rand, [[end, begin], [-8, end], [begin, end, end], [begin], "0,4", [
        String(begin),
        end,
      ], [begin + 0.5, end]]);
      what = `${name} data_offsets = ${JSON.stringify(entry.data_offsets)}`;
      break;
    }
    case 7: {
      delete header[name];
      what = `${name} entry deleted`;
      break;
    }
    case 8: {
      // A duplicate key (JSON.parse keeps the last): the same tensor again with other offsets.
      const body = JSON.stringify(header);
      const other = names.find((n) => n !== name) ?? name;
      const dup = JSON.stringify({ [name]: header[other] }).slice(1, -1);
      text = `{${dup},${body.slice(1)}`;
      what = `duplicate key ${name} (an earlier copy holds ${other}'s entry; the last one counts)`;
      break;
    }
    case 9: {
      const target = rand() < 0.5 ? "__metadata__" : name;
      header[target] = rand() < 0.5
        ? JSON.parse(deepJson())
        : { ...(header[target] as object), format: JSON.parse(deepJson(500)) };
      what = `${target} deeply nested`;
      break;
    }
    case 10: {
      const body = enc.encode(JSON.stringify(header));
      const at = 1 + int(rand, body.length - 2);
      const seq = pick(rand, NON_UTF8);
      return {
        bytes: joinSafetensors(concat(body.subarray(0, at), new Uint8Array(seq), body.subarray(at)), data),
        what: `non-UTF-8 inside the header at ${at}`,
      };
    }
    default: {
      const body = enc.encode(JSON.stringify(header));
      return {
        bytes: joinSafetensors(concat(new Uint8Array([0xef, 0xbb, 0xbf]), body), data),
        what: "BOM before the header JSON",
      };
    }
  }
  return { bytes: joinSafetensors(enc.encode(text ?? JSON.stringify(header)), data), what };
}

/** Dtypes sharing an item size, for relabelling bytes as another type. */
const SAME_SIZE: readonly SafetensorsDtype[][] = [
  ["F16", "BF16", "I16", "U16"],
  ["F32", "I32", "U32"],
  ["U8", "I8", "BOOL", "F8_E4M3", "F8_E5M2"],
  ["F64", "I64", "U64"],
];

/**
 * Rewrites a valid safetensors file into another valid one whose content is wrong for the loader:
 * a relabelled dtype, a changed shape, a renamed / deleted / extra tensor, non-finite or random data,
 * or (for a U8 tensor holding JSON, like a bitsandbytes quant state) a damaged embedded document.
 */
export function mutateTensors(rand: Rand, bytes: Uint8Array): Mutation {
  const { metadata, tensors } = decodeSafetensors(bytes);
  const entries: SafetensorsEntry[] = [...tensors].map(([name, t]) => ({
    name,
    dtype: t.dtype,
    shape: [...t.shape],
    data: t.data.slice(),
  }));
  const i = int(rand, entries.length);
  const e = entries[i];
  const data = e.data as Uint8Array;
  let what: string;
  const isJson = e.dtype === "U8" && data.length > 1 && data[0] === 0x7b; // "{"
  switch (isJson ? 0 : 1 + int(rand, 8)) {
    case 0: {
      const r = rand();
      let text: Uint8Array;
      if (r < 0.6) {
        const m = mutateValue(rand, JSON.parse(dec.decode(data)));
        text = enc.encode(JSON.stringify(m.doc));
        what = `${e.name} (embedded JSON): ${m.what}`;
      } else {
        const m = mutateBytes(rand, data);
        text = m.bytes;
        what = `${e.name} (embedded JSON): ${m.what}`;
      }
      entries[i] = { ...e, shape: [text.length], data: text };
      break;
    }
    case 1: {
      const group = SAME_SIZE.find((g) => g.includes(e.dtype)) ?? ["U8"];
      const dtype = pick(rand, group.filter((d) => d !== e.dtype).concat(group.length === 1 ? group : []));
      entries[i] = { ...e, dtype };
      what = `${e.name} relabelled ${e.dtype} → ${dtype}`;
      break;
    }
    case 2: {
      entries[i] = { ...e, dtype: "U8", shape: [data.length] };
      what = `${e.name} stored as U8 [${data.length}]`;
      break;
    }
    case 3: {
      const shape = [...e.shape];
      const reshaped = shape.length >= 2 ? [shape[1], shape[0], ...shape.slice(2)] : [...shape, 1];
      if (shape.length >= 2 && shape[0] === shape[1]) reshaped.push(1);
      entries[i] = { ...e, shape: reshaped };
      what = `${e.name} shape [${shape}] → [${reshaped}]`;
      break;
    }
    case 4: {
      entries.splice(i, 1);
      what = `${e.name} removed`;
      break;
    }
    case 5: {
      entries[i] = { ...e, name: `${e.name}.renamed` };
      what = `${e.name} renamed`;
      break;
    }
    case 6: {
      entries.push({
        name: `${e.name.replace(/[^.]+$/, "")}extra_${int(rand, 99)}`,
        dtype: "F32",
        shape: [2],
        data: new Float32Array([1, 2]),
      });
      what = `extra tensor beside ${e.name}`;
      break;
    }
    case 7: {
      const d = data.slice();
      const v = pick(rand, [0xff, 0x7f]);
      for (let k = 0; k < Math.min(d.length, 16); k++) d[int(rand, d.length)] = v;
      entries[i] = { ...e, data: d };
      what = `${e.name} data bytes set to 0x${v.toString(16)} (NaN / huge values)`;
      break;
    }
    default: {
      const d = Uint8Array.from(data, () => int(rand, 256));
      entries[i] = { ...e, data: d };
      what = `${e.name} data replaced by random bytes`;
    }
  }
  return { bytes: encodeSafetensors(entries, { metadata: { ...metadata } }), what };
}

/** Structured or byte-level damage to a JSON document. */
export function mutateJson(rand: Rand, bytes: Uint8Array): Mutation {
  const r = rand();
  if (r < 0.35) return mutateBytes(rand, bytes);
  const text = dec.decode(bytes);
  if (r < 0.45) {
    // duplicate the first key with a wrong value
    const doc = JSON.parse(text);
    const key = doc && typeof doc === "object" && !Array.isArray(doc) ? Object.keys(doc)[0] : undefined;
    if (key !== undefined) {
      const w = wrongValue(rand, doc[key]);
      const out = text.replace("{", `{${JSON.stringify(key)}: ${JSON.stringify(w.value)}, `);
      // JSON.parse keeps the last value: put the wrong one last instead when asked
      const last = rand() < 0.5
        ? out
        : text.replace(/}\s*$/, `, ${JSON.stringify(key)}: ${JSON.stringify(w.value)}}`);
      return { bytes: enc.encode(last), what: `duplicate key ${key} with ${w.what}` };
    }
  }
  if (r < 0.5) return { bytes: enc.encode(deepJson()), what: "the document replaced by deep nesting" };
  const m = mutateValue(rand, JSON.parse(text));
  return { bytes: enc.encode(JSON.stringify(m.doc, null, 2)), what: m.what };
}

/** Structured or byte-level damage to a YAML document. */
export function mutateYaml(rand: Rand, bytes: Uint8Array): Mutation {
  const r = rand();
  if (r < 0.35) return mutateBytes(rand, bytes);
  const text = dec.decode(bytes);
  if (r < 0.45) {
    const lines = text.split("\n");
    const k = int(rand, lines.length);
    lines.splice(k, 0, lines[k]);
    return { bytes: enc.encode(lines.join("\n")), what: `line ${k + 1} duplicated (duplicate key)` };
  }
  if (r < 0.5) {
    const depth = pick(rand, [200, 2_000, DEEP_DEPTH]);
    return {
      bytes: enc.encode(`${text}\nextra: ${"[".repeat(depth)}1${"]".repeat(depth)}\n`),
      what: `${depth} nested flow sequences`,
    };
  }
  const m = mutateValue(rand, parseYaml(text));
  let out: string;
  try {
    out = stringifyYaml(m.doc);
  } catch {
    out = JSON.stringify(m.doc); // JSON is YAML
  }
  return { bytes: enc.encode(out), what: m.what };
}

/** Damage to one line of a JSON-lines file (or to the whole file). */
export function mutateJsonl(rand: Rand, bytes: Uint8Array): Mutation {
  const r = rand();
  if (r < 0.3) return mutateBytes(rand, bytes);
  const lines = dec.decode(bytes).split("\n");
  const filled = lines.map((l, i) => [l, i] as const).filter(([l]) => l.trim() !== "");
  const [line, k] = pick(rand, filled);
  let what: string;
  if (r < 0.45) {
    const v = pick(rand, [
      "5",
      '"text"',
      "null",
      "[]",
      "true",
      deepJson(),
      "\uFEFF" + line,
      line.slice(0, -1),
    ]);
    lines[k] = v;
    what = `line ${k + 1} = ${v.length > 20 ? v.slice(0, 20) + "…" : v}`;
  } else {
    const m = mutateValue(rand, JSON.parse(line));
    lines[k] = JSON.stringify(m.doc);
    what = `line ${k + 1}: ${m.what}`;
  }
  return { bytes: enc.encode(lines.join("\n")), what };
}

/**
 * Damage to a GGUF file, mostly inside its header (metadata keys, values, string lengths, array
 * counts, tensor infos): byte-level damage there, or a huge u64 / u32 written over a length or count.
 */
export function mutateGguf(rand: Rand, bytes: Uint8Array): Mutation {
  const headerEnd = Math.min(bytes.length, parseGgufHeader(bytes).dataOffset);
  const r = rand();
  if (r < 0.25) return mutateBytes(rand, bytes);
  if (r < 0.6) {
    const m = mutateBytes(rand, bytes.subarray(0, headerEnd));
    return { bytes: concat(m.bytes, bytes.subarray(headerEnd)), what: `header: ${m.what}` };
  }
  const out = bytes.slice();
  const at = 4 + int(rand, headerEnd - 12);
  const v = pick(rand, [
    2n ** 64n - 1n,
    2n ** 63n,
    2n ** 40n,
    2n ** 32n + 1n,
    0xffffffffn,
    0x7fffffffn,
    1000000n,
  ]);
  const view = new DataView(out.buffer);
  if (rand() < 0.5) view.setBigUint64(at, v, true);
  else view.setUint32(at, Number(v & 0xffffffffn), true);
  return { bytes: out, what: `huge value ${v} written at header byte ${at}` };
}

/** Damage suited to a file of `kind`. */
export function mutateFile(rand: Rand, kind: FileKind, bytes: Uint8Array): Mutation {
  switch (kind) {
    case "safetensors": {
      const r = rand();
      if (r < 0.3) return mutateBytes(rand, bytes);
      if (r < 0.65) return mutateSafetensorsHeader(rand, bytes);
      return mutateTensors(rand, bytes);
    }
    case "gguf":
      return mutateGguf(rand, bytes);
    case "json":
      return mutateJson(rand, bytes);
    case "yaml":
      return mutateYaml(rand, bytes);
    case "jsonl":
      return mutateJsonl(rand, bytes);
  }
}
