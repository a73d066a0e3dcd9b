// examples/gpt/host/kernels.hpp — the mini-GPT's host kernels, one forward/backward pair each.
//
// What this is: the layers of a GPT-2 on the CPU, llm.c style — encoder (token + position
// embedding), layernorm, matmul (a Linear layer), GELU, residual add, and the head (final
// layernorm, LM head tied to wte, softmax cross-entropy). Plain functions over flat row-major
// arrays; sizes are ints. Matmuls go to CBLAS (cblas_sgemm on OpenBLAS); everything else is a
// loop that OpenMP spreads over rows or channel blocks and the compiler vectorises.
// What it is not: attention (host/attention.hpp), a block (host/block.hpp), a model
// (host/model.hpp), or an allocator: every buffer is the caller's, no kernel allocates.
//
// Conventions:
//   B batch, T sequence length, C channels, OC output channels, V vocab, N = B*T rows.
//   Backward kernels ACCUMULATE (+=) into every gradient they are given, as llm.c's do, so a
//   tensor used twice (the tied wte) simply receives both contributions; zero them first.
//   Reductions over rows (bias and layernorm weight gradients, the loss) run in a fixed order,
//   so results do not depend on thread timing: two runs with the same thread count agree bit
//   for bit.
//   Threads: call use_one_thread_pool() once at start (below says why); without it the
//   kernels are still correct, only slower where OpenBLAS's and OpenMP's threads collide.
//   The functions are templates over the real type only so that the gradient tests can run
//   this very code in double against finite differences; the model itself is float.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace gpt {

// ---------------------------------------------------------------------------------------------
// BLAS: one name for float and double. Row-major C (M,N) = alpha op(A) op(B) + beta C.
// ---------------------------------------------------------------------------------------------
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---------------------------------------------------------------------------------------------
// Threads. The kernels run on OpenMP; GEMMs on the BLAS. A pthreads OpenBLAS (Debian's) keeps
// its own pool whose idle workers spin for a while after each call, on the very cores the
// next OpenMP loop wants: the two pools then take turns on each core and a step runs several
// times slower. use_one_thread_pool() avoids that: OpenBLAS runs every call on the calling
// thread, and gemm_parallel() splits the big GEMMs over OpenMP threads itself.
// ---------------------------------------------------------------------------------------------

/// OpenMP threads a parallel kernel uses.
inline int num_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Makes OpenMP the only thread pool (see above): OpenBLAS runs single-threaded from now on,
/// process-wide. A no-op for other BLAS libraries.
inline void use_one_thread_pool() noexcept {
#if defined(OPENBLAS_VERSION)
  openblas_set_num_threads(1);
#endif
}

/// Whether a loop over this many elements is worth a parallel region. Below it, waking the
/// team costs more than the loop (and far more on a machine whose cores are busy elsewhere).
inline bool parallel_worth(std::size_t elements) noexcept { return elements >= (1u << 15); }

/// True when a BLAS call runs on the calling thread only (so splitting it is our job).
inline bool blas_single_threaded() noexcept {
#if defined(OPENBLAS_VERSION)
  return openblas_get_num_threads() == 1;
#else
  return false;  // an unknown BLAS: let it thread itself
#endif
}

/// gemm, with the rows of C (M) split over the OpenMP threads when the BLAS is single-threaded
/// and the product is big enough to share; otherwise one call.
template <class real>
void gemm_parallel(bool trans_a, bool trans_b, int M, int N, int K, real alpha, const real* A,
                   int lda, const real* B, int ldb, real beta, real* C, int ldc) {
  const int nt = num_threads();
  const double work = double(M) * N * K;
  if (nt <= 1 || work < 2e6 || M < 32 || !blas_single_threaded()) {
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const int chunk = ((M + nt - 1) / nt + 15) / 16 * 16;  // whole 16-row panels per thread
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int i = 0; i < nt; ++i) {
    const int m0 = i * chunk;
    if (m0 >= M) continue;
    const int mb = std::min(chunk, M - m0);
    const real* Ai = trans_a ? A + m0 : A + static_cast<std::size_t>(m0) * lda;
    gemm(trans_a, trans_b, mb, N, K, alpha, Ai, lda, B, ldb, beta,
         C + static_cast<std::size_t>(m0) * ldc, ldc);
  }
}

// ---------------------------------------------------------------------------------------------
// exp and tanh that vectorise. glibc's expf/tanhf are scalar calls unless the whole program
// is built with -ffast-math; GELU and softmax call them once per activation, which would cost
// more than the matmuls. The float versions are Cephes' expf (relative error ~1e-7), inlined
// so `omp simd` loops turn them into vector code. Double keeps std:: (the tests' reference).
// ---------------------------------------------------------------------------------------------
namespace detail {

inline float exp_f32(float x) noexcept {
  // exp(x) = 2^n · exp(r), n = round(x / ln2), |r| <= ln2/2. The range is limited on the
  // exponent, in integers: results below 2^-126 flush to 0, above 2^127 saturate near 3e38
  // (softmax never goes there; tanh only needs "huge"). Clamping x itself looks simpler, but
  // GCC then specialises the rest of the function for the clamped constant and, with float
  // traps on by default, gives up vectorising the loop.
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = x - n * 0.693359375f;  // ln2 split in two so n * hi is exact (Cody-Waite)
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // n as an integer, read from t's mantissa (t's bits minus the shifter's, in unsigned
  // arithmetic) rather than converted from the float n: converting a NaN (a diverging run's
  // logits) or a float beyond int's range is undefined behaviour, a bit pattern is always an
  // integer. A NaN x leaves p NaN, so the result is NaN. A negative t (x below about -8.7e6)
  // has its sign bit set and becomes the smallest exponent, as an exact conversion would
  // after the clamp. Same results as converting n wherever that is defined, at the same speed
  // (an integer subtraction instead of a conversion).
  const std::uint32_t t_bits = std::bit_cast<std::uint32_t>(t);
  std::int32_t e = std::bit_cast<std::int32_t>(t_bits - std::bit_cast<std::uint32_t>(shifter) +
                                               127u);  // the biased exponent of 2^n
  e = e < 0 ? 0 : e;
  e = e > 254 ? 254 : e;
  e = (t_bits >> 31) != 0 ? 0 : e;
  return p * std::bit_cast<float>(e << 23);
}

}  // namespace detail

template <class real>
inline real fast_exp(real x) noexcept {
  if constexpr (std::is_same_v<real, float>)
    return detail::exp_f32(x);
  else
    return std::exp(x);
}

template <class real>
inline real fast_tanh(real x) noexcept {
  if constexpr (std::is_same_v<real, float>)
    return 1.0f - 2.0f / (detail::exp_f32(2.0f * x) + 1.0f);  // abs. error ~1e-7 near 0
  else
    return std::tanh(x);
}

namespace detail {
// Column reductions (bias gradients) run over blocks of this many channels: one thread owns a
// block and walks the rows in order, so the sum's order is fixed and no two threads write the
// same gradient.
inline constexpr int channel_block = 16;
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Encoder: token embedding + position embedding.
// ---------------------------------------------------------------------------------------------

/// out (B,T,C) = wte[tokens[b,t]] + wpe[t]. tokens (B,T) must be in [0, V): checked by callers.
template <class real>
void encoder_forward(real* out, const int* tokens, const real* wte, const real* wpe, int B, int T,
                     int C) {
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(B) * T * C))
  for (int n = 0; n < B * T; ++n) {
    const int t = n % T;
    const real* te = wte + static_cast<std::size_t>(tokens[n]) * C;
    const real* pe = wpe + static_cast<std::size_t>(t) * C;
    real* o = out + static_cast<std::size_t>(n) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = te[c] + pe[c];
  }
}

/// dwte (V,C) += scatter of dout by token, dwpe (T,C) += dout summed over the batch.
/// Parallel over channel blocks, so repeated tokens never race.
template <class real>
void encoder_backward(real* dwte, real* dwpe, const real* dout, const int* tokens, int B, int T,
                      int C) {
  const int nblocks = (C + detail::channel_block - 1) / detail::channel_block;
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(B) * T * C))
  for (int cb = 0; cb < nblocks; ++cb) {
    const int c0 = cb * detail::channel_block;
    const int c1 = std::min(C, c0 + detail::channel_block);
    for (int n = 0; n < B * T; ++n) {
      const real* d = dout + static_cast<std::size_t>(n) * C;
      real* te = dwte + static_cast<std::size_t>(tokens[n]) * C;
      real* pe = dwpe + static_cast<std::size_t>(n % T) * C;
#pragma omp simd
      for (int c = c0; c < c1; ++c) {
        te[c] += d[c];
        pe[c] += d[c];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension (eps 1e-5, GPT-2's).
// ---------------------------------------------------------------------------------------------
inline constexpr double layernorm_eps = 1e-5;

/// out (N,C) = (inp - mean) * rstd * weight + bias; keeps mean (N) and rstd (N) for backward.
template <class real>
void layernorm_forward(real* out, real* mean, real* rstd, const real* inp, const real* weight,
                       const real* bias, int N, int C) {
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * C))
  for (int n = 0; n < N; ++n) {
    const real* x = inp + static_cast<std::size_t>(n) * C;
    real* o = out + static_cast<std::size_t>(n) * C;
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const real m = sum / real(C);
    real var = 0;  // two passes: no cancellation for rows with a large mean
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    const real s = real(1) / std::sqrt(var / real(C) + real(layernorm_eps));
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

/// dinp (N,C) +=, dweight (C) +=, dbias (C) += from dout (N,C) and the forward's mean/rstd.
template <class real>
void layernorm_backward(real* dinp, real* dweight, real* dbias, const real* dout, const real* inp,
                        const real* weight, const real* mean, const real* rstd, int N, int C) {
  // Rows: dinp = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight.
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * C))
  for (int n = 0; n < N; ++n) {
    const real* x = inp + static_cast<std::size_t>(n) * C;
    const real* d = dout + static_cast<std::size_t>(n) * C;
    real* di = dinp + static_cast<std::size_t>(n) * C;
    const real m = mean[n], s = rstd[n];
    real g_mean = 0, gx_mean = 0;
#pragma omp simd reduction(+ : g_mean, gx_mean)
    for (int c = 0; c < C; ++c) {
      const real g = d[c] * weight[c];
      g_mean += g;
      gx_mean += g * (x[c] - m) * s;
    }
    g_mean /= real(C);
    gx_mean /= real(C);
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      const real xhat = (x[c] - m) * s;
      di[c] += (d[c] * weight[c] - g_mean - xhat * gx_mean) * s;
    }
  }
  // Columns: dweight = sum over rows of dout * xhat, dbias = sum of dout.
  const int nblocks = (C + detail::channel_block - 1) / detail::channel_block;
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * C))
  for (int cb = 0; cb < nblocks; ++cb) {
    const int c0 = cb * detail::channel_block;
    const int c1 = std::min(C, c0 + detail::channel_block);
    for (int n = 0; n < N; ++n) {
      const real* x = inp + static_cast<std::size_t>(n) * C;
      const real* d = dout + static_cast<std::size_t>(n) * C;
      const real m = mean[n], s = rstd[n];
#pragma omp simd
      for (int c = c0; c < c1; ++c) {
        dweight[c] += d[c] * (x[c] - m) * s;
        dbias[c] += d[c];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matmul: a Linear layer, out = inp · weight^T + bias, weight (OC, C) as nn.Linear stores it.
// ---------------------------------------------------------------------------------------------

/// out (N,OC) = inp (N,C) · weight^T (C,OC) + bias (OC); bias may be nullptr.
template <class real>
void matmul_forward(real* out, const real* inp, const real* weight,
                    std::type_identity_t<const real*> bias, int N, int C, int OC) {
  if (bias != nullptr) {
    // The bias goes in first and the GEMM adds onto it (beta = 1): no second pass over out.
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * OC))
    for (int n = 0; n < N; ++n)
      std::memcpy(out + static_cast<std::size_t>(n) * OC, bias, sizeof(real) * OC);
  }
  gemm_parallel(false, true, N, OC, C, real(1), inp, C, weight, C,
                bias != nullptr ? real(1) : real(0), out, OC);
}

/// dinp (N,C) += dout · weight; dweight (OC,C) += dout^T · inp; dbias (OC) += column sums of
/// dout. dinp and dbias may be nullptr (not wanted).
template <class real>
void matmul_backward(std::type_identity_t<real*> dinp, real* dweight,
                     std::type_identity_t<real*> dbias, const real* dout, const real* inp,
                     const real* weight, int N, int C, int OC) {
  if (dinp != nullptr)
    gemm_parallel(false, false, N, C, OC, real(1), dout, OC, weight, C, real(1), dinp, C);
  gemm_parallel(true, false, OC, C, N, real(1), dout, OC, inp, C, real(1), dweight, C);
  if (dbias != nullptr) {
    const int nblocks = (OC + detail::channel_block - 1) / detail::channel_block;
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * OC))
    for (int cb = 0; cb < nblocks; ++cb) {
      const int o0 = cb * detail::channel_block;
      const int o1 = std::min(OC, o0 + detail::channel_block);
      for (int n = 0; n < N; ++n) {
        const real* d = dout + static_cast<std::size_t>(n) * OC;
#pragma omp simd
        for (int o = o0; o < o1; ++o) dbias[o] += d[o];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GELU, GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// ---------------------------------------------------------------------------------------------
inline constexpr double gelu_scale = 0.7978845608028654;  // sqrt(2/pi)

/// out (n) = gelu(inp); out may alias inp.
template <class real>
void gelu_forward(real* out, const real* inp, std::size_t n) {
  const real s = real(gelu_scale), k = real(0.044715);
#pragma omp parallel for simd schedule(static) \
    if (parallel : parallel_worth(n))
  for (std::size_t i = 0; i < n; ++i) {
    const real x = inp[i];
    out[i] = real(0.5) * x * (real(1) + fast_tanh(s * (x + k * x * x * x)));
  }
}

/// dinp (n) += gelu'(inp) * dout.
template <class real>
void gelu_backward(real* dinp, const real* inp, const real* dout, std::size_t n) {
  const real s = real(gelu_scale), k = real(0.044715);
#pragma omp parallel for simd schedule(static) \
    if (parallel : parallel_worth(n))
  for (std::size_t i = 0; i < n; ++i) {
    const real x = inp[i];
    const real th = fast_tanh(s * (x + k * x * x * x));
    const real sech2 = real(1) - th * th;
    const real local = real(0.5) * (real(1) + th) +
                       real(0.5) * x * sech2 * s * (real(1) + real(3) * k * x * x);
    dinp[i] += local * dout[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Residual add.
// ---------------------------------------------------------------------------------------------

/// out (n) = a + b; out may alias a or b. (Its backward is the identity: the gradient flows to
/// both inputs unchanged.)
template <class real>
void residual_forward(real* out, const real* a, const real* b, std::size_t n) {
#pragma omp parallel for simd schedule(static) \
    if (parallel : parallel_worth(n))
  for (std::size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// ---------------------------------------------------------------------------------------------
// Head: final layernorm, tied LM head (logits = ln_f(x) · wte^T), softmax cross-entropy.
// The whole (N,V) logits are kept: the model hands them out (sampling), and with a byte vocab
// they are small.
// ---------------------------------------------------------------------------------------------

/// Writes xf = ln_f(x) (N,C), mean/rstd (N), logits (N,V), losses (N) (the cross-entropy of
/// each row with a target >= 0, else 0) and returns the mean loss over the rows whose target
/// is >= 0 (0 when targets is nullptr or no row has one). targets (N) in [-1, V).
template <class real>
real head_forward(real* xf, real* mean, real* rstd, real* logits, real* losses, const real* x,
                  const int* targets, const real* wte, const real* lnf_weight,
                  const real* lnf_bias, int N, int C, int V) {
  layernorm_forward(xf, mean, rstd, x, lnf_weight, lnf_bias, N, C);
  matmul_forward(logits, xf, wte, nullptr, N, C, V);
  if (targets == nullptr) {
    std::fill(losses, losses + N, real(0));
    return real(0);
  }
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * V))
  for (int n = 0; n < N; ++n) {
    losses[n] = 0;
    const int target = targets[n];
    if (target < 0) continue;
    const real* z = logits + static_cast<std::size_t>(n) * V;
    real mx = z[0];
#pragma omp simd reduction(max : mx)
    for (int v = 1; v < V; ++v) mx = z[v] > mx ? z[v] : mx;
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int v = 0; v < V; ++v) sum += fast_exp(z[v] - mx);
    losses[n] = mx + std::log(sum) - z[target];  // -log softmax(z)[target]
  }
  // The mean in a fixed order (and in double), so it does not depend on the thread count.
  double total = 0;
  int count = 0;
  for (int n = 0; n < N; ++n)
    if (targets[n] >= 0) total += static_cast<double>(losses[n]), ++count;
  return count > 0 ? static_cast<real>(total / count) : real(0);
}

/// Gradient of dloss * (the mean loss head_forward returned): dx (N,C) +=, dlnf_weight/bias
/// (C) +=, dwte (V,C) += (the head's share of the tied embedding). dlogits (N,V) and dxf (N,C)
/// are scratch. Nothing changes when no row has a target.
template <class real>
void head_backward(real* dx, real* dlnf_weight, real* dlnf_bias, real* dwte, real* dlogits,
                   real* dxf, const real* logits, const real* xf, const real* x, const real* mean,
                   const real* rstd, const int* targets, const real* wte, const real* lnf_weight,
                   int N, int C, int V, real dloss = real(1)) {
  if (targets == nullptr) return;
  int count = 0;
  for (int n = 0; n < N; ++n) count += targets[n] >= 0 ? 1 : 0;
  if (count == 0) return;
  const real scale = dloss / real(count);
  // dlogits = scale * (softmax(z) - onehot(target)) on rows with a target, 0 elsewhere.
#pragma omp parallel for schedule(static) \
    if (parallel : parallel_worth(static_cast<std::size_t>(N) * V))
  for (int n = 0; n < N; ++n) {
    const real* z = logits + static_cast<std::size_t>(n) * V;
    real* dz = dlogits + static_cast<std::size_t>(n) * V;
    const int target = targets[n];
    if (target < 0) {
      std::fill(dz, dz + V, real(0));
      continue;
    }
    real mx = z[0];
#pragma omp simd reduction(max : mx)
    for (int v = 1; v < V; ++v) mx = z[v] > mx ? z[v] : mx;
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int v = 0; v < V; ++v) {
      dz[v] = fast_exp(z[v] - mx);
      sum += dz[v];
    }
    const real k = scale / sum;
#pragma omp simd
    for (int v = 0; v < V; ++v) dz[v] *= k;
    dz[target] -= scale;
  }
  // Through the tied head: dxf = dlogits · wte, dwte += dlogits^T · xf; then through ln_f.
  gemm_parallel(false, false, N, C, V, real(1), dlogits, V, wte, C, real(0), dxf, C);
  gemm_parallel(true, false, V, C, N, real(1), dlogits, V, xf, C, real(1), dwte, C);
  layernorm_backward(dx, dlnf_weight, dlnf_bias, dxf, x, lnf_weight, mean, rstd, N, C);
}

}  // namespace gpt
