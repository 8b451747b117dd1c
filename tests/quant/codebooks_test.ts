import { code4bit, createDynamicMap } from "../../lib/quant/codebooks.ts";
import { assertEquals, assertSameBits, f32s, loadFixture } from "./_fixture.ts";

const FIXTURE = loadFixture<{ dynamic_map: string; nf4: string; fp4: string }>("bnb_cases.json");

Deno.test("code4bit() and createDynamicMap() equal the numpy reference tables bit for bit", () => {
  assertSameBits(code4bit("nf4"), f32s(FIXTURE.nf4), "nf4");
  assertSameBits(code4bit("fp4"), f32s(FIXTURE.fp4), "fp4");
  assertSameBits(createDynamicMap(), f32s(FIXTURE.dynamic_map), "dynamic map");
});

Deno.test("createDynamicMap() is ascending, symmetric except for +1, with ±5.5e-7 as the smallest magnitudes", () => {
  const m = createDynamicMap();
  for (let i = 1; i < 256; i++) if (!(m[i] > m[i - 1])) throw new Error(`not ascending at ${i}`);
  for (let i = 0; i < 127; i++) assertEquals(m[i], -m[254 - i], `index ${i}`);
  assertEquals(Math.abs(m[126] - -5.5e-7) < 1e-12 && Math.abs(m[128] - 5.5e-7) < 1e-12, true);
});

Deno.test("code4bit() returns a copy that callers may mutate", () => {
  code4bit("nf4")[0] = 42;
  assertEquals(code4bit("nf4")[0], -1);
});
