/**
 * Fused projections (Phi-3): checkpoints store q/k/v as one `self_attn.qkv_proj` `[(H + 2G)·Dh, D]`
 * and gate/up as one `mlp.gate_up_proj` `[2F, D]`, parts stacked by rows in that order. Our blocks
 * keep separate q/k/v and gate/up layers (so quantization, adapters and merging stay per layer):
 * this file splits the fused tensors on load, fuses them back on save, and maps PEFT adapters
 * between the fused module names and the parts.
 *
 * PEFT layout of an exported fused adapter: a fused module's LoRA is `B·A` over the stacked rows,
 * so per-part factors `B_p A_p` are written exactly as `A = [A_q; A_k; A_v]` `[3r, I]` and
 * `B = blockdiag(B_q, B_k, B_v)` `[O, 3r]`; every module of the adapter is written at rank 3r
 * (zero-padded) with `lora_alpha` scaled so `alpha / r` (or `alpha / √r` with rsLoRA) is unchanged.
 * A PEFT adapter trained on the fused modules (one `A` `[r, I]`) loads as parts sharing a copy of
 * `A` with their rows of `B`: the same update.
 *
 * Dimension legend: I in features, O out features, r rank, K parts per fused module (at most 3).
 * @module
 */
import type { TensorInfo, TensorReader } from "../io/safetensors_reader.ts";
import type { TensorTypedArray } from "../io/dtypes.ts";
import type { LlamaConfig } from "./llama_config.ts";
import { type BlockLinears, linearPath } from "./llama_block.ts";
import type { PeftTensor } from "../adapters/adapter_layer.ts";

/** One fused module: its path inside a layer and the parts it stacks (by rows, in order). */
export interface FusedGroup {
  /** e.g. `self_attn.qkv_proj`. */
  fused: string;
  parts: (keyof BlockLinears)[];
}

/** The most parts a fused module stacks (q, k, v): the rank factor of an exported adapter. */
export const MAX_PARTS = 3;

const GROUPS: FusedGroup[] = [
  { fused: "self_attn.qkv_proj", parts: ["q_proj", "k_proj", "v_proj"] },
  { fused: "mlp.gate_up_proj", parts: ["gate_proj", "up_proj"] },
];

/** The fused modules of a config (none unless `fusedLinears`). */
export function fusedGroups(config: LlamaConfig): FusedGroup[] {
  return config.fusedLinears ? GROUPS : [];
}

/** Rows of each part of `group` (its out features). */
function partRows(config: LlamaConfig, group: FusedGroup): number[] {
  const F = config.intermediateSize;
  const q = config.numAttentionHeads * config.headDim, kv = config.numKeyValueHeads * config.headDim;
  const rows: Record<string, number> = { q_proj: q, k_proj: kv, v_proj: kv, gate_proj: F, up_proj: F };
  return group.parts.map((p) => rows[p]);
}

/** Where a part's rows live inside its fused tensor. */
export interface PartOf {
  fusedModule: string;
  start: number;
  rows: number;
}

/** Part module path (`model.layers.0.self_attn.q_proj`) → its place in the fused module. */
export function partIndex(config: LlamaConfig): Map<string, PartOf> {
  const out = new Map<string, PartOf>();
  for (let i = 0; i < config.numHiddenLayers; i++) {
    for (const g of fusedGroups(config)) {
      let start = 0;
      const rows = partRows(config, g);
      g.parts.forEach((p, k) => {
        out.set(linearPath(i, p), { fusedModule: `model.layers.${i}.${g.fused}`, start, rows: rows[k] });
        start += rows[k];
      });
    }
  }
  return out;
}

/**
 * A reader that also answers for the parts of fused tensors (`…q_proj.weight` = the q rows of
 * `…qkv_proj.weight`); reads go to the fused tensor of `reader`, so read-tracking sees it used.
 *
 * @example
 * ```ts
 * import { splitFusedReader } from "./fused_linears.ts";
 * import { parseLlamaConfig } from "./llama_config.ts";
 * const c = parseLlamaConfig({ model_type: "phi3", vocab_size: 8, hidden_size: 4, intermediate_size: 2,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * const fused = Float32Array.from({ length: 32 }, (_, i) => i); // qkv [4 + 2 + 2 rows, 4 columns]
 * const r = splitFusedReader({
 *   names: () => ["model.layers.0.self_attn.qkv_proj.weight"], has: (n: string) => n.endsWith("qkv_proj.weight"),
 *   info: () => ({ dtype: "F32", shape: [8, 4] }), readFloat32: async () => fused,
 * } as never, c);
 * if ((await r.readFloat32("model.layers.0.self_attn.v_proj.weight"))[0] !== 24) throw new Error("v rows");
 * ```
 */
export function splitFusedReader(reader: TensorReader, config: LlamaConfig): TensorReader {
  const parts = partIndex(config);
  if (parts.size === 0) return reader;
  const part = (name: string) =>
    name.endsWith(".weight") ? parts.get(name.slice(0, -".weight".length)) : undefined;
  const slice = <T extends { subarray(a: number, b: number): T; slice(a: number, b: number): T }>(
    data: T,
    p: PartOf,
    cols: number,
  ) => data.slice(p.start * cols, (p.start + p.rows) * cols);
  return new Proxy(reader, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      switch (key) {
        case "has":
          return (name: string) => {
            const p = part(name);
            return p ? target.has(`${p.fusedModule}.weight`) : target.has(name);
          };
        case "info":
          return (name: string): TensorInfo => {
            const p = part(name);
            if (!p) return target.info(name);
            const info = target.info(`${p.fusedModule}.weight`);
            return { ...info, shape: [p.rows, info.shape[1]] };
          };
        case "readFloat32":
          return async (name: string) => {
            const p = part(name);
            if (!p) return await target.readFloat32(name);
            const fusedName = `${p.fusedModule}.weight`;
            return slice(await target.readFloat32(fusedName), p, target.info(fusedName).shape[1]);
          };
        case "readTyped":
          return async (name: string): Promise<TensorTypedArray> => {
            const p = part(name);
            if (!p) return await target.readTyped(name);
            const fusedName = `${p.fusedModule}.weight`;
            const data = await target.readTyped(fusedName);
            return slice(data as Float32Array, p, target.info(fusedName).shape[1]) as TensorTypedArray;
          };
        case "readBytes":
          return async (name: string) => {
            const p = part(name);
            if (!p) return await target.readBytes(name);
            const fusedName = `${p.fusedModule}.weight`;
            const bytes = await target.readBytes(fusedName);
            const shape = target.info(fusedName).shape;
            const rowBytes = bytes.length / shape[0];
            return bytes.slice(p.start * rowBytes, (p.start + p.rows) * rowBytes);
          };
        default:
          return v.bind(target);
      }
    },
  });
}

/** A state-dict entry (as `stateDict` in `save_model.ts` lists them). */
export interface StateEntry {
  name: string;
  shape: number[];
  read: () => Float32Array;
}

/**
 * Replaces the part weights (and biases) of every fused module by one stacked tensor under the
 * fused name, at the position of its first part: the checkpoint layout the family's loaders expect.
 */
export function fuseStateDict(entries: StateEntry[], config: LlamaConfig): StateEntry[] {
  const parts = partIndex(config);
  if (parts.size === 0) return entries;
  const byName = new Map(entries.map((e) => [e.name, e]));
  const out: StateEntry[] = [];
  const done = new Set<string>();
  for (const e of entries) {
    const suffix = e.name.endsWith(".bias") ? ".bias" : ".weight";
    const p = parts.get(e.name.slice(0, -suffix.length));
    if (!p) {
      out.push(e);
      continue;
    }
    const fusedName = `${p.fusedModule}${suffix}`;
    if (done.has(fusedName)) continue;
    done.add(fusedName);
    const members = [...parts].filter(([, q]) => q.fusedModule === p.fusedModule)
      .map(([m]) => byName.get(`${m}${suffix}`));
    if (members.some((m) => m === undefined)) {
      throw new RangeError(`cannot fuse ${fusedName}: one of its parts has no ${suffix.slice(1)}`);
    }
    const rows = members.reduce((s, m) => s + m!.shape[0], 0);
    out.push({
      name: fusedName,
      shape: [rows, ...e.shape.slice(1)],
      read: () => {
        const datas = members.map((m) => m!.read());
        const all = new Float32Array(datas.reduce((s, d) => s + d.length, 0));
        let at = 0;
        for (const d of datas) {
          all.set(d, at);
          at += d.length;
        }
        return all;
      },
    });
  }
  return out;
}

/** One module's PEFT tensors, as `peft_format.ts` exports them. */
export interface PeftRow {
  module: string;
  tensors: PeftTensor[];
}

/**
 * Rewrites per-part PEFT rows into fused-module rows at rank `MAX_PARTS · r` (zero-padded blocks,
 * see the module docs); returns the rows and the factors the rank and `lora_alpha` are scaled by.
 */
export function fusePeftRows(
  rows: PeftRow[],
  config: LlamaConfig,
  r: number,
  rslora: boolean,
): { rows: PeftRow[]; rankFactor: number; alphaFactor: number } {
  const parts = partIndex(config);
  if (parts.size === 0) return { rows, rankFactor: 1, alphaFactor: 1 };
  const R = MAX_PARTS * r;
  const tensor = (row: PeftRow, suffix: string) => row.tensors.find((t) => t.suffix === suffix);
  // fused (or plain) module → its part rows, by slot
  const groups = new Map<string, { slots: (PeftRow | undefined)[]; rowsPer: number[] }>();
  for (const row of rows) {
    const p = parts.get(row.module);
    const key = p ? p.fusedModule : row.module;
    if (!groups.has(key)) {
      const members = p ? [...parts.values()].filter((q) => q.fusedModule === key) : [undefined];
      groups.set(key, {
        slots: members.map(() => undefined),
        rowsPer: members.map((q) => q?.rows ?? tensor(row, "lora_B.weight")!.shape[0]),
      });
    }
    const g = groups.get(key)!;
    const slot = p ? [...parts.values()].filter((q) => q.fusedModule === key).indexOf(p) : 0;
    g.slots[slot] = row;
  }
  const out: PeftRow[] = [];
  for (const [module, g] of groups) {
    const I = tensor(g.slots.find((s) => s)!, "lora_A.weight")!.shape[1];
    const O = g.rowsPer.reduce((a, b) => a + b, 0);
    const A = new Float32Array(R * I), B = new Float32Array(O * R);
    const magnitude = g.slots.some((s) => s && tensor(s, "lora_magnitude_vector"))
      ? new Float32Array(O)
      : undefined;
    let row0 = 0;
    g.slots.forEach((s, k) => {
      if (s) {
        const a = tensor(s, "lora_A.weight")!.data, b = tensor(s, "lora_B.weight")!.data;
        A.set(a, k * r * I); // rows k·r .. k·r + r of A
        for (let o = 0; o < g.rowsPer[k]; o++) {
          for (let j = 0; j < r; j++) B[(row0 + o) * R + k * r + j] = b[o * r + j];
        }
        const m = tensor(s, "lora_magnitude_vector");
        if (magnitude && m) magnitude.set(m.data, row0);
      } else if (magnitude) {
        throw new RangeError(
          `saveAdapter: a DoRA adapter on ${module} needs every one of its fused parts targeted ` +
            "(target qkv_proj / gate_up_proj as a whole)",
        );
      }
      row0 += g.rowsPer[k];
    });
    out.push({
      module,
      tensors: [
        { suffix: "lora_A.weight", shape: [R, I], data: A },
        { suffix: "lora_B.weight", shape: [O, R], data: B },
        ...(magnitude ? [{ suffix: "lora_magnitude_vector", shape: [O], data: magnitude }] : []),
      ],
    });
  }
  return { rows: out, rankFactor: MAX_PARTS, alphaFactor: rslora ? Math.sqrt(MAX_PARTS) : MAX_PARTS };
}

/**
 * Splits the PEFT tensors of fused modules (`module → suffix → values`, `B` `[O, r]` over the
 * stacked rows) into their parts: each part gets a copy of `A` and its rows of `B` (and of a DoRA
 * magnitude vector). Modules that are not fused pass through. Shapes are checked, naming the key.
 */
export function splitPeftTensors(
  tensors: Map<string, Map<string, Float32Array>>,
  config: LlamaConfig,
  r: number,
  where: string,
): Map<string, Map<string, Float32Array>> {
  const parts = partIndex(config);
  if (parts.size === 0) return tensors;
  const fusedModules = new Set([...parts.values()].map((p) => p.fusedModule));
  const out = new Map<string, Map<string, Float32Array>>();
  for (const [module, values] of tensors) {
    if (!fusedModules.has(module)) {
      out.set(module, values);
      continue;
    }
    const members = [...parts].filter(([, p]) => p.fusedModule === module);
    const O = members.reduce((s, [, p]) => s + p.rows, 0);
    const A = values.get("lora_A.weight"), B = values.get("lora_B.weight");
    if (!A || !B || B.length !== O * r) {
      throw new TypeError(`${where}: ${module} needs lora_A and lora_B [${O}, ${r}] (fused rows, r=${r})`);
    }
    const m = values.get("lora_magnitude_vector");
    for (const [name, p] of members) {
      const part = new Map<string, Float32Array>([
        ["lora_A.weight", A.slice()],
        ["lora_B.weight", B.slice(p.start * r, (p.start + p.rows) * r)],
      ]);
      if (m) part.set("lora_magnitude_vector", m.slice(p.start, p.start + p.rows));
      out.set(name, part);
    }
  }
  return out;
}

/** In and out features of a fused module path (`model.layers.0.self_attn.qkv_proj`), or undefined. */
export function fusedModuleShape(
  config: LlamaConfig,
  module: string,
): { inFeatures: number; outFeatures: number } | undefined {
  const members = [...partIndex(config).values()].filter((p) => p.fusedModule === module);
  if (members.length === 0) return undefined;
  return { inFeatures: config.hiddenSize, outFeatures: members.reduce((s, p) => s + p.rows, 0) };
}

/** PEFT `target_modules` names → our linear names (`qkv_proj` → q/k/v, `gate_up_proj` → gate/up). */
export function expandFusedTargets(names: readonly string[], config: LlamaConfig): string[] {
  if (!config.fusedLinears) return [...names];
  return names.flatMap((n) => GROUPS.find((g) => g.fused.endsWith(`.${n}`) || g.fused === n)?.parts ?? [n]);
}
