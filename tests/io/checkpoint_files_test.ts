import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import {
  INDEX_FILE_NAME,
  openCheckpoint,
  SINGLE_FILE_NAME,
  writeShardedSafetensors,
} from "../../lib/io/checkpoint_files.ts";
import { FormatError } from "../../lib/io/format_error.ts";
import type { SafetensorsEntry } from "../../lib/io/safetensors_writer.ts";

const FIXTURE_DIR = new URL("../fixtures/external/tiny-random-llama-2", import.meta.url).pathname;
const HAS_FIXTURE = (() => {
  try {
    return Deno.statSync(`${FIXTURE_DIR}/model.safetensors`).isFile;
  } catch {
    return false;
  }
})();

/** Five F32 tensors of 16 bytes each, filled with their index. */
const ENTRIES: SafetensorsEntry[] = Array.from({ length: 5 }, (_, i) => ({
  name: `layers.${i}.weight`,
  dtype: "F32",
  shape: [2, 2],
  data: () => new Float32Array(4).fill(i),
}));

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_ckpt_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("sharded write then openCheckpoint() reads every tensor back from its shard", async () => {
  await withDir(async (dir) => {
    const result = await writeShardedSafetensors(dir, ENTRIES, {
      maxShardBytes: 32,
      metadata: { format: "pt" },
    });
    const names = [
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
    ];
    deepStrictEqual(result.files, names.map((n) => `${dir}/${n}`));
    strictEqual(result.index, `${dir}/${INDEX_FILE_NAME}`);
    strictEqual(result.totalSize, 80);
    const index = JSON.parse(await Deno.readTextFile(result.index!));
    deepStrictEqual(index.metadata, { total_size: 80 });
    strictEqual(index.weight_map["layers.4.weight"], names[2]);
    strictEqual(index.weight_map["layers.1.weight"], names[0]);

    using ckpt = await openCheckpoint(dir);
    deepStrictEqual(ckpt.files, result.files);
    deepStrictEqual(ckpt.names(), ENTRIES.map((e) => e.name));
    deepStrictEqual(ckpt.metadata, { format: "pt" });
    deepStrictEqual(ckpt.indexMetadata, { total_size: 80 });
    strictEqual(ckpt.info("layers.2.weight").file, `${dir}/${names[1]}`);
    for (let i = 0; i < 5; i++) {
      deepStrictEqual([...await ckpt.readFloat32(`layers.${i}.weight`)], [i, i, i, i]);
    }
    ok((await ckpt.readTyped("layers.3.weight")) instanceof Float32Array);
    strictEqual((await ckpt.readBytes("layers.0.weight")).byteLength, 16);
    ok(!ckpt.has("nope"));
    await rejects(ckpt.readFloat32("nope"), RangeError);
  });
});

Deno.test("a checkpoint that fits one shard is written as model.safetensors without an index", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/${INDEX_FILE_NAME}`, "stale");
    const result = await writeShardedSafetensors(dir, ENTRIES);
    deepStrictEqual(result.files, [`${dir}/${SINGLE_FILE_NAME}`]);
    strictEqual(result.index, undefined);
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), [SINGLE_FILE_NAME]);
    using ckpt = await openCheckpoint(dir);
    strictEqual(ckpt.names().length, 5);
    strictEqual(ckpt.indexMetadata, undefined);
    // A path to the file itself works too.
    using direct = await openCheckpoint(`${dir}/${SINGLE_FILE_NAME}`);
    deepStrictEqual([...await direct.readFloat32("layers.4.weight")], [4, 4, 4, 4]);
  });
});

Deno.test("an index that points at a missing shard is rejected, naming the shard and the index", async () => {
  await withDir(async (dir) => {
    await writeShardedSafetensors(dir, ENTRIES, { maxShardBytes: 32 });
    await Deno.remove(`${dir}/model-00002-of-00003.safetensors`);
    await rejects(openCheckpoint(dir), (e: unknown) => {
      ok(e instanceof FormatError);
      strictEqual(e.file, `${dir}/${INDEX_FILE_NAME}`);
      ok(
        e.message.includes("model-00002-of-00003.safetensors") && e.message.includes("does not exist"),
        e.message,
      );
      return true;
    });
  });
});

Deno.test("an index that assigns a tensor to a shard lacking it is rejected, naming both", async () => {
  await withDir(async (dir) => {
    await writeShardedSafetensors(dir, ENTRIES, { maxShardBytes: 32 });
    const path = `${dir}/${INDEX_FILE_NAME}`;
    const index = JSON.parse(await Deno.readTextFile(path));
    index.weight_map["layers.0.weight"] = "model-00003-of-00003.safetensors";
    await Deno.writeTextFile(path, JSON.stringify(index));
    await rejects(openCheckpoint(dir), (e: unknown) => {
      ok(e instanceof FormatError);
      strictEqual(e.file, `${dir}/model-00003-of-00003.safetensors`);
      strictEqual(e.tensor, "layers.0.weight");
      return true;
    });
  });
});

Deno.test("malformed indexes and empty directories are rejected with clear errors", async () => {
  await withDir(async (dir) => {
    await rejects(
      openCheckpoint(dir),
      (e: Error) => e instanceof Deno.errors.NotFound && e.message.includes(INDEX_FILE_NAME),
    );
    const path = `${dir}/${INDEX_FILE_NAME}`;
    await Deno.writeTextFile(path, "{not json");
    await rejects(openCheckpoint(dir), (e: unknown) => e instanceof FormatError && e.file === path);
    await Deno.writeTextFile(path, JSON.stringify({ metadata: {} }));
    await rejects(openCheckpoint(dir), /"weight_map"/);
    await Deno.writeTextFile(path, JSON.stringify({ weight_map: { w: "../outside.safetensors" } }));
    await rejects(openCheckpoint(dir), (e: unknown) => e instanceof FormatError && e.tensor === "w");
  });
});

Deno.test("writeShardedSafetensors() rejects unknown options, bad sizes and duplicate names", async () => {
  await withDir(async (dir) => {
    await rejects(
      writeShardedSafetensors(dir, ENTRIES, { maxShard: 1 } as never),
      /writeShardedSafetensors: unknown option "maxShard"/,
    );
    await rejects(writeShardedSafetensors(dir, ENTRIES, { maxShardBytes: 0 }), RangeError);
    await rejects(
      writeShardedSafetensors(dir, [ENTRIES[0], ENTRIES[0]], { maxShardBytes: 16 }),
      /appears twice/,
    );
    deepStrictEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test({
  name: "openCheckpoint() opens the real tiny-random-llama-2 directory",
  ignore: !HAS_FIXTURE,
  async fn() {
    using ckpt = await openCheckpoint(FIXTURE_DIR);
    strictEqual(ckpt.names().length, 21);
    deepStrictEqual(ckpt.info("model.embed_tokens.weight").shape, [3000, 16]);
    strictEqual((await ckpt.readFloat32("model.layers.1.mlp.down_proj.weight")).length, 1024);
  },
});
