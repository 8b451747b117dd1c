/**
 * Must-show of issue 12: a child process saving in a loop (adapter r=4/r=8, checkpoint
 * F32/F16, quantize nf4/fp4) is killed with SIGKILL at random moments. After every kill
 * the save found at the destination loads and is one whole save (never files of two);
 * the next save into the same place leaves no `.tmp-*` / `.old-*` leftovers.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { interruptedSaves, writeDirAtomic } from "../../lib/io/atomic_dir.ts";
import { openCheckpoint } from "../../lib/io/checkpoint_files.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { loadAdapter } from "../../lib/adapters/peft_format.ts";
import { adapterLayers } from "../../lib/adapters/attach.ts";
import { LoRALinear } from "../../lib/adapters/lora.ts";
import { mulberry32 } from "../../lib/train/random.ts";
import { listSaves, readTrainingState } from "../../lib/train/training_state.ts";
import { CHILD_CONFIG, saveOnce } from "./_save_child.ts";

await initEngine({ backend: "cpu" });
const CHILD = new URL("./_save_child.ts", import.meta.url).pathname;
/** Kills per kind (each one a fresh child process). */
const KILLS = 10;

/** Loads the save at `dir` and checks that it is one whole save; returns which variant it is. */
async function loadWhole(kind: string, dir: string): Promise<string> {
  switch (kind) {
    case "adapter": {
      const m = initModel(CHILD_CONFIG, { seed: 1 });
      try {
        await loadAdapter(m, dir); // a config of one save with factors of the other fails on shapes
        const r = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`)).r;
        const layers = adapterLayers(m);
        assert(
          layers.length === 4 && layers.every((l) => l instanceof LoRALinear && l.r === r),
          `r=${r} throughout`,
        );
        return `r=${r}`;
      } finally {
        m.dispose();
      }
    }
    case "checkpoint":
    case "quantize": {
      (await loadModel(dir)).dispose(); // first: a save killed between its renames is restored here
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      {
        using ckpt = await openCheckpoint(dir);
        if (kind === "checkpoint") {
          const dtype = ckpt.info("model.norm.weight").dtype;
          assertEquals(
            config.torch_dtype,
            dtype === "F32" ? "float32" : "float16",
            "config and weights agree",
          );
        } else {
          const qt = config.quantization_config.bnb_4bit_quant_type;
          assert(
            ckpt.has(`model.layers.1.mlp.down_proj.weight.quant_state.bitsandbytes__${qt}`),
            `all ${qt}`,
          );
        }
      }
      return kind === "checkpoint" ? config.torch_dtype : config.quantization_config.bnb_4bit_quant_type;
    }
  }
  throw new RangeError(kind);
}

async function assertNoLeftovers(dir: string): Promise<void> {
  const { tmp, old } = await interruptedSaves(dir);
  assertEquals([...tmp, ...old], [], `leftovers next to ${dir}`);
  for await (const e of Deno.readDir(dir)) assert(!e.name.includes(".tmp-"), `${dir}/${e.name} left inside`);
}

/** Starts the child, waits for its first complete save, lets it run `delay(ms)` more, kills it. */
async function killMidSave(kind: string, dir: string, input: string, fraction: number): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", CHILD, kind, dir, input], // checked as part of this test,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/saved ([\d.]+)\n/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the ${kind} child ended before its first save:\n${text}`);
    text += value;
  }
  const ms = Number(text.match(/saved ([\d.]+)\n/)![1]);
  // Anywhere in the next ~3 saves: inside writing, fsync, either rename or the removal.
  await new Promise((r) => setTimeout(r, fraction * 3 * ms));
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
}

for (const kind of ["adapter", "checkpoint", "quantize"]) {
  Deno.test(`${kind}: a child killed mid-save ${KILLS} times always leaves one whole loadable save; the next save leaves no leftovers`, async () => {
    const root = await Deno.makeTempDir({ prefix: `nbtune_kill_${kind}_` });
    const dir = `${root}/save`, input = `${root}/input`;
    if (kind === "quantize") {
      const m = initModel(CHILD_CONFIG, { seed: 3 });
      await saveCheckpoint(m, input, { dtype: "BF16" });
      m.dispose();
    }
    const rand = mulberry32(12);
    const seen = new Map<string, number>();
    let interrupted = 0, missing = 0;
    for (let k = 0; k < KILLS; k++) {
      await killMidSave(kind, dir, input, rand());
      const left = await interruptedSaves(dir);
      if (left.tmp.length + left.old.length > 0) interrupted++;
      try {
        await Deno.lstat(dir);
      } catch {
        missing++; // killed between the two renames: the previous save waits as save.old-*
      }
      // Load from a copy of the folder as the kill left it (loading restores and cleans up).
      const snap = `${await Deno.makeTempDir({ prefix: "nbtune_kill_snap_" })}/root`;
      const cp = await new Deno.Command("cp", { args: ["-a", root, snap] }).output();
      assert(cp.success, `cp -a: ${new TextDecoder().decode(cp.stderr)}`);
      // the copy holds the whole root; its save is at snap/save (leftovers included)
      const variant = await loadWhole(kind, `${snap}/save`);
      seen.set(variant, (seen.get(variant) ?? 0) + 1);
      await assertNoLeftovers(`${snap}/save`);
      await Deno.remove(snap.slice(0, -"/root".length), { recursive: true });
      // The next save into the same place cleans up whatever the kill left.
      await saveOnce(kind, dir, k, input);
      await assertNoLeftovers(dir);
      await loadWhole(kind, dir);
    }
    console.log(
      `${kind}: ${KILLS} kills, ${interrupted} left a save in progress (${missing} between the renames); loaded ${
        JSON.stringify(Object.fromEntries(seen))
      }`,
    );
    await Deno.remove(root, { recursive: true });
  });
}

Deno.test(`training states: a run saving every step killed ${KILLS} times always leaves its latest complete save readable`, async () => {
  const root = await Deno.makeTempDir({ prefix: "nbtune_kill_state_" });
  const dir = `${root}/run`;
  const rand = mulberry32(13);
  let interrupted = 0;
  for (let k = 0; k < KILLS; k++) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await killMidSave("state", dir, "", rand());
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    if (names.some((n) => /\.(tmp|old|del)-/.test(n))) interrupted++;
    const saves = await listSaves(dir); // the load path: restores or clears interrupted saves
    assert(saves.length >= 1 && saves.length <= 3, `saves ${JSON.stringify(saves)}`);
    const latest = await readTrainingState(saves[saves.length - 1].dir);
    assertEquals(latest.json.step, saves[saves.length - 1].step);
    assertEquals(latest.json.history.length, latest.json.step);
    assert(latest.optimizer !== null && latest.trainable.size === 8, "optimizer state and 8 LoRA factors");
    for await (const e of Deno.readDir(dir)) assert(!/\.(tmp|old|del)-/.test(e.name), `${e.name} left`);
  }
  console.log(`training states: ${KILLS} kills, ${interrupted} left a save or a pruning in progress`);
  await Deno.remove(root, { recursive: true });
});

Deno.test("loaders refuse the temporary folder of an interrupted save, naming it and the place to load", async () => {
  const root = await Deno.makeTempDir();
  const m = initModel(CHILD_CONFIG, { seed: 2 });
  await Deno.mkdir(`${root}/save.tmp-1234abcd`, { recursive: true });
  await assertRejects(() => loadModel(`${root}/save.tmp-1234abcd`), RangeError, `load ${root}/save instead`);
  await assertRejects(() => loadAdapter(m, `${root}/save.tmp-1234abcd`), RangeError, "save.tmp-1234abcd");
  await assertRejects(() => openCheckpoint(`${root}/save.old-1234abcd`), RangeError, "set aside");
  m.dispose();
  await Deno.remove(root, { recursive: true });
});

Deno.test("writeDirAtomic() leaves the previous save untouched when writing fails, and keeps carried files", async () => {
  const root = await Deno.makeTempDir();
  const dir = `${root}/save`;
  await writeDirAtomic(dir, (tmp) => Deno.writeTextFile(`${tmp}/a.txt`, "one"));
  await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
  await assertRejects(
    () =>
      writeDirAtomic(dir, async (tmp) => {
        await Deno.writeTextFile(`${tmp}/a.txt`, "half");
        throw new Error("disk full");
      }),
    Error,
    "disk full",
  );
  assertEquals(await Deno.readTextFile(`${dir}/a.txt`), "one");
  await assertNoLeftovers(dir);
  await writeDirAtomic(dir, (tmp) => Deno.writeTextFile(`${tmp}/a.txt`, "two"), {
    carry: (n) => n !== "a.txt",
  });
  assertEquals(await Deno.readTextFile(`${dir}/a.txt`), "two");
  assertEquals(await Deno.readTextFile(`${dir}/notes.txt`), "mine");
  await Deno.remove(root, { recursive: true });
});

Deno.test("saveCheckpoint() refuses non-finite weights, naming the tensor, and leaves the previous save", async () => {
  const root = await Deno.makeTempDir();
  const m = initModel(CHILD_CONFIG, { seed: 2 });
  await saveCheckpoint(m, `${root}/save`);
  const w = m.norm.weight;
  tf.tidy(() => w.assign(tf.mul(w, NaN)));
  await assertRejects(() => saveCheckpoint(m, `${root}/save`), RangeError, `"model.norm.weight" holds NaN`);
  (await loadModel(`${root}/save`)).dispose();
  await assertNoLeftovers(`${root}/save`);
  m.dispose();
  await Deno.remove(root, { recursive: true });
});

Deno.test("a save killed between its two renames (only <dir>.old-* left) is restored by the next load", async () => {
  const root = await Deno.makeTempDir();
  const m = initModel(CHILD_CONFIG, { seed: 2 });
  await saveCheckpoint(m, `${root}/save`);
  await Deno.rename(`${root}/save`, `${root}/save.old-1234abcd`); // as a kill right after the first rename
  await Deno.mkdir(`${root}/save.tmp-1234abcd`); // the new save, complete or not, is discarded
  (await loadModel(`${root}/save`)).dispose();
  await assertNoLeftovers(`${root}/save`);
  m.dispose();
  await Deno.remove(root, { recursive: true });
});

Deno.test("writeSafetensors() removes <path>.tmp-* files left by a killed write to the same path", async () => {
  const { writeSafetensors } = await import("../../lib/io/safetensors_writer.ts");
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/a.safetensors.tmp-deadbeef`, "half");
  await Deno.writeTextFile(`${dir}/b.safetensors.tmp-deadbeef`, "another file's");
  await writeSafetensors(`${dir}/a.safetensors`, [{
    name: "x",
    dtype: "F32",
    shape: [1],
    data: new Float32Array([1]),
  }]);
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  assertEquals(names.sort(), ["a.safetensors", "b.safetensors.tmp-deadbeef"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("loadAdapter() names an incomplete adapter folder (config without weights)", async () => {
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${root}/adapter_config.json`,
    JSON.stringify({ peft_type: "LORA", r: 4, lora_alpha: 8 }),
  );
  const m = initModel(CHILD_CONFIG, { seed: 1 });
  await assertRejects(
    () => loadAdapter(m, root),
    RangeError,
    `${root} has adapter_config.json but no adapter_model`,
  );
  m.dispose();
  await Deno.remove(root, { recursive: true });
});
