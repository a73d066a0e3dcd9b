// tests/zero_toy_model.hpp — the toy model the ZeRO tests train, and its unsharded reference.
//
// Each rank feeds its own input (its micro-batch): the forward folds w.x of every layer into an
// activation; the backward's gradient depends on the weights, the rank's input and that
// activation; the optimizer is SGD. reference() runs the same step on one thread for `world`
// ranks, summing their gradients in rank order and dividing by the world size — exactly what
// the communicators promise — so the executor must match it bitwise.
#pragma once

#include <strata/schedule/executor.hpp>

#include <cmath>
#include <random>
#include <vector>

namespace zero_toy {

// Layer sizes that divide by no world size, and one smaller than the largest world.
inline const std::vector<std::size_t> sizes = {1000, 3, 777, 4096, 1};
inline constexpr float lr = 0.01f;

inline std::vector<float> initial(std::size_t i) {
  std::mt19937 rng(static_cast<unsigned>(100 + i));
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(sizes[i]);
  for (auto& x : v) x = u(rng);
  return v;
}

inline float input(int rank, std::size_t i, std::size_t k) {
  return std::sin(0.37f * static_cast<float>(k) + 0.11f * static_cast<float>(i) +
                  1.3f * static_cast<float>(rank));
}
inline void forward_layer(int rank, std::size_t i, const float* w, std::size_t n, float& act) {
  float s = 0;
  for (std::size_t k = 0; k < n; ++k) s += w[k] * input(rank, i, k);
  act = std::tanh(act + s);
}
inline void backward_layer(int rank, std::size_t i, const float* w, float* dw, std::size_t n,
                           float act) {
  for (std::size_t k = 0; k < n; ++k) dw[k] = w[k] * act + input(rank, i, k) * (1.0f - act * act);
}
inline void sgd(float* w, const float* dw, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) w[k] -= lr * dw[k];
}

inline std::vector<std::vector<float>> reference(int world, int steps) {
  std::vector<std::vector<float>> w;
  for (std::size_t i = 0; i < sizes.size(); ++i) w.push_back(initial(i));
  for (int s = 0; s < steps; ++s) {
    std::vector<std::vector<float>> sum(sizes.size());
    for (int r = 0; r < world; ++r) {
      float act = 0;
      for (std::size_t i = 0; i < sizes.size(); ++i) forward_layer(r, i, w[i].data(), sizes[i], act);
      for (std::size_t i = sizes.size(); i-- > 0;) {
        std::vector<float> dw(sizes[i]);
        backward_layer(r, i, w[i].data(), dw.data(), sizes[i], act);
        if (r == 0)
          sum[i] = dw;
        else
          for (std::size_t k = 0; k < dw.size(); ++k) sum[i][k] += dw[k];
      }
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      for (auto& g : sum[i]) g = g / static_cast<float>(world);
      sgd(w[i].data(), sum[i].data(), sizes[i]);
    }
  }
  return w;
}

struct result {
  std::vector<std::vector<float>> weights;
  bool peaks_within_plan = true;
  std::string plan;
};

/// The executor's prefetch policy for a lookahead depth: prefetch::none for 0.
template <std::size_t Depth>
using prefetch_for = std::conditional_t<Depth == 0, strata::prefetch::none,
                                        strata::prefetch::lookahead<(Depth > 0 ? Depth : 1)>>;

/// `steps` training steps of the toy model on this rank with the executor; the full weights
/// after them (a collective for stage 3). `fused`: the optimizer runs inside backward(g, u).
template <class Bundle, std::size_t Depth, class Comm>
result train(Comm& c, strata::context& ctx, int steps, bool fused = false) {
  using namespace strata;
  std::vector<layer_spec> layers;
  for (std::size_t i = 0; i < sizes.size(); ++i) layers.push_back({"L" + std::to_string(i), sizes[i]});
  zero_executor<Comm, Bundle, prefetch_for<Depth>> ex(ctx, c, layers);
  for (std::size_t i = 0; i < sizes.size(); ++i) ex.set_params(i, initial(i));
  for (int s = 0; s < steps; ++s) {
    float act = 0;
    ex.forward([&](std::size_t i, const float* w, std::size_t n) {
      forward_layer(c.rank(), i, w, n, act);
    });
    auto g = [&](std::size_t i, const float* w, float* dw, std::size_t n) {
      backward_layer(c.rank(), i, w, dw, n, act);
    };
    auto u = [&](std::size_t, float* w, const float* dw, std::size_t n) { sgd(w, dw, n); };
    if (fused) {
      ex.backward(g, u);
    } else {
      ex.backward(g);
      ex.step(u);
    }
  }
  result out;
  for (std::size_t i = 0; i < sizes.size(); ++i) out.weights.push_back(ex.params(i));
  ex.sync();
  out.peaks_within_plan = out.peaks_within_plan && ex.plan().covers_peaks(ctx);
  out.plan = ex.plan().to_string(&ctx);
  return out;
}

}  // namespace zero_toy
