import { assert, assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { numberToF16Bits } from "../../lib/io/dtypes.ts";
import { FormatError } from "../../lib/io/format_error.ts";
import { dequantizeGguf, GGML_TYPES, openGguf, parseGgufHeader } from "../../lib/io/gguf.ts";

const FIXTURE = new URL("../fixtures/external/gguf/llama-2-tiny-random.gguf", import.meta.url).pathname;

Deno.test("openGguf() reads the header, metadata and tensor infos of llama-2-tiny-random.gguf", async () => {
  using g = await openGguf(FIXTURE);
  const h = g.header;
  // Values documented in tests/fixtures/external/README.md.
  assertEquals([h.version, h.tensors.length, h.metadata.size, h.alignment, h.dataOffset], [
    3,
    12,
    18,
    32,
    724416,
  ]);
  const m = h.metadata;
  assertEquals(m.get("general.architecture"), "llama");
  assertEquals(
    [
      "embedding_length",
      "block_count",
      "feed_forward_length",
      "attention.head_count",
      "attention.head_count_kv",
    ]
      .map((k) => m.get(`llama.${k}`)),
    [8, 1, 32, 2, 2],
  );
  assertEquals(m.get("llama.attention.layer_norm_rms_epsilon"), Math.fround(1e-5));
  assertEquals(m.get("general.file_type"), 1);
  const tokens = m.get("tokenizer.ggml.tokens") as string[];
  assertEquals([tokens.length, tokens[0], tokens[1], tokens[2]], [32000, "<unk>", "<s>", "</s>"]);
  assertEquals((m.get("tokenizer.ggml.token_type") as number[]).slice(0, 4), [2, 3, 3, 6]);
  assertEquals((m.get("tokenizer.ggml.scores") as number[]).length, 32000);
  assertEquals([m.get("tokenizer.ggml.bos_token_id"), m.get("tokenizer.ggml.eos_token_id")], [1, 2]);

  const emb = g.tensor("token_embd.weight");
  assertEquals([emb.dims, emb.shape, emb.typeName, emb.offset, emb.byteLength], [
    [8, 32000],
    [32000, 8],
    "F16",
    0,
    512000,
  ]);
  const down = g.tensor("blk.0.ffn_down.weight");
  assertEquals([down.dims, down.shape], [[32, 8], [8, 32]]); // HF [out, in] = [8, 32]
  assertEquals(g.tensor("output_norm.weight").typeName, "F32");
  for (const t of h.tensors) {
    assertEquals(t.offset % 32, 0, t.name);
    assertEquals(t.fileOffset, h.dataOffset + t.offset);
  }
  const last = h.tensors.reduce((a, b) => (a.offset > b.offset ? a : b));
  assertEquals(last.fileOffset + last.byteLength, (await Deno.stat(FIXTURE)).size);
  assertThrows(() => g.tensor("blk.9.attn_q.weight"), RangeError, "has no tensor");
});

Deno.test("readFloat32() decodes the fixture's F16 and F32 tensors like numpy does", async () => {
  using g = await openGguf(FIXTURE);
  const norm = await g.readFloat32("blk.0.attn_norm.weight");
  assertEquals([...norm], new Array(8).fill(1));
  const q = await g.readFloat32("blk.0.attn_q.weight");
  // Independent decode: numpy float16 of the same bytes.
  const t = g.tensor("blk.0.attn_q.weight");
  const py = await new Deno.Command("/usr/bin/python3", {
    args: [
      "-c",
      `import numpy as np,sys; b=open(sys.argv[1],'rb').read()[${t.fileOffset}:${
        t.fileOffset + t.byteLength
      }]; ` +
      `print(' '.join(repr(float(x)) for x in np.frombuffer(b, '<f2')))`,
      FIXTURE,
    ],
    stdout: "piped",
  }).output();
  if (py.success) assertEquals([...q], new TextDecoder().decode(py.stdout).trim().split(" ").map(Number));
  assertEquals(q.length, 64);
  assert(q.some((v) => v !== 0));
});

// ---------------------------------------------------------------- synthetic files

/** Minimal GGUF writer for tests: KVs as [key, type, bytes] and tensors as [name, dims, type, data]. */
function buildGguf(
  kvs: [string, number, Uint8Array][],
  tensors: [string, number[], number, Uint8Array][],
  alignment = 32,
  version = 3,
): Uint8Array {
  const parts: Uint8Array[] = [];
  const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
  const u64 = (v: number) => new Uint8Array(new BigUint64Array([BigInt(v)]).buffer);
  const str = (s: string) => {
    const b = new TextEncoder().encode(s);
    return [u64(b.length), b];
  };
  parts.push(new TextEncoder().encode("GGUF"), u32(version), u64(tensors.length), u64(kvs.length));
  for (const [k, type, value] of kvs) parts.push(...str(k), u32(type), value);
  let offset = 0;
  const offsets: number[] = [];
  for (const [name, dims, type, data] of tensors) {
    parts.push(...str(name), u32(dims.length), ...dims.map(u64), u32(type), u64(offset));
    offsets.push(offset);
    offset += Math.ceil(data.length / alignment) * alignment;
  }
  let size = parts.reduce((s, p) => s + p.length, 0);
  const dataStart = Math.ceil(size / alignment) * alignment;
  parts.push(new Uint8Array(dataStart - size));
  size = dataStart;
  tensors.forEach(([, , , data], i) => {
    parts.push(new Uint8Array(dataStart + offsets[i] - size), data);
    size = dataStart + offsets[i] + data.length;
  });
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const u32v = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
const f16 = (x: number) => numberToF16Bits(x);

/** One Q4_0 block (18 bytes): f16 d, then 16 bytes with value j in the low nibble and j + 16 in the high. */
function q4Block(d: number, codes: number[]): Uint8Array {
  const b = new Uint8Array(18);
  new DataView(b.buffer).setUint16(0, f16(d), true);
  for (let j = 0; j < 16; j++) b[2 + j] = (codes[j] & 0xf) | ((codes[j + 16] & 0xf) << 4);
  return b;
}

/** One Q8_0 block (34 bytes): f16 d, then 32 int8 codes. */
function q8Block(d: number, codes: number[]): Uint8Array {
  const b = new Uint8Array(34);
  new DataView(b.buffer).setUint16(0, f16(d), true);
  for (let j = 0; j < 32; j++) b[2 + j] = codes[j] & 0xff;
  return b;
}

const concat = (...a: Uint8Array[]) => {
  const out = new Uint8Array(a.reduce((s, x) => s + x.length, 0));
  let o = 0;
  for (const x of a) (out.set(x, o), o += x.length);
  return out;
};

Deno.test("dequantizeGguf() decodes hand-made Q4_0 blocks: low nibble = first half, (q − 8)·d", () => {
  const codes = Array.from({ length: 32 }, (_, j) => (j * 7) % 16);
  const bytes = concat(q4Block(0.25, codes), q4Block(-2, codes));
  const y = dequantizeGguf("Q4_0", bytes, 64);
  for (let j = 0; j < 32; j++) {
    assertEquals(y[j], (codes[j] - 8) * 0.25, `block 0 value ${j}`);
    assertEquals(y[32 + j], (codes[j] - 8) * -2, `block 1 value ${j}`);
  }
  // Byte 2 holds values 0 and 16: low nibble 0 → code 0 → −8·d, high nibble → code of value 16.
  assertEquals([y[0], y[16]], [-2, (codes[16] - 8) * 0.25]);
});

Deno.test("Q4_0 blocks quantized with the ggml reference formula dequantize within d/2", () => {
  // quantize_row_q4_0_ref: d = max_signed_by_abs / -8, q = min(15, trunc(x/d + 8.5)).
  const x = Array.from({ length: 32 }, (_, i) => Math.sin(i * 1.7) * (i === 5 ? 3 : 1));
  let max = 0;
  for (const v of x) if (Math.abs(v) > Math.abs(max)) max = v;
  const d = Math.fround(max / -8), id = Math.fround(1 / d);
  const codes = x.map((v) => Math.min(15, Math.trunc(Math.fround(v * id) + 8.5)));
  const y = dequantizeGguf("Q4_0", q4Block(d, codes), 32);
  const dStored = dequantizeGguf("F16", new Uint8Array(new Uint16Array([f16(d)]).buffer), 1)[0]; // d is stored as f16
  for (let i = 0; i < 32; i++) {
    assert(
      Math.abs(y[i] - x[i]) <= Math.abs(dStored) / 2 + 8 * Math.abs(dStored - d) + 1e-6,
      `value ${i}: ${y[i]} vs ${x[i]}`,
    );
  }
  assertEquals(y[5], -8 * dStored); // the largest-magnitude value maps to code 0
});

Deno.test("dequantizeGguf() decodes hand-made Q8_0 blocks (signed codes · d) and checks sizes", () => {
  const codes = Array.from({ length: 32 }, (_, j) => j * 8 - 127);
  const y = dequantizeGguf("Q8_0", q8Block(0.125, codes), 32);
  for (let j = 0; j < 32; j++) assertEquals(y[j], codes[j] * 0.125);
  assertThrows(() => dequantizeGguf("Q8_0", new Uint8Array(33), 32), RangeError, "need 34 bytes");
  assertThrows(() => dequantizeGguf("Q4_0", new Uint8Array(18), 16), RangeError, "multiple of 32");
  assertThrows(() => dequantizeGguf("Q4_K", new Uint8Array(144), 256), RangeError, "not supported yet");
  assertThrows(() => dequantizeGguf("Q9", new Uint8Array(0), 0), RangeError, "unknown ggml type");
});

Deno.test("a synthetic GGUF with Q4_0/Q8_0/F32 tensors, alignment 64 and every value type reads back", async () => {
  const codes = Array.from({ length: 32 }, (_, j) => j % 16);
  const q4 = concat(q4Block(0.5, codes), q4Block(1, codes)); // dims [32, 2]
  const q8 = q8Block(0.25, Array.from({ length: 32 }, (_, j) => j - 16)); // dims [32]
  const f32 = new Uint8Array(new Float32Array([1.5, -2, 3.25]).buffer);
  const le = (arr: ArrayBufferView) => new Uint8Array(arr.buffer);
  const str = (s: string) => {
    const b = new TextEncoder().encode(s);
    return concat(le(new BigUint64Array([BigInt(b.length)])), b);
  };
  const kvs: [string, number, Uint8Array][] = [
    ["general.alignment", 4, u32v(64)],
    ["t.u8", 0, new Uint8Array([200])],
    ["t.i8", 1, new Uint8Array([0xff])],
    ["t.u16", 2, le(new Uint16Array([65535]))],
    ["t.i16", 3, le(new Int16Array([-3]))],
    ["t.i32", 5, le(new Int32Array([-7]))],
    ["t.f32", 6, le(new Float32Array([0.5]))],
    ["t.bool", 7, new Uint8Array([1])],
    ["t.str", 8, str("héllo")],
    [
      "t.arr",
      9,
      concat(
        u32v(9),
        le(new BigUint64Array([2n])),
        u32v(0),
        le(new BigUint64Array([1n])),
        new Uint8Array([7]),
        u32v(0),
        le(new BigUint64Array([0n])),
      ),
    ],
    ["t.u64", 10, le(new BigUint64Array([2n ** 63n]))],
    ["t.i64", 11, le(new BigInt64Array([-5n]))],
    ["t.f64", 12, le(new Float64Array([0.1]))],
  ];
  const bytes = buildGguf(kvs, [["a.q4", [32, 2], 2, q4], ["b.q8", [32], 8, q8], ["c.f32", [3], 0, f32]], 64);
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  try {
    await Deno.writeFile(path, bytes);
    using g = await openGguf(path);
    const m = g.header.metadata;
    assertEquals(g.header.alignment, 64);
    assertEquals(g.header.dataOffset % 64, 0);
    assertEquals(
      [
        m.get("t.u8"),
        m.get("t.i8"),
        m.get("t.u16"),
        m.get("t.i16"),
        m.get("t.i32"),
        m.get("t.f32"),
        m.get("t.bool"),
      ],
      [200, -1, 65535, -3, -7, 0.5, true],
    );
    assertEquals([m.get("t.str"), m.get("t.u64"), m.get("t.i64"), m.get("t.f64")], [
      "héllo",
      2n ** 63n,
      -5n,
      0.1,
    ]);
    assertEquals(JSON.stringify(m.get("t.arr")), "[[7],[]]");
    assertEquals(g.tensor("b.q8").offset, 64); // the 36-byte Q4_0 tensor is padded to 64
    assertEquals([...g.tensor("a.q4").shape], [2, 32]);
    const a = await g.readFloat32("a.q4");
    assertEquals([a[0], a[1], a[31], a[32], a[63]], [-4, -3.5, (15 - 8) * 0.5, -8, 7]);
    assertEquals([...(await g.readFloat32("b.q8")).slice(0, 3)], [-4, -3.75, -3.5]);
    assertEquals([...(await g.readFloat32("c.f32"))], [1.5, -2, 3.25]);
    assertEquals((await g.readBytes("b.q8")).length, 34);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("malformed GGUF headers are rejected with a FormatError naming the byte offset", () => {
  const ok = buildGguf([["k", 4, u32v(1)]], [["w", [32], 8, q8Block(1, new Array(32).fill(1))]]);
  const cases: [string, Uint8Array, string][] = [
    ["bad magic", concat(new TextEncoder().encode("GGUX"), ok.subarray(4)), "not a GGUF file"],
    ["version 1", buildGguf([], [], 32, 1), "version 1"],
    ["big-endian or unknown version", buildGguf([], [], 32, 0x03000000), "big-endian"],
    ["truncated inside the tensor infos", ok.subarray(0, 44), "the file ends inside"],
    ["absurd counts", ok.subarray(0, 30), "do not fit in 30 bytes"],
    ["unknown value type", buildGguf([["k", 13, u32v(1)]], []), "unknown value type 13"],
    ["duplicate key", buildGguf([["k", 4, u32v(1)], ["k", 4, u32v(2)]], []), 'duplicate metadata key "k"'],
    ["bad alignment", buildGguf([["general.alignment", 4, u32v(12)]], []), "multiple of 8"],
    ["unknown tensor type", buildGguf([], [["w", [32], 4, new Uint8Array(32)]]), "unknown ggml type 4"],
    [
      "row not a block multiple",
      buildGguf([], [["w", [16], 2, new Uint8Array(9)]]),
      "not a multiple of the Q4_0 block size 32",
    ],
    ["five dimensions", buildGguf([], [["w", [1, 1, 1, 1, 1], 0, new Uint8Array(4)]]), "5 dimensions"],
    ["tensor past the end", buildGguf([], [["w", [64], 0, new Uint8Array(16)]]), "runs past the end"],
  ];
  for (const [what, bytes, message] of cases) {
    const e = assertThrows(() => parseGgufHeader(bytes, { file: "x.gguf" }), FormatError, message);
    assert(
      (e as FormatError).offset !== undefined && e.message.startsWith("x.gguf"),
      `${what}: ${e.message}`,
    );
  }
  // A misaligned offset: patch the stored offset of the only tensor to 16.
  const one = buildGguf([], [["w", [32], 8, q8Block(1, new Array(32).fill(1))]]);
  const at = 24 + 8 + 1 + 4 + 8 + 4; // header, name, n_dims, dim, type
  new DataView(one.buffer).setBigUint64(at, 16n, true);
  assertThrows(() => parseGgufHeader(one), FormatError, "not a multiple of the alignment 32");
  assertThrows(
    () => parseGgufHeader(ok.subarray(0, 44), { fileSize: ok.length }),
    RangeError,
    "pass more of the file",
  );
  assertEquals(GGML_TYPES[12].name, "Q4_K");
});

Deno.test("openGguf() rejects a file that is not GGUF", async () => {
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  try {
    await Deno.writeTextFile(path, '{"not": "gguf"}');
    await assertRejects(() => openGguf(path), FormatError, "not a GGUF file");
  } finally {
    await Deno.remove(path);
  }
});
