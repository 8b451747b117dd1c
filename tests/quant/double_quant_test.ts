import { createDynamicMap } from "../../lib/quant/codebooks.ts";
import { doubleDequantize, doubleQuantize, quantizeBlockwise8bit } from "../../lib/quant/double_quant.ts";
import { assertEquals, assertThrows } from "./_fixture.ts";

// Bit-exactness against the numpy reference is covered by blockwise_4bit_test.ts (the *_dq cases).

Deno.test("quantizeBlockwise8bit() picks the nearest code of the dynamic map", () => {
  const map = createDynamicMap();
  const values = Float32Array.from(
    map.subarray(0, 255),
    (v, i) => i % 2 === 0 ? v : (v + map[i + 1]) / 2.0001,
  );
  const { codes, scales } = quantizeBlockwise8bit(values, map, 256);
  assertEquals(scales[0], Math.abs(map[0]));
  for (let i = 0; i < 255; i += 2) {
    const x = Math.fround(values[i] * Math.fround(1 / scales[0]));
    let best = 0;
    for (let j = 1; j < 256; j++) if (Math.abs(map[j] - x) < Math.abs(map[best] - x)) best = j;
    assertEquals(codes[i], best, `value ${i}`);
  }
});

Deno.test("doubleQuantize() of equal absmax values is exact: offset carries them and scales are 0", () => {
  const dq = doubleQuantize(new Float32Array(10).fill(0.75));
  assertEquals(dq.offset, 0.75);
  assertEquals([...dq.scales], [0]);
  assertEquals([...doubleDequantize(dq)].every((v) => v === 0.75), true);
});

Deno.test("doubleDequantize() rejects a scales array of the wrong length", () => {
  const dq = doubleQuantize(new Float32Array(300).fill(1));
  assertThrows(
    () => doubleDequantize({ ...dq, scales: new Float32Array(1) }),
    TypeError,
    "2 values for 300 codes",
  );
});
