// strata/optim/loss_scaler.hpp — loss scaling for fp16 training.
//
// What lives here: loss_scaler (fixed or dynamic) and loss_scaler_state, the few numbers a
// checkpoint keeps so a resumed run scales exactly like an uninterrupted one. What does not:
// finding Inf/NaN in the gradients (grad_stats.hpp: measure_gradient, all_reduce_stats), the
// update (adam.hpp), where the state is written (checkpoint/).
//
// Why: f16 gradients of small magnitude underflow to zero. Multiplying the loss by `scale`
// before the backward pass shifts every gradient up by the same factor; the optimizer undoes
// it with grad_multiplier() = 1 / scale. A scale that is too large overflows to Inf, so the
// dynamic scaler backs off when a step's gradients hold an Inf or NaN (that step is skipped),
// and grows again after growth_interval clean steps in a row — the scheme of NVIDIA's Apex,
// PyTorch's GradScaler and DeepSpeed's DynamicLossScaler.
//
//   auto scaler = optim::loss_scaler::dynamic();
//   loss = loss * scaler.scale();  backward();
//   const float unscale = scaler.grad_multiplier();
//   auto stats = optim::all_reduce_stats(comm, optim::measure_gradient(grad_shard, unscale));
//   if (scaler.update(!stats.finite())) { ... adam_step_scalars::make(p, ++t, unscale) ... }
//
// Every rank must call update() with the same answer (all_reduce_stats gives every rank the
// same count), or their scales drift apart.
#pragma once

#include <strata/core/error.hpp>

#include <cmath>
#include <cstdint>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace optim {

/// A loss_scaler's whole state: save() gives it, restore() takes it back (validated).
struct loss_scaler_state {
  bool dynamic = false;
  float scale = 1.0f;
  std::uint32_t growth_interval = 2000;
  float backoff = 0.5f;
  float growth = 2.0f;
  float min_scale = 1.0f;
  std::uint32_t clean_streak = 0;  // clean steps since the last growth or skip
  std::uint64_t skipped_steps = 0;
};

class loss_scaler {
public:
  /// A scale that halves (backoff) on every step with Inf/NaN gradients, never below min_scale,
  /// and doubles (growth) after growth_interval clean steps in a row. config_error naming the
  /// field unless: initial finite and >= min_scale, growth_interval >= 1, 0 < backoff < 1,
  /// growth > 1 and finite, min_scale finite and > 0.
  static loss_scaler dynamic(float initial = 65536.0f, std::uint32_t growth_interval = 2000,
                             float backoff = 0.5f, float growth = 2.0f, float min_scale = 1.0f);
  /// A scale that never changes (1.0 = no scaling; bf16 and f32 training need none). Steps with
  /// Inf/NaN gradients are still skipped. config_error unless scale is finite and > 0.
  static loss_scaler fixed(float scale);

  /// Multiply the loss by this before the backward pass.
  float scale() const noexcept { return s_.scale; }
  /// 1 / scale(), in float: what adam_step_scalars::make gets as its gradient multiplier
  /// (times a clip coefficient). Exact for the powers of two that dynamic scaling produces.
  float grad_multiplier() const noexcept { return 1.0f / s_.scale; }

  /// Called once after each backward pass with whether any gradient element was Inf or NaN.
  /// Returns false when the step must be skipped (found_nonfinite): the dynamic scale then
  /// becomes max(scale * backoff, min_scale) and the clean streak restarts. Returns true
  /// otherwise; the growth_interval-th clean step in a row multiplies the dynamic scale by
  /// growth (unless that would overflow float, when the scale stays) and restarts the streak.
  bool update(bool found_nonfinite) noexcept;

  std::uint64_t skipped_steps() const noexcept { return s_.skipped_steps; }
  std::uint32_t clean_streak() const noexcept { return s_.clean_streak; }
  bool is_dynamic() const noexcept { return s_.dynamic; }

  /// The state for a checkpoint; restore() of it continues exactly where this one is.
  loss_scaler_state save() const noexcept { return s_; }
  /// Takes over `state` after checking it as dynamic() / fixed() check their arguments, and
  /// clean_streak < growth_interval (config_error naming the field otherwise; this scaler is
  /// then unchanged).
  void restore(const loss_scaler_state& state);

private:
  explicit loss_scaler(const loss_scaler_state& s) : s_(s) {}
  static void validate(const loss_scaler_state& s, const char* who);

  loss_scaler_state s_;
};

// ---- definitions (short enough to stay here) --------------------------------------------------

inline void loss_scaler::validate(const loss_scaler_state& s, const char* who) {
  auto bad = [&](const char* field, double value, const char* rule) {
    throw config_error(std::string(who) + ": " + field + " = " + std::to_string(value) + " (" +
                       rule + ")");
  };
  if (!(std::isfinite(s.scale) && s.scale > 0)) bad("scale", s.scale, "must be finite and > 0");
  if (!s.dynamic) return;
  if (!(std::isfinite(s.min_scale) && s.min_scale > 0))
    bad("min_scale", s.min_scale, "must be finite and > 0");
  if (s.scale < s.min_scale) bad("scale", s.scale, "must be >= min_scale");
  if (s.growth_interval < 1) bad("growth_interval", s.growth_interval, "must be >= 1");
  if (!(s.backoff > 0 && s.backoff < 1)) bad("backoff", s.backoff, "must be in (0, 1)");
  if (!(std::isfinite(s.growth) && s.growth > 1)) bad("growth", s.growth, "must be finite and > 1");
  if (s.clean_streak >= s.growth_interval)
    bad("clean_streak", s.clean_streak, "must be < growth_interval");
}

inline loss_scaler loss_scaler::dynamic(float initial, std::uint32_t growth_interval,
                                        float backoff, float growth, float min_scale) {
  loss_scaler_state s;
  s.dynamic = true;
  s.scale = initial;
  s.growth_interval = growth_interval;
  s.backoff = backoff;
  s.growth = growth;
  s.min_scale = min_scale;
  validate(s, "loss_scaler::dynamic");
  return loss_scaler(s);
}

inline loss_scaler loss_scaler::fixed(float scale) {
  loss_scaler_state s;
  s.dynamic = false;
  s.scale = scale;
  s.min_scale = scale;
  s.growth = 1.0f;
  s.backoff = 1.0f;
  validate(s, "loss_scaler::fixed");
  return loss_scaler(s);
}

inline bool loss_scaler::update(bool found_nonfinite) noexcept {
  if (found_nonfinite) {
    ++s_.skipped_steps;
    s_.clean_streak = 0;
    if (s_.dynamic) {
      const float backed_off = s_.scale * s_.backoff;
      s_.scale = backed_off > s_.min_scale ? backed_off : s_.min_scale;
    }
    return false;
  }
  if (!s_.dynamic) {
    // Saturate instead of wrapping: the streak of a fixed scaler is only informative.
    if (s_.clean_streak != UINT32_MAX) ++s_.clean_streak;
    return true;
  }
  if (++s_.clean_streak >= s_.growth_interval) {
    const float grown = s_.scale * s_.growth;
    if (std::isfinite(grown)) s_.scale = grown;
    s_.clean_streak = 0;
  }
  return true;
}

inline void loss_scaler::restore(const loss_scaler_state& state) {
  validate(state, "loss_scaler::restore");
  s_ = state;
}

}  // namespace optim
STRATA_NAMESPACE_END
