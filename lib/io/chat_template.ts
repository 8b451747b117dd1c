/**
 * Chat templates: the Jinja programs that HF tokenizers ship in `tokenizer_config.json`
 * (`chat_template`) to turn a list of messages into one prompt string.
 *
 * Rendering follows transformers' `apply_chat_template`: the template sees `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token` and the `raise_exception` helper
 * (provided by `@huggingface/jinja`).
 * @module
 */

import { Template } from "npm:@huggingface/jinja@0.5.11";
import { boolean, custom, defineOptions, type FieldsOf, record, string } from "../options/schema.ts";

/** One turn of a conversation. */
export interface ChatMessage {
  /** Who speaks: usually `"system"`, `"user"` or `"assistant"`. */
  role: string;
  /** What was said. */
  content: string;
}

/** Options of {@linkcode renderChatTemplate} and of a compiled template. */
export interface RenderChatTemplateOptions {
  /**
   * Append the header that opens the assistant's turn, so that generation continues as the assistant.
   * @default false
   */
  addGenerationPrompt?: boolean;
  /**
   * Value of `bos_token` inside the template.
   * @default ""
   */
  bosToken?: string;
  /**
   * Value of `eos_token` inside the template.
   * @default ""
   */
  eosToken?: string;
  /**
   * Extra variables for the template (for example `tools` or `date_string`); they may not
   * replace `messages`, `add_generation_prompt`, `bos_token` or `eos_token`.
   * @default {}
   */
  variables?: Record<string, unknown>;
}

/** A parsed chat template, ready to render many conversations. */
export type CompiledChatTemplate = (
  messages: readonly ChatMessage[],
  options?: RenderChatTemplateOptions,
) => string;

/** The schema of the chat template renderer's options. */
export const renderChatTemplateSchema = defineOptions(
  "renderChatTemplate",
  {
    addGenerationPrompt: boolean("Append the header that opens the assistant's turn.", { default: false }),
    bosToken: string("Value of bos_token inside the template.", { default: "" }),
    eosToken: string("Value of eos_token inside the template.", { default: "" }),
    variables: record(
      "Extra variables for the template (not messages, add_generation_prompt, bos_token, eos_token).",
      custom(
        "Any value.",
        "any value",
        () => true,
        { example: 1 },
      ),
      { default: {} },
    ),
  } satisfies FieldsOf<RenderChatTemplateOptions>,
);
const RESERVED = new Set(["messages", "add_generation_prompt", "bos_token", "eos_token"]);

/**
 * Picks the template text out of a `tokenizer_config.json` `chat_template` value, which is
 * either a string or a list of `{name, template}` entries (transformers' named templates).
 *
 * @param value the raw `chat_template` value (`undefined`/`null` when the file has none).
 * @param name which named template to take from a list.
 * @returns the template source, or `undefined` when `value` is `undefined` or `null`.
 * @throws {TypeError} when `value` has another shape; {RangeError} when `name` is not in the list.
 *
 * @example
 * ```ts
 * import { resolveChatTemplate } from "./chat_template.ts";
 * const list = [{ name: "default", template: "A" }, { name: "tool_use", template: "B" }];
 * if (resolveChatTemplate(list) !== "A") throw new Error("default not picked");
 * if (resolveChatTemplate(list, "tool_use") !== "B") throw new Error("named template not picked");
 * if (resolveChatTemplate("{{ x }}") !== "{{ x }}") throw new Error("string not kept");
 * if (resolveChatTemplate(undefined) !== undefined) throw new Error("absent template invented");
 * ```
 */
export function resolveChatTemplate(value: unknown, name = "default"): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) {
    throw new TypeError(
      `chat_template must be a string or a list of {name, template} objects, received ${typeof value}`,
    );
  }
  const names: string[] = [];
  for (const entry of value) {
    if (
      typeof entry !== "object" || entry === null || typeof entry.name !== "string" ||
      typeof entry.template !== "string"
    ) {
      throw new TypeError(
        `chat_template list entries must be {name: string, template: string}, received ${
          JSON.stringify(entry)
        }`,
      );
    }
    if (entry.name === name) return entry.template;
    names.push(entry.name);
  }
  throw new RangeError(
    `chat_template has no template named ${JSON.stringify(name)}; available: ${names.join(", ")}`,
  );
}

/**
 * Parses a chat template once and returns a function that renders conversations with it.
 *
 * @param source the Jinja source of the template.
 * @returns a renderer taking the messages and {@linkcode RenderChatTemplateOptions}.
 * @throws {SyntaxError} when the template cannot be parsed.
 *
 * @example
 * ```ts
 * import { compileChatTemplate } from "./chat_template.ts";
 * const render = compileChatTemplate(
 *   "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}" +
 *     "{% if add_generation_prompt %}[assistant] {% endif %}",
 * );
 * const text = render([{ role: "user", content: "hi" }], { addGenerationPrompt: true, bosToken: "<s>" });
 * if (text !== "<s>[user] hi\n[assistant] ") throw new Error(JSON.stringify(text));
 * ```
 */
export function compileChatTemplate(source: string): CompiledChatTemplate {
  if (typeof source !== "string") {
    throw new TypeError(`Chat template must be a string, received ${typeof source}`);
  }
  let template: Template;
  try {
    template = new Template(source);
  } catch (cause) {
    // @huggingface/jinja's parser crashes with a TypeError (reading 'type' of undefined) when the
    // template ends inside a tag or an expression: say that instead of the parser's internals (kept
    // as the cause).
    const detail = cause instanceof TypeError
      ? "it is malformed (a {% … %} or {{ … }} left unfinished, or an expression cut short)"
      : (cause as Error).message;
    throw new SyntaxError(`Chat template could not be parsed: ${detail}`, { cause });
  }
  return (messages, options = {}) => {
    const resolved = resolveRenderOptions(options);
    checkMessages(messages);
    try {
      return template.render({
        ...resolved.variables,
        messages,
        add_generation_prompt: resolved.addGenerationPrompt,
        bos_token: resolved.bosToken,
        eos_token: resolved.eosToken,
      });
    } catch (cause) {
      throw new Error(`Chat template failed to render: ${(cause as Error).message}`, { cause });
    }
  };
}

/**
 * Renders `messages` with a chat template given as source text (parses it on every call;
 * use {@linkcode compileChatTemplate} to render many conversations).
 *
 * @param source the Jinja source of the template.
 * @param messages the conversation.
 * @param options generation prompt, special tokens and extra variables.
 * @returns the prompt string.
 *
 * @example
 * ```ts
 * import { renderChatTemplate } from "./chat_template.ts";
 * const text = renderChatTemplate("{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}", [
 *   { role: "user", content: "a" },
 *   { role: "assistant", content: "b" },
 * ], { eosToken: "</s>" });
 * if (text !== "a</s>b</s>") throw new Error(text);
 * ```
 */
export function renderChatTemplate(
  source: string,
  messages: readonly ChatMessage[],
  options: RenderChatTemplateOptions = {},
): string {
  return compileChatTemplate(source)(messages, options);
}

function resolveRenderOptions(options: RenderChatTemplateOptions): Required<RenderChatTemplateOptions> {
  const o = renderChatTemplateSchema.parse(options) as Required<RenderChatTemplateOptions>;
  const variables = o.variables;
  for (const key of Object.keys(variables)) {
    if (RESERVED.has(key)) {
      throw new RangeError(`Chat template variable ${JSON.stringify(key)} is set by the renderer; remove it`);
    }
  }
  return o;
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) {
    throw new TypeError(`Chat messages must be an array of {role, content}, received ${typeof messages}`);
  }
  messages.forEach((m, i) => {
    if (typeof m !== "object" || m === null || typeof m.role !== "string" || typeof m.content !== "string") {
      throw new TypeError(
        `Chat message ${i} must be {role: string, content: string}, received ${JSON.stringify(m)}`,
      );
    }
  });
}
