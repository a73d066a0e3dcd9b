// zero_adam with an NVMe home (ZeRO-Infinity: parameter shards and Adam's m and v on NVMe, m
// and v streamed per layer through pinned buffer sets) == unsharded single-rank Adam, bitwise,
// for 1, 2 and 4 ranks and both IO engines: with clipping, fused into the backward, with
// gradient accumulation, with a skipped (Inf) step, and deferred to the next forward (whose
// schedule is observed: the last layer's update runs while the forward computes layer 0; a
// failed update stops the forward at its layer; the forward takes each layer's new parameters
// from its update, reading none from NVMe, and a failed write home of them stops it as a failed
// read would). The streamed IO shows in the trace, the
// peaks stay inside the plan. An IO fault in the middle of a step — in a streamed read or write
// of m and v, or in the executor's write of a layer's parameters home — reaches the caller,
// leaves every layer either wholly updated or wholly as it was (parameters, m and v together),
// and the optimizer steps on.
// ctest-timeout: 600
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include "zero_adam_model.hpp"

#include <strata/io/counting.hpp>
#include <strata/io/faulty.hpp>

using namespace strata;
using namespace io_test;
using namespace zero_adam_model;

TEST_CASE("zero_adam with NVMe homes == unsharded Adam, bitwise", "[zero][adam][nvme]") {
  const std::vector<scenario> scenarios = {
      {.steps = 3, .max_norm = 5.0},
      {.steps = 2, .fused = true},
      {.steps = 2, .max_norm = 5.0, .micro = 2},
      {.steps = 3, .max_norm = 5.0, .inf_step = 2, .scaler = true},
      // Deferred to the next forward (the overlapped step): the same bits.
      {.steps = 3, .max_norm = 5.0, .deferred = true},
      {.steps = 2, .max_norm = 5.0, .micro = 2, .deferred = true},
      {.steps = 3, .max_norm = 5.0, .inf_step = 2, .scaler = true, .deferred = true},
      // The norm taken as the gradients land, not read back from NVMe: the same bits.
      {.steps = 3, .max_norm = 5.0, .micro = 2, .deferred = true, .watched = 1},
  };
  for (const auto& engine : engine_kinds())
    for (int world : {1, 2, 4})
      for (const auto& sc : scenarios) {
        INFO("engine " << engine << ", world " << world << ", micro-batches " << sc.micro
                       << (sc.fused ? ", fused" : "") << (sc.inf_step ? ", Inf injected" : "")
                       << (sc.deferred ? ", deferred" : ""));
        const auto ref = reference(world, sc);
        const auto cfg = [&](int rank) { return toy_nvme_config(rank, engine); };
        check_same(train<zero3_infinity, 2>(world, sc, cfg), ref);
        // bf16 working parameters: the walks see the masters rounded to bf16.
        if (!sc.inf_step && engine == engine_kinds().front())
          check_same(train<zero3_infinity_bf16, 2>(world, sc, cfg), reference(world, sc, true));
        if (world == 2 && sc.micro == 1) check_same(train<zero3_infinity, 1>(world, sc, cfg), ref);
      }
}

TEST_CASE("the NVMe home's optimizer streams m and v in the background", "[zero][adam][nvme]") {
  comm::thread_world tw(1, std::chrono::seconds(30));
  std::vector<span> spans;
  std::size_t pinned_sets = 0;
  tw.run([&](comm::threads& c) {
    context ctx(toy_nvme_config(0, "posix"));
    std::vector<layer_spec> specs;
    // Layers larger than a sub-group (16 Ki elements), so each update is a pipeline of several.
    for (std::size_t i = 0; i < 3; ++i) specs.push_back({"big" + std::to_string(i), 50000});
    zero_executor<comm::threads, zero3_infinity, prefetch::lookahead<1>> ex(ctx, c, specs);
    optim::zero_adam opt(ex, optim::adam_params{}, {.sub_group = 16 << 10});
    ex.forward([](std::size_t, const float*, std::size_t) {});
    ex.backward([](std::size_t, const float*, float* dw, std::size_t n) {
      for (std::size_t k = 0; k < n; ++k) dw[k] = 0.001f * float(k % 7);
    });
    ctx.trace().clear();
    opt.step(ex);
    ex.sync();
    spans = ctx.trace().spans();
    pinned_sets = opt.stream()->plan().peak(tier_id::pinned);
  });
  std::size_t reads = 0, writes = 0, updates = 0;
  for (auto& s : spans) {
    reads += s.kind == span_kind::io_read && s.queue.starts_with("adam io-read");
    writes += s.kind == span_kind::io_write && s.queue.starts_with("adam io-write");
    updates += s.kind == span_kind::optimizer;
  }
  CHECK(updates == 3 * 4);  // 50000 elements: 4 sub-groups of 16 Ki per layer
  CHECK(reads == 2 * updates);  // m and v (the master weights are the executor's parameters)
  CHECK(writes == 2 * updates);
  CHECK(pinned_sets > 0);
}

TEST_CASE("a deferred step updates layer i while the forward computes the layers before it",
          "[zero][adam][nvme][deferred]") {
  comm::thread_world tw(1, std::chrono::seconds(120));
  bool overlapped = false, pending_before = false, pending_after = true;
  std::vector<float> seen;
  std::size_t queued_updates = 0;
  std::string failure;
  std::vector<float> after_failure;
  tw.run([&](comm::threads& c) {
    context ctx(toy_nvme_config(0, "posix"));
    const std::size_t layers = 4, n = 5000;
    std::vector<layer_spec> specs;
    for (std::size_t i = 0; i < layers; ++i) specs.push_back({"L" + std::to_string(i), n});
    zero_executor<comm::threads, zero3_infinity, prefetch::lookahead<1>> ex(ctx, c, specs);
    for (std::size_t i = 0; i < layers; ++i) ex.set_params(i, std::vector<float>(n, 1.0f));
    auto grads_of_one = [](std::size_t, const float*, float* dw, std::size_t m) {
      std::fill(dw, dw + m, 1.0f);
    };
    ex.forward([](std::size_t, const float*, std::size_t) {});
    ex.backward(grads_of_one);
    // The last layer's update waits (bounded) for the forward to have computed layer 0: it
    // can only see that if it runs under the forward. Step at once, it would time out.
    std::mutex mutex;
    std::condition_variable cv;
    bool layer0_computed = false;
    ctx.trace().clear();
    ex.defer_step([&](std::size_t i, float* w, const float* g, std::size_t m) {
      if (i == layers - 1) {
        std::unique_lock lock(mutex);
        overlapped = cv.wait_for(lock, std::chrono::seconds(60), [&] { return layer0_computed; });
      }
      for (std::size_t k = 0; k < m; ++k) w[k] -= g[k];
    });
    pending_before = ex.step_deferred();
    seen.assign(layers, -1.0f);
    ex.forward([&](std::size_t i, const float* w, std::size_t) {
      seen[i] = w[0];  // every layer updated before the forward reads it: 1 - 1
      if (i == 0) {
        std::lock_guard lock(mutex);
        layer0_computed = true;
        cv.notify_all();
      }
    });
    pending_after = ex.step_deferred();
    for (auto& sp : ctx.trace().spans())
      queued_updates += sp.queue == "optimizer" && sp.kind == span_kind::optimizer;

    // A failed update: the forward stops at its layer with its error; the layers before it are
    // updated, it and those after are not, and the executor goes on.
    ex.backward(grads_of_one);
    ex.defer_step([&](std::size_t i, float* w, const float* g, std::size_t m) {
      if (i == 2) throw std::runtime_error("update of layer 2 refused (test)");
      for (std::size_t k = 0; k < m; ++k) w[k] -= g[k];
    });
    try {
      ex.forward([](std::size_t, const float*, std::size_t) {});
    } catch (const std::runtime_error& e) {
      failure = e.what();
    }
    for (std::size_t i = 0; i < layers; ++i) after_failure.push_back(ex.params(i)[0]);
    ex.forward([](std::size_t, const float*, std::size_t) {});
  });
  CHECK(pending_before);
  CHECK_FALSE(pending_after);
  CHECK(overlapped);
  CHECK(seen == std::vector<float>(4, 0.0f));
  CHECK(queued_updates == 4);
  CHECK(failure.find("layer 2 refused") != std::string::npos);
  CHECK(after_failure == std::vector<float>{-1.0f, -1.0f, 0.0f, 0.0f});
}

TEST_CASE("the pinned memory of a ZeRO-Infinity step does not grow with the model",
          "[zero][adam][nvme]") {
  // The pinned lines are the schedule's: the optimizer's scratch (one layer's shard, gradient
  // and bf16 copy), Adam's four sets of one sub-group, the staging ring, the bounce buffers.
  // Four times the layers: the same pinned peak, four times the NVMe bytes.
  comm::thread_world tw(1, std::chrono::seconds(30));
  std::size_t pinned4 = 0, pinned16 = 0, nvme4 = 0, nvme16 = 0;
  tw.run([&](comm::threads& c) {
    context ctx(toy_nvme_config(0, "posix"));
    auto plan_of = [&](std::size_t layers) {
      std::vector<layer_spec> specs;
      for (std::size_t i = 0; i < layers; ++i) specs.push_back({"L" + std::to_string(i), 100000});
      using ex_t = zero_executor<comm::threads, zero3_infinity_bf16, prefetch::lookahead<2>>;
      const optim::zero_adam_config oc{.sub_group = 256 << 10};
      ex_t ex(ctx, c, specs, "model", [&](ex_t& e, memory_plan& p) {
        p.add(optim::zero_adam<ex_t>::plan_for(e, oc));
      });
      return ex.plan();
    };
    const memory_plan a = plan_of(4), b = plan_of(16);
    pinned4 = a.peak(tier_id::pinned), pinned16 = b.peak(tier_id::pinned);
    nvme4 = a.peak(tier_id::nvme), nvme16 = b.peak(tier_id::nvme);
  });
  CHECK(pinned4 > 0);
  CHECK(pinned16 == pinned4);
  CHECK(nvme16 >= 4 * nvme4 - (16 << 20));  // padding to checksum blocks aside
}

namespace {

// One step of u on a 4-layer ZeRO-3 NVMe executor, at once (step() then forward) or deferred
// (defer_step() then forward): the NVMe bytes read by the update and by the forward, what the
// forward saw and the parameters after. `fail_write`: the first write after the backward
// (layer 0's parameters going home) fails.
struct fetch_run {
  std::uint64_t step_reads = 0, forward_reads = 0;
  std::vector<std::vector<float>> seen, after;
  std::string error;
};

template <class Bundle>
fetch_run step_then_forward(int world, bool deferred, bool fail_write = false) {
  comm::thread_world tw(world, std::chrono::seconds(60));
  fetch_run out;
  const std::vector<std::size_t> n = {5000, 7000, 3001, 6000};
  tw.run([&](comm::threads& c) {
    auto cfg = toy_nvme_config(c.rank(), "posix");
    io::counting* count = nullptr;
    io::faulty* faults = nullptr;
    cfg.wrap_io_engine = [&](std::unique_ptr<io::engine> e) {
      auto f = std::make_unique<io::faulty>(std::move(e));
      faults = f.get();
      auto k = std::make_unique<io::counting>(std::move(f));
      count = k.get();
      return std::unique_ptr<io::engine>(std::move(k));
    };
    context ctx(cfg);
    std::vector<layer_spec> specs;
    for (std::size_t i = 0; i < n.size(); ++i) specs.push_back({"L" + std::to_string(i), n[i]});
    zero_executor<comm::threads, Bundle, prefetch::lookahead<1>> ex(ctx, c, specs);
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::vector<float> w(n[i]);
      for (std::size_t k = 0; k < n[i]; ++k) w[k] = 0.25f * float(k % 97) + float(i);
      ex.set_params(i, w);
    }
    ex.forward([](std::size_t, const auto*, std::size_t) {});
    ex.backward([](std::size_t i, const auto*, float* dw, std::size_t m) {
      for (std::size_t k = 0; k < m; ++k) dw[k] = 0.001f * float((k + i) % 13);
    });
    auto u = [](std::size_t, float* w, const float* g, std::size_t m) {
      for (std::size_t k = 0; k < m; ++k) w[k] = w[k] * 0.999f - g[k];
    };
    std::vector<std::vector<float>> seen(n.size());
    auto record = [&](std::size_t i, const auto* w, std::size_t m) {
      for (std::size_t k = 0; k < m; ++k) seen[i].push_back(static_cast<float>(w[k]));
    };
    ex.sync();
    if (fail_write) {
      faults->reset_counters();
      faults->add_rule(io::fault_rule::nth(io::io_op::write, 1));
    }
    const std::uint64_t r0 = count->read_bytes();
    std::uint64_t r1 = r0;
    try {
      if (deferred) {
        ex.defer_step(u);
      } else {
        ex.step(u);
        ex.sync();
        r1 = count->read_bytes();
      }
      ex.forward(record);
      ex.sync();
    } catch (const io_error& e) {
      if (c.rank() == 0) out.error = e.what();
      faults->clear();
      return;
    }
    const std::uint64_t r2 = count->read_bytes();
    std::vector<std::vector<float>> after;
    for (std::size_t i = 0; i < n.size(); ++i) after.push_back(ex.params(i));  // a collective
    if (c.rank() != 0) return;
    // Deferred, the update's reads and the forward's are one span: the forward's are what
    // exceeds the reads the same update made at once (the test below compares them).
    out.step_reads = deferred ? r2 - r0 : r1 - r0;
    out.forward_reads = deferred ? 0 : r2 - r1;
    out.seen = seen;
    out.after = after;
  });
  return out;
}

template <class Bundle>
void check_fetch_from_update(int world) {
  INFO("world " << world << (Bundle::narrow_working ? ", bf16 working parameters" : ""));
  const fetch_run at_once = step_then_forward<Bundle>(world, false);
  const fetch_run deferred = step_then_forward<Bundle>(world, true);
  CHECK(at_once.forward_reads > 0);  // at once, the forward reads every layer back
  // Deferred, the update and the forward read no more than the update alone at once.
  CHECK(deferred.step_reads == at_once.step_reads);
  REQUIRE(deferred.seen.size() == at_once.seen.size());
  REQUIRE(deferred.after.size() == at_once.after.size());
  for (std::size_t i = 0; i < at_once.seen.size(); ++i) {
    CHECK(same_bits(deferred.seen[i], at_once.seen[i]));
    CHECK(same_bits(deferred.after[i], at_once.after[i]));
  }
  // The first parameters' write home fails: the forward fails at that layer rather than
  // compute on values that are not home. (One rank: with two, the rank whose next layer was
  // already on its way waits in that layer's all-gather for its peer, which stopped, until
  // the communicator's timeout — the test of that is test_zero's "a rank that throws".)
  if (world == 1) {
    const fetch_run failed = step_then_forward<Bundle>(world, true, true);
    CHECK(failed.error.find("(injected)") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("a forward under a deferred step takes each layer from its update, not from NVMe",
          "[zero][nvme][deferred]") {
  for (int world : {1, 2}) {
    check_fetch_from_update<zero3_infinity>(world);
    check_fetch_from_update<zero3_infinity_bf16>(world);
  }
}

TEST_CASE("an IO fault in a ZeRO-Infinity step leaves each layer old or new, never mixed",
          "[zero][adam][nvme]") {
  const scenario one{.steps = 1, .max_norm = 5.0}, two{.steps = 2, .max_norm = 5.0};
  const auto ref1 = reference(1, one), ref2 = reference(1, two);
  bool hit_optimizer_state = false, hit_param_write = false;
  struct fault_at {
    io::io_op op;
    std::uint64_t nth;
  };
  std::vector<fault_at> faults_at;
  for (std::uint64_t nth : {6, 10, 14, 18, 22, 26}) faults_at.push_back({io::io_op::read, nth});
  // Writes: the streamed m and v, and the executor's write of each layer's parameters home —
  // after which the layer's new moments must not stand alone (zero_adam commits both).
  for (std::uint64_t nth = 1; nth <= 12; ++nth) faults_at.push_back({io::io_op::write, nth});
  for (const fault_at& at : faults_at) {
    const io::io_op op = at.op;  // plain names: lambdas below capture them (clang < 16 cannot
    const std::uint64_t nth = at.nth;  // capture structured bindings)
    INFO((op == io::io_op::read ? "read " : "write ") << nth << " of the step fails");
    comm::thread_world tw(1, std::chrono::seconds(30));
    std::string message = "(no error)";
    outcome got;
    std::uint64_t t_after_fault = 0, injected = 0;
    bool usable = false;
    tw.run([&](comm::threads& c) {
      io::faulty* faults = nullptr;
      auto cfg = toy_nvme_config(0, "posix");
      cfg.wrap_io_engine = [&](std::unique_ptr<io::engine> e) {
        auto f = std::make_unique<io::faulty>(std::move(e));
        faults = f.get();
        return std::unique_ptr<io::engine>(std::move(f));
      };
      context ctx(cfg);
      std::vector<layer_spec> specs;
      for (std::size_t i = 0; i < sizes.size(); ++i)
        specs.push_back({"L" + std::to_string(i), sizes[i]});
      zero_executor<comm::threads, zero3_infinity, prefetch::lookahead<1>> ex(ctx, c, specs);
      for (std::size_t i = 0; i < sizes.size(); ++i) ex.set_params(i, initial(i));
      optim::zero_adam opt(ex, std::function<optim::adam_params(std::size_t)>(params_of),
                           {.sub_group = 16 << 10});
      for (int step = 1; step <= 2; ++step) {
        float act = 0;
        ex.forward([&](std::size_t i, const float* w, std::size_t n) {
          forward_layer(0, 0, i, w, n, act);
        });
        ex.backward([&](std::size_t i, const float* w, float* dw, std::size_t n) {
          backward_layer(0, 0, i, w, dw, n, act, 1.0f);
        });
        if (step == 2) {
          ex.sync();
          faults->reset_counters();
          faults->add_rule(io::fault_rule::nth(op, nth));
        }
        try {
          opt.step(ex, {.max_grad_norm = 5.0});
          ex.sync();
        } catch (const io_error& e) {
          message = e.what();
          // The context's io-read and io-write queues report their last task's failure to
          // every synchronize() until they run another task (exec/work_queue.hpp), and the
          // executor synchronizes before it steps: one small write and read clear them.
          tiered_tensor<float, offloaded_to_nvme> poke(ctx, "poke", {1});
          poke.assign(std::vector<float>{1.0f});
          (void)poke.to_vector();
          // A failed write home is reported once more, by the first read of that tensor
          // (tensor_core: its home keeps the last committed value).
          for (std::size_t i = 0; i < sizes.size(); ++i) try {
              (void)ex.stored_params(i);
            } catch (const io_error&) {
            }
        }
        faults->clear();
      }
      injected = faults->injected();
      t_after_fault = opt.t();
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        got.w.push_back(ex.params(i));
        got.m.push_back(opt.m(i));
        got.v.push_back(opt.v(i));
      }
      // And it steps on.
      opt.step(ex, {.max_grad_norm = 5.0});
      ex.sync();
      usable = opt.t() == t_after_fault + 1;
    });
    INFO(message);
    REQUIRE(injected == 1);
    CHECK(message.find("(injected)") != std::string::npos);
    hit_optimizer_state = hit_optimizer_state || message.find("streamed adam") != std::string::npos;
    hit_param_write = hit_param_write || (op == io::io_op::write &&
                                          message.find(".params") != std::string::npos);
    CHECK(t_after_fault == 1);
    CHECK(usable);
    // Each layer wholly updated or wholly old; for a read fault, layers 0 .. j-1 updated
    // before it and j .. not.
    bool still_new = true;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      INFO("layer " << i);
      const bool is_new = same_bits(got.w[i], ref2.w[i]) && same_bits(got.m[i], ref2.m[i]) &&
                          same_bits(got.v[i], ref2.v[i]);
      const bool is_old = same_bits(got.w[i], ref1.w[i]) && same_bits(got.m[i], ref1.m[i]) &&
                          same_bits(got.v[i], ref1.v[i]);
      CHECK((is_new || is_old));
      if (!is_new) still_new = false;
      // A read fault stops the step at that layer. A write home runs behind the updates, so
      // later layers may be updated (and committed) after an earlier one's write failed.
      if (op == io::io_op::read) CHECK((still_new || is_old));
    }
  }
  CHECK(hit_optimizer_state);  // some fault landed in a streamed read of m or v
  CHECK(hit_param_write);      // and some in a write of a layer's parameters home
}
