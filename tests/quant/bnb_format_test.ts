import { quantize4bit } from "../../lib/quant/blockwise_4bit.ts";
import {
  bnbQuantizationConfig,
  bnbTensors,
  parseBnbWeight,
  type TensorEntry,
} from "../../lib/quant/bnb_format.ts";
import { FormatError } from "../../lib/io/format_error.ts";
import type { BnbCase } from "./blockwise_4bit_test.ts";
import { assertEquals, assertSameBits, assertThrows, f32s, loadFixture } from "./_fixture.ts";

const FIXTURE = loadFixture<{ cases: BnbCase[] }>("bnb_cases.json");
const W = "model.layers.0.self_attn.q_proj.weight";

function entries(c: BnbCase): Map<string, TensorEntry> {
  const q = quantize4bit(f32s(c.input), {
    quantize: { type: c.quantType, blocksize: c.blocksize, doubleQuant: c.doubleQuant },
    shape: c.shape,
    dtype: c.dtype,
  });
  return new Map(bnbTensors(W, q).map((e) => [e.name, e]));
}

for (const c of FIXTURE.cases) {
  Deno.test(`bnbTensors() writes the reference quant_state JSON bytes and parseBnbWeight() reads them back on ${c.name}`, () => {
    const byName = entries(c);
    const qs = byName.get(`${W}.quant_state.bitsandbytes__${c.quantType}`)!;
    assertEquals(new TextDecoder().decode(qs.data), c.quantStateJson);
    const back = parseBnbWeight(W, (n) => byName.get(n));
    assertEquals(back.shape, c.shape);
    assertSameBits(back.absmax, f32s(c.absmaxUsed ?? c.absmax), "absmax");
  });
}

Deno.test("bnbTensors() emits the transformers tensor set with nested tensors when double-quantized", () => {
  const c = FIXTURE.cases.find((x) => x.name === "uniform_nf4_bs128_odd_dq")!;
  const list = [...entries(c).values()].map((e) => `${e.name.slice(W.length)}:${e.dtype}:[${e.shape}]`);
  assertEquals(list, [
    ":U8:[389,1]",
    ".absmax:U8:[7]",
    ".quant_map:F32:[16]",
    ".nested_absmax:F32:[1]",
    ".nested_quant_map:F32:[256]",
    `.quant_state.bitsandbytes__nf4:U8:[${c.quantStateJson.length}]`,
  ]);
});

Deno.test("parseBnbWeight() accepts raw little-endian bytes and a non-U8 quant_storage", () => {
  const byName = entries(FIXTURE.cases[0]);
  const raw = (e: TensorEntry): TensorEntry => ({
    ...e,
    data: new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength).slice(),
  });
  const w = byName.get(W)!;
  const asBf16 = {
    ...w,
    dtype: "BF16",
    shape: [w.shape[0] / 2, 1],
    data: new Uint16Array(w.data.buffer.slice(0)),
  };
  const back = parseBnbWeight(W, (n) => n === W ? asBf16 : byName.has(n) ? raw(byName.get(n)!) : undefined);
  assertSameBits(back.packed, w.data, "packed bytes");
});

Deno.test("parseBnbWeight() reports a missing quant_state, bad lengths and an unknown quant_type", () => {
  const byName = entries(FIXTURE.cases[1]); // nested nf4
  const without = (drop: string) => (n: string) => n === drop ? undefined : byName.get(n);
  assertThrows(
    () => parseBnbWeight(W, without(`${W}.quant_state.bitsandbytes__nf4`)),
    FormatError,
    "not a bitsandbytes",
  );
  assertThrows(() => parseBnbWeight(W, without(`${W}.nested_absmax`)), FormatError, "missing");
  const short = { ...byName.get(W)!, data: new Uint8Array(3) };
  assertThrows(() => parseBnbWeight(W, (n) => n === W ? short : byName.get(n)), FormatError, "holds 3 bytes");
  const badJson = (json: string) => (n: string) =>
    n.endsWith("__nf4")
      ? { name: n, dtype: "U8", shape: [json.length], data: new TextEncoder().encode(json) }
      : byName.get(n);
  assertThrows(
    () =>
      parseBnbWeight(
        W,
        badJson('{"quant_type": "int4", "blocksize": 64, "dtype": "float32", "shape": [16, 64]}'),
      ),
    FormatError,
    'quant_type must be "nf4" or "fp4"',
  );
  assertThrows(
    () =>
      parseBnbWeight(
        W,
        badJson('{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [16, 32]}'),
      ),
    FormatError,
    "needs ceil(512 / 2) = 256",
  );
  assertThrows(
    () =>
      parseBnbWeight(
        W,
        badJson('{"quant_type": "nf4", "blocksize": 100, "dtype": "float32", "shape": [16, 64]}'),
      ),
    FormatError,
    "blocksize must be one of",
  );
  assertThrows(() => parseBnbWeight(W, badJson("{oops")), FormatError, "not UTF-8 JSON");
});

Deno.test("bnbQuantizationConfig() matches the transformers BitsAndBytesConfig dict", () => {
  assertEquals(bnbQuantizationConfig(), {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: "bfloat16",
    bnb_4bit_quant_storage: "uint8",
    bnb_4bit_quant_type: "nf4",
    bnb_4bit_use_double_quant: true,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: "bitsandbytes",
  });
  assertThrows(() => bnbQuantizationConfig({ quant_type: "nf4" } as never), TypeError, "unknown option");
});
