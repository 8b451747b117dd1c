import { quantBitsPerParam, quantConstantBits, quantTensorBytes } from "../../lib/plan/quant_bits.ts";
import { assertEquals, assertNear, assertThrows } from "./_assert.ts";

// Hand calculation (QLoRA §2, FORMATS.md §2.6): fp32 absmax per 64 → 32/64 = 0.5 bits;
// double quant: u8 absmax per 64 + fp32 scale per 64·256 → 8/64 + 32/16384 = 0.126953125.
Deno.test("NF4 with double quant at blocksize 64 costs 4.127 bits per parameter", () => {
  assertEquals(quantConstantBits(false, 64), 0.5);
  assertEquals(quantConstantBits(true, 64), 0.126953125);
  assertEquals(quantBitsPerParam(true, 64).toFixed(3), "4.127");
  assertEquals(quantBitsPerParam(false, 64), 4.5);
});

Deno.test("quantTensorBytes() matches the per-parameter rate on a large tensor", () => {
  const n = 4096 * 11008;
  const b = quantTensorBytes(n, true, 64);
  assertNear((8 * (b.codes + b.constants)) / n, 4.127, 0.001);
});

Deno.test("quant blocksizes outside bitsandbytes' list are rejected", () => {
  assertThrows(() => quantConstantBits(true, 48), RangeError, "blocksize must be one of");
});
