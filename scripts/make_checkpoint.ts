/**
 * `deno task make-checkpoint <name> [--out dir] [--layers N] [--seed N] [--max-shard-gb X]`:
 * writes a random-weight Hugging Face Llama checkpoint of a real model's exact shapes (BF16,
 * sharded, `model.safetensors.index.json` + `config.json` with the real keys) for benchmarks.
 * Tensors are generated one at a time while the shards are written, so even the 13.5 GB 7B shape
 * never sits in memory. Weights are uniform with the std of HF's `initializer_range` (0.02),
 * norms are 1: the numbers are meaningless, the shapes and the work per step are real.
 * @module
 */
import { CliUsageError, defineCli, parseCli, runCli } from "./_cli.ts";
import { writeShardedSafetensors } from "../lib/io/checkpoint_files.ts";
import type { SafetensorsEntry } from "../lib/io/safetensors_writer.ts";

/** The shape of a Llama-family model as its `config.json` states it. */
export interface CheckpointShape {
  /** `num_hidden_layers`. */
  layers: number;
  /** `hidden_size`. */
  hidden: number;
  /** `num_attention_heads`. */
  heads: number;
  /** `num_key_value_heads`. */
  kvHeads: number;
  /** `intermediate_size`. */
  mlp: number;
  /** `vocab_size`. */
  vocab: number;
  /** `tie_word_embeddings`. */
  tied: boolean;
  /** `rope_theta`. */
  ropeTheta: number;
  /** `rms_norm_eps`. */
  rmsNormEps: number;
  /** `max_position_embeddings`. */
  maxPositions: number;
}

/** The shapes `make-checkpoint` knows, by name. */
export const CHECKPOINT_SHAPES: Record<string, CheckpointShape> = {
  "smollm-135m": {
    layers: 30,
    hidden: 576,
    heads: 9,
    kvHeads: 3,
    mlp: 1536,
    vocab: 49152,
    tied: true,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositions: 2048,
  },
  "tinyllama-1.1b": {
    layers: 22,
    hidden: 2048,
    heads: 32,
    kvHeads: 4,
    mlp: 5632,
    vocab: 32000,
    tied: false,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositions: 2048,
  },
  "llama-2-7b": {
    layers: 32,
    hidden: 4096,
    heads: 32,
    kvHeads: 32,
    mlp: 11008,
    vocab: 32000,
    tied: false,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositions: 4096,
  },
};

/** Parsed command line of `make-checkpoint`. */
export interface MakeCheckpointArgs {
  name: string;
  out: string;
  /** Overrides the number of layers (small test variants). */
  layers?: number;
  seed: number;
  /** Largest shard, in bytes (default: 2 GB, or half the model when smaller, so there are always 2+ shards). */
  maxShardBytes?: number;
}

const MAKE_CHECKPOINT_CLI = defineCli({
  name: "make-checkpoint",
  summary:
    "Writes a random-weight HF checkpoint (BF16, sharded, model.safetensors.index.json, config.json) " +
    "in the exact shape of a real model, for benchmarks at real sizes. Nothing it writes is committed.",
  usage: "deno task make-checkpoint <name> [options]",
  positionals: { min: 1, max: 1, names: `<${Object.keys(CHECKPOINT_SHAPES).join("|")}>` },
  options: {
    out: {
      type: "string",
      defaultText: "out/checkpoints/<name>",
      placeholder: "DIR",
      description: "output folder",
      example: "--out /data/tinyllama-shape",
    },
    layers: {
      type: "integer",
      min: 1,
      description: "fewer layers (small test variants)",
      example: "--layers 2",
    },
    seed: { type: "integer", min: 0, default: 1, description: "weights seed", example: "--seed 7" },
    "max-shard-size": {
      type: "size",
      defaultText: "2GB, or half the model when smaller (always 2+ shards)",
      description: "largest shard",
      example: "--max-shard-size 1GB",
    },
  },
  examples: [
    "deno task make-checkpoint tinyllama-1.1b",
    "deno task make-checkpoint smollm-135m --layers 2 --out out/t",
  ],
  renamed: { "max-shard-gb": "--max-shard-size (with a unit, e.g. 2GB)" },
});

/**
 * Parses the command line; throws a `CliUsageError` (one line) on anything unexpected.
 *
 * @example
 * ```ts
 * import { parseMakeCheckpointArgs } from "./make_checkpoint.ts";
 * const a = parseMakeCheckpointArgs(["smollm-135m", "--layers", "2"]);
 * if (a.out !== "out/checkpoints/smollm-135m" || a.layers !== 2) throw new Error(JSON.stringify(a));
 * ```
 */
export function parseMakeCheckpointArgs(args: string[]): MakeCheckpointArgs {
  const { values: v, positionals } = parseCli(MAKE_CHECKPOINT_CLI, args);
  const name = positionals[0];
  if (!(name in CHECKPOINT_SHAPES)) {
    throw new CliUsageError(`unknown model "${name}": use ${Object.keys(CHECKPOINT_SHAPES).join(", ")}`);
  }
  return {
    name,
    out: v.out ?? `out/checkpoints/${name}`,
    ...(v.layers === undefined ? {} : { layers: v.layers }),
    seed: v.seed,
    ...(v["max-shard-size"] === undefined ? {} : { maxShardBytes: v["max-shard-size"] }),
  };
}

/** The HF `config.json` of a shape (LlamaForCausalLM, bf16). */
export function hfConfig(s: CheckpointShape): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: s.hidden,
    intermediate_size: s.mlp,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.hidden / s.heads,
    vocab_size: s.vocab,
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: s.rmsNormEps,
    rope_theta: s.ropeTheta,
    rope_scaling: null,
    hidden_act: "silu",
    tie_word_embeddings: s.tied,
    attention_bias: false,
    mlp_bias: false,
    initializer_range: 0.02,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "bfloat16",
  };
}

/** Tensor names and shapes of a shape, in HF order (embedding, layers, norm, head). */
export function tensorList(s: CheckpointShape): { name: string; shape: [number] | [number, number] }[] {
  const dh = s.hidden / s.heads;
  const out: { name: string; shape: [number] | [number, number] }[] = [
    { name: "model.embed_tokens.weight", shape: [s.vocab, s.hidden] },
  ];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.hidden] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.heads * dh, s.hidden] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [s.kvHeads * dh, s.hidden] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [s.kvHeads * dh, s.hidden] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.hidden, s.heads * dh] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [s.mlp, s.hidden] },
      { name: `${p}.mlp.up_proj.weight`, shape: [s.mlp, s.hidden] },
      { name: `${p}.mlp.down_proj.weight`, shape: [s.hidden, s.mlp] },
    );
  }
  out.push({ name: "model.norm.weight", shape: [s.hidden] });
  if (!s.tied) out.push({ name: "lm_head.weight", shape: [s.vocab, s.hidden] });
  return out;
}

/** BF16 1.0. */
const BF16_ONE = 0x3f80;

/**
 * Fills `n` BF16 values uniform in ±0.02·√3 (std 0.02) from a xorshift32 stream seeded by `seed`.
 *
 * @example
 * ```ts
 * import { randomBf16 } from "./make_checkpoint.ts";
 * const a = randomBf16(1000, 7);
 * const f = new Float32Array(new Uint32Array(Array.from(a, (h) => h << 16)).buffer);
 * if (Math.max(...f.map(Math.abs)) > 0.035 || randomBf16(1000, 7)[999] !== a[999]) throw new Error();
 * ```
 */
export function randomBf16(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  const a = 0.02 * Math.sqrt(3);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    f[0] = ((x >>> 0) / 4294967296 * 2 - 1) * a;
    out[i] = u[0] >>> 16;
  }
  return out;
}

/**
 * Writes the checkpoint; returns the directory and the bytes of tensor data written.
 *
 * @example
 * ```ts
 * import { makeCheckpoint } from "./make_checkpoint.ts";
 * const out = await Deno.makeTempDir();
 * const r = await makeCheckpoint({ name: "smollm-135m", out, layers: 1, seed: 1, maxShardBytes: 60e6 });
 * if (r.shards !== 2 || r.params !== 49152 * 576 + 1536 * 576 + 3 * 576 * 1536 + 3 * 576) throw new Error(`${r.shards}, ${r.params}`);
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function makeCheckpoint(
  args: MakeCheckpointArgs,
): Promise<{ dir: string; bytes: number; shards: number; params: number }> {
  const shape = { ...CHECKPOINT_SHAPES[args.name], ...(args.layers ? { layers: args.layers } : {}) };
  await Deno.mkdir(args.out, { recursive: true });
  // Shards of an earlier run with another shard count would otherwise stay beside the new ones.
  for (const e of Deno.readDirSync(args.out)) {
    if (/^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/.test(e.name)) {
      Deno.removeSync(`${args.out}/${e.name}`);
    }
  }
  await Deno.writeTextFile(`${args.out}/config.json`, JSON.stringify(hfConfig(shape), null, 2) + "\n");
  let k = 0, params = 0;
  const entries: SafetensorsEntry[] = tensorList(shape).map(({ name, shape: dims }) => {
    const n = dims.reduce((a, b) => a * b, 1);
    params += n;
    const seed = args.seed * 100003 + k++;
    return {
      name,
      dtype: "BF16",
      shape: dims,
      data: () => dims.length === 1 ? new Uint16Array(n).fill(BF16_ONE) : randomBf16(n, seed),
    };
  });
  const total = 2 * params;
  const r = await writeShardedSafetensors(args.out, entries, {
    maxShardBytes: args.maxShardBytes ?? Math.min(2e9, Math.ceil(total / 2) + 1),
    metadata: { format: "pt" },
  });
  return { dir: args.out, bytes: r.totalSize, shards: r.files.length, params };
}

if (import.meta.main) {
  await runCli(MAKE_CHECKPOINT_CLI, async () => {
    const args = parseMakeCheckpointArgs(Deno.args);
    const t0 = performance.now();
    const r = await makeCheckpoint(args);
    console.log(
      `${args.name}${args.layers ? ` (${args.layers} layers)` : ""}: ${
        (r.params / 1e6).toFixed(1)
      }M params, ` +
        `${(r.bytes / 1e9).toFixed(2)} GB BF16 in ${r.shards} shard(s) -> ${r.dir} ` +
        `(${((performance.now() - t0) / 1000).toFixed(1)} s)`,
    );
  });
}
