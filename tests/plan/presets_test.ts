import { getPreset, presetNames, presetParams } from "../../lib/plan/presets.ts";
import { countParamParts, countParams, linearModules, modelShape } from "../../lib/plan/model_shape.ts";
import { assert, assertEquals, assertNear, assertThrows } from "./_assert.ts";

// Golden totals: the parameter counts on the model cards / Hub (e.g. Llama-2-7b-hf
// "6.74B", Mistral-7B "7.24B", Meta-Llama-3-8B "8.03B", Qwen2-0.5B "0.49B",
// Llama-2-70b "69.0B"); exact integers derived by hand from the shapes.
const GOLDEN: [string, number][] = [
  ["0.5B", 494_032_768],
  ["1B", 1_235_814_400],
  ["3B", 3_212_749_824],
  ["7B", 6_738_415_616],
  ["mistral-7b", 7_241_732_096],
  ["8B", 8_030_261_248],
  ["13B", 13_015_864_320],
  ["34B", 33_743_970_304],
  ["65B", 65_285_660_672],
  ["70B", 68_976_648_192],
];

Deno.test("countParams() gives the published parameter count of every preset", () => {
  for (const [name, expected] of GOLDEN) assertEquals(countParams(getPreset(name).config), expected, name);
});

Deno.test("countParams() gives ≈6.74B for Llama-2-7B and ≈69B for Llama-2-70B", () => {
  assertNear(presetParams("7B") / 1e9, 6.74, 0.005);
  assertNear(presetParams("70B") / 1e9, 69.0, 0.05);
});

Deno.test("the 10B preset is the QLoRA seed's hypothetical counted as exactly 1e10 parameters", () => {
  assertEquals(presetParams("10B"), 10e9);
  assert(getPreset("10b").source.startsWith("hypothetical"));
});

Deno.test("Falcon-40B is modelled with 8 kv heads, a 2-matrix GELU MLP and LayerNorm", () => {
  const s = modelShape(getPreset("40B").config);
  assertEquals(s.mlp, "gelu");
  assertEquals(s.numKeyValueHeads, 8);
  assertEquals(s.norm, "layernorm");
  const names = linearModules(s).map((m) => m.name).join(",");
  assertEquals(names, "query_key_value,dense,dense_h_to_4h,dense_4h_to_h");
  // fused qkv: (128 + 2·8)·64 = 9216 outputs
  assertEquals(linearModules(s)[0].outFeatures, 9216);
  // 60·(8192·9216 + 8192² + 2·8192·32768) + 65024·8192 (tied lm_head) + norms ≈ 41.3B
  assertNear(countParams(s) / 1e9, 41.30, 0.01);
});

Deno.test("countParamParts() counts GQA k/v at kv_heads·head_dim and a tied lm_head once", () => {
  const p = countParamParts(getPreset("1B").config);
  assertEquals(p.lmHead, 0);
  // Llama-3.2-1B: q 2048², k,v 2048·512 each, o 2048², MLP 3·2048·8192, 16 layers
  assertEquals(p.linearWeights, 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192));
  const untied = countParamParts({ ...getPreset("1B").config, tie_word_embeddings: false });
  assertEquals(untied.total - p.total, 128256 * 2048);
});

Deno.test("modelShape() reads Qwen2's q/k/v biases and a camelCase parsed config", () => {
  const q = countParamParts(getPreset("0.5B").config);
  assertEquals(q.linearBiases, 24 * (896 + 128 + 128));
  const camel = modelShape({
    modelType: "llama",
    hiddenSize: 4096,
    intermediateSize: 11008,
    numHiddenLayers: 32,
    numAttentionHeads: 32,
    numKeyValueHeads: 32,
    vocabSize: 32000,
    tieWordEmbeddings: false,
  });
  assertEquals(countParams(camel), 6_738_415_616);
});

Deno.test("getPreset() rejects an unknown preset and lists the known ones", () => {
  assertThrows(() => getPreset("9B"), RangeError, "known presets are");
  assert(presetNames().includes("40B"));
});

Deno.test("modelShape() rejects a config missing hidden_size and an unknown mlp", () => {
  assertThrows(() => modelShape({ num_attention_heads: 2, vocab_size: 3 }), RangeError, "hidden_size");
  assertThrows(
    () =>
      modelShape({
        hidden_size: 8,
        num_attention_heads: 2,
        num_hidden_layers: 1,
        vocab_size: 3,
        mlp: "relu",
      }),
    RangeError,
    "mlp",
  );
});
