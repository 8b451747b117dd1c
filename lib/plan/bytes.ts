/**
 * Byte sizes for plans and budgets: parse "24GB" / "32 GiB", format as decimal GB.
 *
 * GB here is 1e9 bytes (the QLoRA seed's unit, and how GPU vendors label cards); GiB is
 * 2^30. A "24 GB" RTX 3090 actually has 24 GiB ≈ 25.8e9 bytes, so budgets given in GB
 * are slightly conservative.
 * @module
 */

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * Parses a byte size: a number of bytes, or a string like `"24GB"`, `"24 GiB"`, `"1.5e9"`.
 *
 * @param size bytes or a string with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)
 * @returns bytes
 * @throws {RangeError} for negative, non-finite or unparsable sizes
 * @example
 * ```ts
 * import { parseBytes } from "./bytes.ts";
 * if (parseBytes("24GB") !== 24e9 || parseBytes("1 GiB") !== 2 ** 30 || parseBytes(5) !== 5) throw new Error();
 * ```
 */
export function parseBytes(size: number | string): number {
  let bytes: number;
  if (typeof size === "number") {
    bytes = size;
  } else if (typeof size === "string") {
    const m = /^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$/i.exec(size);
    const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
    if (!m || unit === undefined) {
      throw new RangeError(
        `cannot read the size ${JSON.stringify(size)}; write a number with a unit such as "24GB" or "32GiB"`,
      );
    }
    bytes = Number(m[1]) * unit;
  } else {
    throw new TypeError(`a size must be a number of bytes or a string like "24GB", received ${typeof size}`);
  }
  if (!Number.isFinite(bytes) || bytes < 0) {
    throw new RangeError(`a size must be a finite number of bytes >= 0, received ${JSON.stringify(size)}`);
  }
  return bytes;
}

/**
 * Formats bytes as decimal gigabytes with `digits` decimals (`"41.6 GB"`).
 *
 * @param bytes the size
 * @param digits decimals (default 1)
 * @returns the text
 * @example
 * ```ts
 * import { formatGB } from "./bytes.ts";
 * if (formatGB(41.6e9) !== "41.6 GB") throw new Error(formatGB(41.6e9));
 * ```
 */
export function formatGB(bytes: number, digits = 1): string {
  return `${(bytes / 1e9).toFixed(digits)} GB`;
}
