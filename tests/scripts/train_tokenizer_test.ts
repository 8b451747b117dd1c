import assert from "node:assert/strict";
import { SPECIAL_TOKENS, trainByteLevelBpe, writeTokenizerFiles } from "../../scripts/train_tokenizer.ts";
import { createTokenizer, loadTokenizer } from "../../lib/io/tokenizer.ts";

const CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" +
  "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n";
const TEXT = CORPUS.repeat(5);
const UNICODE_TEXT = "Ünïcödé 💩 世界\t\ttabs  and   spaces\r\n isn't 'quoted' 12345 \u0000\u00ad end ";
const VOCAB = 320;

Deno.test("a trained tokenizer round-trips text exactly through loadTokenizer()", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_bpe_" });
  try {
    await writeTokenizerFiles(dir, trainByteLevelBpe(TEXT, { vocabSize: VOCAB }));
    const tok = await loadTokenizer(dir);
    for (const text of [TEXT, UNICODE_TEXT, "", " ", "\n"]) {
      assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
      assert.equal(tok.decode(tok.encode(text), { skipSpecialTokens: true }), text);
    }
    // Special-token text is matched as the special token, and decodes back to the same text.
    assert.equal(tok.decode(tok.encode("a<pad>b</s>", { addSpecialTokens: false })), "a<pad>b</s>");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("merges are applied: training text needs far fewer tokens than bytes", () => {
  const tok = createTokenizer(trainByteLevelBpe(TEXT, { vocabSize: VOCAB }));
  const ids = tok.encode(TEXT, { addSpecialTokens: false });
  const bytes = new TextEncoder().encode(TEXT).length;
  assert.ok(ids.length < bytes / 2, `${ids.length} tokens for ${bytes} bytes`);
  assert.equal(tok.encode(" Citizen", { addSpecialTokens: false }).length, 1);
});

Deno.test("special tokens sit at ids 0, 1, 2 and encode() prepends bos like HF Llama", () => {
  const trained = trainByteLevelBpe(TEXT, { vocabSize: VOCAB });
  const tok = createTokenizer(trained);
  assert.deepEqual(SPECIAL_TOKENS.map((t) => tok.tokenToId(t)), [0, 1, 2]);
  assert.deepEqual([tok.bosId, tok.eosId, tok.padId], [0, 1, 2]);
  assert.equal(tok.vocabSize, VOCAB);
  const ids = tok.encode("hear me");
  assert.equal(ids[0], 0);
  assert.deepEqual(ids.slice(1), tok.encode("hear me", { addSpecialTokens: false }));
  assert.equal(tok.encode("</s>", { addSpecialTokens: false }).join(), "1");
});

Deno.test("the written config has the HF fields and an instruct chat template", () => {
  const { tokenizerConfig, tokenizerJson } = trainByteLevelBpe(TEXT, {
    vocabSize: VOCAB,
    modelMaxLength: 256,
  });
  assert.equal(tokenizerConfig.tokenizer_class, "PreTrainedTokenizerFast");
  assert.equal(tokenizerConfig.model_max_length, 256);
  assert.equal(tokenizerConfig.add_bos_token, true);
  const model = tokenizerJson.model as { byte_fallback: boolean; merges: unknown[] };
  assert.equal(model.byte_fallback, false);
  assert.ok(Array.isArray(model.merges[0]));
  const tok = createTokenizer({ tokenizerJson, tokenizerConfig });
  const prompt = tok.applyChatTemplate([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
  assert.equal(prompt, "<s>### User:\nHi\n### Assistant:\n");
  const full = tok.applyChatTemplate([{ role: "user", content: "Hi" }, { role: "assistant", content: "Yo" }]);
  assert.equal(full, "<s>### User:\nHi\n### Assistant:\nYo</s>");
  assert.throws(() => tok.applyChatTemplate([{ role: "robot", content: "x" }]), /Unknown role: robot/);
});

Deno.test("training is deterministic and stops early when pairs run out", () => {
  assert.deepEqual(
    trainByteLevelBpe(TEXT, { vocabSize: VOCAB }),
    trainByteLevelBpe(TEXT, { vocabSize: VOCAB }),
  );
  const tiny = createTokenizer(trainByteLevelBpe("ab ab", { vocabSize: 1000 }));
  assert.ok(tiny.vocabSize < 270);
});

Deno.test("trainByteLevelBpe() rejects bad options", () => {
  assert.throws(() => trainByteLevelBpe("x", { vocabSize: 100 }), RangeError);
  assert.throws(() => trainByteLevelBpe("x", { minFrequency: 0 }), RangeError);
  assert.throws(
    () => trainByteLevelBpe("x", { vocab: 300 } as never),
    /trainByteLevelBpe: unknown option "vocab"/,
  );
  assert.throws(() => trainByteLevelBpe(3 as never), TypeError);
});

Deno.test("the CLI trains from a file and writes a loadable tokenizer directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_bpe_cli_" });
  try {
    await Deno.writeTextFile(`${dir}/corpus.txt`, TEXT);
    const script = new URL("../../scripts/train_tokenizer.ts", import.meta.url).pathname;
    const args = [
      "run",
      "-A",
      script,
      "--input",
      `${dir}/corpus.txt`,
      "--out",
      `${dir}/tok`,
      "--vocab",
      "300",
    ];
    const { code, stderr } = await new Deno.Command(Deno.execPath(), { args, stdout: "null" }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const tok = await loadTokenizer(`${dir}/tok`);
    assert.equal(tok.vocabSize, 300);
    assert.equal(tok.decode(tok.encode(UNICODE_TEXT, { addSpecialTokens: false })), UNICODE_TEXT);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
