/**
 * Small HTML and text helpers shared inside lib/notebook (private).
 * @module
 */

/** The printable part of a bundle: `text/plain`, else a note listing the MIME types. */
export function plainText(bundle: Record<string, unknown>): string {
  const text = bundle["text/plain"];
  return typeof text === "string" ? text : `<${Object.keys(bundle).join(", ")}>`;
}

/** Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * JSON that is safe inside an inline `<script>`: `</` and `<!--` would end or confuse the HTML script
 * parser, and U+2028/9 were not valid in older JS string literals.
 */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/<\//g, "<\\/")
    .replace(/<!--/g, "<\\u0021--")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/** A fresh DOM id with a prefix, unique across processes with overwhelming probability. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}
