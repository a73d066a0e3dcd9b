// strata/optim/adam.hpp — Adam and AdamW over fp32 master weights, on the host.
//
// What lives here: the hyper-parameters (adam_params), the per-step scalars derived from them
// (adam_step_scalars), and adam_update(), which updates one tensor (master weights, first and
// second moments, a gradient in f32/bf16/f16, and optionally a low-precision parameter copy
// written in the same pass). What does not: the device kernel (optim/device_adam.cuh, same
// formula), loss scaling and clipping (loss_scaler.hpp, grad_stats.hpp), where the state lives
// (zero_adam.hpp, streamed_adam.hpp).
//
// The update, for element i at step t (t = 1, 2, ...), in float arithmetic, in exactly this
// order (fma = fused multiply-add with one rounding; every path — scalar, AVX2, AVX-512 and the
// CUDA kernel — performs these operations, so they agree bitwise):
//
//   g  = s * float(grad[i])                  s  = grad_multiplier (1/loss_scale * clip coefficient)
//   g  = fma(wd, p, g)                        Adam (L2) only; wd = weight_decay
//   m  = fma(b1, m, c1 * g)                   c1 = 1 - b1
//   v  = fma(b2, v, c2 * (g * g))             c2 = 1 - b2
//   p  = p * decay                            AdamW only; decay = 1 - lr * wd
//   d  = sqrt(v * k2) + eps                   k2 = 1 / (1 - b2^t)   (1 without bias correction)
//   p  = fma(-step, m / d, p)                 step = lr / (1 - b1^t) (lr without bias correction)
//   copy[i] = P(p)                            round to nearest even (bf16 / f16), if asked
//
// The scalars c1, c2, decay, k2 and step are computed once per step in double and rounded to
// float (adam_step_scalars), so every path starts from the same floats.
//
// Paths (simd_level): scalar (the formula above element by element, std::fma), avx2 (AVX2 + FMA + F16C, 8
// lanes) and avx512 (AVX-512 F/BW/VL, 16 lanes), chosen at run time from CPUID and XCR0
// (core/cpu_features.hpp); the vector code is compiled with per-function target attributes, so
// a binary built for baseline x86-64 still runs on a CPU without them. Vector paths exist on
// x86-64 with GCC or Clang; elsewhere (and in nvcc's host pass) only scalar. All paths give the
// same bits for every input, NaN payloads aside: an operation whose operands hold two different
// NaNs returns one of them, and which one depends on the operand order the compiler picked.
// f16 conversions use the F16C instructions, which agree with core/dtype.hpp while MXCSR.DAZ
// is off (the default).
//
// Threads: elements are independent, so [0, n) is cut into contiguous chunks for
// exec/thread_pool.hpp's default_thread_pool() (the caller works too). The result does not
// depend on the number of threads.
#pragma once

#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace optim {

enum class weight_decay_mode : std::uint8_t {
  l2,         // Adam: wd * p is added to the gradient (and so is scaled by the moments)
  decoupled,  // AdamW: p shrinks by lr * wd before the update, independent of the moments
};

/// Hyper-parameters of one parameter group.
struct adam_params {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  weight_decay_mode mode = weight_decay_mode::decoupled;  // AdamW by default
  bool bias_correction = true;

  /// config_error naming the bad field: lr >= 0, 0 <= beta < 1, eps > 0, weight_decay >= 0,
  /// all finite.
  void validate(const std::string& who = "adam") const;
};

/// The floats one step uses, derived from adam_params and the step number t >= 1.
struct adam_step_scalars {
  float s = 1.0f;      // gradient multiplier
  float wd_l2 = 0.0f;  // weight decay added to the gradient (Adam), 0 for AdamW
  float b1 = 0.9f, c1 = 0.1f;
  float b2 = 0.999f, c2 = 0.001f;
  float decay = 1.0f;  // 1 - lr * wd for AdamW, 1 for Adam
  float k2 = 1.0f;     // 1 / (1 - b2^t)
  float eps = 1e-8f;
  float step = 1e-3f;  // lr / (1 - b1^t)
  bool decoupled = true;

  static adam_step_scalars make(const adam_params& h, std::uint64_t t, float grad_multiplier = 1.0f);
};

/// Which code path runs the update. `automatic` picks the widest the CPU supports (checked at
/// run time: a binary built on one machine runs on another).
enum class simd_level : std::uint8_t { scalar, avx2, avx512, automatic };
const char* simd_level_name(simd_level l) noexcept;
/// The widest path this CPU (and this compiler) supports.
simd_level detect_simd() noexcept;

/// The parameter copy type: none (no copy written), or bf16 / f16 / float.
struct no_copy {};

/// Updates n elements in place: master (fp32), m, v; reads grad; writes copy[i] unless P is
/// no_copy. `threads` workers split the range (0: the hardware's count, capped so no worker
/// gets less than 64 Ki elements; 1: all on the calling thread; more chunks than cores simply
/// queue). Chunk boundaries are multiples of 64 bytes into every array (whole cache lines per
/// thread when the arrays start on a line, as strata's buffers do). All spans are the same length
/// (config_error otherwise); a `level` this CPU or build cannot run is a config_error naming
/// the level and the CPU's features. master, m, v and copy must not overlap each other or grad.
template <class G, class P = no_copy>
void adam_update(const adam_step_scalars& k, std::span<float> master, std::span<float> m,
                 std::span<float> v, std::span<const G> grad, P* copy = nullptr,
                 simd_level level = simd_level::automatic, unsigned threads = 0);

/// The same without a copy, for calls that spell the copy argument as `nullptr` (which cannot
/// deduce P): adam_update<float>(k, master, m, v, grad, nullptr, simd_level::avx2).
template <class G>
void adam_update(const adam_step_scalars& k, std::span<float> master, std::span<float> m,
                 std::span<float> v, std::span<const G> grad, std::nullptr_t,
                 simd_level level = simd_level::automatic, unsigned threads = 0) {
  adam_update<G, no_copy>(k, master, m, v, grad, nullptr, level, threads);
}

}  // namespace optim
STRATA_NAMESPACE_END

#include <strata/optim/detail/adam_host.hpp>
