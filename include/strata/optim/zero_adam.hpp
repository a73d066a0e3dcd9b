// strata/optim/zero_adam.hpp — Adam for the ZeRO executor: this rank's optimizer state, on the
// tier its bundle says, and the step with clipping and loss scaling.
//
// What lives here: zero_adam<Executor>, which holds Adam's m and v for this rank's part of
// every layer (its shard for stages 1-3, everything for stage 0: executor.part_numel(i)), and
// the plain types its step() takes and returns (step_options, step_result). The executor's
// fp32 parameters are the master weights; no second copy is kept. What does not: the
// arithmetic (adam.hpp, device_adam.cuh), the norm and the scaler (grad_stats.hpp,
// loss_scaler.hpp), streaming state from NVMe (streamed_adam.hpp, which this uses).
//
//   zero_executor<comm::threads, zero3_infinity, prefetch::lookahead<2>> ex(ctx, comm, layers);
//   optim::zero_adam opt(ex, optim::adam_params{.lr = 3e-4f, .weight_decay = 0.1f});
//   auto scaler = optim::loss_scaler::dynamic();
//   ex.forward(f);  ex.backward(g);                       // gradients averaged, at home
//   auto r = opt.step(ex, {.max_grad_norm = 1.0, .scaler = &scaler});  // r.norm, r.skipped
//   // or, with no clipping and no skipping:  ex.backward(g, opt.update_fn());  (fused)
//
// Where the state lives, by the bundle's home tier:
//   device, pinned, host   m and v in memory on that tier, updated in place by adam_update
//                          (host SIMD; the emulated device of the host build is host memory).
//                          A device home in a CUDA build needs the device kernel
//                          (optim/device_adam.cuh): that path is compiled by nvcc only, and
//                          elsewhere the constructor throws config_error saying so.
//   nvme (zero3_infinity)  m and v on NVMe, streamed per layer through a fixed set of pinned
//                          buffers (streamed_adam with the executor's parameters as master
//                          weights): each layer's update reads its m and v in sub-groups,
//                          updates and writes them back in a pipeline, and commits that layer's
//                          new m and v as new versions when its update returned; they become
//                          current only once the executor's write of the layer's new
//                          parameters home has succeeded (update::home_written; streamed_adam::
//                          prepare_group). So a layer commits its parameters and moments
//                          together: a failure anywhere in its update or in that write leaves
//                          the layer wholly at the previous step (the error reaches the caller
//                          at the next sync). Layers are their own transactions: those updated
//                          before the failure stay updated.
//
// step(ex, options): measures this rank's gradient slices (measure_gradient, with the loss
// scaler's 1/scale and options.grad_multiplier as multiplier) — read back from home, or taken
// as they landed when the step's last backward was given watch(options) — sums them over the ranks
// (all_reduce_stats: every rank gets the same bits), and then either skips the step — a
// non-finite gradient anywhere (with a scaler, when its update() says so; it also backs the
// dynamic scale off) — or runs ex.step(update_fn(s)) with s = multiplier * clip coefficient.
// t() counts applied steps only. update_fn(s) is one step's update, for ex.step(u) or the fused
// ex.backward(g, u) (which cannot clip or skip: no norm is known before the first layer is
// updated); t() advances when it has updated every layer.
//
// A deferred step (step_options::deferred): the norm, the skip and the clip coefficient are
// decided in step(), and the update runs during the next ex.forward(), layer i just before the
// forward needs it, on the executor's optimizer queue (zero_executor::defer_step) — so with an
// NVMe home the streamed moments, shards and gradients move under the forward's compute. The
// result is bitwise that of the step at once. m(), v(), set_moments(), moment_home() and
// set_t() end a pending step first.
//
// Gradient accumulation: backward(g) for the first micro-batch, backward(g,
// grad_mode::accumulate) for the others, then step with options.grad_multiplier = 1 / micro-
// batches (the sum at home becomes the mean, for the norm as for the update).
#pragma once

#include <strata/optim/adam.hpp>
#include <strata/optim/grad_stats.hpp>
#include <strata/optim/loss_scaler.hpp>
#include <strata/optim/streamed_adam.hpp>
#include <strata/schedule/executor.hpp>

#if defined(__CUDACC__)
#  include <strata/optim/device_adam.cuh>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace optim {

/// What zero_adam::step does besides the update.
struct step_options {
  /// Clip the global gradient norm to this (<= 0: no clipping).
  double max_grad_norm = 0.0;
  /// Loss scaling: the gradients are unscaled by its grad_multiplier(), and its update() decides
  /// whether a step with Inf/NaN gradients is skipped (it always is). Null: no scaling, and a
  /// non-finite gradient still skips the step.
  loss_scaler* scaler = nullptr;
  /// A further factor on the gradients, e.g. 1 / micro-batches with gradient accumulation.
  float grad_multiplier = 1.0f;
  /// true: the update runs under the next forward (zero_executor::defer_step: layer i is
  /// updated while the forward computes the layers before it), so the step's IO overlaps
  /// compute. The same bits as the step at once; the norm and the skip are decided now.
  bool deferred = false;
};

struct step_result {
  double norm = 0.0;         // global L2 norm of the (unscaled, multiplied) gradient
  float coefficient = 1.0f;  // clip coefficient applied (1: not clipped)
  bool skipped = false;      // true: Inf/NaN found, nothing was updated
};

struct zero_adam_config {
  /// NVMe home: elements per streamed sub-group (streamed_adam_config::sub_group; a multiple of
  /// the NVMe checksum block / 4). Pinned memory: 4 x sub_group x (m, v) x 4 bytes at most.
  std::size_t sub_group = std::size_t{1} << 20;
  simd_level simd = simd_level::automatic;
  unsigned threads = 0;
};

template <class Executor>
class zero_adam {
public:
  using executor_type = Executor;
  using bundle_type = typename Executor::bundle_type;
  using home_tier = typename bundle_type::home_tier;
  static constexpr bool streamed = home_tier::kind == tier_kind::file;
  static constexpr bool on_real_device = home_tier::id == tier_id::device && cuda_enabled;

  /// The same hyper-parameters for every layer.
  zero_adam(Executor& ex, const adam_params& params, const zero_adam_config& config = {},
            std::string name = "adam")
      : zero_adam(ex, std::vector<adam_params>(ex.size(), params), config, std::move(name)) {}
  /// Hyper-parameters per layer (lr and weight decay per layer index): one per layer.
  zero_adam(Executor& ex, std::vector<adam_params> per_layer, const zero_adam_config& config = {},
            std::string name = "adam");
  /// Hyper-parameters per layer from a function of the layer index.
  zero_adam(Executor& ex, const std::function<adam_params(std::size_t)>& per_layer,
            const zero_adam_config& config = {}, std::string name = "adam")
      : zero_adam(ex, tabulate(ex, per_layer), config, std::move(name)) {}

  zero_adam(const zero_adam&) = delete;
  zero_adam& operator=(const zero_adam&) = delete;
  /// A step deferred to the executor's next forward updates through this optimizer: its
  /// updates end here (a failure stays the executor's to report), so an executor that
  /// outlives its optimizer (one declared before it) never runs an update on a freed one.
  ~zero_adam() { ex_.wait_deferred(); }

  /// Applied steps; the next is t() + 1. A deferred step counts once its last layer is
  /// updated (during the next forward).
  std::uint64_t t() const noexcept { return t_; }
  const adam_params& params(std::size_t layer) const { return params_.at(layer); }
  /// For learning-rate schedules: every layer's lr becomes `lr` from the next step on
  /// (config_error, and nothing changes, unless it is finite and >= 0).
  void set_lr(float lr) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      adam_params p = params_[i];
      p.lr = lr;
      p.validate(where() + "set_lr for layer '" + ex_.layer(i).name + "'");
    }
    for (auto& p : params_) p.lr = lr;
  }
  /// Replaces layer i's hyper-parameters from the next step on (validated).
  void set_params(std::size_t layer, const adam_params& p) {
    p.validate(where() + "set_params for layer '" + ex_.layer(layer).name + "'");
    params_.at(layer) = p;
  }
  /// The executor's plan plus this optimizer's state and buffers (checked in the constructor).
  const memory_plan& plan() const noexcept { return plan_; }
  /// This optimizer's own lines for `ex` (m and v on the home tier; for an NVMe home the
  /// streamed state's buffers and NVMe bytes), as the constructor plans them. Handed to the
  /// executor's plan extension, they are checked with the executor's lines, once; the
  /// constructor then finds them in ex.plan() and does not add or check them again.
  static memory_plan plan_for(Executor& ex, const zero_adam_config& config = {},
                              const std::string& name = "adam");
  /// The NVMe home's streaming optimizer (null for in-memory homes).
  const streamed_adam* stream() const noexcept { return stream_.get(); }

  /// This rank's m and v of layer i (part_numel(i) values), copied to the host.
  std::vector<float> m(std::size_t i) { return moment(i, 0); }
  std::vector<float> v(std::size_t i) { return moment(i, 1); }
  /// Restores this rank's m and v of layer i (part_numel(i) values each) and the step count:
  /// what a checkpoint's load does, after which the next step is bitwise the one the saved
  /// run took next.
  void set_moments(std::size_t i, std::span<const float> m, std::span<const float> v);
  /// Where this rank's m (which = 0) or v (1) of layer i lives, for a reader on another thread
  /// (see home_source); empty for a device home in a CUDA build or a layer with no element here.
  home_source moment_home(std::size_t i, int which) {
    end_deferred();
    if (i >= part_.size() || part_[i] == 0) return {};
    if constexpr (streamed) {
      return {nullptr, stream_->moment_handle(i, which)};
    } else if constexpr (home_tier::host_accessible) {
      return {static_cast<const float*>((which == 0 ? m_ : v_)[i].data()), 0};
    } else {
      return {};
    }
  }
  /// Called with layer i before an update touches layer i's parameters or moments; a snapshot
  /// still reading them in the background (checkpoint/saver.hpp) waits there. Empty: none.
  void set_update_guard(std::function<void(std::size_t)> guard) { guard_ = std::move(guard); }
  void set_t(std::uint64_t t) {
    end_deferred();
    t_ = t;
    if (stream_) stream_->set_t(t);
  }

  /// One step's update, u(i, params, grads, n), for ex.step(u) or ex.backward(g, u): layer i's
  /// state at step t() + 1 with gradient multiplier s. Each layer is updated once; t() advances
  /// when all have been. Copies share the step.
  class update {
  public:
    void operator()(std::size_t i, float* p, const float* g, std::size_t n) const {
      s_->opt->apply(*s_, i, p, g, n);
    }
    /// The executor's word that layer i's updated parameters are on their way home, and
    /// `written` the event of that write: an NVMe home's new moments wait for it (see the top).
    void home_written(std::size_t i, const event& written) const {
      if constexpr (streamed) s_->opt->stream_->adopt_group_after(i, written);
    }

  private:
    friend class zero_adam;
    struct state {
      zero_adam* opt;
      std::uint64_t t;
      float s;
      std::vector<bool> done;
      std::size_t count = 0;
    };
    explicit update(std::shared_ptr<state> s) : s_(std::move(s)) {}
    std::shared_ptr<state> s_;
  };
  update update_fn(float grad_multiplier = 1.0f) {
    return update(std::make_shared<typename update::state>(typename update::state{
        this, t_ + 1, grad_multiplier, std::vector<bool>(ex_.size(), false), 0}));
  }

  /// For the step's last backward: ex.backward(g, mode, opt.watch(options)) measures each
  /// layer's gradient as it lands at home, with the multiplier `options` give, and the step()
  /// with the same options uses those measures instead of reading every gradient back from
  /// home (for an NVMe home, 4 bytes per parameter of IO that nothing overlaps). The same bits
  /// either way: the measures are summed in layer order, as step() would.
  auto watch(const step_options& options) {
    watched_.assign(ex_.size(), {});
    watched_in_.assign(ex_.size(), 0);
    watched_multiplier_ = multiplier_of(options);
    return [this](std::size_t i, const float* g, std::size_t n, tier_id where) {
      watched_[i] = measure_slice(g, n, where, watched_multiplier_);
      watched_in_[i] = ex_.backwards();  // the backward running now
    };
  }

  /// Whether the last step() took its norm from watch()'s measures (else it read the
  /// gradients back from home).
  bool last_norm_watched() const noexcept { return last_watched_; }

  /// The norm, the skip decision and the update; see the top. `ex` is the executor this
  /// optimizer was made for. A collective: every rank calls it.
  step_result step(Executor& ex, const step_options& options = {});
  step_result step(const step_options& options = {}) { return step(ex_, options); }

private:
  static std::vector<adam_params> tabulate(Executor& ex,
                                           const std::function<adam_params(std::size_t)>& f) {
    std::vector<adam_params> out;
    for (std::size_t i = 0; i < ex.size(); ++i) out.push_back(f(i));
    return out;
  }
  std::string where() const { return "zero_adam '" + name_ + "': "; }
  static float multiplier_of(const step_options& o) {
    return (o.scaler ? o.scaler->grad_multiplier() : 1.0f) * o.grad_multiplier;
  }
  // measure_gradient of n values at g on tier `where` (copied to the host first when the host
  // cannot read them).
  grad_stats measure_slice(const float* g, std::size_t n, tier_id where, float multiplier) {
    if (cuda_enabled && where == tier_id::device && n) {
      std::vector<float> host(n);
      ctx_.copy(host.data(), tier_id::host, g, tier_id::device, n * sizeof(float),
                "gradient for the norm")
          .wait();
      return measure_gradient(std::span<const float>(host), multiplier);
    }
    return measure_gradient(std::span<const float>(g, n), multiplier);
  }
  // The measures watch() took, summed in layer order, if the executor's last backward took
  // them for every layer, with this multiplier (then they are used up). Else none: a backward
  // after the watched one, or a watch the backward was not given, leaves step() to measure.
  std::optional<grad_stats> take_watched(float multiplier) {
    const std::vector<std::uint64_t> in = std::exchange(watched_in_, {});
    if (in.empty() || multiplier != watched_multiplier_) return std::nullopt;
    grad_stats sum;
    for (std::size_t i = 0; i < watched_.size(); ++i) {
      if (in[i] == 0 || in[i] != ex_.backwards()) return std::nullopt;
      sum += watched_[i];
    }
    return sum;
  }
  // A step deferred to the executor's next forward ends before the state is read or set.
  void end_deferred() {
    if (ex_.step_deferred()) ex_.sync();
  }
  // This rank's part of each layer, as a streamed_adam group ("h.0[rank 1]", part_numel).
  static std::vector<group_spec> groups_of(Executor& ex) {
    std::vector<group_spec> groups;
    for (std::size_t i = 0; i < ex.size(); ++i)
      groups.push_back({ex.layer(i).name + "[rank " + std::to_string(ex.comm().rank()) + "]",
                        ex.part_numel(i)});
    return groups;
  }
  static streamed_adam_config stream_config(const zero_adam_config& config) {
    streamed_adam_config sc;
    sc.sub_group = config.sub_group;
    sc.master_on_nvme = false;
    sc.simd = config.simd;
    sc.threads = config.threads;
    return sc;
  }
  void apply(typename update::state& st, std::size_t i, float* p, const float* g, std::size_t n);
  std::vector<float> moment(std::size_t i, int which);

  Executor& ex_;
  context& ctx_;
  std::string name_;
  std::vector<adam_params> params_;
  zero_adam_config config_;
  std::atomic<std::uint64_t> t_ = 0;  // advanced by the update, on the executor's queue when deferred
  memory_plan plan_;
  std::vector<std::size_t> part_;             // part_numel of each layer
  std::vector<buffer> m_, v_;                 // in-memory homes: per layer, on the home tier
  std::unique_ptr<streamed_adam> stream_;     // nvme home
  std::function<void(std::size_t)> guard_;    // set_update_guard
  std::vector<grad_stats> watched_;           // watch(): per layer, this rank's measure
  std::vector<std::uint64_t> watched_in_;     // per layer: the backward that measured it
  float watched_multiplier_ = 1.0f;
  bool last_watched_ = false;
};

// ---- definitions ------------------------------------------------------------------------------

template <class Executor>
zero_adam<Executor>::zero_adam(Executor& ex, std::vector<adam_params> per_layer,
                               const zero_adam_config& config, std::string name)
    : ex_(ex), ctx_(ex.ctx()), name_(std::move(name)), params_(std::move(per_layer)),
      config_(config) {
  if (params_.size() != ex_.size())
    throw config_error(where() + std::to_string(params_.size()) +
                       " sets of hyper-parameters for " + std::to_string(ex_.size()) + " layers");
  for (std::size_t i = 0; i < params_.size(); ++i)
    params_[i].validate(where() + "layer '" + ex_.layer(i).name + "'");
  if constexpr (on_real_device) {
#if !defined(__CUDACC__)
    throw config_error(where() + "the executor's home is the GPU, and this translation unit "
                       "was not compiled by nvcc: the device update (optim/device_adam.cuh) "
                       "is a CUDA kernel. Compile it as a .cu file, or use a host, pinned or "
                       "nvme home (ZeRO-Offload / ZeRO-Infinity)");
#endif
  }

  constexpr std::size_t f = sizeof(float);
  for (std::size_t i = 0; i < ex_.size(); ++i) part_.push_back(ex_.part_numel(i));

  // The plan: the executor's, and this optimizer's own, checked before anything is allocated
  // — unless the executor's plan has them already (its plan extension), and so was checked
  // with them.
  const memory_plan own = plan_for(ex_, config_, name_);
  if (ex_.plan().includes(own)) {
    plan_ = ex_.plan();
  } else {
    plan_.add(ex_.plan());
    plan_.add(own);
    plan_.check(ctx_, where() + "optimizer of '" + ex_.layer(0).name + "'...");
  }

  if constexpr (streamed) {
    stream_ = std::make_unique<streamed_adam>(ctx_, groups_of(ex_), stream_config(config_), name_);
  } else {
    for (std::size_t i = 0; i < ex_.size(); ++i) {
      const std::size_t bytes = part_[i] * f;
      for (auto* list : {&m_, &v_}) {
        if (!bytes) {  // no real element of this layer on this rank
          list->emplace_back();
          continue;
        }
        list->push_back(ctx_.allocate(home_tier::id, bytes,
                                      name_ + (list == &m_ ? ".m " : ".v ") + ex_.layer(i).name));
#if STRATA_ENABLE_CUDA
        if constexpr (home_tier::id == tier_id::device)
          check_cuda(cudaMemset(list->back().data(), 0, bytes), "zeroing Adam moments");
        else
#endif
          std::memset(list->back().data(), 0, bytes);
      }
    }
  }
}

template <class Executor>
memory_plan zero_adam<Executor>::plan_for(Executor& ex, const zero_adam_config& config,
                                          const std::string& name) {
  memory_plan plan;
  if constexpr (streamed) {
    const memory_plan stream =
        streamed_adam::plan_for(ex.ctx(), groups_of(ex), stream_config(config), name);
    for (const auto& l : stream.lines()) plan.add(l.tier, name + ": " + l.what, l.bytes);
  } else {
    std::size_t total = 0;
    for (std::size_t i = 0; i < ex.size(); ++i) total += ex.part_numel(i);
    plan.add(home_tier::id, name + ": Adam m and v (this rank's part, all layers)",
             2 * total * sizeof(float));
  }
  return plan;
}

template <class Executor>
void zero_adam<Executor>::apply(typename update::state& st, std::size_t i, float* p,
                                const float* g, std::size_t n) {
  if (i >= part_.size() || n != part_[i])
    throw config_error(where() + "update of layer " + std::to_string(i) + " with " +
                       std::to_string(n) + " elements; this rank's part of it has " +
                       (i < part_.size() ? std::to_string(part_[i]) : std::string("none")));
  if (st.done[i])
    throw config_error(where() + "layer '" + ex_.layer(i).name + "' updated twice by one "
                       "update_fn(): make one per step");
  if (guard_) guard_(i);
  if (n) {
    const adam_step_scalars k = adam_step_scalars::make(params_[i], st.t, st.s);
    if constexpr (streamed) {
      // Two-phase: the new m and v become current once the executor's write of these
      // parameters home has succeeded (home_written), so a failed write leaves the layer's
      // parameters and moments both at the previous step.
      stream_->prepare_group<float>(i, k, std::span<float>(p, n), std::span<const float>(g, n));
    } else if constexpr (on_real_device) {
#if defined(__CUDACC__)
      const device_adam_tensor<float> one{p, static_cast<float*>(m_[i].data()),
                                          static_cast<float*>(v_[i].data()), g, nullptr, n};
      adam_update_device<float, no_copy>(k, std::span<const device_adam_tensor<float>>(&one, 1),
                                         ctx_.compute_stream());
#endif
    } else {
      adam_update<float>(k, std::span<float>(p, n),
                         std::span<float>(static_cast<float*>(m_[i].data()), n),
                         std::span<float>(static_cast<float*>(v_[i].data()), n),
                         std::span<const float>(g, n), nullptr, config_.simd, config_.threads);
    }
  }
  st.done[i] = true;
  if (++st.count == st.done.size() && st.t > t_) t_ = st.t;
}

template <class Executor>
step_result zero_adam<Executor>::step(Executor& ex, const step_options& options) {
  if (&ex != &ex_)
    throw config_error(where() + "step() with an executor other than the one it was made for");
  const float multiplier = multiplier_of(options);
  grad_stats local;
  const std::optional<grad_stats> watched = take_watched(multiplier);
  last_watched_ = watched.has_value();
  if (watched) {
    local = *watched;
    ex_.sync();  // the gradients are home (as for_each_grad_shard would wait)
  } else {
    ex_.for_each_grad_shard([&](std::size_t, const float* g, std::size_t n) {
      // The GPU's slice is measured on the host (exact order).
      local += measure_slice(g, n, on_real_device ? tier_id::device : tier_id::host, multiplier);
    });
  }
  const grad_stats all = all_reduce_stats(ex_.comm(), local);
  step_result r;
  r.norm = global_norm(all);
  const bool take = options.scaler ? options.scaler->update(!all.finite()) : all.finite();
  if (!take) {
    r.skipped = true;
    return r;
  }
  r.coefficient = clip_coefficient(r.norm, options.max_grad_norm);
  if (options.deferred)
    ex_.defer_step(update_fn(multiplier * r.coefficient));
  else
    ex_.step(update_fn(multiplier * r.coefficient));
  return r;
}

template <class Executor>
void zero_adam<Executor>::set_moments(std::size_t i, std::span<const float> m,
                                      std::span<const float> v) {
  if (i >= part_.size() || m.size() != part_[i] || v.size() != part_[i])
    throw config_error(where() + "set_moments of layer " + std::to_string(i) + " with " +
                       std::to_string(m.size()) + " and " + std::to_string(v.size()) +
                       " values; this rank's part of it has " +
                       (i < part_.size() ? std::to_string(part_[i]) : std::string("none")));
  end_deferred();
  if (part_[i] == 0) return;
  if constexpr (streamed) {
    stream_->set_moments(i, m, v);
  } else {
    for (int which = 0; which < 2; ++which) {
      void* dst = (which == 0 ? m_ : v_)[i].data();
      const float* src = (which == 0 ? m : v).data();
      if constexpr (on_real_device) {
        ex_.sync();
        ctx_.copy(dst, tier_id::device, src, tier_id::host, part_[i] * sizeof(float),
                  "restore Adam moment")
            .wait();
      } else {
        std::memcpy(dst, src, part_[i] * sizeof(float));
      }
    }
  }
}

template <class Executor>
std::vector<float> zero_adam<Executor>::moment(std::size_t i, int which) {
  if (i >= part_.size())
    throw config_error(where() + "layer " + std::to_string(i) + " of " +
                       std::to_string(part_.size()));
  end_deferred();
  if constexpr (streamed) {
    return which == 0 ? stream_->m(i) : stream_->v(i);
  } else {
    std::vector<float> out(part_[i]);
    const void* src = (which == 0 ? m_ : v_)[i].data();
    if (out.empty()) return out;
    if constexpr (on_real_device) {
      ex_.sync();
      ctx_.copy(out.data(), tier_id::host, src, tier_id::device, out.size() * sizeof(float),
                "read Adam moment")
          .wait();
    } else {
      std::memcpy(out.data(), src, out.size() * sizeof(float));
    }
    return out;
  }
}

}  // namespace optim
STRATA_NAMESPACE_END
