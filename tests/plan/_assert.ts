/**
 * The planner tests' assertions: the shared ones in tests/_assert.ts.
 * @module
 */
export { assert, assertAlmostEquals as assertNear, assertEquals, assertThrows } from "../_assert.ts";
