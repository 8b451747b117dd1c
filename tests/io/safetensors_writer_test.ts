import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { DTYPES, type SafetensorsDtype } from "../../lib/io/dtypes.ts";
import { openSafetensors } from "../../lib/io/safetensors_reader.ts";
import {
  encodeSafetensors,
  type SafetensorsEntry,
  writeSafetensors,
} from "../../lib/io/safetensors_writer.ts";

const FIXTURE = new URL("../fixtures/external/tiny-random-llama-2/model.safetensors", import.meta.url)
  .pathname;
const HAS_FIXTURE = (() => {
  try {
    return Deno.statSync(FIXTURE).isFile;
  } catch {
    return false;
  }
})();

/** A 2×3 tensor of each dtype with distinctive bytes (seed: the element index). */
function sampleEntry(dtype: SafetensorsDtype, i: number): SafetensorsEntry {
  const n = 6;
  const data: ArrayBufferView = (() => {
    switch (dtype) {
      case "F64":
        return Float64Array.from({ length: n }, (_, k) => k * 1.25 - 2);
      case "F32":
        return Float32Array.from({ length: n }, (_, k) => -k / 3);
      case "I64":
        return BigInt64Array.from({ length: n }, (_, k) => BigInt(k) * -(2n ** 60n));
      case "U64":
        return BigUint64Array.from({ length: n }, (_, k) => 2n ** 64n - 1n - BigInt(k));
      case "I32":
        return Int32Array.from({ length: n }, (_, k) => -(2 ** 31) + k);
      case "U32":
        return Uint32Array.from({ length: n }, (_, k) => 2 ** 32 - 1 - k);
      case "I16":
        return Int16Array.from({ length: n }, (_, k) => -32768 + k);
      case "F16":
      case "BF16":
      case "U16":
        return Uint16Array.from({ length: n }, (_, k) => 0x3c00 + k * 257 + i);
      case "I8":
        return Int8Array.from({ length: n }, (_, k) => -128 + k);
      case "BOOL":
        return Uint8Array.from({ length: n }, (_, k) => k % 2);
      default:
        return Uint8Array.from({ length: n }, (_, k) => 250 - k * 7 - i);
    }
  })();
  return { name: `t.${dtype}`, dtype, shape: [2, 3], data };
}

async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "nbtune_w_" });
}

Deno.test("every dtype round-trips through writeSafetensors() and readTyped()", async () => {
  const dir = await tmpDir();
  try {
    const entries = DTYPES.map(sampleEntry);
    await writeSafetensors(`${dir}/all.safetensors`, entries, { metadata: { format: "pt", note: "é" } });
    using st = await openSafetensors(`${dir}/all.safetensors`);
    deepStrictEqual(st.names(), entries.map((e) => e.name));
    deepStrictEqual(st.metadata, { format: "pt", note: "é" });
    for (const e of entries) {
      deepStrictEqual(st.info(e.name).shape, [2, 3]);
      strictEqual(st.info(e.name).dtype, e.dtype);
      deepStrictEqual([...await st.readTyped(e.name) as Iterable<unknown>], [
        ...e.data as unknown as Iterable<unknown>,
      ]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the header is padded with spaces to a multiple of 8 and encodeSafetensors() matches the file", async () => {
  const dir = await tmpDir();
  try {
    const entries = [sampleEntry("F32", 0), sampleEntry("I8", 1)];
    const result = await writeSafetensors(`${dir}/x.safetensors`, entries);
    const file = await Deno.readFile(`${dir}/x.safetensors`);
    deepStrictEqual(file, encodeSafetensors(entries));
    strictEqual(result.fileBytes, file.byteLength);
    strictEqual(result.tensorBytes, 24 + 6);
    const n = Number(new DataView(file.buffer).getBigUint64(0, true));
    strictEqual(n % 8, 0);
    const text = new TextDecoder().decode(file.subarray(8, 8 + n));
    ok(text.startsWith('{"t.F32":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}'), text);
    ok(/} *$/.test(text) && text.trimEnd().length > n - 8);
    ok(!("__metadata__" in JSON.parse(text)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "re-encoding the real fixture's tensors reproduces its bytes exactly",
  ignore: !HAS_FIXTURE,
  async fn() {
    using st = await openSafetensors(FIXTURE);
    const entries: SafetensorsEntry[] = [];
    for (const name of st.names()) {
      const { dtype, shape } = st.info(name);
      entries.push({ name, dtype, shape, data: await st.readBytes(name) });
    }
    deepStrictEqual(
      encodeSafetensors(entries, { metadata: { ...st.metadata } }),
      await Deno.readFile(FIXTURE),
    );
  },
});

/** Yields four F16 entries whose data functions record when they are called. */
async function* produce(calls: number[]): AsyncGenerator<SafetensorsEntry> {
  for (let i = 0; i < 4; i++) {
    yield {
      name: `w${i}`,
      dtype: "F16",
      shape: [i],
      data: async () => {
        calls.push(i);
        await Promise.resolve();
        return new Uint16Array(i).fill(0x3c00);
      },
    };
  }
}

Deno.test("lazy data is pulled one tensor at a time, in order, from an async iterable", async () => {
  const dir = await tmpDir();
  try {
    const calls: number[] = [];
    await writeSafetensors(`${dir}/lazy.safetensors`, produce(calls));
    deepStrictEqual(calls, [0, 1, 2, 3]);
    using st = await openSafetensors(`${dir}/lazy.safetensors`);
    deepStrictEqual([...await st.readFloat32("w3")], [1, 1, 1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an error mid-stream leaves an existing file unchanged and no temporary file behind", async () => {
  const dir = await tmpDir();
  const path = `${dir}/model.safetensors`;
  try {
    const original = encodeSafetensors([sampleEntry("F32", 0)]);
    await Deno.writeFile(path, original);
    const failing: SafetensorsEntry[] = [
      { name: "ok", dtype: "F32", shape: [1024], data: new Float32Array(1024) },
      {
        name: "boom",
        dtype: "F32",
        shape: [1],
        data: () => {
          throw new Error("producer failed");
        },
      },
    ];
    await rejects(writeSafetensors(path, failing), /producer failed/);
    const wrongSize: SafetensorsEntry[] = [{
      name: "short",
      dtype: "F32",
      shape: [4],
      data: () => new Float32Array(3),
    }];
    await rejects(
      writeSafetensors(path, wrongSize),
      (e: Error) =>
        e instanceof RangeError && e.message.includes('"short"') &&
        /needs 16 bytes but data has 12/.test(e.message),
    );
    deepStrictEqual(await Deno.readFile(path), original);
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["model.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("invalid entries and options are rejected before anything is written", async () => {
  const dir = await tmpDir();
  const path = `${dir}/never.safetensors`;
  try {
    const a = sampleEntry("F32", 0);
    await rejects(
      writeSafetensors(path, [a, a]),
      (e: Error) => e instanceof RangeError && /"t\.F32" appears twice/.test(e.message),
    );
    await rejects(
      writeSafetensors(path, [{ ...a, dtype: "Q4" as SafetensorsDtype }]),
      (e: Error) => e instanceof RangeError && /"t\.F32".*"Q4"/.test(e.message),
    );
    await rejects(
      writeSafetensors(path, [{ ...a, shape: [7] }]),
      (e: Error) => e instanceof RangeError && /"t\.F32".*needs 28 bytes but data has 24/.test(e.message),
    );
    await rejects(writeSafetensors(path, [{ ...a, name: "__metadata__" }]), TypeError);
    await rejects(writeSafetensors(path, [{ ...a, data: [1, 2] as unknown as Float32Array }]), TypeError);
    await rejects(
      writeSafetensors(path, [a], { metdata: {} } as never),
      /writeSafetensors: unknown option "metdata" \(did you mean "metadata"\?\)/,
    );
    await rejects(writeSafetensors(path, [a], { metadata: { n: 1 } } as never), TypeError);
    deepStrictEqual([...Deno.readDirSync(dir)], []);
    throws(
      () => encodeSafetensors([{ ...a, data: () => Promise.resolve(new Float32Array(6)) } as never]),
      TypeError,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
