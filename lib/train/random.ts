/**
 * The seeded PRNG, under its earlier path (it now lives in `lib/engine/random.ts`, the
 * lowest layer, so models and adapters use it without importing `train/`).
 * @module
 */
export { mulberry32 } from "../engine/random.ts";
