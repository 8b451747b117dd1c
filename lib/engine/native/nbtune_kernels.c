/*
 * nbtune native kernels, loaded through Deno FFI by lib/engine/native.ts (optional: every
 * kernel has a TypeScript fallback with the same results, checked by tests/engine/native_test.ts).
 *
 * Build (scripts/setup.sh does it):
 *   gcc -O3 -march=native -fopenmp -shared -fPIC -Wl,-z,nodelete lib/engine/native/nbtune_kernels.c \
 *       -o .tools/native/libnbtune_kernels.so -lm
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ABI version: bump when a signature changes (native.ts checks it). */
int32_t nb_version(void) { return 2; }

int32_t nb_max_threads(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/*
 * Blockwise 4-bit dequantization (bitsandbytes layout): element 2j is the high nibble of
 * packed[j], 2j+1 the low one; out[i] = qmap[code_i] * absmax[i >> log2_blocksize], one float32
 * rounding (the product of two floats). n elements; out may be a view of the wasm heap.
 */
void nb_dequant4bit(const uint8_t *packed, const float *absmax, const float *qmap, float *out, int64_t n,
                    int32_t log2_blocksize, int32_t threads) {
  const int64_t bs = (int64_t)1 << log2_blocksize;
  const int64_t nblocks = (n + bs - 1) / bs;
  float q[16];
  memcpy(q, qmap, sizeof q);
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
  for (int64_t b = 0; b < nblocks; b++) {
    const float s = absmax[b];
    const int64_t start = b * bs;
    int64_t end = start + bs;
    if (end > n) end = n;
    /* bs >= 32 is even, so a block starts on a byte boundary. */
    const uint8_t *p = packed + (start >> 1);
    float *o = out + start;
    const int64_t pairs = (end - start) >> 1;
    for (int64_t j = 0; j < pairs; j++) {
      const uint8_t byte = p[j];
      o[2 * j] = q[byte >> 4] * s;
      o[2 * j + 1] = q[byte & 15] * s;
    }
    if ((end - start) & 1) o[end - start - 1] = q[p[pairs] >> 4] * s;
  }
}

/*
 * Cross-entropy over the vocabulary, row by row (no one-hot, no [N, V] intermediates):
 *   loss = sum_n w[n] * (logsumexp(z[n]) - z[n][y[n]])
 *   grad[n][v] = g * w[n] * (softmax(z[n])[v] - [v == y[n]])   (only when grad != NULL)
 * z: [N, V] logits, y: [N] int32 targets, w: [N] weights, g: upstream scalar gradient.
 * Per-row losses go into row_loss[N] (summed in double by the caller for a deterministic order).
 */
void nb_cross_entropy(const float *z, const int32_t *y, const float *w, int64_t rows, int64_t vocab, float g,
                      float *row_loss, float *grad, int32_t threads) {
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *zr = z + r * vocab;
    float m = -INFINITY;
    for (int64_t v = 0; v < vocab; v++) m = zr[v] > m ? zr[v] : m;
    double sum = 0;
    for (int64_t v = 0; v < vocab; v++) sum += expf(zr[v] - m);
    const float lse = m + (float)log(sum);
    const int32_t t = y[r];
    const float wr = w[r];
    row_loss[r] = wr == 0.0f ? 0.0f : wr * (lse - zr[t]);
    if (grad) {
      float *gr = grad + r * vocab;
      const float scale = g * wr;
      if (scale == 0.0f) {
        memset(gr, 0, (size_t)vocab * sizeof(float));
      } else {
        for (int64_t v = 0; v < vocab; v++) gr[v] = scale * expf(zr[v] - lse);
        gr[t] -= scale;
      }
    }
  }
}
