import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  bf16BitsToNumber,
  bf16ToFloat32,
  dtypeItemsize,
  DTYPES,
  f16BitsToNumber,
  f16ToFloat32,
  float32ToBf16,
  float32ToF16,
  fromFloat32,
  numberToBf16Bits,
  numberToF16Bits,
  parseDtype,
  tensorByteLength,
  toFloat32,
  toTyped,
} from "../../lib/io/dtypes.ts";

const ALL_16BIT = Uint16Array.from({ length: 65536 }, (_, i) => i);
const isF16NaN = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBf16NaN = (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
const bytesOf = (view: ArrayBufferView) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);

Deno.test("every f16 bit pattern widens to f32 and narrows back to itself (NaN stays NaN)", () => {
  const back = float32ToF16(f16ToFloat32(ALL_16BIT));
  for (let h = 0; h < 65536; h++) {
    if (isF16NaN(h)) ok(isF16NaN(back[h]), `NaN 0x${h.toString(16)} became 0x${back[h].toString(16)}`);
    else strictEqual(back[h], h, `0x${h.toString(16)}`);
  }
});

Deno.test("every bf16 bit pattern widens to f32 and narrows back to itself (NaN stays NaN)", () => {
  const back = float32ToBf16(bf16ToFloat32(ALL_16BIT));
  for (let h = 0; h < 65536; h++) {
    if (isBf16NaN(h)) ok(isBf16NaN(back[h]));
    else strictEqual(back[h], h, `0x${h.toString(16)}`);
  }
});

Deno.test("f16 decoding gives the IEEE values of normals, subnormals, zeros and infinities", () => {
  strictEqual(f16BitsToNumber(0x3c00), 1);
  strictEqual(f16BitsToNumber(0x7bff), 65504);
  strictEqual(f16BitsToNumber(0x0400), 2 ** -14);
  strictEqual(f16BitsToNumber(0x03ff), 1023 * 2 ** -24);
  strictEqual(f16BitsToNumber(0x0001), 2 ** -24);
  ok(Object.is(f16BitsToNumber(0x8000), -0));
  strictEqual(f16BitsToNumber(0x7c00), Infinity);
  ok(Number.isNaN(f16BitsToNumber(0x7e00)));
});

Deno.test("f32 to f16 rounds to nearest, ties to even, including into subnormals and overflow", () => {
  strictEqual(numberToF16Bits(1 + 2 ** -11), 0x3c00); // tie, 0x3c00 is even
  strictEqual(numberToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie, rounds up to even
  strictEqual(numberToF16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01); // above the tie
  strictEqual(numberToF16Bits(2 ** -25), 0x0000); // half the smallest subnormal: tie to 0
  strictEqual(numberToF16Bits(2 ** -25 + 2 ** -35), 0x0001);
  strictEqual(numberToF16Bits(3 * 2 ** -25), 0x0002); // tie between 1 and 2 subnormal units
  strictEqual(numberToF16Bits(1023.5 * 2 ** -24), 0x0400); // carries into the smallest normal
  strictEqual(numberToF16Bits(2 ** -30), 0x0000);
  strictEqual(numberToF16Bits(-(2 ** -30)), 0x8000);
  strictEqual(numberToF16Bits(65519), 0x7bff); // below the overflow tie
  strictEqual(numberToF16Bits(65520), 0x7c00); // tie with 2^16 rounds to Inf
  strictEqual(numberToF16Bits(-1e9), 0xfc00);
  strictEqual(numberToF16Bits(-Infinity), 0xfc00);
  ok(isF16NaN(numberToF16Bits(NaN)));
});

Deno.test("f32 to bf16 rounds to nearest, ties to even, and keeps NaN and infinities", () => {
  strictEqual(numberToBf16Bits(1 + 2 ** -8), 0x3f80);
  strictEqual(numberToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  strictEqual(numberToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  strictEqual(numberToBf16Bits(3.4028234663852886e38), 0x7f80); // f32 max rounds up to Inf
  strictEqual(numberToBf16Bits(-Infinity), 0xff80);
  ok(isBf16NaN(numberToBf16Bits(NaN)));
  strictEqual(bf16BitsToNumber(0x0001), 2 ** -133); // bf16 subnormal
  ok(Object.is(bf16BitsToNumber(0x8000), -0));
});

Deno.test("toFloat32() decodes every numeric dtype from little-endian bytes", () => {
  const f = [0, 1.5, -2, 1024];
  deepStrictEqual([...toFloat32("F64", bytesOf(new Float64Array(f)))], f);
  deepStrictEqual([...toFloat32("F32", bytesOf(new Float32Array(f)))], f);
  deepStrictEqual([...toFloat32("F16", bytesOf(new Uint16Array([0, 0x3e00, 0xc000, 0x6400])))], f);
  deepStrictEqual([...toFloat32("BF16", bytesOf(new Uint16Array([0, 0x3fc0, 0xc000, 0x4480])))], f);
  deepStrictEqual([...toFloat32("I32", bytesOf(new Int32Array([-7, 2 ** 31 - 1])))], [-7, 2 ** 31]);
  deepStrictEqual([...toFloat32("U32", bytesOf(new Uint32Array([2 ** 32 - 1])))], [2 ** 32]);
  deepStrictEqual([...toFloat32("I16", bytesOf(new Int16Array([-32768, 5])))], [-32768, 5]);
  deepStrictEqual([...toFloat32("U16", bytesOf(new Uint16Array([65535])))], [65535]);
  deepStrictEqual([...toFloat32("I8", new Uint8Array([0xff, 0x7f]))], [-1, 127]);
  deepStrictEqual([...toFloat32("U8", new Uint8Array([0xff, 3]))], [255, 3]);
  deepStrictEqual([...toFloat32("BOOL", new Uint8Array([0, 1, 2]))], [0, 1, 1]);
  deepStrictEqual(
    [...toFloat32("I64", bytesOf(new BigInt64Array([2n ** 53n, -(2n ** 62n), -1n])))],
    [2 ** 53, -(2 ** 62), -1],
  );
  deepStrictEqual([...toFloat32("U64", bytesOf(new BigUint64Array([2n ** 64n - 1n])))], [2 ** 64]);
});

Deno.test("toFloat32() decodes fp8 E4M3 (no infinities) and E5M2 (f16 upper byte)", () => {
  const e4m3 = toFloat32("F8_E4M3", new Uint8Array([0x38, 0x7e, 0x01, 0xfe, 0x7f]));
  deepStrictEqual([...e4m3.slice(0, 4)], [1, 448, 2 ** -9, -448]);
  ok(Number.isNaN(e4m3[4]));
  const e5m2 = toFloat32("F8_E5M2", new Uint8Array([0x3c, 0x7b, 0x7c, 0x01]));
  deepStrictEqual([...e5m2], [1, 57344, Infinity, 2 ** -16]);
});

Deno.test("toTyped() returns the natural typed array and copies misaligned input", () => {
  const expected: Record<string, string> = {
    F64: "Float64Array",
    F32: "Float32Array",
    F16: "Uint16Array",
    BF16: "Uint16Array",
    F8_E4M3: "Uint8Array",
    F8_E5M2: "Uint8Array",
    I64: "BigInt64Array",
    I32: "Int32Array",
    I16: "Int16Array",
    I8: "Int8Array",
    U64: "BigUint64Array",
    U32: "Uint32Array",
    U16: "Uint16Array",
    U8: "Uint8Array",
    BOOL: "Uint8Array",
  };
  deepStrictEqual([...DTYPES].sort(), Object.keys(expected).sort());
  for (const dtype of DTYPES) {
    strictEqual(toTyped(dtype, new Uint8Array(16)).constructor.name, expected[dtype]);
  }
  const misaligned = new Uint8Array(9).subarray(1);
  misaligned.set([0, 0, 0x80, 0x3f]);
  strictEqual((toTyped("F32", misaligned) as Float32Array)[0], 1);
  throws(() => toTyped("F32", new Uint8Array(6)), RangeError);
});

Deno.test("fromFloat32() encodes float dtypes that toFloat32() decodes back", () => {
  const values = new Float32Array([0.5, -3, 1024, 2 ** -20]);
  for (const dtype of ["F64", "F32", "F16", "BF16"] as const) {
    const bytes = fromFloat32(dtype, values);
    strictEqual(bytes.byteLength, values.length * dtypeItemsize(dtype));
    deepStrictEqual(toFloat32(dtype, bytes), values);
  }
  throws(() => fromFloat32("I32", values), RangeError);
});

Deno.test("unknown dtypes and bad shapes are rejected with messages naming them", () => {
  throws(
    () => parseDtype("Q4_0"),
    (e: Error) => e instanceof RangeError && /"Q4_0".*F32.*BF16/.test(e.message),
  );
  throws(
    () => tensorByteLength("F32", [2, -1]),
    (e: Error) => e instanceof RangeError && e.message.includes("-1"),
  );
  throws(() => tensorByteLength("F32", [1.5]), RangeError);
  strictEqual(tensorByteLength("I64", []), 8);
  strictEqual(tensorByteLength("BF16", [0, 7]), 0);
});
