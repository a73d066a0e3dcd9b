// zero_adam through the ZeRO executor on comm::threads, 1-4 ranks, stages 0-3, device / host /
// pinned homes: N steps == unsharded single-rank Adam on the rank-order mean gradients,
// bitwise (parameters, m, v, norms, clip coefficients), with per-layer hyper-parameters and
// clipping on; the fused backward(g, u) == backward + step; gradient accumulation over 2-3
// micro-batches == one step on the accumulated mean gradient, bitwise; a step with an Inf
// gradient under dynamic loss scaling is skipped and leaves everything untouched; an update
// that throws inside step() or the fused backward leaves that layer's parameters at home; a step
// deferred to the next forward (step_options::deferred) == the step at once, bitwise.
// The NVMe home (ZeRO-Infinity) is tests/io/test_zero_adam_nvme.cpp.
// ctest-timeout: 600
#include "catch.hpp"

#include "zero_adam_model.hpp"

using namespace strata;
using namespace zero_adam_model;

namespace {

context_config in_memory(int) { return {.device_bytes = 8 << 20}; }

template <class Bundle, std::size_t Depth>
void check(int world, const scenario& sc) {
  constexpr bool narrow = Bundle::narrow_working;
  INFO("stage " << Bundle::stage << ", home " << tier_name(Bundle::home_tier::id) << ", depth "
                << Depth << ", world " << world << ", micro-batches " << sc.micro
                << (sc.fused ? ", fused" : "") << (sc.max_norm > 0 ? ", clipped" : "")
                << (sc.inf_step ? ", Inf injected" : "") << (sc.deferred ? ", deferred" : "")
                << (narrow ? ", bf16 working parameters" : ""));
  const auto ref = reference(world, sc, narrow);
  const auto got = train<Bundle, Depth>(world, sc, in_memory);
  check_same(got, ref);
  // A watched step took its norm from the watch; a stale watch was not used.
  CHECK(got.watched_steps == (sc.watched == 1 ? sc.steps : 0));
}

}  // namespace

TEST_CASE("zero_adam == unsharded Adam, bitwise: stages 0-3, 1-4 ranks, clipping on",
          "[zero][adam]") {
  const scenario sc{.steps = 3, .max_norm = 5.0};
  const auto ref = reference(2, sc);
  bool clipped = false;  // the norm limit does bite (else clipping would be untested)
  for (auto& s : ref.steps) clipped = clipped || s.coefficient < 1.0f;
  CHECK(clipped);
  for (int world = 1; world <= 4; ++world) {
    check<zero0, 1>(world, sc);
    check<zero1, 1>(world, sc);
    check<zero2, 1>(world, sc);
    check<zero3, 1>(world, sc);
  }
}

TEST_CASE("zero_adam with host and pinned homes (ZeRO-Offload) == unsharded, bitwise",
          "[zero][adam]") {
  const scenario sc{.steps = 3, .max_norm = 5.0};
  for (int world : {1, 3}) {
    check<zero_bundle<1, tier::pinned>, 1>(world, sc);
    check<zero_bundle<2, tier::host>, 2>(world, sc);
    check<zero3_offload, 1>(world, sc);
    check<zero_bundle<3, tier::pinned>, 2>(world, sc);
  }
}

TEST_CASE("a step deferred to the next forward == the step at once == unsharded, bitwise",
          "[zero][adam][deferred]") {
  // Stages 0 and 3 run the deferred updates on the optimizer queue; 1 and 2 step at once.
  const std::vector<scenario> scenarios = {
      {.steps = 3, .max_norm = 5.0, .deferred = true},
      {.steps = 2, .max_norm = 5.0, .micro = 2, .deferred = true},
      {.steps = 4, .max_norm = 5.0, .inf_step = 3, .scaler = true, .deferred = true},
  };
  for (const auto& sc : scenarios)
    for (int world = 1; world <= 4; ++world) {
      check<zero0, 1>(world, sc);
      check<zero3, 2>(world, sc);
      check<zero3_offload, 1>(world, sc);
      check<zero_bundle<3, tier::pinned>, 2>(world, sc);
      if (world == 2) check<zero2, 1>(world, sc);
    }
}

TEST_CASE("the norm taken as the gradients land == read back from home, bitwise",
          "[zero][adam][watch]") {
  const std::vector<scenario> scenarios = {
      {.steps = 3, .max_norm = 5.0, .watched = 1},
      {.steps = 2, .max_norm = 5.0, .micro = 3, .deferred = true, .watched = 1},
      {.steps = 4, .max_norm = 5.0, .inf_step = 3, .scaler = true, .watched = 1},
      {.steps = 2, .max_norm = 5.0, .micro = 2, .watched = 2},  // stale: measured again
  };
  for (const auto& sc : scenarios)
    for (int world = 1; world <= 4; ++world) {
      INFO("watched " << sc.watched);
      check<zero0, 1>(world, sc);
      check<zero1, 1>(world, sc);
      check<zero2, 1>(world, sc);
      check<zero3_offload, 2>(world, sc);
      check<zero3_offload_bf16, 1>(world, sc);
    }
}

TEST_CASE("bf16 working parameters: the walks see the masters rounded to bf16, bitwise",
          "[zero][adam][bf16]") {
  // The reference runs forward and backward on each layer rounded to bf16 and Adam on the fp32
  // masters: the executor must give exactly that, sharded or not, deferred or not.
  const std::vector<scenario> scenarios = {
      {.steps = 3, .max_norm = 5.0},
      {.steps = 2, .max_norm = 5.0, .micro = 2, .deferred = true},
      {.steps = 3, .fused = true},  // backward(g, u): here backward(g) then step(u)
  };
  const auto fp32 = reference(2, scenarios[0]), bf16 = reference(2, scenarios[0], true);
  bool differs = false;  // the rounding does change the result (else this proves nothing)
  for (std::size_t i = 0; i < fp32.w.size(); ++i) differs = differs || !same_bits(fp32.w[i], bf16.w[i]);
  CHECK(differs);
  for (const auto& sc : scenarios)
    for (int world = 1; world <= 4; ++world) {
      check<zero3_offload_bf16, 2>(world, sc);
      check<zero_bundle<3, tier::pinned, strata::bf16>, 1>(world, sc);
      check<zero_bundle<3, tier::device, strata::bf16>, 1>(world, sc);
    }
}

TEST_CASE("bf16 working parameters halve the gathered buffers and add a copy at home",
          "[zero][bf16]") {
  comm::thread_world tw(1, std::chrono::seconds(30));
  std::size_t gathered32 = 0, gathered16 = 0, copies = 0, shards = 0;
  tw.run([&](comm::threads& c) {
    context ctx(in_memory(0));
    const std::vector<layer_spec> specs = {{"a", 1000}, {"b", 4096}};
    zero_executor<comm::threads, zero3_offload, prefetch::lookahead<1>> a(ctx, c, specs);
    zero_executor<comm::threads, zero3_offload_bf16, prefetch::lookahead<1>> b(ctx, c, specs);
    auto bytes = [](const memory_plan& p, const std::string& what) {
      for (const auto& l : p.lines())
        if (l.what.find(what) != std::string::npos) return l.bytes;
      return std::size_t{0};
    };
    gathered32 = bytes(a.plan(), "gathered-parameter buffers");
    gathered16 = bytes(b.plan(), "gathered-parameter buffers");
    copies = bytes(b.plan(), "bf16 working copies");
    shards = bytes(b.plan(), "parameter shards");
  });
  CHECK(gathered32 > 0);
  CHECK(gathered16 * 2 == gathered32);
  CHECK(copies * 2 == shards);
}

TEST_CASE("zero_adam fused into backward == backward + step == unsharded, bitwise",
          "[zero][adam]") {
  for (int world = 1; world <= 4; ++world) {
    const scenario fused{.steps = 3, .fused = true};
    const scenario stepped{.steps = 3};
    check<zero3, 1>(world, fused);
    check<zero3_offload, 2>(world, fused);
    check<zero_bundle<3, tier::pinned>, 1>(world, fused);
    check<zero2, 1>(world, fused);  // stages 0-2: backward(g) then step(u)
    // The same steps without fusion give the same bits (clipping off: coefficient 1).
    const auto a = train<zero3_offload, 2>(world, fused, in_memory);
    const auto b = train<zero3_offload, 2>(world, stepped, in_memory);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      CHECK(same_bits(a.w[i], b.w[i]));
      CHECK(same_bits(a.m[i], b.m[i]));
    }
  }
}

// Accumulation is bitwise against the reference that adds the micro-batches' rank means in
// order and multiplies by 1/micro in the update, which is what the library promises. Against a
// reference that averages all ranks x micro-batches in one sum it is not bitwise (another
// summation order); see the next test for how close that is.
TEST_CASE("gradient accumulation over 2-3 micro-batches == one step on their mean, bitwise",
          "[zero][adam]") {
  for (int micro : {2, 3})
    for (int world : {1, 2, 3}) {
      const scenario sc{.steps = 2, .max_norm = 5.0, .micro = micro};
      check<zero0, 1>(world, sc);
      check<zero1, 1>(world, sc);
      check<zero2, 1>(world, sc);
      check<zero3, 1>(world, sc);
      check<zero3_offload, 2>(world, sc);
      check<zero_bundle<2, tier::pinned>, 1>(world, sc);
    }
}

TEST_CASE("accumulated micro-batches == one large batch, to rounding", "[zero][adam]") {
  // 2 ranks x 3 micro-batches, accumulated, against one Adam step on the float mean of the
  // same six gradients taken in one sum: only the summation order differs.
  const int world = 2, micro = 3;
  const scenario sc{.steps = 1, .micro = micro};
  const auto got = train<zero2, 1>(world, sc, in_memory);
  // One-sum reference: g = (sum over (b, r) of g_rb) / 6, then one Adam step.
  std::vector<std::vector<float>> w0, mean(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) w0.push_back(initial(i));
  for (int mb = 0; mb < micro; ++mb)
    for (int r = 0; r < world; ++r) {
      float act = 0;
      for (std::size_t i = 0; i < sizes.size(); ++i)
        forward_layer(r, mb, i, w0[i].data(), sizes[i], act);
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        std::vector<float> dw(sizes[i]);
        backward_layer(r, mb, i, w0[i].data(), dw.data(), sizes[i], act, 1.0f);
        if (mean[i].empty())
          mean[i] = dw;
        else
          for (std::size_t k = 0; k < dw.size(); ++k) mean[i][k] += dw[k];
      }
    }
  double worst = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    for (auto& g : mean[i]) g /= float(world * micro);
    std::vector<float> w = w0[i], m(sizes[i], 0.0f), v(sizes[i], 0.0f);
    optim::adam_update<float>(optim::adam_step_scalars::make(params_of(i), 1), w, m, v,
                              std::span<const float>(mean[i]));
    for (std::size_t k = 0; k < w.size(); ++k)
      worst = std::max(worst, double(std::fabs(w[k] - got.w[i][k])) / params_of(i).lr);
  }
  // In units of the learning rate (Adam's step is about lr per element): a relative rounding
  // difference in g of ~1e-7 moves m / sqrt(v) by as little, except where g is near zero and
  // eps decides; 1e-3 of a step is far above rounding and far below any real error.
  INFO("largest difference: " << worst << " learning rates");
  CHECK(worst < 1e-3);
}

TEST_CASE("a step with an Inf gradient is skipped and leaves everything untouched",
          "[zero][adam]") {
  for (int world : {1, 2, 4}) {
    const scenario sc{.steps = 4, .max_norm = 5.0, .inf_step = 3, .scaler = true};
    const auto ref = reference(world, sc);
    REQUIRE(ref.steps[2].skipped);
    REQUIRE(ref.t == 3);
    check<zero3, 1>(world, sc);
    check<zero1, 1>(world, sc);
    check<zero3_offload, 2>(world, sc);
    // Two steps, the second skipped: everything equals the state after the first step.
    const scenario two{.steps = 3, .max_norm = 5.0, .inf_step = 3, .scaler = true};
    const scenario one{.steps = 2, .max_norm = 5.0, .scaler = true};
    const auto a = train<zero2, 1>(world, two, in_memory);
    const auto b = train<zero2, 1>(world, one, in_memory);
    CHECK(a.steps.back().skipped);
    CHECK(a.t == 2);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      CHECK(same_bits(a.w[i], b.w[i]));
      CHECK(same_bits(a.m[i], b.m[i]));
      CHECK(same_bits(a.v[i], b.v[i]));
    }
  }
}

namespace {

// What one rank saw when an update threw at layer `bad`.
struct throw_outcome {
  std::string error;
  std::vector<std::vector<float>> before, after;
};

template <class Bundle, std::size_t Depth>
throw_outcome throwing_update(int world, bool fused) {
  comm::thread_world tw(world, std::chrono::seconds(30));
  throw_outcome out;
  std::mutex mutex;
  constexpr std::size_t bad = 2;
  tw.run([&](comm::threads& c) {
    context ctx({.device_bytes = 8 << 20});
    std::vector<layer_spec> specs;
    for (std::size_t i = 0; i < sizes.size(); ++i)
      specs.push_back({"L" + std::to_string(i), sizes[i]});
    zero_executor<comm::threads, Bundle, prefetch::lookahead<Depth>> ex(ctx, c, specs);
    for (std::size_t i = 0; i < sizes.size(); ++i) ex.set_params(i, initial(i));
    float act = 0;
    ex.forward([&](std::size_t i, const float* w, std::size_t n) {
      forward_layer(c.rank(), 0, i, w, n, act);
    });
    auto g = [&](std::size_t i, const float* w, float* dw, std::size_t n) {
      backward_layer(c.rank(), 0, i, w, dw, n, act, 1.0f);
    };
    // Every element written before the throw: a partial update must not reach home.
    auto u = [&](std::size_t i, float* w, const float* dw, std::size_t n) {
      for (std::size_t k = 0; k < n; ++k) w[k] = i == bad ? 999.0f : w[k] - 0.5f * dw[k];
      if (i == bad) throw std::runtime_error("update of layer 2 failed");
    };
    std::string error = "(no error)";
    try {
      if (fused) {
        ex.backward(g, u);
      } else {
        ex.backward(g);
        ex.step(u);
      }
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
    std::vector<std::vector<float>> after;
    for (std::size_t i = 0; i < sizes.size(); ++i) after.push_back(ex.params(i));
    ex.sync();
    if (c.rank() == 0) {
      std::lock_guard lock(mutex);
      out.error = error;
      out.after = std::move(after);
    }
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) out.before.push_back(initial(i));
  return out;
}

template <class Bundle, std::size_t Depth>
void check_throw(int world, bool fused) {
  INFO("stage " << Bundle::stage << ", home " << tier_name(Bundle::home_tier::id) << ", world "
                << world << (fused ? ", fused" : ""));
  const auto o = throwing_update<Bundle, Depth>(world, fused);
  CHECK(o.error == "update of layer 2 failed");
  REQUIRE(o.after.size() == sizes.size());
  CHECK(same_bits(o.after[2], o.before[2]));  // the failed layer: as it was
  // step() walks layers 0, 1, 2: the first two were updated. The fused backward walks 4, 3, 2.
  for (std::size_t i : fused ? std::vector<std::size_t>{3, 4} : std::vector<std::size_t>{0, 1})
    CHECK_FALSE(same_bits(o.after[i], o.before[i]));
}

}  // namespace

TEST_CASE("an update that throws leaves that layer's parameters at home as they were",
          "[zero][adam]") {
  for (int world : {1, 2}) {
    check_throw<zero0, 1>(world, false);
    check_throw<zero1, 1>(world, false);
    check_throw<zero2, 1>(world, false);
    check_throw<zero3, 1>(world, false);
    check_throw<zero3_offload, 2>(world, false);
    check_throw<zero_bundle<3, tier::pinned>, 1>(world, false);
    check_throw<zero3, 1>(world, true);
    check_throw<zero3_offload, 2>(world, true);
  }
}

namespace {

// Parameters after one step (deferred or at once) on a stage-0 executor declared before its
// optimizer, the optimizer gone before anything waits for the step (the trainer's order);
// `updated_at_end`: the layers the update had begun by the time the optimizer's destructor
// returned.
struct outlived {
  std::vector<std::vector<float>> w;
  std::size_t updated_at_end = 0;
  bool pending_after = false;
};

outlived optimizer_gone_first(bool deferred) {
  comm::thread_world tw(1, std::chrono::seconds(30));
  outlived out;
  tw.run([&](comm::threads& c) {
    context ctx({.device_bytes = 8 << 20});
    std::vector<layer_spec> specs;
    for (std::size_t i = 0; i < sizes.size(); ++i)
      specs.push_back({"L" + std::to_string(i), sizes[i]});
    zero_executor<comm::threads, zero0, prefetch::lookahead<1>> ex(ctx, c, specs);
    for (std::size_t i = 0; i < sizes.size(); ++i) ex.set_params(i, initial(i));
    std::mutex mutex;
    std::size_t begun = 0;
    {
      optim::zero_adam opt(ex, optim::adam_params{});
      opt.set_update_guard([&](std::size_t) {
        std::lock_guard lock(mutex);
        ++begun;
      });
      float act = 0;
      ex.forward([&](std::size_t i, const float* w, std::size_t n) {
        forward_layer(0, 0, i, w, n, act);
      });
      ex.backward([&](std::size_t i, const float* w, float* dw, std::size_t n) {
        backward_layer(0, 0, i, w, dw, n, act, 1.0f);
      });
      opt.step({.deferred = deferred});
    }  // the optimizer goes; a deferred update still refers to it
    {
      std::lock_guard lock(mutex);
      out.updated_at_end = begun;
    }
    out.pending_after = ex.step_deferred();
    ex.sync();
    for (std::size_t i = 0; i < sizes.size(); ++i) out.w.push_back(ex.params(i));
  });
  return out;
}

}  // namespace

TEST_CASE("an optimizer destroyed before its executor ends its deferred step's updates first",
          "[zero][adam][deferred]") {
  // ~zero_adam waits for the updates (every layer's has run when it returns) and leaves the
  // step pending for the executor's sync(), which reports its outcome; the parameters are the
  // step at once's, bitwise. (Under ASan, an update still running would read a freed optimizer.)
  const auto at_once = optimizer_gone_first(false);
  const auto deferred = optimizer_gone_first(true);
  CHECK(deferred.updated_at_end == sizes.size());
  CHECK(deferred.pending_after);
  CHECK_FALSE(at_once.pending_after);
  REQUIRE(deferred.w.size() == sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    CHECK(same_bits(deferred.w[i], at_once.w[i]));
    CHECK_FALSE(same_bits(deferred.w[i], initial(i)));
  }
}

TEST_CASE("zero_adam refuses what does not fit and what does not match", "[zero][adam]") {
  comm::thread_world tw(1, std::chrono::seconds(30));
  std::string budget_message, mismatch, twice;
  bool lr_set = false, lr_refused = false;
  tw.run([&](comm::threads& c) {
    // Parameters and gradients fit the device; with m and v they do not.
    context ctx({.device_bytes = 320 << 10});  // the executor plans 288 KiB
    std::vector<layer_spec> specs = {{"big", 8 << 10}};
    zero_executor<comm::threads, zero3, prefetch::lookahead<1>> ex(ctx, c, specs);
    try {
      optim::zero_adam opt(ex, optim::adam_params{});
    } catch (const out_of_budget& e) {
      budget_message = e.what();
    }
    context roomy({.device_bytes = 8 << 20});
    zero_executor<comm::threads, zero3, prefetch::lookahead<1>> ex2(roomy, c, specs);
    try {
      optim::zero_adam opt(ex2, std::vector<optim::adam_params>(2));
    } catch (const config_error& e) {
      mismatch = e.what();
    }
    optim::zero_adam opt(ex2, optim::adam_params{});
    opt.set_lr(0.25f);
    lr_set = opt.params(0).lr == 0.25f;
    try {
      opt.set_lr(-1.0f);
    } catch (const config_error&) {
      lr_refused = opt.params(0).lr == 0.25f;
    }
    auto u = opt.update_fn();
    std::vector<float> p(8 << 10), g(8 << 10);
    u(0, p.data(), g.data(), p.size());
    try {
      u(0, p.data(), g.data(), p.size());
    } catch (const config_error& e) {
      twice = e.what();
    }
  });
  INFO(budget_message);
  CHECK(budget_message.find("device") != std::string::npos);
  CHECK(budget_message.find("Adam m and v") != std::string::npos);
  CHECK(mismatch.find("2 sets of hyper-parameters for 1 layers") != std::string::npos);
  CHECK(twice.find("updated twice") != std::string::npos);
  CHECK(lr_set);
  CHECK(lr_refused);
}
