// examples/gpt/trainer.hpp — one rank's training of the mini-GPT through strata's ZeRO executor.
//
// What this is: the part of train.cpp that a test and a benchmark also need — the model's
// layers as a strata zero_executor (layer 0 the embeddings and ln_f, layers 1..L the blocks),
// one training step (forward, loss, backward over A micro-batches, then AdamW through
// strata::optim::zero_adam with the gradient norm clipped over every rank's shards), and the
// validation loss. Every rank runs the same code; the communicator joins them.
// What it is not: the command line, printing or files (train.cpp), the kernels (host/).
//
// How the model maps onto the executor (what a newcomer needs to follow train.cpp):
//   layer 0      "embed": wte (V,C), wpe (T,C), ln_f.weight (C), ln_f.bias (C)
//   layer 1+l    "h.l":   block l's twelve tensors (gpt_config.hpp's block_slots)
// The LM head is tied to wte, and wte lives in layer 0, which the forward walk visits first.
// So when layer 0 is gathered in the forward, the trainer keeps a copy of wte and ln_f on the
// compute tier (the "head copy", V*C + 2C floats) for the head at the end of the walk, and the
// head's gradient of them waits in the "head gradient" buffer until the backward walk reaches
// layer 0, where it is added to the embedding's own gradient. Each parameter is still stored,
// sharded and updated exactly once.
//
// Activations, in one buffer on the compute tier (the emulated device in the host build) that
// is a line of the memory plan:
//   x[0..L]      (B,T,C) each: the input of every block, kept from forward to backward
//                (activation checkpointing: block_backward recomputes the rest)
//   kept         with train_config::recompute off: every block's forward activations
//                (host/block.hpp's block_activations, about 15 x (B,T,C) per block), so the
//                backward recomputes nothing
//   dx           (B,T,C): the gradient flowing backward
//   head copy, head gradient, head scratch (logits (B*T, V), ...)
//   wide         with bf16 working parameters (zero3_infinity_bf16): the layer the walk hands
//                over, widened to fp32 for the host kernels (the largest layer's floats)
// and beside it the block scratch (host/block.hpp: one block's activations, reused by every
// layer), in host memory.
//
// The optimizer step (train_config::overlap_step, on by default) is deferred: its update runs
// under the next step's forward — or the validation forward, or whatever reads the weights
// first — so that with an NVMe home the step's IO overlaps compute.
//
// Memory plan: the executor's lines, the activations and the optimizer's state are one plan,
// checked once when the executor is made (its plan extension) and before any of them is
// allocated; a budget that is too small is refused with the whole table.
//
// Determinism: the executor's reductions add in rank order and the kernels do not depend on the
// thread count, so R ranks x micro-batch B equal 1 rank x B with A = R accumulation steps — the
// same data (data.hpp's global sample order) and the same sums. tests/test_gpt_zero.cpp checks
// it bitwise.
#pragma once

#include "data.hpp"
#include "gpt_config.hpp"
#include "host/block.hpp"
#include "host/kernels.hpp"
#include "host/model.hpp"  // initial_layer: GPT-2's initialisation
#include "train_log.hpp"

#include <strata/strata.hpp>
#include <strata/checkpoint/saver.hpp>  // the model's files need nlohmann/json anyway
#include <strata/optim/adam.hpp>
#include <strata/optim/grad_stats.hpp>
#include <strata/optim/zero_adam.hpp>
#include <strata/schedule/executor.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace gpt {

struct train_config {
  gpt_config model;
  int batch = 8;        // B: sequences per rank per micro-batch
  int seq = 64;         // T: tokens per sequence (<= model.context)
  int accum = 1;        // A: micro-batches per optimizer step
  int steps = 200;      // optimizer steps
  double lr = 3e-3;     // peak learning rate
  double min_lr = 3e-4; // at the end of the cosine
  int warmup = 20;
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f;
  float clip = 1.0f;    // max global gradient norm; <= 0: no clipping
  // The optimizer step runs under the next step's forward (zero_adam step_options::deferred:
  // layer i is updated while the forward computes the layers before it). Bitwise the same.
  bool overlap_step = true;
  // Activation checkpointing: the backward recomputes each block's forward from its input (one
  // (B,T,C) per block kept). Off: the forward keeps every block's activations on the compute
  // tier (about 15 x B x T x C floats per block, planned) and the backward reads them — one
  // forward's compute less per step, the same bits. Worth it where B x T is small beside the
  // weights (a streamed model's step is then IO-bound in the forward, compute-bound in the
  // backward).
  bool recompute = true;
  // Elements per streamed sub-group of an NVMe home's Adam state (zero_adam_config::sub_group):
  // its pinned sets are 4 x this x (m, v) x 4 bytes.
  std::size_t adam_sub_group = std::size_t{1} << 20;
  // The plan holds a checkpoint's snapshot staging (host memory, 12 bytes per parameter of this
  // rank's shards: checkpoint/train_state.hpp). Off for a run that takes no checkpoint: the
  // staging grows with the model, and a saver made later plans and checks it itself.
  bool plan_checkpoints = true;
  std::uint64_t seed = 1337;

  void validate() const {
    model.validate();
    auto bad = [](const std::string& what) { throw std::invalid_argument("gpt train: " + what); };
    if (batch < 1) bad("batch must be >= 1");
    if (seq < 1 || seq > model.context)
      bad("seq (" + std::to_string(seq) + ") must be in [1, context = " +
          std::to_string(model.context) + "]");
    if (accum < 1) bad("accum must be >= 1");
    if (steps < 1) bad("steps must be >= 1");
    if (!(lr > 0) || !(min_lr >= 0) || min_lr > lr) bad("need 0 <= min_lr <= lr, lr > 0");
    if (warmup < 0) bad("warmup must be >= 0");
  }
};

struct step_stats {
  double loss = 0;       // mean over the global batch
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool skipped = false;
};

template <class Comm, class Bundle, class Prefetch = strata::prefetch::lookahead<2>>
class trainer {
public:
  using executor_type = strata::zero_executor<Comm, Bundle, Prefetch>;
  // float, or bf16 for a bundle with bf16 working parameters (zero3_infinity_bf16): the kernels
  // then compute in fp32 from the widened copy.
  using working_type = typename executor_type::working_type;
  static constexpr bool narrow = executor_type::narrow;

  trainer(strata::context& ctx, Comm& comm, const train_config& tc, const text_split& data)
      : ctx_(ctx), comm_(comm), tc_(validated(tc)), cfg_(tc.model),
        train_(data.train, tc.seq, tc.seed, "train split of " + data.source),
        val_(data.val.size() > std::size_t(tc.seq) ? data.val : data.train, tc.seq, tc.seed + 1,
             "validation split of " + data.source),
        scratch_(cfg_, tc.batch),
        ex_(ctx, comm, layer_specs(cfg_), "gpt",
            [this](executor_type& ex, strata::memory_plan& plan) { plan_beside(tc_, ex, plan); }),
        opt_(ex_, adam_for(tc), adam_config(tc)) {
    acts_ = allocate_activations();  // planned and checked with the executor's lines
    for (std::size_t i = 0; i < ex_.size(); ++i) ex_.set_params(i, initial_layer(cfg_, i, tc.seed));
  }

  /// Everything this rank holds on each tier: the executor's buffers and shards, the
  /// activations, the optimizer's state and buffers.
  const strata::memory_plan& plan() const { return ex_.plan(); }
  /// The plan that trainer(ctx, comm, tc, data) would check, made without allocating anything:
  /// the planner's memory prediction. With a strata::comm::planned rank, that of any rank of
  /// any world size.
  static strata::memory_plan plan_for(strata::context& ctx, Comm& comm, const train_config& tc) {
    return executor_type::plan_for(
        ctx, comm, layer_specs(validated(tc).model), "gpt",
        [&tc](executor_type& ex, strata::memory_plan& plan) { plan_beside(tc, ex, plan); });
  }
  executor_type& executor() noexcept { return ex_; }
  using optimizer_type = strata::optim::zero_adam<executor_type>;
  optimizer_type& optimizer() noexcept { return opt_; }
  const train_config& config() const noexcept { return tc_; }
  /// Called as the walks reach each layer (phase "forward" or "backward", the layer, how many):
  /// progress for steps that take minutes.
  using progress_fn = std::function<void(const char* phase, std::size_t layer, std::size_t layers)>;
  void set_progress(progress_fn f) { progress_ = std::move(f); }
  /// Bytes of activations and scratch this rank keeps on the compute tier.
  std::size_t activation_bytes() const noexcept { return acts_.size(); }
  std::size_t tokens_per_step() const noexcept {
    return std::size_t(comm_.size()) * tc_.batch * tc_.seq * tc_.accum;
  }

  /// One optimizer step (0-based `step`): A micro-batches of forward + backward, then AdamW.
  step_stats train_step(int step) {
    step_stats st;
    // In float, in micro-batch order: the same sum the ranks' mean makes in rank order, so the
    // reported loss too is the same bits for R ranks and for 1 rank with A = R.
    strata::optim::step_options so;
    so.max_grad_norm = tc_.clip;
    so.grad_multiplier = 1.0f / static_cast<float>(tc_.accum);  // the sum at home -> the mean
    so.deferred = tc_.overlap_step;  // the update lands during the next forward (or a read)
    float loss_sum = 0;
    for (int a = 0; a < tc_.accum; ++a) {
      train_.batch(std::uint64_t(step), a, tc_.accum, comm_.rank(), comm_.size(), tc_.batch,
                   tokens_.data(), targets_.data());
      loss_sum += forward(true);
      // The last micro-batch's backward measures the gradients for the norm as they land.
      const bool last = a + 1 == tc_.accum;
      if (last)
        backward(a > 0, opt_.watch(so));
      else
        backward(a > 0, strata::no_watch{});
    }
    st.lr = learning_rate(step, tc_.warmup, tc_.steps, tc_.lr, tc_.min_lr);
    opt_.set_lr(static_cast<float>(st.lr));
    const strata::optim::step_result r = opt_.step(ex_, so);
    st.grad_norm = r.norm;
    st.skipped = r.skipped;
    st.loss = mean_over_ranks(loss_sum / static_cast<float>(tc_.accum));
    return st;
  }

  /// Mean loss over `batches` evaluation batches per rank (each rank its own windows).
  double validation_loss(int batches) {
    double sum = 0;
    for (int b = 0; b < batches; ++b) {
      val_.eval_batch(std::uint64_t(b) * comm_.size() + comm_.rank(), tc_.batch, tokens_.data(),
                      targets_.data());
      sum += forward(false);
    }
    return mean_over_ranks(static_cast<float>(sum / std::max(batches, 1)));
  }

  /// Every layer's full parameters (a collective: every rank must call it).
  std::vector<std::vector<float>> weights() {
    std::vector<std::vector<float>> w;
    for (std::size_t i = 0; i < ex_.size(); ++i) w.push_back(ex_.params(i));
    return w;
  }

private:
  static const train_config& validated(const train_config& tc) {
    tc.validate();
    return tc;
  }

  static std::vector<strata::layer_spec> layer_specs(const gpt_config& cfg) {
    std::vector<strata::layer_spec> l{{"embed", embed_numel(cfg)}};
    for (int i = 0; i < cfg.layers; ++i) l.push_back({"h." + std::to_string(i), block_numel(cfg)});
    return l;
  }

  static strata::optim::zero_adam_config adam_config(const train_config& tc) {
    strata::optim::zero_adam_config c;
    c.sub_group = tc.adam_sub_group;
    return c;
  }

  static strata::optim::adam_params adam_for(const train_config& tc) {
    strata::optim::adam_params h;
    h.lr = static_cast<float>(tc.lr);
    h.beta1 = tc.beta1;
    h.beta2 = tc.beta2;
    h.eps = 1e-8f;
    h.weight_decay = tc.weight_decay;
    h.mode = strata::optim::weight_decay_mode::decoupled;
    return h;
  }

  // Where each activation starts in the one device buffer (see the top of the file), in floats.
  struct activation_layout {
    std::size_t x, dx, head_copy, head_grad, xf, mean, rstd, logits, losses, dlogits, dxf, wide;
    std::size_t kept, kept_per_block;  // recompute off: every block's activations
    std::size_t floats = 0;  // the buffer's size
  };
  static activation_layout activations_for(const train_config& tc) {
    const std::size_t N = std::size_t(tc.batch) * tc.seq, C = tc.model.width, V = tc.model.vocab;
    const std::size_t L = tc.model.layers;
    activation_layout a{};
    auto carve = [&](std::size_t n) {
      const std::size_t at = a.floats;
      a.floats += (n + 15) / 16 * 16;  // 64-byte aligned pieces
      return at;
    };
    a.x = carve((L + 1) * N * C), a.dx = carve(N * C);
    a.head_copy = carve(V * C + 2 * C), a.head_grad = carve(V * C + 2 * C);
    a.xf = carve(N * C), a.mean = carve(N), a.rstd = carve(N), a.logits = carve(N * V);
    a.losses = carve(N), a.dlogits = carve(N * V), a.dxf = carve(N * C);
    a.wide = carve(narrow ? std::max(embed_numel(tc.model), block_numel(tc.model)) : 0);
    a.kept_per_block =
        tc.recompute ? 0 : block_activations<float>::floats(tc.model, tc.batch, tc.seq);
    a.kept = carve(L * a.kept_per_block);
    return a;
  }
  static const char* activations_name(const train_config& tc) {
    return tc.recompute ? "gpt activations (x[0..L], dx, head)"
                        : "gpt activations (x[0..L], every block's kept, dx, head)";
  }

  // The lines the executor's plan gets before its check: what the trainer allocates after it.
  static void plan_beside(const train_config& tc, executor_type& ex, strata::memory_plan& plan) {
    plan.add(strata::tier_id::device, activations_name(tc),
             activations_for(tc).floats * sizeof(float));
    plan.add(strata::optim::zero_adam<executor_type>::plan_for(ex, adam_config(tc)));
    if (tc.plan_checkpoints)
      plan.add(strata::checkpoint::saver<executor_type>::plan_for(ex));  // snapshot staging
  }

  strata::buffer allocate_activations() {
    const activation_layout a = activations_for(tc_);
    strata::buffer b =
        ctx_.allocate(strata::tier_id::device, a.floats * sizeof(float), activations_name(tc_));
    float* base = static_cast<float*>(b.data());
    x_ = base + a.x, dx_ = base + a.dx, head_copy_ = base + a.head_copy;
    head_grad_ = base + a.head_grad, xf_ = base + a.xf, mean_ = base + a.mean;
    rstd_ = base + a.rstd, logits_ = base + a.logits, losses_ = base + a.losses;
    dlogits_ = base + a.dlogits, dxf_ = base + a.dxf, wide_ = base + a.wide;
    kept_ = base + a.kept, kept_per_block_ = a.kept_per_block;
    tokens_.resize(std::size_t(tc_.batch) * tc_.seq);
    targets_.resize(std::size_t(tc_.batch) * tc_.seq);
    return b;
  }

  float* x_at(int l) const { return x_ + std::size_t(l) * tc_.batch * tc_.seq * cfg_.width; }
  // Block l's kept activations (recompute off).
  block_activations<float> kept(int l) const {
    return block_activations<float>::carve(kept_ + std::size_t(l) * kept_per_block_, cfg_,
                                           tc_.batch, tc_.seq);
  }

  // The layer the walk hands over, as the host kernels take it: fp32 as it is, or a bf16
  // working copy widened into wide_ (exactly: every bf16 is a float).
  const float* widened(const working_type* w, std::size_t n) const {
    if constexpr (narrow) {
      strata::convert(w, wide_, n);
      return wide_;
    } else {
      return w;
    }
  }

  // Forward over the current batch (tokens_, targets_): returns this rank's mean loss.
  float forward(bool for_training) {
    (void)for_training;
    const int B = tc_.batch, T = tc_.seq, C = cfg_.width, V = cfg_.vocab, L = cfg_.layers;
    const auto embed = embed_slots(cfg_);
    const std::size_t wte = embed[0].offset, wpe = embed[1].offset, lnf = embed[2].offset;
    ex_.forward([&](std::size_t i, const working_type* wk, std::size_t n) {
      if (progress_) progress_("forward", i, ex_.size());
      const float* w = widened(wk, n);
      if (i == 0) {
        encoder_forward(x_at(0), tokens_.data(), w + wte, w + wpe, B, T, C);
        // The head copy: wte (V,C), then ln_f weight and bias (C each).
        std::memcpy(head_copy_, w + wte, std::size_t(V) * C * sizeof(float));
        std::memcpy(head_copy_ + std::size_t(V) * C, w + lnf, 2 * std::size_t(C) * sizeof(float));
      } else {
        const int l = int(i) - 1;
        // Into the scratch's activations (the backward recomputes them) or block l's own.
        block_forward(cfg_, B, T, w, x_at(l), x_at(l + 1), scratch_,
                      tc_.recompute ? scratch_.activations() : kept(l));
      }
    });
    const float* lnf_w = head_copy_ + std::size_t(V) * C;
    const float loss = head_forward(xf_, mean_, rstd_, logits_, losses_, x_at(L), targets_.data(),
                                    head_copy_, lnf_w, lnf_w + C, B * T, C, V);
    ctx_.compute_fence().wait();
    return loss;
  }

  // Backward of the batch forward() last ran; `accumulate`: add to the gradients at home;
  // `watch`: what sees each layer's gradient as it lands (zero_executor::backward).
  template <class Watch>
  void backward(bool accumulate, Watch&& watch) {
    const int B = tc_.batch, T = tc_.seq, C = cfg_.width, V = cfg_.vocab, L = cfg_.layers;
    const std::size_t N = std::size_t(B) * T;
    const std::size_t head_numel = std::size_t(V) * C + 2 * std::size_t(C);
    std::fill(head_grad_, head_grad_ + head_numel, 0.0f);
    std::fill(dx_, dx_ + N * C, 0.0f);
    float* dwte_head = head_grad_;
    float* dlnf = head_grad_ + std::size_t(V) * C;
    const float* lnf_w = head_copy_ + std::size_t(V) * C;
    head_backward(dx_, dlnf, dlnf + C, dwte_head, dlogits_, dxf_, logits_, xf_, x_at(L),
                  mean_, rstd_, targets_.data(), head_copy_, lnf_w, int(N), C, V);
    const auto embed = embed_slots(cfg_);
    auto g = [&](std::size_t i, const working_type* wk, float* dw, std::size_t n) {
      if (progress_) progress_("backward", i, ex_.size());
      const float* w = widened(wk, n);
      if (i == 0) {
        // The embedding's gradient: the head's share of wte and ln_f, then the encoder's.
        std::fill(dw, dw + n, 0.0f);
        std::memcpy(dw + embed[0].offset, dwte_head, std::size_t(V) * C * sizeof(float));
        std::memcpy(dw + embed[2].offset, dlnf, 2 * std::size_t(C) * sizeof(float));
        encoder_backward(dw + embed[0].offset, dw + embed[1].offset, dx_, tokens_.data(), B, T, C);
      } else {
        const int l = int(i) - 1;
        if (tc_.recompute)
          block_backward(cfg_, B, T, w, x_at(l), dx_, dx_, dw, scratch_);
        else
          block_backward(cfg_, B, T, w, x_at(l), dx_, dx_, dw, scratch_, kept(l));
      }
    };
    ex_.backward(g, accumulate ? strata::grad_mode::accumulate : strata::grad_mode::overwrite,
                 std::forward<Watch>(watch));
  }

  float mean_over_ranks(float v) {
    float out = v;
    comm_.all_reduce(&v, &out, 1, strata::comm::reduce_op::mean).wait();
    return out;
  }

  strata::context& ctx_;
  Comm& comm_;
  train_config tc_;
  gpt_config cfg_;
  batch_sampler train_, val_;
  float *x_ = nullptr, *dx_ = nullptr, *head_copy_ = nullptr, *head_grad_ = nullptr;
  float *xf_ = nullptr, *mean_ = nullptr, *rstd_ = nullptr, *logits_ = nullptr;
  float *losses_ = nullptr, *dlogits_ = nullptr, *dxf_ = nullptr, *wide_ = nullptr;
  float* kept_ = nullptr;
  std::size_t kept_per_block_ = 0;
  std::vector<int> tokens_, targets_;
  progress_fn progress_;
  // Declared before the executor, so that they outlive its destructor's wait for the work in
  // flight; allocated after its plan check, in the constructor's body.
  strata::buffer acts_;
  block_scratch scratch_;
  executor_type ex_;  // checks the whole plan (plan_beside) before anything below is allocated
  strata::optim::zero_adam<executor_type> opt_;
};

}  // namespace gpt
