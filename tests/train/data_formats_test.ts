/**
 * Dataset formats: alpaca, chat `messages` with loss on every assistant turn (headers and the
 * other roles masked), ShareGPT `conversations`, on a ChatML tokenizer (Qwen2's template shape).
 */
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { createTokenizer, type Tokenizer } from "../../lib/io/tokenizer.ts";
import { IGNORE_INDEX, tokenizeRecord, tokenizeRecords } from "../../lib/train/data.ts";
import { ALPACA_PROMPTS } from "../../lib/train/record_formats.ts";

const BPE = new URL("../fixtures/external/tokenizers/bytelevel-bpe-2000.tokenizer.json", import.meta.url);
const CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

function chatmlTokenizer(): Tokenizer {
  const json = JSON.parse(Deno.readTextFileSync(BPE));
  json.added_tokens = [
    {
      id: 2000,
      content: "<|endoftext|>",
      special: true,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
    },
    {
      id: 2001,
      content: "<|im_start|>",
      special: true,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
    },
    {
      id: 2002,
      content: "<|im_end|>",
      special: true,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
    },
  ];
  return createTokenizer({
    tokenizerJson: json,
    tokenizerConfig: { eos_token: "<|im_end|>", pad_token: "<|endoftext|>", chat_template: CHATML },
  });
}

/** The text of the learned tokens, one string per run of consecutive learned positions. */
function learned(tok: Tokenizer, ex: { ids: number[]; labels: number[] }): string[] {
  const runs: number[][] = [];
  ex.labels.forEach((l, i) => {
    if (l === IGNORE_INDEX) return;
    assertEquals(l, ex.ids[i]);
    if (i > 0 && ex.labels[i - 1] !== IGNORE_INDEX) runs[runs.length - 1].push(l);
    else runs.push([l]);
  });
  return runs.map((r) => tok.decode(r, { skipSpecialTokens: false }));
}

Deno.test("messages: every assistant turn is learned, headers and user/system turns are masked", () => {
  const tok = chatmlTokenizer();
  const ex = tokenizeRecord(
    {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hello there" },
        { role: "assistant", content: "Hi!" },
        { role: "user", content: "How are you?" },
        { role: "assistant", content: "Fine, thanks." },
      ],
    },
    tok,
    { maxLength: 512 },
  );
  const runs = learned(tok, ex);
  assertEquals(runs.length, 2, JSON.stringify(runs));
  assertEquals(runs[0], "Hi!<|im_end|>\n");
  // The final turn closes with eos (<|im_end|>) as an id; the template's own eos text is not doubled.
  assertEquals(runs[1], "Fine, thanks.<|im_end|>");
  assert(!runs.join("").includes("<|im_start|>"), "turn headers are masked");
  assertEquals(ex.ids.filter((i) => i === 2002).length, 5, "one <|im_end|> per turn");
  assertEquals(
    tok.decode(ex.ids, { skipSpecialTokens: false }),
    tok.applyChatTemplate([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hello there" },
      { role: "assistant", content: "Hi!" },
      { role: "user", content: "How are you?" },
      { role: "assistant", content: "Fine, thanks." },
    ]).slice(0, -1),
    "the ids spell the rendered conversation",
  );
});

Deno.test("ShareGPT conversations map to the same example as the equivalent messages", () => {
  const tok = chatmlTokenizer();
  const share = tokenizeRecord({
    conversations: [
      { from: "system", value: "S" },
      { from: "human", value: "Q1" },
      { from: "gpt", value: "A1" },
      { from: "human", value: "Q2" },
      { from: "gpt", value: "A2" },
    ],
  }, tok);
  const msgs = tokenizeRecord({
    messages: [
      { role: "system", content: "S" },
      { role: "user", content: "Q1" },
      { role: "assistant", content: "A1" },
      { role: "user", content: "Q2" },
      { role: "assistant", content: "A2" },
    ],
  }, tok);
  assertEquals(share, msgs);
  assertThrows(
    () => tokenizeRecords([{ conversations: [{ from: "robot", value: "x" }] }], tok),
    TypeError,
    'record 0: field "conversations[0].from" is "robot"',
  );
  assertThrows(
    () => tokenizeRecords([{ conversations: [{ from: "human", value: 3 }] } as never], tok),
    TypeError,
    'field "conversations[0].value" must be a string',
  );
  assertThrows(
    () => tokenizeRecord({ messages: [{ role: "user", content: "only a question" }] }, tok),
    TypeError,
    "at least one assistant message",
  );
});

Deno.test("alpaca: Stanford Alpaca's prompt (with and without input), loss on the output only", () => {
  const tok = chatmlTokenizer();
  const ex = tokenizeRecord({ instruction: "Add the numbers.", input: "2 and 3", output: "5" }, tok);
  const prompt = ALPACA_PROMPTS.withInput.replace("{instruction}", "Add the numbers.").replace(
    "{input}",
    "2 and 3",
  );
  assertEquals(learned(tok, ex), ["5<|im_end|>"]);
  assertEquals(tok.decode(ex.ids, { skipSpecialTokens: false }), prompt + "5<|im_end|>");
  const noInput = tokenizeRecord({ instruction: "Say hi.", input: "", output: "hi" }, tok);
  assert(!tok.decode(noInput.ids).includes("### Input"), "an empty input uses the no-input prompt");
  assertThrows(
    () => tokenizeRecords([{ instruction: "x", outptu: "y" } as never], tok),
    TypeError,
    'field "output" must be a string',
  );
});

Deno.test("evaluateLoss and exactMatch tick a progress bar per scored example", async () => {
  const { initEngine } = await import("../../lib/engine/backend.ts");
  const { initModel } = await import("../../lib/models/init_model.ts");
  const { evaluateLoss, evaluateLossAsync } = await import("../../lib/train/evaluate.ts");
  const { exactMatch } = await import("../../lib/train/score.ts");
  await initEngine({ backend: "cpu" });
  const tok = chatmlTokenizer();
  const model = initModel({
    model_type: "qwen2",
    vocab_size: 2003,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
  }, { seed: 1 });
  const ticks: number[] = [];
  const bar = { tick: (n = 1) => void ticks.push(n) };
  const exs = tokenizeRecords([{ text: "one two" }, { text: "three" }, { text: "four five six" }], tok);
  evaluateLoss(model, exs, { batchSize: 2, progress: bar });
  assertEquals(ticks, [2, 1]);
  await evaluateLossAsync(model, exs, { batchSize: 2, progress: bar });
  assertEquals(ticks, [2, 1, 2, 1]);
  ticks.length = 0;
  exactMatch(model, tok, [{ prompt: "a", completion: "b" }, { prompt: "c", completion: "d" }], {
    maxNewTokens: 2,
    progress: bar,
  });
  assertEquals(ticks, [1, 1]);
  assertThrows(
    () => exactMatch(model, tok, [{ prompt: "a", completion: "b" }], { progress: 3 as never }),
    TypeError,
    "progress",
  );
  model.dispose();
});
