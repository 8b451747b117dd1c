import {
  dequantize4bit,
  nearestCode4bit,
  quantize4bit,
  type WeightDtype,
} from "../../lib/quant/blockwise_4bit.ts";
import type { QuantType4bit } from "../../lib/quant/codebooks.ts";
import { assertEquals, assertSameBits, assertThrows, bytes, f32s, loadFixture, sha256 } from "./_fixture.ts";

/** One case of tests/fixtures/quant/bnb_cases.json (written by tests/reference/quant_ref.py). */
export interface BnbCase {
  name: string;
  quantType: QuantType4bit;
  blocksize: number;
  shape: number[];
  dtype: WeightDtype;
  doubleQuant: boolean;
  input: string;
  packed: string;
  absmax: string;
  nestedCodes?: string;
  nestedScales?: string;
  nestedOffset?: number;
  absmaxUsed?: string;
  dequant?: string;
  dequantSha256: string;
  quantStateJson: string;
}
const FIXTURE = loadFixture<{ cases: BnbCase[] }>("bnb_cases.json");

for (const c of FIXTURE.cases) {
  Deno.test(`quantize4bit() reproduces the numpy reference bit for bit on ${c.name}`, async () => {
    const q = quantize4bit(f32s(c.input), {
      quantize: { type: c.quantType, blocksize: c.blocksize, doubleQuant: c.doubleQuant },
      shape: c.shape,
      dtype: c.dtype,
    });
    assertSameBits(q.packed, bytes(c.packed), "packed");
    if (c.doubleQuant) {
      assertSameBits(q.nested!.codes, bytes(c.nestedCodes!), "nested codes");
      assertSameBits(q.nested!.scales, f32s(c.nestedScales!), "nested scales");
      assertEquals(q.nested!.offset, c.nestedOffset);
      assertSameBits(q.absmax, f32s(c.absmaxUsed!), "reconstructed absmax");
    } else {
      assertSameBits(q.absmax, f32s(c.absmax), "absmax");
    }
    const deq = dequantize4bit(q);
    if (c.dequant !== undefined) assertSameBits(deq, f32s(c.dequant), "dequantized");
    assertEquals(await sha256(deq), c.dequantSha256);
    assertEquals(deq.some(Number.isNaN), false);
  });
}

Deno.test("quantize4bit() puts even elements in the high nibble", () => {
  const q = quantize4bit(new Float32Array([1, -1, 0]), { quantize: { type: "nf4", blocksize: 32 } });
  assertEquals([...q.packed], [0xf0, 0x77]); // codes 15, 0, then 0.0 → 7 and the padding 0.0 → 7
});

Deno.test("quantize4bit() maps an all-zero block to absmax 0 and zero outputs, never NaN", () => {
  for (const quantType of ["nf4", "fp4"] as const) {
    const q = quantize4bit(new Float32Array(64), { quantize: quantType });
    assertEquals(q.absmax[0], 0);
    assertEquals(dequantize4bit(q).every((v) => v === 0), true);
  }
});

Deno.test("nearestCode4bit() follows the CUDA FP4 constants, not the exact midpoints", () => {
  // 0.5833331 lies between the CUDA constant 0.583333f and the true midpoint 7/12: CUDA picks code 2.
  assertEquals(nearestCode4bit(Math.fround(0.5833331), "fp4"), 2);
  assertEquals(nearestCode4bit(Math.fround(0.583333), "fp4"), 5);
  assertEquals(nearestCode4bit(Number.NaN, "nf4"), 0);
});

Deno.test("quantize4bit() rejects bad blocksizes, unknown options and non-finite values", () => {
  const w = new Float32Array(64);
  assertThrows(() => quantize4bit(w, { quantize: { blocksize: 48 } }), RangeError, "32, 64, 128");
  assertThrows(() => quantize4bit(w, { quantize: { blocksize: 16 } }), RangeError);
  assertThrows(() => quantize4bit(w, { blockSize: 64 } as never), TypeError, 'unknown option "blockSize"');
  assertThrows(() => quantize4bit(w, { quantize: "int4" as never }), RangeError, "nf4");
  assertThrows(
    () => quantize4bit(w, { quantType: "nf4" } as never),
    TypeError,
    'quantize4bit: option "quantType" was renamed to "quantize"',
  );
  assertThrows(
    () => quantize4bit(w, { blocksize: 64 } as never),
    TypeError,
    'option "blocksize" was renamed to "quantize.blocksize"',
  );
  assertThrows(() => quantize4bit(w, { shape: [3, 4] }), TypeError, "does not hold 64");
  assertThrows(() => quantize4bit(new Float32Array([1, NaN])), RangeError, "values[1] is NaN");
});
