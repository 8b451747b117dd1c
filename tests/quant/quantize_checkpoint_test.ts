import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { openCheckpoint } from "../../lib/io/checkpoint_files.ts";
import { writeSafetensors } from "../../lib/io/safetensors_writer.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { quantizeCheckpoint, type QuantizeCheckpointOptions } from "../../lib/quant/quantize_checkpoint.ts";
import { QuantizedLinear } from "../../lib/quant/quantized_linear.ts";
import { parseQuantizeArgs } from "../../scripts/quantize.ts";

await initEngine({ backend: "cpu" });

const TINY = new URL("../fixtures/external/tiny-random-llama-2", import.meta.url).pathname;
const IDS = [[1, 42, 17, 7, 63, 5]];
/** A Llama with real 64-element blocks: hidden 64, intermediate 128, 4 heads / 2 kv heads, 2 layers. */
const SMALL_CONFIG = {
  model_type: "llama",
  vocab_size: 96,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  tie_word_embeddings: false,
};
const QUANT_LINEARS = 14; // 2 layers × 7 projections

async function smallCheckpoint(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_qc_" });
  const m = initModel(SMALL_CONFIG, { seed: 7 });
  await saveCheckpoint(m, dir, { dtype: "BF16" });
  m.dispose();
  await Deno.writeTextFile(`${dir}/tokenizer.json`, '{"model": {}}');
  await Deno.writeTextFile(`${dir}/generation_config.json`, '{"bos_token_id": 1}');
  await Deno.writeTextFile(`${dir}/notes.txt`, "not copied");
  return dir;
}

const SMALL = await smallCheckpoint();
const outDirs: string[] = [];
async function freshOut(): Promise<string> {
  const parent = await Deno.makeTempDir({ prefix: "nbtune_qc_out_" });
  outDirs.push(parent);
  return `${parent}/quantized`;
}

function lastLogits(model: LlamaForCausalLM, ids = IDS): Float32Array {
  const y = model.forward(ids);
  const T = ids[0].length, V = y.shape[2];
  const last = tf.tidy(() => tf.slice(y, [0, T - 1, 0], [1, 1, V]).dataSync() as Float32Array);
  y.dispose();
  return last;
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assertEquals(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}: element ${i} is ${a[i]}, expected ${b[i]}`);
  }
}

async function assertSameModel(a: LlamaForCausalLM, b: LlamaForCausalLM, what: string): Promise<void> {
  const la = a.linears(), lb = b.linears();
  assertEquals(la.length, lb.length);
  for (let i = 0; i < la.length; i++) {
    assertEquals(la[i].constructor.name, lb[i].constructor.name, `${what}: ${la[i].name} kind`);
    const wa = la[i].denseWeight(), wb = lb[i].denseWeight();
    sameBits(await wa.data(), await wb.data(), `${what}: ${la[i].name}`);
    wa.dispose();
    wb.dispose();
  }
  sameBits(lastLogits(a), lastLogits(b), `${what}: logits`);
}

for (const [label, dir] of [["tiny-random-llama-2", TINY], ["initModel 64-hidden", SMALL]]) {
  Deno.test(`a bnb 4-bit save of ${label} loads bit-identical to quantize-on-load (nf4/fp4, ±double quant)`, async () => {
    for (const quantType of ["nf4", "fp4"] as const) {
      for (const doubleQuant of [true, false]) {
        const out = await freshOut();
        const r = await quantizeCheckpoint(dir, out, { quantize: { type: quantType, doubleQuant } });
        assertEquals(r.quantizedWeights, QUANT_LINEARS);
        const saved = await loadModel(out);
        const onLoad = await loadModel(dir, { quantize: { type: quantType, doubleQuant } });
        assert(saved.linears().filter((l) => l instanceof QuantizedLinear).length === QUANT_LINEARS);
        await assertSameModel(saved, onLoad, `${label} ${quantType} dq=${doubleQuant}`);
        saved.dispose();
        onLoad.dispose();
      }
    }
  });
}

Deno.test("quantizeCheckpoint writes exactly the bnb tensor set and copies other tensors byte for byte", async () => {
  const out = await freshOut();
  const r = await quantizeCheckpoint(SMALL, out);
  using src = await openCheckpoint(SMALL);
  using dst = await openCheckpoint(out);
  const w = "model.layers.1.self_attn.k_proj.weight"; // [32, 64]: 2048 values, 32 blocks
  const suffixes = [
    "",
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    ".quant_state.bitsandbytes__nf4",
  ];
  for (const s of suffixes) assert(dst.has(w + s), `missing ${w + s}`);
  assertEquals(dst.names().filter((n) => n.startsWith(w)).length, suffixes.length);
  assertEquals([dst.info(w).dtype, ...dst.info(w).shape], ["U8", 1024, 1]);
  assertEquals([dst.info(`${w}.absmax`).dtype, ...dst.info(`${w}.absmax`).shape], ["U8", 32]);
  assertEquals([...dst.info(`${w}.nested_absmax`).shape], [1]);
  const json = JSON.parse(
    new TextDecoder().decode(await dst.readBytes(`${w}.quant_state.bitsandbytes__nf4`)),
  );
  assertEquals(Object.keys(json), [
    "quant_type",
    "blocksize",
    "dtype",
    "shape",
    "nested_blocksize",
    "nested_dtype",
    "nested_offset",
  ]);
  assertEquals([json.quant_type, json.blocksize, json.dtype, json.shape.join()], [
    "nf4",
    64,
    "bfloat16",
    "32,64",
  ]);
  // Everything that is not an attention/MLP projection is unchanged, lm_head included.
  for (const name of src.names().filter((n) => !/_proj\.weight$/.test(n))) {
    assertEquals(dst.info(name).dtype, src.info(name).dtype, name);
    sameBits(await dst.readBytes(name), await src.readBytes(name), name);
  }
  assertEquals(dst.names().length, src.names().length - QUANT_LINEARS + 6 * QUANT_LINEARS);
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  assertEquals(config.torch_dtype, "bfloat16");
  assertEquals(config.hidden_size, 64);
  const qc = config.quantization_config;
  assertEquals(
    [
      qc.quant_method,
      qc.load_in_4bit,
      qc.bnb_4bit_quant_type,
      qc.bnb_4bit_use_double_quant,
      qc.bnb_4bit_compute_dtype,
    ],
    ["bitsandbytes", true, "nf4", true, "bfloat16"],
  );
  assertEquals(r.copiedFiles, ["generation_config.json", "tokenizer.json"]);
  assertEquals([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
  ]);
  // Streaming: each input tensor is read once (plus the header), and the linears shrink to ~4.13 bits.
  const fileBytes = (await Deno.stat(`${SMALL}/model.safetensors`)).size;
  assert(
    r.bytesRead >= r.inputTensorBytes && r.bytesRead <= fileBytes,
    `read ${r.bytesRead} of ${fileBytes}`,
  );
  assert(Math.abs(r.bitsPerParam - 4.127) < 0.01, `bits/param ${r.bitsPerParam}`);
});

Deno.test("quantizeCheckpoint honours blocksize and skipModules", async () => {
  const out = await freshOut();
  const r = await quantizeCheckpoint(SMALL, out, {
    quantize: { blocksize: 128 },
    skipModules: ["lm_head", "mlp.down_proj"],
  });
  assertEquals(r.quantizedWeights, QUANT_LINEARS - 2);
  using dst = await openCheckpoint(out);
  assertEquals(dst.info("model.layers.0.mlp.down_proj.weight").dtype, "BF16");
  const qs = "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
  assertEquals(JSON.parse(new TextDecoder().decode(await dst.readBytes(qs))).blocksize, 128);
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  assertEquals(config.quantization_config.llm_int8_skip_modules, ["lm_head", "mlp.down_proj"]);
  const saved = await loadModel(out);
  const onLoad = await loadModel(SMALL, {
    quantize: { type: "nf4", blocksize: 128 },
    skipModules: ["lm_head", "mlp.down_proj"],
  });
  assert(!(saved.layers[0].linears.down_proj instanceof QuantizedLinear));
  await assertSameModel(saved, onLoad, "blocksize 128");
  saved.dispose();
  onLoad.dispose();
});

Deno.test("quantizeCheckpoint refuses a non-empty outDir unless overwrite, and replaces it whole", async () => {
  const out = await freshOut();
  await Deno.mkdir(out);
  await Deno.writeTextFile(`${out}/keep.txt`, "x");
  await assertRejects(() => quantizeCheckpoint(SMALL, out), Deno.errors.AlreadyExists, "overwrite: true");
  assertEquals(await Deno.readTextFile(`${out}/keep.txt`), "x");
  await quantizeCheckpoint(SMALL, out, { overwrite: true, quantize: "fp4" });
  const names = [...Deno.readDirSync(out)].map((e) => e.name);
  assert(!names.includes("keep.txt") && names.includes("model.safetensors"), names.join());
  const parent = out.slice(0, out.lastIndexOf("/"));
  assertEquals([...Deno.readDirSync(parent)].map((e) => e.name), ["quantized"]); // no temp or backup dirs left
  // An empty existing directory is fine without overwrite.
  const empty = await freshOut();
  await Deno.mkdir(empty);
  await quantizeCheckpoint(SMALL, empty);
});

Deno.test("a failed quantization leaves neither outDir nor temporary files", async () => {
  const bad = await Deno.makeTempDir({ prefix: "nbtune_qc_bad_" });
  outDirs.push(bad);
  await Deno.copyFile(`${SMALL}/config.json`, `${bad}/config.json`);
  using src = await openCheckpoint(SMALL);
  const victim = "model.layers.1.mlp.up_proj.weight";
  await writeSafetensors(
    `${bad}/model.safetensors`,
    src.names().map((name) => ({
      name,
      dtype: src.info(name).dtype,
      shape: src.info(name).shape,
      data: async () => {
        const b = await src.readBytes(name);
        if (name === victim) new Uint16Array(b.buffer)[5] = 0x7fc0; // a bf16 NaN
        return b;
      },
    })),
  );
  const out = await freshOut();
  await assertRejects(() => quantizeCheckpoint(bad, out), RangeError, `"${victim}"`);
  const parent = out.slice(0, out.lastIndexOf("/"));
  assertEquals([...Deno.readDirSync(parent)].length, 0);
});

Deno.test("quantizeCheckpoint rejects bad options and already-quantized inputs clearly", async () => {
  const out = await freshOut();
  const typo = { blockSize: 64 } as unknown as QuantizeCheckpointOptions;
  await assertRejects(() => quantizeCheckpoint(SMALL, out, typo), TypeError, "blockSize");
  await assertRejects(
    () => quantizeCheckpoint(SMALL, out, { quantize: { blocksize: 48 } }),
    RangeError,
    'quantizeCheckpoint: option "quantize.blocksize" must be one of 32, 64',
  );
  await assertRejects(
    () => quantizeCheckpoint(SMALL, out, { quantize: "int4" as "nf4" }),
    RangeError,
    "quantize",
  );
  await assertRejects(
    () => quantizeCheckpoint(SMALL, out, { quantType: "fp4" } as never),
    TypeError,
    'quantizeCheckpoint: option "quantType" was renamed to "quantize"',
  );
  await assertRejects(
    () => quantizeCheckpoint(SMALL, SMALL, { overwrite: true }),
    RangeError,
    "input directory",
  );
  await quantizeCheckpoint(SMALL, out);
  const again = await freshOut();
  await assertRejects(() => quantizeCheckpoint(out, again), RangeError, "already quantized");
});

Deno.test("the quantize CLI parses its flags and prints sizes and bits/param", async () => {
  const a = parseQuantizeArgs([
    "in",
    "out",
    "--quantize",
    "fp4",
    "--no-double-quant",
    "--blocksize",
    "256",
    "--overwrite",
  ]);
  assertEquals(a.options, { quantize: { type: "fp4", doubleQuant: false, blocksize: 256 }, overwrite: true });
  let threw = false;
  try {
    parseQuantizeArgs(["in", "out", "--bits", "4"]);
  } catch (e) {
    threw = e instanceof RangeError && (e as Error).message === "unknown option --bits (see --help)";
  }
  assert(threw, "unknown flags must be rejected with one line");
  const out = await freshOut();
  const script = new URL("../../scripts/quantize.ts", import.meta.url).pathname;
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, SMALL, out, "--no-double-quant"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(run.stdout);
  assert(run.success, new TextDecoder().decode(run.stderr));
  assert(/nf4 blocksize 64: quantized 14 weights .* at 4\.50\d bits\/param/.test(text), text);
  assert(/tensors: [\d.]+ MiB -> [\d.]+ MiB/.test(text), text);
});

Deno.test("cleanup temporary checkpoints", async () => {
  for (const d of [SMALL, ...outDirs]) await Deno.remove(d, { recursive: true }).catch(() => {});
});
