import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { FormatError } from "../../lib/io/format_error.ts";
import { decodeSafetensors, openSafetensors } from "../../lib/io/safetensors_reader.ts";
import { writeSafetensors } from "../../lib/io/safetensors_writer.ts";

const FIXTURE = new URL("../fixtures/external/tiny-random-llama-2/model.safetensors", import.meta.url)
  .pathname;
const HAS_FIXTURE = (() => {
  try {
    return Deno.statSync(FIXTURE).isFile;
  } catch {
    return false;
  }
})();

/** Shapes from tests/fixtures/external/README.md (stas/tiny-random-llama-2). */
function fixtureShapes(): Record<string, number[]> {
  const shapes: Record<string, number[]> = {
    "lm_head.weight": [3000, 16],
    "model.embed_tokens.weight": [3000, 16],
    "model.norm.weight": [16],
  };
  for (const l of [0, 1]) {
    const p = `model.layers.${l}.`;
    shapes[p + "input_layernorm.weight"] = [16];
    shapes[p + "post_attention_layernorm.weight"] = [16];
    for (const x of "qkvo") shapes[`${p}self_attn.${x}_proj.weight`] = [16, 16];
    shapes[p + "mlp.gate_proj.weight"] = [64, 16];
    shapes[p + "mlp.up_proj.weight"] = [64, 16];
    shapes[p + "mlp.down_proj.weight"] = [16, 64];
  }
  return shapes;
}

/** Builds a raw safetensors file from a header object (or raw header text) and a data length. */
function rawFile(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  return out;
}

async function tempFile(bytes: Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "nbtune_st_", suffix: ".safetensors" });
  await Deno.writeFile(path, bytes);
  return path;
}

/** Asserts that opening (and decoding in memory) fails with a FormatError naming file and tensor. */
async function assertRejected(bytes: Uint8Array, tensor: string | undefined, pattern: RegExp): Promise<void> {
  const path = await tempFile(bytes);
  try {
    await rejects(openSafetensors(path), (e: unknown) => {
      ok(e instanceof FormatError, `expected FormatError, got ${e}`);
      ok(e instanceof SyntaxError);
      strictEqual(e.file, path);
      ok(e.message.startsWith(path), e.message);
      strictEqual(e.tensor, tensor);
      if (tensor !== undefined) ok(e.message.includes(JSON.stringify(tensor)), e.message);
      ok(pattern.test(e.message), `${e.message} does not match ${pattern}`);
      ok(typeof e.offset === "number");
      return true;
    });
    throws(
      () => decodeSafetensors(bytes, "mem"),
      (e: unknown) => e instanceof FormatError && e.file === "mem",
    );
  } finally {
    await Deno.remove(path);
  }
}

const W = (dtype: string, shape: unknown, data_offsets: unknown) => ({ dtype, shape, data_offsets });

Deno.test({
  name: "the real tiny-random-llama-2 header lists 21 BF16 tensors with the README's shapes",
  ignore: !HAS_FIXTURE,
  async fn() {
    using st = await openSafetensors(FIXTURE);
    const shapes = fixtureShapes();
    strictEqual(st.names().length, 21);
    deepStrictEqual(st.names(), Object.keys(shapes).sort()); // file order = name order in this file
    deepStrictEqual(st.metadata, { format: "pt" });
    strictEqual(st.dataOffset, 8 + 2160);
    for (const name of st.names()) {
      const info = st.info(name);
      strictEqual(info.dtype, "BF16");
      deepStrictEqual(info.shape, shapes[name]);
      strictEqual(info.byteLength, shapes[name].reduce((a, b) => a * b, 1) * 2);
    }
    const last = st.info(st.names()[20]);
    strictEqual(last.byteOffset + last.byteLength, (await Deno.stat(FIXTURE)).size);
  },
});

Deno.test({
  name: "readFloat32() on the real fixture matches decoding its raw bytes by hand",
  ignore: !HAS_FIXTURE,
  async fn() {
    using st = await openSafetensors(FIXTURE);
    const whole = await Deno.readFile(FIXTURE);
    const view = new DataView(whole.buffer);
    const scratch = new DataView(new ArrayBuffer(4));
    for (const name of ["model.norm.weight", "model.layers.0.self_attn.q_proj.weight", "lm_head.weight"]) {
      const { byteOffset, byteLength } = st.info(name);
      const got = await st.readFloat32(name);
      strictEqual(got.length, byteLength / 2);
      for (let i = 0; i < got.length; i += 7) {
        scratch.setUint32(0, view.getUint16(byteOffset + 2 * i, true) << 16);
        strictEqual(got[i], scratch.getFloat32(0), `${name}[${i}]`);
      }
      ok(got.some((v) => v !== 0));
    }
    const raw = await st.readTyped("model.norm.weight");
    ok(raw instanceof Uint16Array && raw.length === 16);
  },
});

Deno.test("opening reads only the header, and reading one tensor reads only its bytes", async () => {
  // 40 tensors of 1 MiB: a file much larger than any read; written lazily, tensor by tensor.
  const COUNT = 40;
  const ELEMS = 262_144;
  const dir = await Deno.makeTempDir({ prefix: "nbtune_big_" });
  const path = `${dir}/big.safetensors`;
  try {
    await writeSafetensors(
      path,
      Array.from({ length: COUNT }, (_, i) => ({
        name: `layer.${i}`,
        dtype: "F32" as const,
        shape: [ELEMS],
        data: () => new Float32Array(ELEMS).fill(i + 0.5),
      })),
    );
    const size = (await Deno.stat(path)).size;
    ok(size > COUNT * ELEMS * 4);
    using st = await openSafetensors(path);
    strictEqual(st.stats.bytesRead, st.dataOffset); // 8-byte prefix + header, nothing else
    const before = st.stats.bytesRead;
    const t = await st.readFloat32("layer.17");
    strictEqual(st.stats.bytesRead - before, ELEMS * 4);
    strictEqual(st.stats.reads, 3);
    strictEqual(t.length, ELEMS);
    ok(t.every((v) => v === 17.5));
    // Concurrent reads share one handle; seek+read pairs must not interleave.
    const many = await Promise.all([3, 39, 0, 22].map((i) => st.readFloat32(`layer.${i}`)));
    deepStrictEqual(many.map((a) => [a[0], a[ELEMS - 1]]), [[3.5, 3.5], [39.5, 39.5], [0.5, 0.5], [
      22.5,
      22.5,
    ]]);
    strictEqual(st.stats.bytesRead - before, 5 * ELEMS * 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zero-size and scalar tensors are valid, and names() follows data offsets", async () => {
  const bytes = rawFile({
    b: W("F32", [], [4, 8]),
    empty: W("BF16", [0, 5], [4, 4]),
    a: W("I32", [1], [0, 4]),
  }, 8);
  new DataView(bytes.buffer).setInt32(bytes.byteLength - 8, -9, true);
  new DataView(bytes.buffer).setFloat32(bytes.byteLength - 4, 2.5, true);
  const path = await tempFile(bytes);
  try {
    using st = await openSafetensors(path);
    deepStrictEqual(st.names(), ["a", "empty", "b"]);
    deepStrictEqual(st.metadata, {});
    deepStrictEqual([...await st.readFloat32("b")], [2.5]);
    deepStrictEqual([...await st.readTyped("a") as Int32Array], [-9]);
    strictEqual((await st.readBytes("empty")).byteLength, 0);
    ok(st.has("a") && !st.has("c"));
    throws(() => st.info("c"), (e: Error) => e instanceof RangeError && e.message.includes('"c"'));
    st.close();
    await rejects(st.readBytes("a"), /closed/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("a file shorter than 8 bytes is rejected", async () => {
  await assertRejected(new Uint8Array(5), undefined, /5 bytes, shorter than/);
});

Deno.test("a header length past the file or above the 100 MB cap is rejected", async () => {
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 40n, true);
  await assertRejected(huge, undefined, /exceeds the 100000000-byte limit/);
  const past = new Uint8Array(20);
  new DataView(past.buffer).setBigUint64(0, 100n, true);
  await assertRejected(past, undefined, /runs past the end of the 20-byte file/);
});

Deno.test("a header that is not UTF-8 JSON or not an object is rejected", async () => {
  const bad = rawFile("{}", 0);
  bad.set([0xff, 0xfe], 8);
  await assertRejected(bad, undefined, /not valid UTF-8 JSON/);
  await assertRejected(rawFile('{"a": ', 0), undefined, /not valid UTF-8 JSON/);
  await assertRejected(rawFile("[1, 2]", 0), undefined, /must be a JSON object, got an array/);
  await assertRejected(rawFile("null", 0), undefined, /must be a JSON object/);
  await assertRejected(
    rawFile({ __metadata__: { format: 1 } }, 0),
    undefined,
    /__metadata__\.format must be a string/,
  );
});

Deno.test("entries with missing or mistyped fields are rejected, naming the tensor", async () => {
  await assertRejected(
    rawFile({ w: { shape: [1], data_offsets: [0, 4] } }, 4),
    "w",
    /"dtype" must be a string/,
  );
  await assertRejected(
    rawFile({ w: { dtype: "F32", data_offsets: [0, 4] } }, 4),
    "w",
    /"shape" must be an array/,
  );
  await assertRejected(rawFile({ w: { dtype: "F32", shape: [1] } }, 4), "w", /"data_offsets" must be/);
  await assertRejected(rawFile({ w: W("F32", [1], ["0", 4]) }, 4), "w", /"data_offsets" must be/);
  await assertRejected(rawFile({ w: 3 }, 4), "w", /entry must be an object/);
});

Deno.test("negative or fractional dimensions and unknown dtypes are rejected", async () => {
  await assertRejected(rawFile({ w: W("F32", [-1], [0, 4]) }, 4), "w", /dimension -1/);
  await assertRejected(rawFile({ w: W("F32", [1.5], [0, 4]) }, 4), "w", /dimension 1\.5/);
  await assertRejected(rawFile({ w: W("Q4", [1], [0, 4]) }, 4), "w", /unknown dtype "Q4".*BF16/);
});

Deno.test("bad offsets are rejected: begin > end, wrong size, outside the buffer", async () => {
  await assertRejected(rawFile({ w: W("F32", [1], [4, 0]) }, 4), "w", /begin > end/);
  await assertRejected(rawFile({ w: W("F32", [2], [0, 4]) }, 4), "w", /holds 4 bytes .* needs 8/);
  await assertRejected(rawFile({ w: W("F32", [2], [0, 8]) }, 4), "w", /run past the 4-byte data buffer/);
});

Deno.test("overlaps, gaps and uncovered trailing bytes are rejected with the first culprit", async () => {
  await assertRejected(
    rawFile({ a: W("F32", [2], [0, 8]), b: W("F32", [1], [4, 8]) }, 8),
    "b",
    /overlap tensor "a" which ends at 8/,
  );
  await assertRejected(
    rawFile({ a: W("F32", [1], [0, 4]), b: W("F32", [1], [8, 12]) }, 12),
    "b",
    /gap .* bytes \[4, 8\)/,
  );
  await assertRejected(rawFile({ a: W("F32", [1], [4, 8]) }, 8), "a", /gap .* bytes \[0, 4\)/);
  await assertRejected(rawFile({ a: W("F32", [1], [0, 4]) }, 6), undefined, /2 trailing bytes \[4, 6\)/);
});

Deno.test("error offsets point at the absolute byte of the offending region", () => {
  const bytes = rawFile({ a: W("F32", [1], [0, 4]), b: W("F32", [1], [8, 12]) }, 12);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  throws(() => decodeSafetensors(bytes), (e: unknown) => e instanceof FormatError && e.offset === 8 + n + 4);
});
