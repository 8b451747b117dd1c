/**
 * Dataset formats people bring, mapped to the record shapes the tokenizer handles:
 * alpaca (`{ instruction, input?, output }`, Stanford Alpaca's prompt) becomes a
 * `{ prompt, completion }`; ShareGPT (`{ conversations: [{ from, value }] }`) becomes a
 * `{ messages }` conversation with `from` mapped to chat roles.
 * @module
 */
import type { ChatMessage } from "../io/chat_template.ts";

/** An alpaca record: the instruction, optional context and the wanted output. */
export interface AlpacaRecord {
  instruction: string;
  /** Context for the instruction; an empty string means none. */
  input?: string;
  output: string;
}

/** One ShareGPT turn. */
export interface ShareGptTurn {
  /** `human`, `gpt`, `system` (also `user`, `assistant`, `chatgpt`, `bard`, `bing`, `tool`, `function`…). */
  from: string;
  value: string;
}

/** A ShareGPT record. */
export interface ShareGptRecord {
  conversations: ShareGptTurn[];
}

/** Stanford Alpaca's prompts (`PROMPT_DICT` in tatsu-lab/stanford_alpaca's train.py). */
export const ALPACA_PROMPTS = {
  withInput: "Below is an instruction that describes a task, paired with an input that provides further " +
    "context. Write a response that appropriately completes the request.\n\n" +
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
  noInput: "Below is an instruction that describes a task. Write a response that appropriately completes " +
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n",
} as const;

/**
 * An alpaca record as `{ prompt, completion }` (loss on the output only).
 *
 * @example
 * ```ts
 * import { alpacaToPrompt } from "./record_formats.ts";
 * const r = alpacaToPrompt({ instruction: "Add", input: "2 + 3", output: "5" });
 * if (!r.prompt.endsWith("### Input:\n2 + 3\n\n### Response:\n") || r.completion !== "5") throw new Error(r.prompt);
 * if (alpacaToPrompt({ instruction: "Hi", input: "", output: "Hello" }).prompt.includes("### Input")) throw new Error();
 * ```
 */
export function alpacaToPrompt(r: AlpacaRecord): { prompt: string; completion: string } {
  const input = r.input ?? "";
  const prompt = input === ""
    ? ALPACA_PROMPTS.noInput.replace("{instruction}", r.instruction)
    : ALPACA_PROMPTS.withInput.replace("{instruction}", r.instruction).replace("{input}", input);
  return { prompt, completion: r.output };
}

/** ShareGPT speaker names → chat roles. */
export const SHAREGPT_ROLES: Readonly<Record<string, string>> = {
  human: "user",
  user: "user",
  gpt: "assistant",
  assistant: "assistant",
  chatgpt: "assistant",
  bard: "assistant",
  bing: "assistant",
  model: "assistant",
  system: "system",
  tool: "tool",
  function: "tool",
  observation: "tool",
};

/**
 * A ShareGPT record as chat messages; an unknown `from` is refused, naming the turn.
 *
 * @example
 * ```ts
 * import { shareGptToMessages } from "./record_formats.ts";
 * const m = shareGptToMessages({ conversations: [{ from: "human", value: "Hi" }, { from: "gpt", value: "Yo" }] });
 * if (m.map((x) => x.role).join() !== "user,assistant") throw new Error(JSON.stringify(m));
 * ```
 */
export function shareGptToMessages(r: ShareGptRecord): ChatMessage[] {
  return r.conversations.map((t, i) => {
    const role = SHAREGPT_ROLES[t.from.toLowerCase()];
    if (!role) {
      throw new TypeError(
        `field "conversations[${i}].from" is "${t.from}", not a ShareGPT speaker (known: ${
          Object.keys(SHAREGPT_ROLES).join(", ")
        })`,
      );
    }
    return { role, content: t.value };
  });
}
