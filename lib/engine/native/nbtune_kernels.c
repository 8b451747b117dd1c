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
int32_t nb_version(void) { return 4; }

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

/*
 * Blockwise 8-bit states with a 256-entry dynamic map (bitsandbytes' 8-bit optimizers; the same
 * arithmetic as lib/optim/_dynamic_map.ts and _moments_8bit.ts, bit for bit: double precision
 * where JavaScript computes in double, float32 where it stores into a Float32Array, no FMA).
 * Block layout: row <= 0 or row >= n: runs of bs elements; else rows of `row` elements, each split
 * into per = ceil(row / bs) runs [floor(j*row/per), floor((j+1)*row/per)) (no block straddles a row).
 * Nearest code: binary search of the 255 midpoints th[] (ties go to the lower code). absmax follows
 * Math.max (a NaN stays NaN, and a NaN or zero absmax quantizes with scale 0).
 */
static inline int64_t nb_blocks8(int64_t n, int64_t bs, int64_t row) {
  if (row <= 0 || row >= n) return (n + bs - 1) / bs;
  return (n / row) * ((row + bs - 1) / bs);
}

static inline void nb_block8(int64_t k, int64_t n, int64_t bs, int64_t row, int64_t *s, int64_t *e) {
  if (row <= 0 || row >= n) {
    *s = k * bs;
    *e = *s + bs < n ? *s + bs : n;
    return;
  }
  const int64_t per = (row + bs - 1) / bs, r = k / per, j = k % per;
  *s = r * row + (j * row) / per;
  *e = r * row + ((j + 1) * row) / per;
}

/* The number of midpoints below y (= the lower-bound search's answer), branch-free: 8 halving steps. */
static inline uint8_t nb_nearest8(const float *th, double y) {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) pos += (y > (double)th[pos + step - 1]) ? step : 0;
  return (uint8_t)pos;
}

static inline double nb_absmax_step(double amax, float x) {
  const double a = fabs((double)x);
  return amax != amax ? amax : (a != a || a > amax) ? a : amax;
}

__attribute__((optimize("fp-contract=off")))
void nb_quant8(const float *x, const float *th, uint8_t *codes, float *absmax, int64_t n, int64_t bs, int64_t row,
               int32_t threads) {
  const int64_t nb = nb_blocks8(n, bs, row);
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
  for (int64_t k = 0; k < nb; k++) {
    int64_t s, e;
    nb_block8(k, n, bs, row, &s, &e);
    double amax = 0;
    for (int64_t i = s; i < e; i++) amax = nb_absmax_step(amax, x[i]);
    absmax[k] = (float)amax;
    const double inv = amax > 0 ? 1.0 / amax : 0;
    for (int64_t i = s; i < e; i++) codes[i] = nb_nearest8(th, (double)x[i] * inv);
  }
}

void nb_dequant8(const uint8_t *codes, const float *absmax, const float *code, float *out, int64_t n, int64_t bs,
                 int64_t row, int32_t threads) {
  const int64_t nb = nb_blocks8(n, bs, row);
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
  for (int64_t k = 0; k < nb; k++) {
    int64_t s, e;
    nb_block8(k, n, bs, row, &s, &e);
    const float a = absmax[k];
    for (int64_t i = s; i < e; i++) out[i] = code[codes[i]] * a;
  }
}

/*
 * One 8-bit Adam step, block by block: dequantize m (signed map) and v (unsigned map), then
 *   m = b1*m + (1-b1)*g;  v = b2*v + ((1-b2)*g)*g   (double, stored as float32)
 *   dir = m / bc1 / (sqrt(v) / sbc2 + eps)          (double, stored as float32)
 * and requantize m and v with the block's new absmax. The scalar block computes the new values
 * twice (once for the absmax, once for the codes: same arithmetic, same result), so it needs no
 * scratch memory; the AVX-512 block (8 doubles a vector: the same IEEE operations lane by lane, so
 * the same results) keeps them in a stack buffer.
 */
typedef struct {
  const float *g, *scode, *ucode, *sth, *uth;
  uint8_t *mc, *vc;
  float *ma, *va, *dir;
  double beta1, beta2, c1, c2, bc1, sbc2, eps;
  const void *slut, *ulut; /* nb_lut8_t of sth and uth (AVX-512 path) */
} nb_adam8_t;

__attribute__((optimize("fp-contract=off")))
static void nb_adam8bit_block(const nb_adam8_t *p, int64_t k, int64_t s, int64_t e) {
  const float am = p->ma[k], av = p->va[k];
  double mmax = 0, vmax = 0;
  for (int64_t i = s; i < e; i++) {
    const double gi = p->g[i];
    const float m = (float)(p->beta1 * (double)(p->scode[p->mc[i]] * am) + p->c1 * gi);
    const float v = (float)(p->beta2 * (double)(p->ucode[p->vc[i]] * av) + p->c2 * gi * gi);
    mmax = nb_absmax_step(mmax, m);
    vmax = nb_absmax_step(vmax, v);
  }
  const double mi = mmax > 0 ? 1.0 / mmax : 0, vi = vmax > 0 ? 1.0 / vmax : 0;
  for (int64_t i = s; i < e; i++) {
    const double gi = p->g[i];
    const float m = (float)(p->beta1 * (double)(p->scode[p->mc[i]] * am) + p->c1 * gi);
    const float v = (float)(p->beta2 * (double)(p->ucode[p->vc[i]] * av) + p->c2 * gi * gi);
    p->dir[i] = (float)((double)m / p->bc1 / (sqrt((double)v) / p->sbc2 + p->eps));
    p->mc[i] = nb_nearest8(p->sth, (double)m * mi);
    p->vc[i] = nb_nearest8(p->uth, (double)v * vi);
  }
  p->ma[k] = (float)mmax;
  p->va[k] = (float)vmax;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define NB_AVX512_TARGET __attribute__((target("avx512f,avx512vl,avx2"), optimize("fp-contract=off")))
#define NB_ADAM8_BUF 1024 /* longest block the AVX-512 path buffers (longer ones run scalar) */

/*
 * Nearest-code lookup table for a sorted set of 255 float midpoints th (the answer nb_nearest8
 * gives, count(th < y), in 1 + c gathers instead of 8). Bucket b holds the floats whose top 16 bits
 * (sign, exponent, 7 mantissa bits) are b; base[b] counts the midpoints below the bucket and c
 * bounds how many lie in one bucket (1 for bitsandbytes' maps). For y (double) in [-2, 2] with
 * yf = (float)y in bucket b: a midpoint t below the bucket has t < yf, so y > t (rounding is
 * monotone and t is a float); one above has t > yf, so y <= t; only the <= c midpoints inside the
 * bucket are compared, with y itself: count = base[b] + sum_j (y > pad[base[b] + j]) (pad: th then
 * +inf). y outside [-2, 2] (and NaN, which nb_nearest8 maps to code 0) is clamped to +-2 first,
 * which changes no answer since every midpoint lies in [-1, 1].
 */
typedef struct {
  float th[255];
  float pad[257];
  uint8_t base[65536 + 4]; /* + 4: read as 32-bit words by the gather */
  int c;                   /* midpoints per bucket at most (0: unsorted or > 2, use the search) */
  int valid;
} nb_lut8_t;

static __thread nb_lut8_t nb_lut8_cache[2];
static __thread int nb_lut8_next;

static const nb_lut8_t *nb_lut8(const float *th) {
  for (int i = 0; i < 2; i++) {
    if (nb_lut8_cache[i].valid && memcmp(nb_lut8_cache[i].th, th, sizeof nb_lut8_cache[i].th) == 0) {
      return &nb_lut8_cache[i];
    }
  }
  nb_lut8_t *l = &nb_lut8_cache[nb_lut8_next];
  nb_lut8_next ^= 1;
  memcpy(l->th, th, sizeof l->th);
  memcpy(l->pad, th, sizeof l->th);
  l->pad[255] = l->pad[256] = INFINITY;
  l->valid = 1;
  l->c = 2;
  for (int i = 0; i < 254; i++) {
    if (!(th[i] < th[i + 1])) l->c = 0; /* not strictly increasing (or NaN): the search */
  }
  memset(l->base, 0, sizeof l->base);
  int cmax = 0;
  for (uint32_t b = 0; b < 65536; b++) {
    const uint32_t lo = b << 16, hi = lo | 0xFFFF;
    if (((b >> 7) & 0xFF) == 0xFF) continue; /* inf / NaN: never looked up (y is clamped) */
    float a, z;
    const uint32_t first = (b & 0x8000) ? hi : lo, last = (b & 0x8000) ? lo : hi; /* smallest, largest */
    memcpy(&a, &first, 4);
    memcpy(&z, &last, 4);
    int below = 0, in = 0;
    for (int i = 0; i < 255; i++) below += th[i] < a, in += th[i] >= a && th[i] <= z;
    l->base[b] = (uint8_t)below;
    if (in > cmax) cmax = in;
  }
  if (cmax > 2) l->c = 0;
  else if (l->c) l->c = cmax > 1 ? 2 : 1;
  return l;
}

/* Nearest-code indices of 8 doubles, as nb_nearest8 gives them lane by lane. */
NB_AVX512_TARGET static inline __m256i nb_nearest8x8(const nb_lut8_t *l, __m512d y) {
  if (l->c == 0) {
    __m256i pos = _mm256_setzero_si256();
    for (int step = 128; step > 0; step >>= 1) {
      const __m256i idx = _mm256_add_epi32(pos, _mm256_set1_epi32(step - 1));
      const __m512d t = _mm512_cvtps_pd(_mm256_i32gather_ps(l->th, idx, 4));
      pos = _mm256_mask_add_epi32(pos, _mm512_cmp_pd_mask(y, t, _CMP_GT_OQ), pos, _mm256_set1_epi32(step));
    }
    return pos;
  }
  /* max_pd returns its second operand when the first is NaN: NaN -> -2 -> code 0. */
  const __m512d yc = _mm512_min_pd(_mm512_max_pd(y, _mm512_set1_pd(-2)), _mm512_set1_pd(2));
  const __m256i key = _mm256_srli_epi32(_mm256_castps_si256(_mm512_cvtpd_ps(yc)), 16);
  const __m256i base =
      _mm256_and_si256(_mm256_i32gather_epi32((const int *)l->base, key, 1), _mm256_set1_epi32(0xFF));
  __m256i pos = base;
  const __m512d t0 = _mm512_cvtps_pd(_mm256_i32gather_ps(l->pad, base, 4));
  pos = _mm256_mask_add_epi32(pos, _mm512_cmp_pd_mask(yc, t0, _CMP_GT_OQ), pos, _mm256_set1_epi32(1));
  if (l->c == 2) {
    const __m256i b1 = _mm256_add_epi32(base, _mm256_set1_epi32(1));
    const __m512d t1 = _mm512_cvtps_pd(_mm256_i32gather_ps(l->pad, b1, 4));
    pos = _mm256_mask_add_epi32(pos, _mm512_cmp_pd_mask(yc, t1, _CMP_GT_OQ), pos, _mm256_set1_epi32(1));
  }
  return pos;
}

NB_AVX512_TARGET static void nb_adam8bit_block_avx512(const nb_adam8_t *p, int64_t k, int64_t s, int64_t e) {
  const int64_t len = e - s, vec = len & ~(int64_t)7;
  if (len > NB_ADAM8_BUF) {
    nb_adam8bit_block(p, k, s, e);
    return;
  }
  float mb[NB_ADAM8_BUF], vb[NB_ADAM8_BUF];
  const __m256 amv = _mm256_set1_ps(p->ma[k]), avv = _mm256_set1_ps(p->va[k]);
  const __m512d b1 = _mm512_set1_pd(p->beta1), b2 = _mm512_set1_pd(p->beta2);
  const __m512d c1 = _mm512_set1_pd(p->c1), c2 = _mm512_set1_pd(p->c2);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 mmax = _mm256_setzero_ps(), vmax = _mm256_setzero_ps();
  __mmask8 nan = 0;
  for (int64_t j = 0; j < vec; j += 8) {
    const int64_t i = s + j;
    const __m256i mci = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p->mc + i)));
    const __m256i vci = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p->vc + i)));
    const __m512d mq = _mm512_cvtps_pd(_mm256_mul_ps(_mm256_i32gather_ps(p->scode, mci, 4), amv));
    const __m512d vq = _mm512_cvtps_pd(_mm256_mul_ps(_mm256_i32gather_ps(p->ucode, vci, 4), avv));
    const __m512d gi = _mm512_cvtps_pd(_mm256_loadu_ps(p->g + i));
    const __m256 m = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(b1, mq), _mm512_mul_pd(c1, gi)));
    const __m256 v = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(b2, vq), _mm512_mul_pd(_mm512_mul_pd(c2, gi), gi)));
    _mm256_storeu_ps(mb + j, m);
    _mm256_storeu_ps(vb + j, v);
    nan |= _mm256_cmp_ps_mask(m, m, _CMP_UNORD_Q) | _mm256_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    mmax = _mm256_max_ps(mmax, _mm256_and_ps(m, absmask));
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, absmask));
  }
  float lm[8], lv[8];
  _mm256_storeu_ps(lm, mmax);
  _mm256_storeu_ps(lv, vmax);
  double mx = 0, vx = 0;
  for (int l = 0; l < 8; l++) mx = lm[l] > mx ? lm[l] : mx, vx = lv[l] > vx ? lv[l] : vx;
  const float am = p->ma[k], av = p->va[k];
  for (int64_t j = vec; j < len; j++) { /* the tail, as the scalar block computes it */
    const int64_t i = s + j;
    const double g = p->g[i];
    mb[j] = (float)(p->beta1 * (double)(p->scode[p->mc[i]] * am) + p->c1 * g);
    vb[j] = (float)(p->beta2 * (double)(p->ucode[p->vc[i]] * av) + p->c2 * g * g);
    if (mb[j] != mb[j] || vb[j] != vb[j]) nan = 1;
    mx = nb_absmax_step(mx, mb[j]);
    vx = nb_absmax_step(vx, vb[j]);
  }
  if (nan) { /* NaN: the scalar block's Math.max semantics (the codes are still untouched) */
    nb_adam8bit_block(p, k, s, e);
    return;
  }
  const double mi = mx > 0 ? 1.0 / mx : 0, vi = vx > 0 ? 1.0 / vx : 0;
  const __m512d miv = _mm512_set1_pd(mi), viv = _mm512_set1_pd(vi);
  const __m512d bc1 = _mm512_set1_pd(p->bc1), sbc2 = _mm512_set1_pd(p->sbc2), eps = _mm512_set1_pd(p->eps);
  for (int64_t j = 0; j < vec; j += 8) {
    const int64_t i = s + j;
    const __m512d m = _mm512_cvtps_pd(_mm256_loadu_ps(mb + j)), v = _mm512_cvtps_pd(_mm256_loadu_ps(vb + j));
    const __m512d d = _mm512_div_pd(_mm512_div_pd(m, bc1), _mm512_add_pd(_mm512_div_pd(_mm512_sqrt_pd(v), sbc2), eps));
    _mm256_storeu_ps(p->dir + i, _mm512_cvtpd_ps(d));
    _mm_storel_epi64((__m128i *)(p->mc + i), _mm256_cvtepi32_epi8(nb_nearest8x8(p->slut, _mm512_mul_pd(m, miv))));
    _mm_storel_epi64((__m128i *)(p->vc + i), _mm256_cvtepi32_epi8(nb_nearest8x8(p->ulut, _mm512_mul_pd(v, viv))));
  }
  for (int64_t j = vec; j < len; j++) {
    const int64_t i = s + j;
    p->dir[i] = (float)((double)mb[j] / p->bc1 / (sqrt((double)vb[j]) / p->sbc2 + p->eps));
    p->mc[i] = nb_nearest8(p->sth, (double)mb[j] * mi);
    p->vc[i] = nb_nearest8(p->uth, (double)vb[j] * vi);
  }
  p->ma[k] = (float)mx;
  p->va[k] = (float)vx;
}

static int nb_has_avx512(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}
#else
static int nb_has_avx512(void) { return 0; }
#define nb_adam8bit_block_avx512 nb_adam8bit_block
#endif

void nb_adam8bit(const float *g, uint8_t *mc, float *ma, uint8_t *vc, float *va, const float *scode,
                 const float *ucode, const float *sth, const float *uth, float *dir, int64_t n, int64_t bs,
                 int64_t row, double beta1, double beta2, double bc1, double sbc2, double eps, int32_t threads) {
  const int avx512 = nb_has_avx512();
  nb_adam8_t p = {g, scode, ucode, sth, uth, mc, vc, ma, va, dir, beta1, beta2, 1 - beta1, 1 - beta2,
                  bc1, sbc2, eps, NULL, NULL};
#if defined(__x86_64__)
  if (avx512) p.slut = nb_lut8(sth), p.ulut = nb_lut8(uth);
#endif
  const int64_t nb = nb_blocks8(n, bs, row);
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
  for (int64_t k = 0; k < nb; k++) {
    int64_t s, e;
    nb_block8(k, n, bs, row, &s, &e);
    if (avx512) nb_adam8bit_block_avx512(&p, k, s, e);
    else nb_adam8bit_block(&p, k, s, e);
  }
}

/*
 * bf16 GEMM (cblas_sgemm row-major semantics): C = alpha * op(A) op(B) + beta * C with op(A): [M, K],
 * op(B): [K, N], C: [M, N]. The fp32 inputs are rounded to bfloat16 (round to nearest even) while
 * packing; products accumulate in fp32 with AVX512_BF16's vdpbf16ps (two bf16 products per fp32
 * lane per instruction: twice the fp32 FMA rate), the output is fp32.
 *
 * Layout (BLIS-style): B is packed into panels of NB_NR columns where each k-pair (k, k+1) of a
 * column is one 32-bit word (bf16 of k in the low half, k+1 in the high half; an odd K pads the last
 * pair with zero), so one zmm holds a k-pair of 16 columns; A into panels of NB_MR rows with the same
 * k-pair words, broadcast one at a time. The micro-kernel keeps an NB_MR x NB_NR block of C in
 * 24 zmm accumulators. Blocking: at most NB_KC values of K (one block up to 640, so K = 576 passes C
 * once), NB_MC rows of A (in L2), NB_NC columns of B. Threads split C into rectangles (no synchronisation).
 *
 * Returns 0, -1 when the CPU lacks avx512_bf16 (the caller then uses sgemm), -2 when the packing
 * buffers cannot be allocated (C is then incomplete).
 */
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define NB_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))
#define NB_MR 12
#define NB_NR 32
#ifndef NB_KC
#define NB_KC 640 /* at most this many values of K per block (blocks are balanced, even) */
#endif
#define NB_MC (22 * NB_MR)
#define NB_NC 4096

typedef struct {
  int32_t ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  const float *A, *B;
  int64_t lda, ldb;
  float *C;
  int64_t ldc;
  int64_t kcb; /* K block: even, at most NB_KC */
} nb_gemm_t;

static inline __mmask16 nb_mask(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* 16x16 transpose of 32-bit words in place. */
NB_BF16_TARGET static inline void nb_transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  /* r[4i + c], 128-bit lane L: column 4L + c of rows 4i..4i+3. */
  for (int c = 0; c < 4; c++) {
    const __m512i u = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44), v = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
    const __m512i u2 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE), v2 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(u, v, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(u, v, 0xDD);
    t[8 + c] = _mm512_shuffle_i32x4(u2, v2, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(u2, v2, 0xDD);
  }
  for (int i = 0; i < 16; i++) r[i] = t[i];
}

/*
 * Packs element (k, r) = src[k * ld + r] (rows contiguous) for k in [k0, k0 + kc), r in [r0, r0 + rn)
 * into panels of W columns: dst[panel][pair][W] 32-bit k-pair words, zero-padded.
 */
NB_BF16_TARGET static void nb_pack_rcontig(const float *src, int64_t ld, int64_t k0, int64_t kc, int64_t r0,
                                           int64_t rn, int W, uint32_t *dst) {
  const int64_t pairs = (kc + 1) / 2;
  __m512i idx;
  {
    int16_t ix[32];
    for (int j = 0; j < 16; j++) ix[2 * j] = (int16_t)j, ix[2 * j + 1] = (int16_t)(16 + j);
    idx = _mm512_loadu_si512(ix);
  }
  /* Pairs outer, columns inner: the source rows are read in order. */
  for (int64_t p = 0; p < pairs; p++) {
    const float *s0 = src + (k0 + 2 * p) * ld + r0, *s1 = s0 + ld;
    const int odd = 2 * p + 1 < kc;
    for (int64_t rp = 0; rp < rn; rp += W) {
      uint32_t *d = dst + (rp / W) * pairs * W + p * W;
      for (int h = 0; h * 16 < W; h++) {
        const int64_t col = rp + 16 * h;
        const __mmask16 lm = nb_mask(rn - col), sm = nb_mask(W - 16 * h);
        _mm_prefetch((const char *)(s0 + 4 * ld + col), _MM_HINT_T0); /* two pairs ahead */
        _mm_prefetch((const char *)(s1 + 4 * ld + col), _MM_HINT_T0);
        const __m512 x0 = _mm512_maskz_loadu_ps(lm, s0 + col);
        const __m512 x1 = odd ? _mm512_maskz_loadu_ps(lm, s1 + col) : _mm512_setzero_ps();
        const __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
        _mm512_mask_storeu_epi32(d + 16 * h, sm, v);
      }
    }
  }
}

/* Same output as nb_pack_rcontig for element (k, r) = src[r * ld + k] (k contiguous). */
NB_BF16_TARGET static void nb_pack_kcontig(const float *src, int64_t ld, int64_t k0, int64_t kc, int64_t r0,
                                           int64_t rn, int W, uint32_t *dst) {
  const int64_t pairs = (kc + 1) / 2;
  __m512i rows[16];
  for (int64_t rp = 0; rp < rn; rp += W) {
    uint32_t *d = dst + (rp / W) * pairs * W;
    for (int h = 0; h * 16 < W; h++) {
      const int64_t col = rp + 16 * h;
      const __mmask16 sm = nb_mask(W - 16 * h);
      for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
        const int64_t kk = k0 + 2 * p0, left = kc - 2 * p0;
        const __mmask16 m0 = nb_mask(left), m1 = nb_mask(left - 16);
        for (int r = 0; r < 16; r++) {
          if (col + r < rn) {
            const float *s = src + (r0 + col + r) * ld + kk;
            /* Two steps ahead along k: the source (a weight matrix) usually comes from DRAM. */
            _mm_prefetch((const char *)(s + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(s + 80), _MM_HINT_T0);
            rows[r] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, s + 16), _mm512_maskz_loadu_ps(m0, s));
          } else {
            rows[r] = _mm512_setzero_si512();
          }
        }
        nb_transpose16(rows);
        const int64_t np = pairs - p0 < 16 ? pairs - p0 : 16;
        for (int64_t q = 0; q < np; q++) _mm512_mask_storeu_epi32(d + (p0 + q) * W + 16 * h, sm, rows[q]);
      }
    }
  }
}

/* Lines to prefetch while a micro-kernel runs: `count` lines from (row, line) of rows `stride` bytes apart. */
typedef struct {
  const char *base;
  int64_t stride, lpr, row, line, count;
} nb_prefetch_t;

/*
 * C[mr x nr] (= or +=) alpha * Apanel . Bpanel over `pairs` k-pairs; first: the first K block (beta).
 * pf (may be NULL): lines prefetched one every other k-pair, so that they overlap the arithmetic.
 * R: the rows computed (a compile-time constant in each instance below; mr <= R).
 */
NB_BF16_TARGET static inline __attribute__((always_inline)) void
nb_kernel_rows(const int R, int64_t pairs, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc, int mr,
               int nr, float alpha, float beta, int first, nb_prefetch_t *pf) {
  __m512 acc[NB_MR][2];
#pragma GCC unroll 12
  for (int i = 0; i < NB_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  /* The C tile is read after the loop: start fetching it now (two 64-byte lines per row). */
  for (int i = 0; i < mr; i++) {
    _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
  }
  int64_t npf = pf ? pf->count : 0;
  for (int64_t p = 0; p < pairs; p++) {
    if (npf > 0 && !(p & 1)) {
      _mm_prefetch(pf->base + pf->row * pf->stride + pf->line * 64, _MM_HINT_T0);
      if (++pf->line == pf->lpr) pf->line = 0, pf->row++;
      npf--;
    }
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + p * NB_NR);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + p * NB_NR + 16);
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[p * NB_MR + i]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  for (; npf > 0; npf--) {
    _mm_prefetch(pf->base + pf->row * pf->stride + pf->line * 64, _MM_HINT_T0);
    if (++pf->line == pf->lpr) pf->line = 0, pf->row++;
  }
  const __mmask16 m0 = nb_mask(nr), m1 = nb_mask(nr - 16);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int i = 0; i < R; i++) {
    if (i >= mr) break;
    float *ci = c + i * ldc;
    __m512 x0 = _mm512_mul_ps(va, acc[i][0]), x1 = _mm512_mul_ps(va, acc[i][1]);
    if (!first) {
      x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, ci));
      x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, ci + 16));
    } else if (beta != 0.0f) {
      x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), x0);
      x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), x1);
    }
    _mm512_mask_storeu_ps(ci, m0, x0);
    _mm512_mask_storeu_ps(ci + 16, m1, x1);
  }
}

/* The micro-kernel for a tile of mr rows: 12-row tiles, and 4- or 8-row ones for the last rows of A. */
NB_BF16_TARGET static void nb_kernel_bf16(int64_t pairs, const uint32_t *a, const uint32_t *b, float *c,
                                          int64_t ldc, int mr, int nr, float alpha, float beta, int first,
                                          nb_prefetch_t *pf) {
  if (mr > 8) nb_kernel_rows(NB_MR, pairs, a, b, c, ldc, mr, nr, alpha, beta, first, pf);
  else if (mr > 4) nb_kernel_rows(8, pairs, a, b, c, ldc, mr, nr, alpha, beta, first, pf);
  else nb_kernel_rows(4, pairs, a, b, c, ldc, mr, nr, alpha, beta, first, pf);
}

/*
 * A thread's rectangle when its rows fit one A block (the training case, M = tokens = 256): A is packed
 * once per K block, then B one NB_NR-column panel at a time, used at once by every row tile; while
 * those tiles run, the next panel's source (usually a weight matrix in DRAM) is prefetched piece by
 * piece, so that packing B does not wait on memory.
 */
NB_BF16_TARGET static void nb_gemm_bf16_rect_small_m(const nb_gemm_t *g, int64_t m0, int64_t m1, int64_t n0,
                                                     int64_t n1, uint32_t *ap, uint32_t *bp) {
  const int64_t mc = m1 - m0, tiles = (mc + NB_MR - 1) / NB_MR;
  for (int64_t pc = 0; pc < g->K; pc += g->kcb) {
    const int64_t kc = g->K - pc < g->kcb ? g->K - pc : g->kcb, pairs = (kc + 1) / 2;
    const int first = pc == 0;
    if (g->ta) nb_pack_rcontig(g->A, g->lda, pc, kc, m0, mc, NB_MR, ap);
    else nb_pack_kcontig(g->A, g->lda, pc, kc, m0, mc, NB_MR, ap);
    for (int64_t j = n0; j < n1; j += NB_NR) {
      const int nr = n1 - j < NB_NR ? (int)(n1 - j) : NB_NR;
      if (g->tb) nb_pack_kcontig(g->B, g->ldb, pc, kc, j, nr, NB_NR, bp);
      else nb_pack_rcontig(g->B, g->ldb, pc, kc, j, nr, NB_NR, bp);
      /* The next panel's source: nrn rows of kc floats (B transposed) or kc rows of nrn floats. */
      const int64_t nj = j + NB_NR, nrn = n1 - nj < NB_NR ? n1 - nj : NB_NR;
      const char *pf = NULL;
      int64_t lpr = 1, lines = 0;
      if (nrn > 0) {
        if (g->tb) {
          pf = (const char *)(g->B + nj * g->ldb + pc);
          lpr = (kc * 4 + 63) / 64 + 1;
          lines = nrn * lpr;
        } else {
          pf = (const char *)(g->B + pc * g->ldb + nj);
          lpr = (nrn * 4 + 63) / 64 + 1;
          lines = kc * lpr;
        }
      }
      nb_prefetch_t pft = {pf, g->ldb * 4, lpr, 0, 0, 0};
      for (int64_t t = 0; t < tiles; t++) {
        const int64_t ir = t * NB_MR;
        const int mr = mc - ir < NB_MR ? (int)(mc - ir) : NB_MR;
        pft.count = lines * (t + 1) / tiles - lines * t / tiles;
        nb_kernel_bf16(pairs, ap + t * pairs * NB_MR, bp, g->C + (m0 + ir) * g->ldc + j, g->ldc, mr, nr, g->alpha,
                       g->beta, first, lines ? &pft : NULL);
      }
    }
  }
}

/* One thread's rectangle C[m0:m1, n0:n1]; ap, bp: its packing buffers. */
NB_BF16_TARGET static void nb_gemm_bf16_rect(const nb_gemm_t *g, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                                             uint32_t *ap, uint32_t *bp) {
  if (m1 - m0 <= NB_MC) {
    nb_gemm_bf16_rect_small_m(g, m0, m1, n0, n1, ap, bp);
    return;
  }
  for (int64_t jc = n0; jc < n1; jc += NB_NC) {
    const int64_t nc = n1 - jc < NB_NC ? n1 - jc : NB_NC;
    for (int64_t pc = 0; pc < g->K; pc += g->kcb) {
      const int64_t kc = g->K - pc < g->kcb ? g->K - pc : g->kcb, pairs = (kc + 1) / 2;
      const int first = pc == 0;
      if (g->tb) nb_pack_kcontig(g->B, g->ldb, pc, kc, jc, nc, NB_NR, bp);
      else nb_pack_rcontig(g->B, g->ldb, pc, kc, jc, nc, NB_NR, bp);
      for (int64_t ic = m0; ic < m1; ic += NB_MC) {
        const int64_t mc = m1 - ic < NB_MC ? m1 - ic : NB_MC;
        if (g->ta) nb_pack_rcontig(g->A, g->lda, pc, kc, ic, mc, NB_MR, ap);
        else nb_pack_kcontig(g->A, g->lda, pc, kc, ic, mc, NB_MR, ap);
        for (int64_t jr = 0; jr < nc; jr += NB_NR) {
          const int nr = nc - jr < NB_NR ? (int)(nc - jr) : NB_NR;
          for (int64_t ir = 0; ir < mc; ir += NB_MR) {
            const int mr = mc - ir < NB_MR ? (int)(mc - ir) : NB_MR;
            nb_kernel_bf16(pairs, ap + (ir / NB_MR) * pairs * NB_MR, bp + (jr / NB_NR) * pairs * NB_NR,
                           g->C + (ic + ir) * g->ldc + jc + jr, g->ldc, mr, nr, g->alpha, g->beta, first, NULL);
          }
        }
      }
    }
  }
}

/* 1 when this CPU runs the bf16 GEMM (avx512_bf16), else 0. */
int32_t nb_bf16_supported(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") ? 1 : 0;
}

int32_t nb_gemm_bf16(int32_t transA, int32_t transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, int32_t threads) {
  if (!nb_bf16_supported()) return -1;
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0 || alpha == 0.0f) {
    /* BLAS quick return: C = beta * C (C is not read when beta is 0). */
    for (int64_t i = 0; i < M; i++) {
      float *ci = C + i * ldc;
      if (beta == 0.0f) memset(ci, 0, (size_t)N * sizeof(float));
      else if (beta != 1.0f)
        for (int64_t j = 0; j < N; j++) ci[j] *= beta;
    }
    return 0;
  }
  const int64_t kblocks = (K + NB_KC - 1) / NB_KC, kcb = ((K + kblocks - 1) / kblocks + 1) & ~(int64_t)1;
  const nb_gemm_t g = {transA != 0, transB != 0, M, N, K, alpha, beta, A, B, lda, ldb, C, ldc, kcb};
  const int64_t mp = (M + NB_MR - 1) / NB_MR, np = (N + NB_NR - 1) / NB_NR;
  int T = threads > 0 ? threads : nb_max_threads();
  if ((double)M * (double)N * (double)K < (double)(1 << 18)) T = 1; /* waking workers costs more */
  if (T > mp * np) T = (int)(mp * np);
  /* Thread grid tm x tn: the fewest padded C elements per thread, then the most split over N. */
  int tm = 1, tn = T;
  double best = -1;
  for (int d = 1; d <= T; d++) {
    if (T % d || d > mp || T / d > np) continue;
    const double cost = (double)((mp + d - 1) / d) * NB_MR * (double)((np + T / d - 1) / (T / d)) * NB_NR +
                        1e-3 * d;
    if (best < 0 || cost < best) best = cost, tm = d, tn = T / d;
  }
  if (best < 0) T = 1, tm = 1, tn = 1;
  /*
   * Packing buffers, per thread: an A block (its rows, at most NB_MC) and a B block (one panel when its
   * rows fit one A block, see nb_gemm_bf16_rect_small_m; else its columns, at most NB_NC), kcb deep.
   */
  const int64_t kpairs = (kcb + 1) / 2, mcw = (mp + tm - 1) / tm * NB_MR, ncw = (np + tn - 1) / tn * NB_NR;
  const int64_t acols = mcw < NB_MC ? mcw : NB_MC, bcols = mcw <= NB_MC ? NB_NR : ncw < NB_NC ? ncw : NB_NC;
  const size_t abytes = (size_t)acols * kpairs * sizeof(uint32_t), bbytes = (size_t)bcols * kpairs * sizeof(uint32_t);
  int failed = 0;
#pragma omp parallel num_threads(T)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int t = 0, nt = 1;
#endif
    uint32_t *ap = aligned_alloc(64, (abytes + 63) / 64 * 64), *bp = aligned_alloc(64, (bbytes + 63) / 64 * 64);
    if (!ap || !bp) {
#pragma omp atomic write
      failed = 1;
    } else {
      for (int tile = t; tile < tm * tn; tile += nt) {
        const int ti = tile / tn, tj = tile % tn;
        int64_t m0 = mp * ti / tm * NB_MR, m1 = mp * (ti + 1) / tm * NB_MR;
        int64_t n0 = np * tj / tn * NB_NR, n1 = np * (tj + 1) / tn * NB_NR;
        if (m1 > M) m1 = M;
        if (n1 > N) n1 = N;
        if (m0 < m1 && n0 < n1) nb_gemm_bf16_rect(&g, m0, m1, n0, n1, ap, bp);
      }
    }
    free(ap);
    free(bp);
  }
  return failed ? -2 : 0;
}

#else /* not x86: no AVX512_BF16, the caller uses sgemm */
int32_t nb_bf16_supported(void) { return 0; }

int32_t nb_gemm_bf16(int32_t transA, int32_t transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, int32_t threads) {
  (void)transA, (void)transB, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb;
  (void)beta, (void)C, (void)ldc, (void)threads;
  return -1;
}
#endif
