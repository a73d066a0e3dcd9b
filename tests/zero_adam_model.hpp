// tests/zero_adam_model.hpp — what test_zero_adam and test_zero_adam_nvme share: a toy model
// trained with zero_adam through the executor on comm::threads ranks, and its unsharded
// single-thread reference.
//
// Each rank feeds its own input per micro-batch; the backward's gradient depends on the
// weights, the input and the forward's activation, multiplied by the loss scale. reference()
// runs the same steps on one thread for `world` ranks in exactly the order the library
// promises: per micro-batch the ranks' gradients summed in rank order and divided by the world
// size (the communicators' mean), micro-batches added in order (grad_mode::accumulate); the
// norm from each rank's slice measured with measure_gradient and the ranks' measures added in
// rank order (all_reduce_stats); then adam_update on whole layers — so zero_adam must match it
// bitwise. With bf16 working parameters (a bundle whose working_type is bf16) the forward and
// backward see each layer rounded to bf16 (what the executor gathers), the update works on the
// fp32 masters: reference(world, sc, true) does the same, so that too matches bitwise.
#pragma once

#include "catch.hpp"

#include <strata/comm/threads.hpp>
#include <strata/optim/zero_adam.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <type_traits>
#include <vector>

namespace zero_adam_model {

using namespace strata;

// Sizes that divide by no world size, and one smaller than the largest world.
inline const std::vector<std::size_t> sizes = {1000, 3, 777, 4096, 1};

inline std::vector<float> initial(std::size_t i) {
  std::mt19937 rng(static_cast<unsigned>(100 + i));
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(sizes[i]);
  for (auto& x : v) x = u(rng);
  return v;
}

// Per layer: the learning rate and weight decay differ, odd layers are Adam (L2), even AdamW.
inline optim::adam_params params_of(std::size_t i) {
  optim::adam_params h;
  h.lr = 1e-2f / float(i + 1);
  h.weight_decay = 0.05f * float(i % 2);
  h.mode = i % 2 ? optim::weight_decay_mode::l2 : optim::weight_decay_mode::decoupled;
  return h;
}

inline float input(int rank, int micro, std::size_t i, std::size_t k) {
  return std::sin(0.37f * float(k) + 0.11f * float(i) + 1.3f * float(rank) + 0.7f * float(micro));
}
inline void forward_layer(int rank, int micro, std::size_t i, const float* w, std::size_t n,
                          float& act) {
  float s = 0;
  for (std::size_t k = 0; k < n; ++k) s += w[k] * input(rank, micro, i, k);
  act = std::tanh(act + s);
}
inline void backward_layer(int rank, int micro, std::size_t i, const float* w, float* dw,
                           std::size_t n, float act, float scale) {
  for (std::size_t k = 0; k < n; ++k)
    dw[k] = scale * (w[k] * act + input(rank, micro, i, k) * (1.0f - act * act));
}

struct scenario {
  int steps = 3;
  double max_norm = 0;  // > 0: clipping on
  int micro = 1;        // micro-batches per step (gradient accumulation when > 1)
  bool fused = false;   // ex.backward(g, opt.update_fn()) instead of backward + opt.step
  int inf_step = 0;     // > 0: on that step (from 1) the last rank's gradient holds an Inf
  bool scaler = false;  // a dynamic loss scaler (initial 1024, growth every 2 clean steps)
  bool deferred = false;  // step_options::deferred: each update runs under the next forward
  // 1: the step's last backward gets opt.watch(options) (the norm measured as gradients land);
  // 2: the first backward gets it and the later ones not (stale: step() must measure again).
  int watched = 0;
};

inline bool inject(const scenario& sc, int step, int micro, int rank, int world, std::size_t i) {
  return sc.inf_step == step && micro == 0 && rank == world - 1 && i == 2;
}

inline optim::loss_scaler make_scaler() { return optim::loss_scaler::dynamic(1024.0f, 2); }

struct outcome {
  std::vector<std::vector<float>> w, m, v;  // full layers
  std::vector<optim::step_result> steps;
  std::uint64_t t = 0;
  bool within_plan = true;
  std::string plan;
  int watched_steps = 0;  // steps whose norm came from opt.watch()'s measures
};

// Layer i as the walks see it: the fp32 values, or rounded to bf16 and widened back.
inline std::vector<float> as_seen(const std::vector<float>& w, bool narrow) {
  if (!narrow) return w;
  std::vector<bf16> b(w.size());
  std::vector<float> out(w.size());
  convert(w.data(), b.data(), w.size());
  convert(b.data(), out.data(), w.size());
  return out;
}

inline outcome reference(int world, const scenario& sc, bool narrow = false) {
  const std::size_t layers = sizes.size();
  outcome o;
  for (std::size_t i = 0; i < layers; ++i) {
    o.w.push_back(initial(i));
    o.m.emplace_back(sizes[i], 0.0f);
    o.v.emplace_back(sizes[i], 0.0f);
  }
  std::optional<optim::loss_scaler> scaler;
  if (sc.scaler) scaler = make_scaler();
  for (int step = 1; step <= sc.steps; ++step) {
    const float scale = scaler ? scaler->scale() : 1.0f;
    std::vector<std::vector<float>> acc(layers);
    for (int mb = 0; mb < sc.micro; ++mb) {
      std::vector<std::vector<float>> sum(layers);
      std::vector<std::vector<float>> seen;
      for (std::size_t i = 0; i < layers; ++i) seen.push_back(as_seen(o.w[i], narrow));
      for (int r = 0; r < world; ++r) {
        float act = 0;
        for (std::size_t i = 0; i < layers; ++i)
          forward_layer(r, mb, i, seen[i].data(), sizes[i], act);
        for (std::size_t i = layers; i-- > 0;) {
          std::vector<float> dw(sizes[i]);
          backward_layer(r, mb, i, seen[i].data(), dw.data(), sizes[i], act, scale);
          if (inject(sc, step, mb, r, world, i))
            dw[sizes[i] / 2] = std::numeric_limits<float>::infinity();
          if (r == 0)
            sum[i] = dw;
          else
            for (std::size_t k = 0; k < dw.size(); ++k) sum[i][k] += dw[k];
        }
      }
      for (std::size_t i = 0; i < layers; ++i) {
        for (auto& g : sum[i]) g = g / float(world);
        if (mb == 0)
          acc[i] = sum[i];
        else
          for (std::size_t k = 0; k < sizes[i]; ++k) acc[i][k] = acc[i][k] + sum[i][k];
      }
    }
    const float unscale = scaler ? scaler->grad_multiplier() : 1.0f;
    const float mult = unscale * (1.0f / float(sc.micro));
    optim::grad_stats all;
    for (int r = 0; r < world; ++r) {
      optim::grad_stats local;
      for (std::size_t i = 0; i < layers; ++i) {
        const shard_layout lay(sizes[i], world);
        local += optim::measure_gradient(
            std::span<const float>(acc[i].data() + std::min(lay.offset(r), sizes[i]),
                                   lay.valid_in(r)),
            mult);
      }
      if (r == 0)
        all = local;
      else
        all += local;
    }
    optim::step_result res;
    res.norm = optim::global_norm(all);
    const bool take = scaler ? scaler->update(!all.finite()) : all.finite();
    if (!take) {
      res.skipped = true;
      o.steps.push_back(res);
      continue;
    }
    res.coefficient = sc.fused ? 1.0f : optim::clip_coefficient(res.norm, sc.max_norm);
    ++o.t;
    for (std::size_t i = 0; i < layers; ++i) {
      const auto k = optim::adam_step_scalars::make(params_of(i), o.t, mult * res.coefficient);
      optim::adam_update<float>(k, o.w[i], o.m[i], o.v[i], std::span<const float>(acc[i]));
    }
    o.steps.push_back(res);
  }
  return o;
}

/// The same steps through zero_executor + zero_adam on `world` comm::threads ranks, each with
/// a context from make_config(rank). Returns rank 0's view; m and v are assembled from every
/// rank's part.
template <class Bundle, std::size_t Depth, class MakeConfig>
outcome train(int world, const scenario& sc, MakeConfig&& make_config) {
  comm::thread_world tw(world, std::chrono::seconds(30));
  const std::size_t layers = sizes.size();
  outcome out;
  for (std::size_t i = 0; i < layers; ++i) {
    out.m.emplace_back(sizes[i], 0.0f);
    out.v.emplace_back(sizes[i], 0.0f);
  }
  std::mutex mutex;
  tw.run([&](comm::threads& c) {
    context ctx(make_config(c.rank()));
    std::vector<layer_spec> specs;
    for (std::size_t i = 0; i < layers; ++i) specs.push_back({"L" + std::to_string(i), sizes[i]});
    zero_executor<comm::threads, Bundle, prefetch::lookahead<Depth>> ex(ctx, c, specs);
    for (std::size_t i = 0; i < layers; ++i) ex.set_params(i, initial(i));
    optim::zero_adam opt(ex, std::function<optim::adam_params(std::size_t)>(params_of),
                         {.sub_group = 16 << 10});
    std::optional<optim::loss_scaler> scaler;
    if (sc.scaler) scaler = make_scaler();
    std::vector<optim::step_result> results;
    int watched_steps = 0;
    using working = typename decltype(ex)::working_type;
    std::vector<float> wide;  // a bf16 layer widened to float (the toy's kernels take float)
    auto widen = [&](const working* w, std::size_t n) -> const float* {
      if constexpr (std::is_same_v<working, float>) {
        return w;
      } else {
        wide.resize(n);
        convert(w, wide.data(), n);
        return wide.data();
      }
    };
    for (int step = 1; step <= sc.steps; ++step) {
      const float scale = scaler ? scaler->scale() : 1.0f;
      for (int mb = 0; mb < sc.micro; ++mb) {
        float act = 0;
        ex.forward([&](std::size_t i, const working* w, std::size_t n) {
          forward_layer(c.rank(), mb, i, widen(w, n), n, act);
        });
        auto g = [&](std::size_t i, const working* w, float* dw, std::size_t n) {
          backward_layer(c.rank(), mb, i, widen(w, n), dw, n, act, scale);
          if (inject(sc, step, mb, c.rank(), world, i))
            dw[n / 2] = std::numeric_limits<float>::infinity();
        };
        const optim::step_options so{.max_grad_norm = sc.max_norm,
                                     .scaler = scaler ? &*scaler : nullptr,
                                     .grad_multiplier = 1.0f / float(sc.micro),
                                     .deferred = sc.deferred};
        const grad_mode mode = mb == 0 ? grad_mode::overwrite : grad_mode::accumulate;
        if (sc.fused)
          ex.backward(g, opt.update_fn());
        else if ((sc.watched == 1 && mb == sc.micro - 1) || (sc.watched == 2 && mb == 0))
          ex.backward(g, mode, opt.watch(so));
        else
          ex.backward(g, mode);
        if (!sc.fused && mb == sc.micro - 1) {
          results.push_back(opt.step(ex, so));
          watched_steps += opt.last_norm_watched();
        }
      }
    }
    // A deferred last step is still pending here: the first read of the state ends it.
    std::vector<std::vector<float>> w;
    for (std::size_t i = 0; i < layers; ++i) w.push_back(ex.params(i));
    ex.sync();
    bool within = true;
    within = within && opt.plan().covers_peaks(ctx);
    std::lock_guard lock(mutex);
    out.within_plan = out.within_plan && within;
    for (std::size_t i = 0; i < layers; ++i) {
      const auto mi = opt.m(i), vi = opt.v(i);
      const std::size_t from = Bundle::stage == 0 ? 0 : ex.layout(i).offset(c.rank());
      for (std::size_t k = 0; k < mi.size(); ++k) {
        out.m[i][from + k] = mi[k];
        out.v[i][from + k] = vi[k];
      }
    }
    if (c.rank() == 0) {
      out.w = std::move(w);
      out.steps = std::move(results);
      out.t = opt.t();
      out.watched_steps = watched_steps;
      out.plan = opt.plan().to_string(&ctx);
    }
  });
  return out;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/// Catch2 checks, on the test thread: `got` == `ref` bitwise.
inline void check_same(const outcome& got, const outcome& ref) {
  REQUIRE(got.w.size() == ref.w.size());
  for (std::size_t i = 0; i < ref.w.size(); ++i) {
    INFO("layer " << i);
    CHECK(same_bits(got.w[i], ref.w[i]));
    CHECK(same_bits(got.m[i], ref.m[i]));
    CHECK(same_bits(got.v[i], ref.v[i]));
  }
  CHECK(got.t == ref.t);
  if (!got.steps.empty()) {
    REQUIRE(got.steps.size() == ref.steps.size());
    for (std::size_t s = 0; s < ref.steps.size(); ++s) {
      INFO("step " << s + 1);
      CHECK(got.steps[s].norm == ref.steps[s].norm);
      CHECK(got.steps[s].coefficient == ref.steps[s].coefficient);
      CHECK(got.steps[s].skipped == ref.steps[s].skipped);
    }
  }
  INFO(got.plan);
  CHECK(got.within_plan);
}

}  // namespace zero_adam_model
