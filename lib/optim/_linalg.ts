/**
 * Internal dense linear algebra in Float64 JS for the GaLore projector: symmetric
 * eigendecomposition (Householder tridiagonalisation + implicit QL, the EISPACK
 * tred2/tql2 pair as published in JAMA) and column orthonormalisation (modified
 * Gram–Schmidt, applied twice — "twice is enough").
 *
 * Matrices are flat row-major Float64Arrays; `n` is the order of the symmetric matrix.
 * @module
 */

/** Eigen-decomposition of a symmetric matrix. */
export interface SymmetricEigen {
  /** Eigenvalues, largest first. */
  values: Float64Array; // [n]
  /** Eigenvectors as rows: row j (vectors[j*n .. j*n+n)) belongs to values[j]. */
  vectors: Float64Array; // [n, n]
}

/** Eigen-decomposes the symmetric `a` (row-major n×n; only symmetric input is meaningful). */
export function symmetricEigen(a: ArrayLike<number>, n: number): SymmetricEigen {
  const V = Float64Array.from(a as ArrayLike<number>);
  const d = new Float64Array(n), e = new Float64Array(n);
  tred2(V, d, e, n);
  // Transpose so that tql2 rotates contiguous rows (row i of Z = column i of V).
  const Z = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) Z[i * n + k] = V[k * n + i];
  tql2(Z, d, e, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const values = new Float64Array(n), vectors = new Float64Array(n * n);
  order.forEach((src, j) => {
    values[j] = d[src];
    vectors.set(Z.subarray(src * n, src * n + n), j * n);
  });
  return { values, vectors };
}

/** Householder reduction to tridiagonal form (JAMA `tred2`), V row-major. */
function tred2(V: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) d[j] = V[(n - 1) * n + j];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0, h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = V[(i - 1) * n + j];
        V[i * n + j] = 0;
        V[j * n + i] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h = h - f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        V[j * n + i] = f;
        g = e[j] + V[j * n + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const vkj = V[k * n + j];
          g += vkj * d[k];
          e[k] += vkj * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        for (let k = j; k <= i - 1; k++) V[k * n + j] -= f * e[k] + g * d[k];
        d[j] = V[(i - 1) * n + j];
        V[i * n + j] = 0;
      }
    }
    d[i] = h;
  }
  for (let i = 0; i < n - 1; i++) {
    V[(n - 1) * n + i] = V[i * n + i];
    V[i * n + i] = 1;
    const h = d[i + 1];
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = V[k * n + i + 1] / h;
      for (let j = 0; j <= i; j++) {
        let g = 0;
        for (let k = 0; k <= i; k++) g += V[k * n + i + 1] * V[k * n + j];
        for (let k = 0; k <= i; k++) V[k * n + j] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) V[k * n + i + 1] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = V[(n - 1) * n + j];
    V[(n - 1) * n + j] = 0;
  }
  V[(n - 1) * n + n - 1] = 1;
  e[0] = 0;
}

/** Implicit QL on the tridiagonal (JAMA `tql2`); Z holds eigenvectors as rows. */
function tql2(Z: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0, tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60) throw new Error("symmetricEigen(): QL iteration did not converge");
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1, c2 = c, c3 = c, s = 0, s2 = 0;
        const el1 = e[l + 1];
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          const zi = i * n, zi1 = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const hk = Z[zi1 + k];
            Z[zi1 + k] = s * Z[zi + k] + c * hk;
            Z[zi + k] = c * Z[zi + k] - s * hk;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] = d[l] + f;
    e[l] = 0;
  }
}

/**
 * Orthonormalises the k columns of the row-major [n, k] matrix `x` in place of a copy
 * (modified Gram–Schmidt, two passes). A column that becomes (numerically) zero is
 * replaced by a deterministic pseudo-random vector and orthonormalised again, so the
 * result always has k orthonormal columns. Returns row-major [n, k].
 */
export function orthonormalizeColumns(x: ArrayLike<number>, n: number, k: number, seed = 1): Float64Array {
  if (k > n) throw new RangeError(`cannot orthonormalise ${k} columns of length ${n}`);
  const cols: Float64Array[] = [];
  let s = seed >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  for (let j = 0; j < k; j++) {
    let c = new Float64Array(n);
    for (let i = 0; i < n; i++) c[i] = x[i * k + j];
    for (let attempt = 0;; attempt++) {
      const norm0 = Math.sqrt(dot(c, c));
      for (let pass = 0; pass < 2; pass++) {
        for (const q of cols) {
          const a = dot(q, c);
          for (let i = 0; i < n; i++) c[i] -= a * q[i];
        }
      }
      const norm = Math.sqrt(dot(c, c));
      if (norm > 1e-10 * Math.max(norm0, 1e-300) && norm > 1e-300) {
        for (let i = 0; i < n; i++) c[i] /= norm;
        break;
      }
      if (attempt > 3) throw new Error("orthonormalizeColumns(): could not complete the basis");
      c = new Float64Array(n);
      for (let i = 0; i < n; i++) c[i] = rand();
    }
    cols.push(c);
  }
  const out = new Float64Array(n * k);
  for (let j = 0; j < k; j++) for (let i = 0; i < n; i++) out[i * k + j] = cols[j][i];
  return out;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
