import assert from "node:assert/strict";
import { createTokenizer, loadTokenizer } from "../../lib/io/tokenizer.ts";
import { FormatError } from "../../lib/io/format_error.ts";

// Fixture from pytorch/torchtune tests/assets/tokenizer.json; expected ids from torchtune's
// test_hf_tokenizer.py (checked there against tiktoken). See tests/fixtures/external/README.md.
const EXTERNAL = Deno.env.get("NBTUNE_EXTERNAL_FIXTURES") ??
  new URL("../fixtures/external", import.meta.url).pathname;
const BPE_2000 = `${EXTERNAL}/tokenizers/bytelevel-bpe-2000.tokenizer.json`;
const HAVE_FIXTURE = (() => {
  try {
    return Deno.statSync(BPE_2000).isFile;
  } catch {
    return false;
  }
})();
const SUN_TEXT = "I can see the sun. But even if I cannot see the sun, I know that it exists.";
const SUN_IDS = [
  73,
  503,
  654,
  262,
  376,
  110,
  46,
  690,
  720,
  428,
  270,
  1119,
  654,
  262,
  376,
  110,
  44,
  270,
  686,
  334,
  312,
  522,
  511,
  115,
  46,
];
const UNICODE_TEXT = "héllo 💩 世界\n\n  tabs\t , . ' don't Ωmega\r\n";

async function tokenizerDir(files: Record<string, unknown>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_tok_" });
  for (const [name, value] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, typeof value === "string" ? value : JSON.stringify(value));
  }
  return dir;
}

async function fixtureDir(extra: Record<string, unknown> = {}): Promise<string> {
  return await tokenizerDir({ "tokenizer.json": await Deno.readTextFile(BPE_2000), ...extra });
}

Deno.test({
  name: "loadTokenizer() encodes the torchtune byte-level BPE fixture to the reference ids",
  ignore: !HAVE_FIXTURE,
  async fn() {
    const dir = await fixtureDir();
    try {
      const tok = await loadTokenizer(dir);
      assert.deepEqual(tok.encode(SUN_TEXT), SUN_IDS);
      assert.deepEqual(tok.encode(SUN_TEXT, { addSpecialTokens: false }), SUN_IDS);
      assert.equal(tok.decode(SUN_IDS), SUN_TEXT);
      assert.equal(tok.vocabSize, 2000);
      assert.equal(tok.idToToken(73), "I");
      assert.equal(tok.tokenToId("I"), 73);
      assert.equal(tok.tokenToId("no such token"), undefined);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the fixture tokenizer round-trips arbitrary Unicode through encode and decode",
  ignore: !HAVE_FIXTURE,
  async fn() {
    const dir = await fixtureDir();
    try {
      const tok = await loadTokenizer(dir);
      assert.equal(tok.decode(tok.encode(UNICODE_TEXT)), UNICODE_TEXT);
      assert.equal(tok.decode([]), "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "special tokens come from tokenizer_config, then special_tokens_map, then generation_config",
  ignore: !HAVE_FIXTURE,
  async fn() {
    // The fixture has no added tokens, so ordinary vocabulary entries stand in for specials.
    const dir = await fixtureDir({
      "tokenizer_config.json": { bos_token: { content: "I", lstrip: false }, model_max_length: 128 },
      "special_tokens_map.json": { bos_token: "the", eos_token: "it" },
      "generation_config.json": { eos_token_id: [5, 6], pad_token_id: 7 },
    });
    try {
      const tok = await loadTokenizer(dir);
      assert.equal(tok.bosId, 73);
      assert.equal(tok.bosToken, "I");
      assert.equal(tok.eosId, 272); // "it"
      assert.deepEqual(tok.eosIds, [272, 5, 6]);
      assert.equal(tok.padId, 7);
      assert.equal(tok.modelMaxLength, 128);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("padId falls back to eosId when the tokenizer defines no pad token", () => {
  const tok = createTokenizer({
    tokenizerJson: {
      model: { type: "BPE", vocab: { a: 0, b: 1 }, merges: [] },
      decoder: { type: "Fuse" },
      added_tokens: [{ id: 2, content: "<s>", special: true }, { id: 3, content: "</s>", special: true }],
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [],
        special_tokens: { "<s>": { id: "<s>", ids: [2], tokens: ["<s>"] } },
      },
    },
    tokenizerConfig: { bos_token: "<s>", eos_token: "</s>" },
  });
  assert.equal(tok.bosId, 2);
  assert.equal(tok.eosId, 3);
  assert.equal(tok.padId, 3);
  assert.deepEqual(tok.encode("ab"), [2, 0, 1]);
  assert.deepEqual(tok.encode("ab", { addSpecialTokens: false }), [0, 1]);
  assert.equal(tok.decode([2, 0, 1, 3]), "<s>ab</s>");
  assert.equal(tok.decode([2, 0, 1, 3], { skipSpecialTokens: true }), "ab");
});

Deno.test("applyChatTemplate() renders the configured template with bos and eos tokens", () => {
  const tok = createTokenizer({
    tokenizerJson: {
      model: { type: "BPE", vocab: { a: 0 }, merges: [] },
      added_tokens: [{ id: 1, content: "<s>", special: true }, { id: 2, content: "</s>", special: true }],
    },
    tokenizerConfig: {
      bos_token: "<s>",
      eos_token: "</s>",
      chat_template: [
        {
          name: "default",
          template: "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}",
        },
        { name: "other", template: "other" },
      ],
    },
  });
  assert.equal(tok.applyChatTemplate([{ role: "user", content: "hi" }]), "<s>hi</s>");
  assert.throws(() => tok.applyChatTemplate([], { addGenerationPromt: true } as never), TypeError);
});

Deno.test("applyChatTemplate() without a chat template throws an error that says how to give one", () => {
  const tok = createTokenizer({ tokenizerJson: { model: { type: "BPE", vocab: { a: 0 }, merges: [] } } });
  assert.equal(tok.chatTemplate, undefined);
  assert.throws(() => tok.applyChatTemplate([{ role: "user", content: "a" }]), /no chat template/);
});

Deno.test("chat_template.jinja overrides tokenizer_config.json and the chatTemplate option overrides both", async () => {
  const json = { model: { type: "BPE", vocab: { a: 0 }, merges: [] } };
  const dir = await tokenizerDir({
    "tokenizer.json": json,
    "tokenizer_config.json": { chat_template: "config" },
    "chat_template.jinja": "file",
  });
  try {
    assert.equal((await loadTokenizer(dir)).applyChatTemplate([]), "file");
    assert.equal((await loadTokenizer(dir, { chatTemplate: "option" })).applyChatTemplate([]), "option");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTokenizer() names the missing tokenizer.json", async () => {
  const dir = await tokenizerDir({});
  try {
    await assert.rejects(
      () => loadTokenizer(dir),
      (e: unknown) => e instanceof Deno.errors.NotFound && e.message.includes(`${dir}/tokenizer.json`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTokenizer() reports malformed JSON files as FormatError naming the file", async () => {
  const dir = await tokenizerDir({ "tokenizer.json": "{ not json" });
  try {
    await assert.rejects(() => loadTokenizer(dir), (e: unknown) => {
      assert.ok(e instanceof FormatError);
      assert.ok(e.file.endsWith("tokenizer.json"));
      return true;
    });
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify({ model: { type: "Nope" } }));
    await assert.rejects(() => loadTokenizer(dir), FormatError);
    await Deno.writeTextFile(
      `${dir}/tokenizer.json`,
      JSON.stringify({ model: { type: "BPE", vocab: { a: 0 }, merges: [] } }),
    );
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[1,2]");
    await assert.rejects(() => loadTokenizer(dir), /tokenizer_config\.json/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("encode() and decode() reject wrong inputs and unknown options", () => {
  const tok = createTokenizer({ tokenizerJson: { model: { type: "BPE", vocab: { a: 0 }, merges: [] } } });
  assert.throws(() => tok.encode(3 as never), TypeError);
  assert.throws(
    () => tok.encode("a", { addSpecialToken: true } as never),
    /encode: unknown option "addSpecialToken" \(did you mean "addSpecialTokens"\?\)/,
  );
  assert.throws(() => tok.decode([5]), RangeError);
  assert.throws(() => tok.decode([0.5]), RangeError);
  assert.throws(() => createTokenizer({ tokenizerJson: [] }), FormatError);
  assert.throws(() => createTokenizer({ tokenizerJson: {} }, { chatTemplat: "x" } as never), TypeError);
});
