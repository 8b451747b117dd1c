/**
 * The error thrown for malformed checkpoint files (safetensors, shard indexes).
 * @module
 */

/** Where in a file a {@linkcode FormatError} was found. */
export interface FormatErrorLocation {
  /** Path of the malformed file. */
  file: string;
  /** Name of the tensor concerned, when the problem belongs to one. */
  tensor?: string;
  /** Absolute byte offset in the file where the problem lies, when known. */
  offset?: number;
  /** The underlying error (for example the `JSON.parse` failure). */
  cause?: unknown;
}

/**
 * A file is not a valid checkpoint. The message names the file, then the tensor and
 * the absolute byte offset when they are known, then what was received and what to do.
 *
 * @example
 * ```ts
 * import { FormatError } from "./format_error.ts";
 * const err = new FormatError("dtype \"Q4\" is unknown", { file: "m.safetensors", tensor: "w", offset: 8 });
 * if (!(err instanceof SyntaxError)) throw new Error("expected a SyntaxError");
 * if (err.message !== 'm.safetensors: tensor "w" at byte 8: dtype "Q4" is unknown') throw new Error(err.message);
 * if (err.tensor !== "w" || err.offset !== 8) throw new Error("location lost");
 * ```
 */
export class FormatError extends SyntaxError {
  /** Path of the malformed file. */
  readonly file: string;
  /** Name of the tensor concerned, if any. */
  readonly tensor?: string;
  /** Absolute byte offset in the file, if known. */
  readonly offset?: number;

  /**
   * @param detail what is wrong and what to do, as a sentence fragment.
   * @param location the file, tensor and byte offset it concerns.
   */
  constructor(detail: string, location: FormatErrorLocation) {
    let where = location.file;
    if (location.tensor !== undefined) where += `: tensor ${JSON.stringify(location.tensor)}`;
    if (location.offset !== undefined) {
      where += `${location.tensor === undefined ? ":" : ""} at byte ${location.offset}`;
    }
    super(`${where}: ${detail}`, location.cause === undefined ? undefined : { cause: location.cause });
    this.name = "FormatError";
    this.file = location.file;
    if (location.tensor !== undefined) this.tensor = location.tensor;
    if (location.offset !== undefined) this.offset = location.offset;
  }
}
