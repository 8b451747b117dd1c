/**
 * A small seeded random number generator (data shuffling, DyLoRA rank sampling, sampling in generation).
 * It lives with the engine, the lowest layer, so models and adapters can use it without importing `train/`.
 * @module
 */

/**
 * Seeded PRNG (mulberry32): returns a function giving uniform numbers in [0, 1).
 *
 * @example
 * ```ts
 * import { mulberry32 } from "./random.ts";
 * const a = mulberry32(7), b = mulberry32(7);
 * if (a() !== b() || a() >= 1) throw new Error("same seed, same stream, in [0, 1)");
 * ```
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
