import { quantize4bit } from "../../lib/quant/blockwise_4bit.ts";
import { bitsPerParam, estimateBitsPerParam } from "../../lib/quant/storage.ts";
import { assertEquals, assertThrows } from "./_fixture.ts";

Deno.test("bitsPerParam() is 4.5 without and about 4.127 with double quantization at blocksize 64", () => {
  const w = Float32Array.from({ length: 64 * 512 }, (_, i) => Math.sin(i));
  assertEquals(bitsPerParam(quantize4bit(w, { quantize: { blocksize: 64, doubleQuant: false } })), 4.5);
  const dq = bitsPerParam(quantize4bit(w, { quantize: { blocksize: 64 } }));
  assertEquals(dq, 4 + 8 / 64 + 32 / (64 * 256));
  assertEquals(Math.abs(dq - 4.127) < 0.0005, true);
  assertEquals(estimateBitsPerParam(), dq);
  assertEquals(estimateBitsPerParam({ quantize: { blocksize: 128, doubleQuant: false } }), 4.25);
  assertThrows(
    () => estimateBitsPerParam({ quantize: { blocksize: 100 } }),
    RangeError,
    "quantize.blocksize",
  );
  assertThrows(
    () => estimateBitsPerParam({ doubleQuant: true } as never),
    TypeError,
    'option "doubleQuant" was renamed to "quantize.doubleQuant"',
  );
});
