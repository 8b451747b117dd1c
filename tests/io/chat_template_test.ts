import assert from "node:assert/strict";
import { compileChatTemplate, renderChatTemplate, resolveChatTemplate } from "../../lib/io/chat_template.ts";

// The same shape of template that scripts/train_tokenizer.ts writes.
const INSTRUCT =
  "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}### User:\n{{ m.content }}\n" +
  "{% elif m.role == 'assistant' %}### Assistant:\n{{ m.content }}{{ eos_token }}\n{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}### Assistant:\n{% endif %}";

Deno.test("renderChatTemplate() renders a user/assistant conversation with bos and eos", () => {
  const text = renderChatTemplate(INSTRUCT, [
    { role: "user", content: "Hi?" },
    { role: "assistant", content: "Hello." },
  ], { bosToken: "<s>", eosToken: "</s>" });
  assert.equal(text, "<s>### User:\nHi?\n### Assistant:\nHello.</s>\n");
});

Deno.test("addGenerationPrompt appends the assistant header", () => {
  const render = compileChatTemplate(INSTRUCT);
  const messages = [{ role: "user", content: "Q" }];
  assert.equal(render(messages, { addGenerationPrompt: true }), "### User:\nQ\n### Assistant:\n");
  assert.equal(render(messages), "### User:\nQ\n");
});

Deno.test("extra variables reach the template but cannot replace the reserved ones", () => {
  const render = compileChatTemplate("{{ date_string }}|{{ messages | length }}");
  assert.equal(render([], { variables: { date_string: "today" } }), "today|0");
  assert.throws(() => render([], { variables: { messages: [] } }), RangeError);
});

Deno.test("raise_exception in a template surfaces as an error with the template's message", () => {
  const render = compileChatTemplate(
    "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}",
  );
  assert.throws(() => render([{ role: "system", content: "x" }]), /first must be user/);
});

Deno.test("malformed templates, messages and options are rejected with clear errors", () => {
  assert.throws(() => compileChatTemplate("{% for %}"), SyntaxError);
  const render = compileChatTemplate("x");
  assert.throws(() => render([{ role: "user" }] as never), /Chat message 0/);
  assert.throws(
    () => render([], { addGenerationPromt: true } as never),
    /renderChatTemplate: unknown option "addGenerationPromt"/,
  );
});

Deno.test("resolveChatTemplate() picks named templates and rejects unknown names and shapes", () => {
  const list = [{ name: "default", template: "d" }, { name: "rag", template: "r" }];
  assert.equal(resolveChatTemplate(list), "d");
  assert.equal(resolveChatTemplate(list, "rag"), "r");
  assert.equal(resolveChatTemplate(null), undefined);
  assert.throws(() => resolveChatTemplate(list, "tool_use"), /available: default, rag/);
  assert.throws(() => resolveChatTemplate(42), TypeError);
  assert.throws(() => resolveChatTemplate([{ name: "x" }]), TypeError);
});
