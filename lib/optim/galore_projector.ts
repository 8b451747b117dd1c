/**
 * GaLore gradient projector (Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by
 * Gradient Low-Rank Projection", Alg. 1; galore-torch `galore_projector.py`).
 *
 * Dimension legend: G is a gradient `[M, N]`, R the rank, K = R + oversample.
 * A left projector P is `[M, R]` (R = Pᵀ G: `[R, N]`), a right projector P is `[N, R]`
 * (R = G P: `[M, R]`), "full" keeps both U `[M, R]` and V `[N, R]` (R = Uᵀ G V: `[R, R]`).
 * `projectBack` returns the full-size update multiplied by `scale`.
 *
 * The projector is refreshed on the first call to `project` and then every
 * `updateProjGap` calls. A side whose dimension is ≤ `rank` is not compressed and uses
 * the identity instead of an SVD basis (so `projType: "full"` with rank ≥ max(M, N) and
 * scale 1 is plain Adam; any other orthogonal basis would not be, since Adam's
 * elementwise normalisation is not rotation-invariant). Refresh methods:
 * - `"randomized"` (default): subspace iteration on GᵀG (or GGᵀ) warm-started from the
 *   previous projector plus `oversample` random columns, `powerIters` multiplications each
 *   followed by a Float64 Gram–Schmidt re-orthonormalisation, then a Rayleigh–Ritz step
 *   that keeps the top-R directions. Cost O(M·N·K) per iteration instead of an SVD.
 *   4 iterations (default) reach a largest principal angle of ~1e-5 rad to the exact
 *   subspace on a 1024×1024 rank-128 + 1% noise gradient; 2 iterations only ~7e-3.
 * - `"exact"`: eigen-decomposition of the smaller Gram matrix (GᵀG or GGᵀ, formed in fp32
 *   by tfjs, decomposed in Float64 JS); the other side, when needed, is orth(G·V).
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { custom, defineOptions, type FieldsOf, integer, number, oneOf } from "../options/schema.ts";
import { f32Entry, type StateTensor } from "./optimizer_state.ts";
import { orthonormalizeColumns, symmetricEigen } from "./_linalg.ts";

/** Which side(s) of the gradient to project (galore-torch `proj_type`). */
export type ProjType = "std" | "reverse_std" | "left" | "right" | "full";
/** How the projector is recomputed. */
export type RefreshMethod = "randomized" | "exact";
/** The space a projector spans: left singular vectors (`[M, R]`) or right (`[N, R]`). */
export type Side = "left" | "right";

/** Options for {@linkcode createGaLoreProjector}. */
export interface GaLoreProjectorOptions {
  /** Projection rank R (`r`, as every rank; clipped to the projected dimension). */
  r: number;
  /** Calls to `project` between refreshes. @default {200} */
  updateProjGap?: number;
  /** Factor applied by `projectBack`. @default {0.25} */
  scale?: number;
  /** Which side to project. @default {"std"} */
  projType?: ProjType;
  /** Refresh method. @default {"randomized"} */
  refresh?: RefreshMethod;
  /** Power (subspace) iterations per randomized refresh. @default {4} */
  powerIters?: number;
  /** Extra columns carried by the randomized refresh. @default {8} */
  oversample?: number;
  /** Seed of the random start vectors. @default {0} */
  seed?: number;
}

/**
 * Fills defaults and validates (TypeError for unknown keys, RangeError for bad values).
 *
 * @example
 * ```ts
 * import { resolveGaLoreProjectorOptions } from "./galore_projector.ts";
 * const o = resolveGaLoreProjectorOptions({ r: 4 });
 * if (o.projType !== "std" || o.refresh !== "randomized" || o.updateProjGap !== 200) throw new Error("defaults");
 * ```
 */
export function resolveGaLoreProjectorOptions(
  options: GaLoreProjectorOptions,
): Required<GaLoreProjectorOptions> {
  return galoreProjectorSchema.parse(options) as Required<GaLoreProjectorOptions>;
}

/** Fields shared by the projector and GaLore-AdamW options. */
export const projectorFields = {
  r: integer("Projection rank R (clipped to the projected dimension).", { min: 1, required: true }),
  updateProjGap: integer("Calls to project between refreshes.", { min: 1, default: 200 }),
  scale: number("Factor applied by projectBack.", { default: 0.25 }),
  projType: oneOf("Which side to project.", ["std", "reverse_std", "left", "right", "full"] as const, {
    default: "std",
  }),
  refresh: oneOf("Refresh method.", ["randomized", "exact"] as const, { default: "randomized" }),
  powerIters: integer("Power (subspace) iterations per randomized refresh.", { min: 0, default: 4 }),
  oversample: integer("Extra columns carried by the randomized refresh.", { min: 0, default: 8 }),
};

/** The schema of {@linkcode createGaLoreProjector}'s options. */
export const galoreProjectorSchema = defineOptions(
  "createGaLoreProjector",
  {
    ...projectorFields,
    seed: integer("Seed of the random start vectors.", { min: 0, default: 0 }),
  } satisfies FieldsOf<GaLoreProjectorOptions>,
  { renamed: { rank: "r", update_proj_gap: "updateProjGap", proj_type: "projType" } },
);

/** Options for {@linkcode topSingularSubspace}. */
export interface TopSubspaceOptions {
  /** Method. @default {"randomized"} */
  method?: RefreshMethod;
  /** Warm start `[dim, ≤K]` for the randomized method (e.g. the previous projector). */
  init?: tf.Tensor2D;
  /** Power iterations (randomized). @default {4} */
  powerIters?: number;
  /** Extra columns (randomized). @default {8} */
  oversample?: number;
  /** Seed of the random start columns. @default {0} */
  seed?: number;
}

/** The schema of {@linkcode topSingularSubspace}'s options. */
export const topSubspaceSchema = defineOptions(
  "topSingularSubspace",
  {
    method: oneOf("Method.", ["randomized", "exact"] as const, { default: "randomized" }),
    init: custom<tf.Tensor2D>(
      "Warm start [dim, <=K] for the randomized method (e.g. the previous projector).",
      "a 2-D tensor",
      (v) => v instanceof tf.Tensor && v.rank === 2,
      { example: undefined },
    ),
    powerIters: integer("Power iterations (randomized).", { min: 0, default: 4 }),
    oversample: integer("Extra columns (randomized).", { min: 0, default: 8 }),
    seed: integer("Seed of the random start columns.", { min: 0, default: 0 }),
  } satisfies FieldsOf<TopSubspaceOptions>,
);

/**
 * Orthonormal basis `[M, R]` (side "left") or `[N, R]` (side "right") of the top-R
 * singular subspace of `g: [M, N]`, ordered by decreasing singular value.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { principalAngles, topSingularSubspace } from "./galore_projector.ts";
 * await initEngine({ backend: "cpu" });
 * const g = tf.tensor2d([[3, 0, 0], [0, 1, 0], [0, 0, 0.1], [0, 0, 0]]); // [4, 3]
 * const p = topSingularSubspace(g, 1, "right", { method: "exact" });     // ±e₀
 * const e0 = tf.tensor2d([[1], [0], [0]]);
 * if (principalAngles(p, e0) > 1e-6) throw new Error("top right singular vector is e0");
 * const q = topSingularSubspace(g, 2, "left");                            // randomized
 * if (q.shape[0] !== 4 || q.shape[1] !== 2) throw new Error(`${q.shape}`);
 * tf.dispose([g, p, e0, q]);
 * ```
 */
export function topSingularSubspace(
  g: tf.Tensor2D,
  rank: number,
  side: Side,
  options: TopSubspaceOptions = {},
): tf.Tensor2D {
  const o = topSubspaceSchema.parse(options);
  if (g.rank !== 2) {
    throw new TypeError(`topSingularSubspace(): expected a 2-D gradient, received shape [${g.shape}]`);
  }
  const [m, n] = g.shape;
  const dim = side === "left" ? m : n;
  const r = Math.min(rank, m, n);
  const method = o.method ?? "randomized";
  switch (method) {
    case "exact":
      return exactSubspace(g, r, side);
    case "randomized":
      return randomizedSubspace(g, r, dim, side, o);
    default: {
      const never: never = method;
      throw new RangeError(`topSingularSubspace(): unknown method ${never}`);
    }
  }
}

/** Top-r eigenvectors of the smaller Gram matrix; the other side through orth(G·V). */
function exactSubspace(g: tf.Tensor2D, r: number, side: Side): tf.Tensor2D {
  const [m, n] = g.shape;
  const gramSide: Side = n <= m ? "right" : "left";
  const k = gramSide === "right" ? n : m;
  const gram = tf.tidy(() =>
    gramSide === "right" ? tf.matMul(g, g, true, false) : tf.matMul(g, g, false, true)
  ); // [k, k]
  const a = gram.dataSync();
  gram.dispose();
  const { vectors } = symmetricEigen(a, k);
  const top = new Float32Array(k * r); // [k, r]
  for (let j = 0; j < r; j++) for (let i = 0; i < k; i++) top[i * r + j] = vectors[j * k + i];
  const basis = tf.tensor2d(top, [k, r]);
  if (gramSide === side) return basis;
  // Other side: G V (left) or Gᵀ U (right), orthonormalised (columns keep their order).
  const mapped = tf.tidy(() => side === "left" ? tf.matMul(g, basis) : tf.matMul(g, basis, true, false));
  basis.dispose();
  return orthonormalTensor(mapped, true);
}

/** Subspace iteration on GᵀG (right) or GGᵀ (left) with a Rayleigh–Ritz finish. */
function randomizedSubspace(
  g: tf.Tensor2D,
  r: number,
  dim: number,
  side: Side,
  o: TopSubspaceOptions,
): tf.Tensor2D {
  const k = Math.min(dim, r + (o.oversample ?? 8));
  // gram(X) = GᵀG X (right) or GGᵀ X (left) without forming the Gram matrix.
  const gram = (x: tf.Tensor2D): tf.Tensor2D =>
    tf.tidy(() =>
      side === "right"
        ? tf.matMul(g, tf.matMul(g, x), true, false)
        : tf.matMul(g, tf.matMul(g, x, true, false))
    );
  let q = tf.tidy(() => {
    const cols: tf.Tensor2D[] = [];
    const have = o.init ? Math.min(o.init.shape[1], k) : 0;
    if (o.init) {
      if (o.init.shape[0] !== dim) {
        throw new TypeError(`topSingularSubspace(): init has ${o.init.shape[0]} rows, expected ${dim}`);
      }
      cols.push(tf.slice(o.init, [0, 0], [dim, have]));
    }
    // +1: tfjs treats seed 0 as "unseeded" (Math.random), which would break determinism.
    if (k > have) cols.push(tf.randomNormal([dim, k - have], 0, 1, "float32", (o.seed ?? 0) + 1));
    return cols.length === 1 ? cols[0] : tf.concat(cols, 1);
  });
  q = orthonormalTensor(q, true);
  for (let it = 0; it < (o.powerIters ?? 4); it++) {
    const z = gram(q);
    q.dispose();
    q = orthonormalTensor(z, true);
  }
  // Rayleigh–Ritz: eigenvectors W of Qᵀ (GᵀG) Q = BᵀB pick the best R directions in span(Q).
  const b = tf.tidy(() => side === "right" ? tf.matMul(g, q) : tf.matMul(g, q, true, false)); // [·, k]
  const small = tf.tidy(() => tf.matMul(b, b, true, false)); // [k, k]
  b.dispose();
  const { vectors } = symmetricEigen(small.dataSync(), k);
  small.dispose();
  const w = new Float32Array(k * r); // [k, r]
  for (let j = 0; j < r; j++) for (let i = 0; i < k; i++) w[i * r + j] = vectors[j * k + i];
  const p = tf.tidy(() => tf.matMul(q, tf.tensor2d(w, [k, r])));
  q.dispose();
  return orthonormalTensor(p, true);
}

/** Orthonormalises the columns of `x` in Float64 JS (disposing `x` when asked). */
function orthonormalTensor(x: tf.Tensor, disposeInput: boolean): tf.Tensor2D {
  const [n, k] = x.shape as [number, number];
  const data = x.dataSync();
  if (disposeInput) x.dispose();
  return tf.tensor2d(Float32Array.from(orthonormalizeColumns(data, n, k)), [n, k]);
}

/**
 * Largest principal angle (radians) between the column spaces of `a: [D, R1]` and
 * `b: [D, R2]` (both orthonormalised first): asin of the largest singular value of
 * (I − QₐQₐᵀ) Q_b, accurate for small angles. 0 means span(b) ⊆ span(a).
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { principalAngles } from "./galore_projector.ts";
 * await initEngine({ backend: "cpu" });
 * const a = tf.tensor2d([[1], [0]]), b = tf.tensor2d([[1], [1]]);
 * if (Math.abs(principalAngles(a, b) - Math.PI / 4) > 1e-6) throw new Error("45 degrees");
 * tf.dispose([a, b]);
 * ```
 */
export function principalAngles(a: tf.Tensor2D, b: tf.Tensor2D): number {
  if (a.rank !== 2 || b.rank !== 2 || a.shape[0] !== b.shape[0]) {
    throw new TypeError(
      `principalAngles(): expected [D, R1] and [D, R2], received [${a.shape}] and [${b.shape}]`,
    );
  }
  const d = a.shape[0], ka = a.shape[1], kb = b.shape[1];
  const qa = orthonormalizeColumns(a.dataSync(), d, ka), qb = orthonormalizeColumns(b.dataSync(), d, kb);
  // E = Q_b − Q_a (Q_aᵀ Q_b)  in Float64: [d, kb]
  const c = new Float64Array(ka * kb);
  for (let i = 0; i < d; i++) {
    for (let x = 0; x < ka; x++) {
      const ax = qa[i * ka + x];
      for (let y = 0; y < kb; y++) c[x * kb + y] += ax * qb[i * kb + y];
    }
  }
  const e = Float64Array.from(qb);
  for (let i = 0; i < d; i++) {
    for (let x = 0; x < ka; x++) {
      const ax = qa[i * ka + x];
      for (let y = 0; y < kb; y++) e[i * kb + y] -= ax * c[x * kb + y];
    }
  }
  const ete = new Float64Array(kb * kb);
  for (let i = 0; i < d; i++) {
    for (let x = 0; x < kb; x++) {
      for (let y = 0; y < kb; y++) ete[x * kb + y] += e[i * kb + x] * e[i * kb + y];
    }
  }
  const top = symmetricEigen(ete, kb).values[0];
  return Math.asin(Math.min(1, Math.sqrt(Math.max(0, top))));
}

/** Which sides a projection type projects for a gradient `[m, n]`. */
export function projectedSides(projType: ProjType, m: number, n: number): { left: boolean; right: boolean } {
  switch (projType) {
    case "std": // galore-torch: m ≥ n projects the (smaller) column side N
      return m >= n ? { left: false, right: true } : { left: true, right: false };
    case "reverse_std":
      return m >= n ? { left: true, right: false } : { left: false, right: true };
    case "left":
      return { left: true, right: false };
    case "right":
      return { left: false, right: true };
    case "full":
      return { left: true, right: true };
    default: {
      const never: never = projType;
      throw new RangeError(`unknown projType ${never}`);
    }
  }
}

/** A stateful projector for one 2-D parameter (see the module docs). */
export interface GaLoreProjector {
  /** Resolved options. */
  readonly options: Readonly<Required<GaLoreProjectorOptions>>;
  /**
   * Left projector `[M, R]` when the left side is projected (after the first `project`);
   * null when it is not, or when M ≤ rank (identity: nothing to compress).
   */
  readonly left: tf.Tensor2D | null;
  /** Right projector `[N, R]` when the right side is projected; null when not, or N ≤ rank. */
  readonly right: tf.Tensor2D | null;
  /** Number of refreshes so far. */
  readonly refreshes: number;
  /**
   * Projects `g: [M, N]` to its low-rank form (refreshing first when due): `[R, N]`
   * (left), `[M, R]` (right) or `[R, R]` (full). Returns a new tensor the caller owns.
   */
  project(g: tf.Tensor2D, onChange?: BasisChangeHook): tf.Tensor2D;
  /** Maps a low-rank tensor back to `[M, N]`, multiplied by `scale`. */
  projectBack(r: tf.Tensor2D): tf.Tensor2D;
  /**
   * Recomputes the projector(s) from `g` now (does not advance the refresh counter); when
   * projectors existed before, `onChange` sees the change of basis (see {@linkcode BasisChange}).
   */
  refresh(g: tf.Tensor2D, onChange?: BasisChangeHook): void;
  /** Bytes of the projector tensors. */
  stateBytes(): number;
  /** Copies of the projector(s) and the counters that decide the next refresh (for exact resume). */
  exportState(): ProjectorState;
  /** Replaces the projector(s) and counters by a saved state. */
  importState(state: ProjectorState): void;
  /** Frees the projector tensors. */
  dispose(): void;
}

/**
 * How low-rank coordinates change at a refresh: `left = P'ᵀ P` `[R, R]` for the left
 * projector (new coordinates of a left-projected `X: [R, N]` are `left · X`), `right = Q'ᵀ Q`
 * for the right one (`X · rightᵀ`); null for a side that is not projected. Exact for the part
 * of the gradient inside both subspaces.
 */
export interface BasisChange {
  left: tf.Tensor2D | null;
  right: tf.Tensor2D | null;
}

/** Called at a refresh with the change of basis (its tensors are freed after the call). */
export type BasisChangeHook = (change: BasisChange) => void;

/** A projector's saved state. */
export interface ProjectorState {
  /** Gradient shape fixed by the first `project` (null before it). */
  shape: [number, number] | null;
  /** `project` calls so far (a refresh happens when `calls % updateProjGap === 0`). */
  calls: number;
  /** Refreshes so far (they seed the randomized refresh). */
  refreshes: number;
  left: StateTensor | null;
  right: StateTensor | null;
}

/**
 * Creates a projector. The first `project` call fixes the gradient shape.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { createGaLoreProjector } from "./galore_projector.ts";
 * await initEngine({ backend: "cpu" });
 * const g = tf.matMul(tf.randomNormal([8, 2], 0, 1, "float32", 1), tf.randomNormal([2, 6], 0, 1, "float32", 2));
 * const proj = createGaLoreProjector({ r: 2, scale: 1 });       // std: 8 ≥ 6 → right [6, 2]
 * const r = proj.project(g as tf.Tensor2D);                       // [8, 2]
 * const back = proj.projectBack(r);                               // [8, 6]
 * const err = tf.max(tf.abs(tf.sub(back, g))).dataSync()[0];
 * if (r.shape[1] !== 2 || err > 1e-4) throw new Error(`rank-2 gradient must round-trip (${err})`);
 * tf.dispose([g, r, back]); proj.dispose();
 * ```
 */
export function createGaLoreProjector(options: GaLoreProjectorOptions): GaLoreProjector {
  const o = resolveGaLoreProjectorOptions(options);
  let left: tf.Tensor2D | null = null, right: tf.Tensor2D | null = null;
  let shape: [number, number] | null = null;
  let calls = 0, refreshes = 0;

  const sub = (g: tf.Tensor2D, side: Side, init: tf.Tensor2D | null) =>
    topSingularSubspace(g, o.r, side, {
      method: o.refresh,
      init: init ?? undefined,
      powerIters: o.powerIters,
      oversample: o.oversample,
      seed: o.seed + refreshes,
    });

  const checkShape = (g: tf.Tensor2D) => {
    if (g.rank !== 2) throw new TypeError(`GaLoreProjector: expected a 2-D gradient, received [${g.shape}]`);
    if (!shape) shape = [g.shape[0], g.shape[1]];
    if (g.shape[0] !== shape[0] || g.shape[1] !== shape[1]) {
      throw new TypeError(
        `GaLoreProjector: gradient shape [${g.shape}] differs from the first one [${shape}]`,
      );
    }
  };

  const self: GaLoreProjector = {
    options: o,
    get left() {
      return left;
    },
    get right() {
      return right;
    },
    get refreshes() {
      return refreshes;
    },
    refresh(g: tf.Tensor2D, onChange?: BasisChangeHook): void {
      checkShape(g);
      const sides = projectedSides(o.projType, g.shape[0], g.shape[1]);
      // A side whose dimension is ≤ rank is not compressed: it uses the identity, the one
      // basis of the whole space under which Adam's elementwise normalisation is unchanged.
      if (g.shape[0] <= o.r) sides.left = false;
      if (g.shape[1] <= o.r) sides.right = false;
      let newLeft: tf.Tensor2D | null = null, newRight: tf.Tensor2D | null = null;
      if (sides.left && sides.right) {
        // Both sides: V from the chosen method, U = orth(G V) so that Uᵀ G V is (near) diagonal.
        newRight = sub(g, "right", right);
        const gv = tf.tidy(() => tf.matMul(g, newRight!));
        newLeft = orthonormalTensor(gv, true);
      } else if (sides.left) newLeft = sub(g, "left", left);
      else if (sides.right) newRight = sub(g, "right", right);
      if (onChange && (left || right)) {
        const change: BasisChange = {
          left: left && newLeft ? tf.matMul(newLeft, left, true, false) : null, // [R, R]
          right: right && newRight ? tf.matMul(newRight, right, true, false) : null, // [R, R]
        };
        try {
          onChange(change);
        } finally {
          change.left?.dispose();
          change.right?.dispose();
        }
      }
      left?.dispose();
      right?.dispose();
      left = newLeft ? tf.keep(newLeft) : null;
      right = newRight ? tf.keep(newRight) : null;
      refreshes++;
    },
    project(g: tf.Tensor2D, onChange?: BasisChangeHook): tf.Tensor2D {
      checkShape(g);
      if (calls % o.updateProjGap === 0) self.refresh(g, onChange);
      calls++;
      return tf.tidy(() => {
        let r: tf.Tensor2D = g;
        if (left) r = tf.matMul(left, r, true, false); // [R, N]
        if (right) r = tf.matMul(r, right); // [·, R]
        return r === g ? r.clone() : r;
      });
    },
    projectBack(r: tf.Tensor2D): tf.Tensor2D {
      if (!shape) throw new TypeError("GaLoreProjector.projectBack(): call project() first");
      const want = [left ? left.shape[1] : shape[0], right ? right.shape[1] : shape[1]];
      if (r.rank !== 2 || r.shape[0] !== want[0] || r.shape[1] !== want[1]) {
        throw new TypeError(`GaLoreProjector.projectBack(): expected shape [${want}], received [${r.shape}]`);
      }
      return tf.tidy(() => {
        let x: tf.Tensor2D = r;
        if (left) x = tf.matMul(left, x); // [M, ·]
        if (right) x = tf.matMul(x, right, false, true); // [·, N]
        return tf.mul(x, o.scale);
      });
    },
    stateBytes: () => 4 * ((left?.size ?? 0) + (right?.size ?? 0)),
    exportState: () => ({
      shape: shape ? [shape[0], shape[1]] : null,
      calls,
      refreshes,
      left: left ? f32Entry(left) : null,
      right: right ? f32Entry(right) : null,
    }),
    importState(st: ProjectorState): void {
      const make = (t: StateTensor | null) =>
        t ? tf.tensor2d(t.data as Float32Array, t.shape as [number, number]) : null;
      left?.dispose();
      right?.dispose();
      left = make(st.left);
      right = make(st.right);
      shape = st.shape ? [st.shape[0], st.shape[1]] : null;
      calls = st.calls;
      refreshes = st.refreshes;
    },
    dispose(): void {
      left?.dispose();
      right?.dispose();
      left = right = null;
    },
  };
  return self;
}
