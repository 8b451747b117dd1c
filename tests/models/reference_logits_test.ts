/**
 * The TS model against an independent float64 numpy forward
 * (tests/reference/llama_ref.py, itself checked against Transformers' logits by
 * `llama_ref.py --self-check`): every position, every vocabulary entry.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";

await initEngine();
const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const TINY = new URL("../fixtures/external/tiny-random-llama-2", import.meta.url).pathname;

const CASES: [string, string, string][] = [
  ["the real tiny-random-llama-2 checkpoint", TINY, "tiny_random_llama_logits.json"],
  ["the embedded default model (GQA)", EMBEDDED_MODEL_DIR, "embedded_model_logits.json"],
];

for (const [what, dir, file] of CASES) {
  Deno.test(`logits of ${what} match the numpy reference to relative error < 1e-4`, async () => {
    const ref = JSON.parse(await Deno.readTextFile(FIXTURES + file));
    const model = await loadModel(dir);
    const got = tf.tidy(() => model.forward(ref.input_ids).dataSync());
    const want = Float32Array.from((ref.logits as number[][][]).flat(2));
    const err = relError(got, want);
    assert(err < 1e-4, `relative error ${err}`);
    model.dispose();
  });
}
