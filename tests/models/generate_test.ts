import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { loadTokenizer } from "../../lib/io/tokenizer.ts";
import { applyRepetitionPenalty, chat, generate, pickToken } from "../../lib/models/generate.ts";
import { EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";

await initEngine();

Deno.test("greedy generate() with the KV cache equals argmax decoding by full forwards", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const prompt = "ROMEO:\nBut soft";
  const before = tf.memory().numTensors;
  const text = generate(model, tok, prompt, { maxNewTokens: 12 });
  assertEquals(tf.memory().numTensors, before, "generate leaked tensors");
  const ids = [tok.bosId!, ...tok.encode(prompt, { addSpecialTokens: false })];
  const out: number[] = [];
  for (let i = 0; i < 12; i++) {
    const last = tf.tidy(() => {
      const l = model.forward([ids]);
      return tf.slice(l, [0, ids.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array;
    });
    const id = pickToken(last, 0, 0, Math.random);
    if (tok.eosIds.includes(id)) break;
    out.push(id);
    ids.push(id);
  }
  assertEquals(text, tok.decode(out, { skipSpecialTokens: true }));
  model.dispose();
});

Deno.test("generate() stops at a stop string and cuts it off; sampling is reproducible by seed", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const text = generate(model, tok, "KING HENRY:\n", { maxNewTokens: 60, stop: ["\n"] });
  assert(!text.includes("\n"), JSON.stringify(text));
  const a = generate(model, tok, "KING HENRY:\n", { maxNewTokens: 20, temperature: 1, topK: 20, seed: 3 });
  const b = generate(model, tok, "KING HENRY:\n", { maxNewTokens: 20, temperature: 1, topK: 20, seed: 3 });
  assertEquals(a, b);
  assertThrows(
    () => generate(model, tok, "x", { maxTokens: 3 } as never),
    TypeError,
    'generate: option "maxTokens" was renamed to "maxNewTokens"',
  );
  assertThrows(
    () => generate(model, tok, "x", { maxNewTokns: 3 } as never),
    TypeError,
    'unknown option "maxNewTokns"',
  );
  assertThrows(
    () => generate(model, tok, "x", { temperature: -1 }),
    RangeError,
    'option "temperature" must be',
  );
  model.dispose();
});

/** Greedy/sampled decoding by full forwards (no cache), with the repetition penalty: the reference loop. */
function referenceDecode(
  model: Awaited<ReturnType<typeof loadModel>>,
  ids: number[],
  eos: readonly number[],
  n: number,
  penalty: number,
): number[] {
  const seq = [...ids], out: number[] = [];
  for (let i = 0; i < n; i++) {
    const last = tf.tidy(() => {
      const l = model.forward([seq]);
      return tf.slice(l, [0, seq.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array;
    });
    applyRepetitionPenalty(last, new Set(seq), penalty);
    const id = pickToken(last, 0, 0, Math.random);
    if (eos.includes(id)) break;
    out.push(id);
    seq.push(id);
  }
  return out;
}

Deno.test("batched prompts of different lengths give each prompt's own generation (left padding masked)", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const prompts = ["ROMEO:\nBut soft, what light", "KING:\n", "First Citizen:\nBefore we proceed"];
  const before = tf.memory().numTensors;
  const batch = generate(model, tok, prompts, { maxNewTokens: 10 });
  assertEquals(tf.memory().numTensors, before, "batched generate leaked tensors");
  assertEquals(batch, prompts.map((p) => generate(model, tok, p, { maxNewTokens: 10 })));
  model.dispose();
});

Deno.test("repetition penalty follows Transformers' rule (checked against a full-forward loop); top-p", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const prompt = "ROMEO:\n";
  const ids = [tok.bosId!, ...tok.encode(prompt, { addSpecialTokens: false })];
  const penalised = generate(model, tok, prompt, { maxNewTokens: 16, repetitionPenalty: 1.8 });
  assertEquals(
    penalised,
    tok.decode(referenceDecode(model, ids, tok.eosIds, 16, 1.8), { skipSpecialTokens: true }),
  );
  assert(
    penalised !== generate(model, tok, prompt, { maxNewTokens: 16 }),
    "a penalty of 1.8 changes the text",
  );
  // A tiny nucleus keeps only the most likely token: sampling becomes greedy.
  assertEquals(
    generate(model, tok, prompt, { maxNewTokens: 12, temperature: 1, topP: 1e-6, seed: 5 }),
    generate(model, tok, prompt, { maxNewTokens: 12 }),
  );
  const a = generate(model, tok, prompt, { maxNewTokens: 12, temperature: 1.5, topP: 0.9, seed: 5 });
  assertEquals(a, generate(model, tok, prompt, { maxNewTokens: 12, temperature: 1.5, topP: 0.9, seed: 5 }));
  assertThrows(() => generate(model, tok, prompt, { topP: 0 }), RangeError, 'option "topP"');
  assertThrows(() => generate(model, tok, prompt, { top_p: 0.5 } as never), TypeError, '"topP"');
  model.dispose();
});

Deno.test("onToken streams pieces that join to the returned text and never show a stop string", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  for (const stop of [[], ["\n"], ["the"]]) {
    const pieces: string[] = [];
    const rows = new Set<number>();
    const text = generate(model, tok, "KING HENRY:\n", {
      maxNewTokens: 40,
      stop,
      onToken: (t, e) => {
        pieces.push(t);
        rows.add(e.row);
        assert(e.index >= 0 && Number.isInteger(e.id), JSON.stringify(e));
      },
    });
    assertEquals(pieces.join(""), text);
    assert(pieces.length > 1, `streamed in pieces: ${JSON.stringify(pieces)}`);
    for (const s of stop) assert(!pieces.join("").includes(s), `stop ${JSON.stringify(s)} leaked`);
    assertEquals([...rows], [0]);
  }
  model.dispose();
});

Deno.test("chat() renders the chat template with the generation prompt and answers", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const messages = [{ role: "user", content: "Who art thou?" }];
  const prompt = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  const reply = chat(model, tok, messages, { maxNewTokens: 12 });
  assertEquals(reply, generate(model, tok, prompt, { maxNewTokens: 12, addBos: false }));
  assertThrows(() => chat(model, tok, [], {}), TypeError, "non-empty array");
  model.dispose();
});
