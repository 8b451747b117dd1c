/**
 * Checks a training record's shape before it is tokenized, so that a bad record fails
 * with the field at fault (`field "completion" must be a string, received undefined`)
 * instead of an error from deep inside the tokenizer.
 * @module
 */

function describe(v: unknown): string {
  if (v === undefined) return "undefined (missing)";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return v === null ? "null" : `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`;
}

function str(r: Record<string, unknown>, key: string): void {
  if (typeof r[key] !== "string") {
    throw new TypeError(`field "${key}" must be a string, received ${describe(r[key])}`);
  }
}

function intArray(r: Record<string, unknown>, key: string): void {
  const v = r[key];
  if (!Array.isArray(v)) {
    throw new TypeError(`field "${key}" must be an array of integers, received ${describe(v)}`);
  }
  const bad = v.findIndex((x) => !Number.isInteger(x));
  if (bad >= 0) {
    throw new TypeError(`field "${key}[${bad}]" must be an integer, received ${describe(v[bad])}`);
  }
}

/**
 * Throws a TypeError naming the field when `record` is not one of the record shapes:
 * `{ text }`, `{ prompt, completion }`, alpaca `{ instruction, input?, output }`,
 * `{ messages: [{ role, content }] }`, ShareGPT `{ conversations: [{ from, value }] }`, `{ ids, labels? }`.
 *
 * @example
 * ```ts
 * import { checkRecord } from "./record_check.ts";
 * checkRecord({ prompt: "Q", completion: "A" });
 * let msg = "";
 * try { checkRecord({ prompt: "Q", completon: "A" }); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes('field "completion" must be a string')) throw new Error(msg);
 * ```
 */
export function checkRecord(record: unknown): void {
  if (typeof record !== "object" || record === null || Array.isArray(record)) {
    throw new TypeError(`a record must be an object, received ${describe(record)}`);
  }
  const r = record as Record<string, unknown>;
  if ("ids" in r) {
    intArray(r, "ids");
    if (r.labels !== undefined) intArray(r, "labels");
  } else if ("text" in r) str(r, "text");
  else if ("prompt" in r || "completion" in r) {
    str(r, "prompt");
    str(r, "completion");
  } else if ("instruction" in r || "output" in r) {
    str(r, "instruction");
    if (r.input !== undefined && r.input !== null) str(r, "input");
    str(r, "output");
  } else if ("conversations" in r) {
    const c = r.conversations;
    if (!Array.isArray(c)) {
      throw new TypeError(`field "conversations" must be an array, received ${describe(c)}`);
    }
    c.forEach((turn, i) => {
      if (typeof turn !== "object" || turn === null) {
        throw new TypeError(`field "conversations[${i}]" must be an object, received ${describe(turn)}`);
      }
      const t = turn as Record<string, unknown>;
      for (const k of ["from", "value"]) {
        if (typeof t[k] !== "string") {
          throw new TypeError(
            `field "conversations[${i}].${k}" must be a string, received ${describe(t[k])}`,
          );
        }
      }
    });
  } else if ("messages" in r) {
    const m = r.messages;
    if (!Array.isArray(m)) throw new TypeError(`field "messages" must be an array, received ${describe(m)}`);
    m.forEach((msg, i) => {
      if (typeof msg !== "object" || msg === null) {
        throw new TypeError(`field "messages[${i}]" must be an object, received ${describe(msg)}`);
      }
      const x = msg as Record<string, unknown>;
      if (typeof x.role !== "string") {
        throw new TypeError(`field "messages[${i}].role" must be a string, received ${describe(x.role)}`);
      }
      if (typeof x.content !== "string") {
        throw new TypeError(
          `field "messages[${i}].content" must be a string, received ${describe(x.content)}`,
        );
      }
    });
  } else {
    throw new TypeError(
      `unknown record shape with fields [${Object.keys(r).join(", ")}]: use {text}, {prompt, completion}, ` +
        "{instruction, input, output} (alpaca), {messages}, {conversations} (ShareGPT) or {ids, labels}",
    );
  }
}
