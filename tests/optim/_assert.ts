/**
 * The optimizer tests' assertions: the shared ones in tests/_assert.ts.
 * @module
 */
export { assert, assertEquals, assertThrows } from "../_assert.ts";
