import { assert, assertAlmostEquals, assertEquals, assertThrows } from "../_assert.ts";
import { parseLlamaConfig } from "../../lib/models/llama_config.ts";
import { ropeInvFreq } from "../../lib/models/rope.ts";

const BASE = {
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 1,
  num_attention_heads: 4,
};

Deno.test("parseLlamaConfig() fills HF defaults (kv heads = heads, head_dim = hidden / heads)", () => {
  const c = parseLlamaConfig(BASE);
  assertEquals([c.numKeyValueHeads, c.headDim, c.ropeTheta, c.tieWordEmbeddings], [4, 16, 10000, false]);
});

Deno.test("rope_scaling linear and llama3 are parsed; unsupported kinds are named in the error", () => {
  const lin = parseLlamaConfig({ ...BASE, rope_scaling: { type: "linear", factor: 2 } });
  assertEquals(lin.ropeScaling, { type: "linear", factor: 2 });
  const l3 = parseLlamaConfig({
    ...BASE,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  });
  assertEquals(l3.ropeScaling?.type, "llama3");
  assertThrows(
    () => parseLlamaConfig({ ...BASE, rope_scaling: { type: "yarn", factor: 4 } }),
    RangeError,
    '"yarn" is not supported',
  );
});

Deno.test("linear RoPE scaling divides every frequency by the factor", () => {
  const plain = ropeInvFreq(16, 10000, null), scaled = ropeInvFreq(16, 10000, { type: "linear", factor: 4 });
  plain.forEach((f, i) => assertAlmostEquals(scaled[i], f / 4, 1e-15));
});

Deno.test("llama3 RoPE scaling keeps high frequencies, divides low ones by the factor and interpolates between", () => {
  const s = {
    type: "llama3" as const,
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  const plain = ropeInvFreq(128, 500000, null), scaled = ropeInvFreq(128, 500000, s);
  assertEquals(scaled[0], plain[0]); // wavelength 2π < 8192/4: unchanged
  assertAlmostEquals(scaled[63], plain[63] / 8, 1e-18); // longest wavelength: divided by factor
  const mid = plain.findIndex((f) => 2 * Math.PI / f > 2048 && 2 * Math.PI / f < 8192);
  assert(mid > 0 && scaled[mid] < plain[mid] && scaled[mid] > plain[mid] / 8, "interpolated band");
});

Deno.test("bad configs are rejected with the file and field named", () => {
  assertThrows(
    () => parseLlamaConfig({ ...BASE, num_key_value_heads: 3 }, "x/config.json"),
    RangeError,
    "x/config.json",
  );
  assertThrows(
    () => parseLlamaConfig({ ...BASE, hidden_size: "64" }),
    TypeError,
    '"hidden_size" must be a number',
  );
  assertThrows(
    () => parseLlamaConfig({ ...BASE, model_type: "gpt2" }),
    RangeError,
    "not a Llama-family model",
  );
  assertThrows(() => parseLlamaConfig({ ...BASE, hidden_act: "gelu" }), RangeError, "hidden_act");
});

Deno.test("llama3 RoPE frequencies equal the numpy reference (tests/reference/llama_ref.py rope_inv_freq)", () => {
  // Values printed by llama_ref.rope_inv_freq({head_dim: 128, theta: 500000, scaling: llama3 factor 8,
  // low 1, high 4, original 8192}) at indices 0, 20, 30, 35, 40, 63 (float64).
  const want = [
    1.0,
    0.016560440080994446,
    0.0013718935677611381,
    9.556212353964683e-05,
    3.428102195952591e-05,
    3.068925988914511e-07,
  ];
  const got = ropeInvFreq(128, 500000, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  [0, 20, 30, 35, 40, 63].forEach((i, k) => assertAlmostEquals(got[i] / want[k], 1, 1e-12, `index ${i}`));
});
