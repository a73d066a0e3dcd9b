// examples/gpt/random.hpp — the mini-GPT's random numbers: splitmix64, as a function and as a
// generator.
//
// What this is: splitmix64 (Steele, Lea, Flood 2014), a 64-bit mixer whose output is the same
// on every platform and standard library, unlike std::uniform_int_distribution's or
// std::normal_distribution's. splitmix64(x) is the pure function (data.hpp draws a window's
// start from (seed, sample index) with it); rng is the generator over it, with uniform and
// normal draws, and a constructor for independent streams (sampler.hpp: one per batch row).
// What it is not: the GPT-2 initialisation (initial_layer, host/model.hpp) or the data order
// (data.hpp), which are built on these.
#pragma once

#include <cmath>
#include <cstdint>

namespace gpt {

/// splitmix64's increment, the golden ratio in 64 bits.
inline constexpr std::uint64_t splitmix64_gamma = 0x9e3779b97f4a7c15ull;

/// splitmix64's output for state `x`: mix(x + gamma). splitmix64(0) is 0xe220a8397b1dcdaf, the
/// first output of Vigna's reference splitmix64.c.
inline std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += splitmix64_gamma;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// splitmix64 as a generator: each draw advances the state by gamma and mixes it.
class rng {
public:
  /// The generator whose first draw is splitmix64(seed).
  explicit rng(std::uint64_t seed) noexcept : state_(seed) {}

  /// Stream `stream` of `seed`: a state of its own, so that what one stream draws (a batch
  /// row's text) depends on (seed, stream) only, not on how many other streams run beside it.
  rng(std::uint64_t seed, std::uint64_t stream) noexcept
      : state_(splitmix64(seed) ^ splitmix64(~stream)) {}

  std::uint64_t next_u64() noexcept {
    const std::uint64_t s = state_;
    state_ += splitmix64_gamma;
    return splitmix64(s);
  }

  /// Uniform in [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// Standard normal (Box-Muller, the cosine half).
  double normal() noexcept {
    const double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]: log is finite
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

private:
  std::uint64_t state_;
};

}  // namespace gpt
