import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects, relError } from "../_assert.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { openCheckpoint } from "../../lib/io/checkpoint_files.ts";
import { FormatError } from "../../lib/io/format_error.ts";
import { writeSafetensors } from "../../lib/io/safetensors_writer.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { buildModel, loadModel, readModelConfig } from "../../lib/models/load_model.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { quantizeCheckpoint } from "../../lib/quant/quantize_checkpoint.ts";
import { dequantStats, QuantizedLinear, resetDequantStats } from "../../lib/quant/quantized_linear.ts";
import { quantizedLinearFactory } from "../../lib/quant/quantized_loaders.ts";
import { accumulateGradients } from "../../lib/train/accumulate.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";
import { blockwiseBackward } from "../../lib/train/blockwise.ts";
import { f32s, sha256 } from "./_fixture.ts";

await initEngine({ backend: "cpu" });

const TINY = new URL("../fixtures/external/tiny-random-llama-2", import.meta.url).pathname;
const GPTQ = new URL("../fixtures/gptq_model/", import.meta.url).pathname;
const GPTQ_VARIANTS = ["v1_g32", "v2_actorder", "v1_gm1_nogidx"];
const PYTHON = "/usr/bin/python3";
const temps: string[] = [];

async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "nbtune_qm_" });
  temps.push(d);
  return d;
}

function lastLogits(model: LlamaForCausalLM, ids: number[]): Float32Array {
  const y = model.forward([ids]);
  const V = y.shape[2];
  const last = tf.tidy(() => tf.slice(y, [0, ids.length - 1, 0], [1, 1, V]).dataSync() as Float32Array);
  y.dispose();
  return last;
}

// ---------------------------------------------------------------- GPTQ

interface GptqExpected {
  sha256: Record<string, string>;
  dequant: Record<string, { shape: number[]; f32: string }>;
  input_ids: number[];
  last_logits: number[];
}

for (const variant of GPTQ_VARIANTS) {
  Deno.test(`a GPTQ checkpoint (${variant}) dequantizes bit-exactly to the numpy reference and its logits match`, async () => {
    const dir = GPTQ + variant;
    const want: GptqExpected = JSON.parse(await Deno.readTextFile(`${dir}/expected_dequant.json`));
    const model = await loadModel(dir);
    const quantized = model.linears().filter((l) => l instanceof QuantizedLinear);
    assertEquals(quantized.length, Object.keys(want.sha256).length);
    for (const lin of quantized) {
      const w = lin.denseWeight();
      const data = await w.data() as Float32Array;
      w.dispose();
      const full = want.dequant[`${lin.name}.weight`];
      if (full) {
        assertEquals([lin.outFeatures, lin.inFeatures], full.shape);
        assertEquals(relError(data, f32s(full.f32)), 0, lin.name);
      }
      assertEquals(await sha256(data), want.sha256[`${lin.name}.weight`], `${lin.name} sha256`);
    }
    const err = relError(lastLogits(model, want.input_ids), want.last_logits);
    assert(err < 1e-4, `${variant}: logits rel err ${err}`);
    const row = model.summary().find((r) => r.kind === "attention")!;
    assertEquals(row.dtype, "gptq-4bit");
    model.dispose();
  });
}

Deno.test("tests/reference/make_gptq_model.py regenerates tests/fixtures/gptq_model identically", async () => {
  const out = await tempDir();
  const script = new URL("../reference/make_gptq_model.py", import.meta.url).pathname;
  const run = await new Deno.Command(PYTHON, { args: [script, out], stderr: "piped", stdout: "null" })
    .output();
  assert(run.success, new TextDecoder().decode(run.stderr));
  for (const v of GPTQ_VARIANTS) {
    for (const f of ["config.json", "quantize_config.json", "model.safetensors", "expected_dequant.json"]) {
      const a = await Deno.readFile(`${out}/${v}/${f}`), b = await Deno.readFile(`${GPTQ}${v}/${f}`);
      assertEquals(await sha256(a), await sha256(b), `${v}/${f} differs; regenerate and review`);
    }
  }
});

async function copyDir(src: string): Promise<string> {
  const dst = await tempDir();
  for (const e of Deno.readDirSync(src)) await Deno.copyFile(`${src}/${e.name}`, `${dst}/${e.name}`);
  return dst;
}

Deno.test("GPTQ loading rejects bits != 4, missing tensors and a quantize option", async () => {
  const dir = await copyDir(GPTQ + "v1_g32");
  await assertRejects(() => loadModel(dir, { quantize: "nf4" }), RangeError, "already quantized (gptq)");
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  delete cfg.quantization_config; // only quantize_config.json says GPTQ now
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(cfg));
  const q = JSON.parse(await Deno.readTextFile(`${dir}/quantize_config.json`));
  await Deno.writeTextFile(`${dir}/quantize_config.json`, JSON.stringify({ ...q, bits: 8 }));
  await assertRejects(() => loadModel(dir), RangeError, "GPTQ bits=8 is not supported");
  await Deno.writeTextFile(`${dir}/quantize_config.json`, JSON.stringify(q));
  (await loadModel(dir)).dispose(); // detected from quantize_config.json alone
  await rewrite(dir, (name) => name === "model.layers.1.mlp.up_proj.qzeros" ? null : undefined);
  await assertRejects(() => loadModel(dir), RangeError, 'has no "model.layers.1.mlp.up_proj.qzeros"');
});

// ---------------------------------------------------------------- malformed bitsandbytes directories

/**
 * Rewrites `dir/model.safetensors`: `edit(name, bytes)` returns `null` to drop a tensor, an entry to
 * replace it, or `undefined` to keep it.
 */
async function rewrite(
  dir: string,
  edit: (
    name: string,
    bytes: Uint8Array,
  ) => { name?: string; shape?: number[]; data?: Uint8Array } | null | undefined,
): Promise<void> {
  const entries = [];
  {
    using ckpt = await openCheckpoint(dir);
    for (const name of ckpt.names()) {
      const info = ckpt.info(name);
      const bytes = await ckpt.readBytes(name);
      const e = edit(name, bytes);
      if (e === null) continue;
      entries.push({
        name: e?.name ?? name,
        dtype: info.dtype,
        shape: e?.shape ?? [...info.shape],
        data: e?.data ?? bytes,
      });
    }
  }
  await writeSafetensors(`${dir}/model.safetensors`, entries, { metadata: { format: "pt" } });
}

const W = "model.layers.1.self_attn.q_proj.weight"; // [16, 16] in the tiny fixture: 256 values, 4 blocks
const QS = `${W}.quant_state.bitsandbytes__nf4`;
const editState = (f: (qs: Record<string, unknown>) => void) => (name: string, bytes: Uint8Array) => {
  if (name !== QS) return undefined;
  const qs = JSON.parse(new TextDecoder().decode(bytes));
  f(qs);
  const data = new TextEncoder().encode(JSON.stringify(qs));
  return { data, shape: [data.length] };
};

const BNB = await tempDir().then(async (d) => {
  await quantizeCheckpoint(TINY, `${d}/nf4`);
  return `${d}/nf4`;
});

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;
const MALFORMED: [string, Parameters<typeof rewrite>[1], ErrorClass, string][] = [
  [
    "a missing quant_state",
    (n) => (n === QS ? null : undefined),
    FormatError,
    "not a bitsandbytes 4-bit weight",
  ],
  ["a missing nested_absmax", (n) => (n === `${W}.nested_absmax` ? null : undefined), FormatError, "missing"],
  [
    "a packed weight of the wrong length",
    (n, b) => (n === W ? { data: b.slice(0, 100), shape: [100, 1] } : undefined),
    FormatError,
    "needs ceil(256 / 2) = 128",
  ],
  [
    "a quant_state shape that disagrees with the packed data",
    editState((qs) => (qs.shape = [16, 32])),
    FormatError,
    "holds 128 bytes",
  ],
  [
    "a quant_state shape that disagrees with the config",
    editState((qs) => (qs.shape = [8, 32])),
    TypeError,
    "does not match the config",
  ],
  [
    "a blocksize that disagrees with absmax",
    editState((qs) => (qs.blocksize = 128)),
    FormatError,
    "expected 2 (blocksize 128",
  ],
  ["an invalid blocksize", editState((qs) => (qs.blocksize = 48)), FormatError, "blocksize must be one of"],
  [
    "an unknown quant_type",
    editState((qs) => (qs.quant_type = "int4")),
    FormatError,
    'quant_type must be "nf4" or "fp4"',
  ],
];

for (const [what, edit, cls, message] of MALFORMED) {
  Deno.test(`loading a bnb 4-bit directory with ${what} fails clearly`, async () => {
    const dir = await copyDir(BNB);
    await rewrite(dir, edit);
    const e = await assertRejects(() => loadModel(dir), cls, message);
    if (e instanceof FormatError) assert(e.message.includes("model.layers.1.self_attn.q_proj"), e.message);
  });
}

Deno.test("loadModel refuses to quantize an already-quantized bnb directory or 8-bit configs", async () => {
  await assertRejects(
    () => loadModel(BNB, { quantize: "nf4" }),
    RangeError,
    "already quantized (bitsandbytes)",
  );
  const dir = await copyDir(BNB);
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  cfg.quantization_config = { ...cfg.quantization_config, load_in_4bit: false, load_in_8bit: true };
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(cfg));
  await assertRejects(() => loadModel(dir), RangeError, "only 4-bit");
});

// ---------------------------------------------------------------- training memory, summary, accuracy

Deno.test("a QLoRA step holds one dequantized weight at a time; forward and backward both dequantize", async () => {
  const model = await loadModel(TINY, { quantize: "nf4" });
  attachLoRA(model, { r: 4, targetModules: "all-linear" });
  const ids = [1, 42, 99, 7, 2999, 5, 6, 7];
  const batch = makeMicroBatch([{ ids, labels: ids }], 0);
  const before = tf.memory().numTensors;
  for (let step = 0; step < 2; step++) {
    resetDequantStats();
    const { grads } = accumulateGradients(model, model.trainableParams(), [batch]);
    grads.forEach((g) => g.dispose());
    const s = dequantStats();
    assertEquals(s.peak, 1, "more than one dequantized weight alive at once");
    assertEquals(s.live, 0);
    assertEquals(s.peakElements, 16 * 64, "the largest weight (MLP 64 × 16)");
    // 14 dequantizations in the forward pass and 11 in the backward: the input gradient of layer 0's
    // q/k/v projections is never needed (their input, the normed frozen embedding, depends on no
    // trainable variable), so tfjs skips those 3 gradient functions: 2 × 14 − 3 = 25.
    assertEquals(s.count, 2 * 14 - 3);
  }
  assertEquals(tf.memory().numTensors, before, "the training step leaked tensors");
  model.dispose();
});

Deno.test("a checkpointed QLoRA step dequantizes each layer twice, not three times, with the same gradients", async () => {
  const model = await loadModel(TINY, { quantize: "nf4" });
  attachLoRA(model, { r: 4, targetModules: "all-linear" });
  const ids = [1, 42, 99, 7, 2999, 5, 6, 7];
  const batch = makeMicroBatch([{ ids, labels: ids }], 0);
  const params = model.trainableParams();
  const ref = accumulateGradients(model, params, [batch]);
  const before = tf.memory().numTensors;
  resetDequantStats();
  const grads = new Map<tf.Variable, tf.Tensor>();
  const loss = blockwiseBackward(model, batch, batch.numTargets, (ps, gs) => {
    ps.forEach((p, i) => grads.set(p.variable, gs[i].clone()));
  });
  const s = dequantStats();
  // 14 in the forward pass, 14 in the recompute; the backward reuses the recomputed weights.
  assertEquals(s.count, 2 * 14);
  assertEquals(s.live, 0, "kept weights were not all freed");
  assertEquals(s.peak, 7, "one block's seven weights at most");
  assert(relError([loss], [ref.loss]) < 1e-5, `loss ${loss} vs ${ref.loss}`);
  params.forEach((p, i) => {
    const e = tf.tidy(() => tf.max(tf.abs(tf.sub(grads.get(p.variable)!, ref.grads[i]))).dataSync()[0]);
    assert(e < 1e-5, `${p.name}: gradients differ by ${e}`);
  });
  tf.dispose([...grads.values()]);
  assertEquals(tf.memory().numTensors, before, "the checkpointed step leaked tensors");
  tf.dispose(ref.grads);
  model.dispose();
});

const SUMMARY_CONFIG = {
  model_type: "llama",
  vocab_size: 64,
  hidden_size: 128,
  intermediate_size: 256,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  tie_word_embeddings: false,
};

Deno.test("summary() of a 4-bit model reports params, storage bytes and dtype per kind", async () => {
  const dir = await tempDir();
  const m = initModel(SUMMARY_CONFIG, { seed: 3 });
  await saveCheckpoint(m, dir);
  m.dispose();
  const D = 128, F = 256, KV = 64;
  const attnParams = 2 * (2 * D * D + 2 * KV * D), mlpParams = 2 * 3 * D * F;
  for (const [doubleQuant, dtype, bits] of [[true, "nf4+dq", 4.127], [false, "nf4", 4.5]] as const) {
    const model = await loadModel(dir, { quantize: { type: "nf4", doubleQuant } });
    const rows = Object.fromEntries(model.summary().map((r) => [r.kind, r]));
    assertEquals(rows.attention.params, attnParams);
    assertEquals(rows.mlp.params, mlpParams);
    for (const kind of ["attention", "mlp"]) {
      const r = rows[kind];
      assertEquals(r.trainable, 0);
      const expected = (r.params * bits) / 8;
      assert(Math.abs(r.bytes - expected) / expected < 0.005, `${kind}: ${r.bytes} bytes vs ${expected}`);
    }
    assertEquals([rows.embedding.dtype, rows.lm_head.dtype], ["fp32", "fp32"]);
    assertEquals(rows.lm_head.bytes, 64 * D * 4);
    // One storage kind per row, listed once even when it contains "+".
    assertEquals([rows.attention.dtype, rows.mlp.dtype], [dtype, dtype]);
    model.dispose();
  }
});

Deno.test("a 4-bit forward stays close to full precision on tiny-random-llama-2", async () => {
  const ids = [1, 42, 99, 7, 2999, 5, 6, 7, 8, 9];
  const full = await loadModel(TINY);
  const ref = lastLogits(full, ids);
  full.dispose();
  // Measured (last-position logits, max-abs relative): nf4 0.044, fp4 0.056, with or without double quant.
  for (const [quantize, bound] of [["nf4", 0.06], ["fp4", 0.08]] as const) {
    for (const doubleQuant of [true, false]) {
      const m = await loadModel(TINY, { quantize: { type: quantize, doubleQuant } });
      const err = relError(lastLogits(m, ids), ref);
      assert(err > 0 && err < bound, `${quantize} dq=${doubleQuant}: rel err ${err}`);
      m.dispose();
    }
  }
});

Deno.test("quantize-on-load reads each tensor of the checkpoint exactly once", async () => {
  const config = await readModelConfig(TINY);
  using reader = await openCheckpoint(TINY);
  const model = await buildModel(config, reader, quantizedLinearFactory({ quantize: "nf4" }));
  const fileBytes = (await Deno.stat(`${TINY}/model.safetensors`)).size;
  const tensorBytes = reader.names().reduce((s, n) => s + reader.info(n).byteLength, 0);
  assert(
    reader.bytesRead >= tensorBytes && reader.bytesRead <= fileBytes,
    `${reader.bytesRead} of ${fileBytes}`,
  );
  model.dispose();
});

Deno.test("cleanup temporary directories", async () => {
  for (const d of temps) await Deno.remove(d, { recursive: true }).catch(() => {});
});
