import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import {
  createGaLoreProjector,
  principalAngles,
  projectedSides,
  type ProjType,
  resolveGaLoreProjectorOptions,
  topSingularSubspace,
} from "../../lib/optim/galore_projector.ts";

await initEngine();

const M = 24, N = 16, RANK = 4; // small gradient [M, N] and projection rank
const TYPES: ProjType[] = ["std", "reverse_std", "left", "right", "full"];

/** Rank-k matrix A·B plus `noise`·E, with singular values decaying from ~1 (fixed seeds). */
function lowRankPlusNoise(m: number, n: number, k: number, noise: number, seed = 1): tf.Tensor2D {
  return tf.tidy(() => {
    const a = tf.randomNormal([m, k], 0, 1, "float32", seed);
    const decay = tf.reshape(tf.pow(tf.scalar(0.8), tf.range(0, k)), [1, k]); // spectral decay
    const b = tf.randomNormal([k, n], 0, 1, "float32", seed + 1);
    const e = tf.randomNormal([m, n], 0, 1, "float32", seed + 2);
    return tf.add(tf.matMul(tf.mul(a, decay), b), tf.mul(e, noise)) as tf.Tensor2D;
  });
}

function maxAbs(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

function orthonormalError(p: tf.Tensor2D): number {
  return tf.tidy(() => maxAbs(tf.matMul(p, p, true, false), tf.eye(p.shape[1])));
}

Deno.test("projector columns are orthonormal for every projType and refresh method", () => {
  const g = lowRankPlusNoise(M, N, 8, 0.01);
  for (const refresh of ["randomized", "exact"] as const) {
    for (const projType of TYPES) {
      const p = createGaLoreProjector({ r: RANK, projType, refresh });
      const r = p.project(g);
      const sides = projectedSides(projType, M, N);
      assertEquals(!!p.left, sides.left, `${projType} left`);
      assertEquals(!!p.right, sides.right, `${projType} right`);
      for (const q of [p.left, p.right]) if (q) assert(orthonormalError(q) < 1e-5, `${projType}/${refresh}`);
      const want = [sides.left ? RANK : M, sides.right ? RANK : N];
      assertEquals(r.shape.join(), want.join(), `${projType} low-rank shape`);
      assertEquals(p.stateBytes(), 4 * ((p.left?.size ?? 0) + (p.right?.size ?? 0)));
      r.dispose();
      p.dispose();
    }
  }
  g.dispose();
});

Deno.test("std projects the smaller side, reverse_std the larger, as galore-torch does", () => {
  assertEquals(JSON.stringify(projectedSides("std", 24, 16)), JSON.stringify({ left: false, right: true }));
  assertEquals(JSON.stringify(projectedSides("std", 16, 24)), JSON.stringify({ left: true, right: false }));
  assertEquals(
    JSON.stringify(projectedSides("reverse_std", 24, 16)),
    JSON.stringify({ left: true, right: false }),
  );
  assertEquals(JSON.stringify(projectedSides("full", 2, 3)), JSON.stringify({ left: true, right: true }));
});

Deno.test("projectBack() inverts project() times scale on rank-r gradients", () => {
  const g = lowRankPlusNoise(M, N, RANK, 0);
  for (const refresh of ["randomized", "exact"] as const) {
    for (const projType of TYPES) {
      const p = createGaLoreProjector({ r: RANK, projType, refresh, scale: 0.5 });
      const back = tf.tidy(() => p.projectBack(p.project(g)));
      const want = tf.mul(g, 0.5);
      assert(maxAbs(back, want) < 1e-4, `${projType}/${refresh}: ${maxAbs(back, want)}`);
      tf.dispose([back, want]);
      p.dispose();
    }
  }
  g.dispose();
});

Deno.test("projectBack(project(G)) is the orthogonal projection of G: applying it twice changes nothing", () => {
  const g = lowRankPlusNoise(M, N, 10, 0.1);
  for (const projType of TYPES) {
    const p = createGaLoreProjector({ r: RANK, projType, scale: 1 });
    const once = tf.tidy(() => p.projectBack(p.project(g)));
    const twice = tf.tidy(() => p.projectBack(p.project(once as tf.Tensor2D)));
    assert(maxAbs(once, twice) < 1e-5, projType);
    // and the residual is orthogonal to the kept part: ⟨G − PPᵀG, PPᵀG⟩ = 0
    const ip = tf.tidy(() => tf.sum(tf.mul(tf.sub(g, once), once)).dataSync()[0]);
    assert(Math.abs(ip) < 1e-4, `${projType}: ${ip}`);
    tf.dispose([once, twice]);
    p.dispose();
  }
  g.dispose();
});

Deno.test("randomized refresh is the default and agrees with the exact top-r subspace when there is a spectral gap", () => {
  assertEquals(resolveGaLoreProjectorOptions({ r: 1 }).refresh, "randomized");
  const g = lowRankPlusNoise(64, 48, 8, 1e-3, 7); // rank 8 + small noise
  for (const side of ["left", "right"] as const) {
    const exact = topSingularSubspace(g, 8, side, { method: "exact" });
    const fast = topSingularSubspace(g, 8, side);
    const angle = principalAngles(exact, fast);
    assert(angle < 1e-3, `${side}: largest principal angle ${angle}`);
    // the exact basis really is the top singular subspace: it captures ‖G‖² up to the noise
    const kept = tf.tidy(() => {
      const r = side === "left" ? tf.matMul(exact, g, true, false) : tf.matMul(g, exact);
      return tf.sum(tf.square(r)).dataSync()[0] / tf.sum(tf.square(g)).dataSync()[0];
    });
    assert(kept > 0.9999, `${side}: energy kept ${kept}`);
    tf.dispose([exact, fast]);
  }
  g.dispose();
});

Deno.test("the projector refreshes every updateProjGap calls, warm-started, and keeps it in between", () => {
  const g1 = lowRankPlusNoise(M, N, 8, 0.01, 1), g2 = lowRankPlusNoise(M, N, 8, 0.01, 50);
  const p = createGaLoreProjector({ r: RANK, updateProjGap: 3 });
  const rs: tf.Tensor[] = [];
  rs.push(p.project(g1));
  assertEquals(p.refreshes, 1);
  const first = p.right!.clone();
  rs.push(p.project(g2), p.project(g2));
  assertEquals(p.refreshes, 1);
  assert(maxAbs(first, p.right!) === 0, "unchanged between refreshes");
  rs.push(p.project(g2)); // call index 3 = gap → refresh on g2
  assertEquals(p.refreshes, 2);
  const exact2 = topSingularSubspace(g2, RANK, "right", { method: "exact" });
  assert(principalAngles(exact2, p.right!) < 1e-2, "refreshed onto the new gradient");
  tf.dispose([...rs, first, exact2, g1, g2]);
  p.dispose();
});

Deno.test("a side no larger than rank uses the identity, so nothing is compressed", () => {
  const g = lowRankPlusNoise(6, 5, 5, 0.1);
  const p = createGaLoreProjector({ r: 8, projType: "full", scale: 1 });
  const r = p.project(g);
  assert(p.left === null && p.right === null && maxAbs(r, g) === 0);
  assertEquals(p.stateBytes(), 0);
  tf.dispose([g, r]);
  p.dispose();
});

Deno.test("the projector leaks no tensors over many calls with refreshes", () => {
  const g = lowRankPlusNoise(M, N, 8, 0.01);
  const p = createGaLoreProjector({ r: RANK, updateProjGap: 2, projType: "full" });
  tf.dispose(p.project(g));
  const before = tf.memory().numTensors;
  for (let i = 0; i < 10; i++) tf.dispose(tf.tidy(() => p.projectBack(p.project(g))));
  assertEquals(tf.memory().numTensors, before);
  p.dispose();
  assertEquals(tf.memory().numTensors, before - 2);
  g.dispose();
});

Deno.test("principalAngles() is 0 for the same span and π/2 for orthogonal spans", () => {
  const a = tf.tensor2d([[1, 0], [0, 1], [0, 0]]), b = tf.tensor2d([[1, 1], [1, -1], [0, 0]]);
  const c = tf.tensor2d([[0], [0], [1]]);
  assert(principalAngles(a, b) < 1e-7);
  assert(Math.abs(principalAngles(a, c) - Math.PI / 2) < 1e-6);
  assertThrows(() => principalAngles(a, tf.zeros([4, 1]) as tf.Tensor2D), TypeError, "[D, R1]");
  tf.dispose([a, b, c]);
});

Deno.test("the projector rejects bad options and shape changes", () => {
  assertThrows(
    () => createGaLoreProjector({ r: 0 }),
    RangeError,
    'createGaLoreProjector: option "r" must be an integer >= 1',
  );
  assertThrows(
    () => createGaLoreProjector({} as never),
    TypeError,
    'createGaLoreProjector: option "r" is required',
  );
  assertThrows(
    () => createGaLoreProjector({ r: 2, projType: "diag" as ProjType }),
    RangeError,
    "projType",
  );
  assertThrows(() => createGaLoreProjector({ r: 2, gap: 3 } as never), TypeError, 'unknown option "gap"');
  const p = createGaLoreProjector({ r: 2 });
  const g = tf.ones([4, 3]) as tf.Tensor2D, h = tf.ones([3, 4]) as tf.Tensor2D;
  assertThrows(() => p.projectBack(g), TypeError, "project() first");
  tf.dispose(p.project(g));
  assertThrows(() => p.project(h), TypeError, "differs");
  assertThrows(() => p.projectBack(g), TypeError, "expected shape [4,2]");
  tf.dispose([g, h]);
  p.dispose();
});
