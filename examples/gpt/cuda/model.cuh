// examples/gpt/cuda/model.cuh — the whole mini-GPT resident on one GPU.
//
// What this is: basic_gpt_cuda_model<X>, the GPU twin of host/model.hpp's host_model. It owns
// the fp32 master parameters and their fp32 gradients (one flat array: the embedding array,
// then block 0, 1, ...; the layouts of gpt_config.hpp), an X copy of the parameters that the
// kernels read (X = bf16 for speed, float for the exact path the tests use), all activations,
// and one cuBLASLt engine. forward() runs encoder -> L blocks -> head and returns the mean
// loss; backward() fills the gradients; adam_step() is AdamW with strata's fused device kernel
// (strata/optim/device_adam.cuh: every tensor in one launch, master weights, moments and the X
// copy updated in the same pass), matrices decayed, biases and layernorm parameters not.
// Activation checkpointing is a constructor switch: off, every block keeps its activations
// from forward to backward; on, only each block's input is kept and backward recomputes the
// rest in one shared set (the host model's way, at the cost of a second forward through the
// blocks).
// What it is not: a data loader, a sampler, or streamed: train.cpp streams the host model's
// blocks through strata; this model keeps everything on the device.
//
// Numerics: with X = float it computes what host_model computes, up to summation order (the
// tests hold it to ~1e-4 of the largest gradient). With X = bf16 the activations, the
// residual stream and the parameter copy are bf16; statistics, the loss, parameter gradients,
// master weights and moments stay fp32.
// Everything runs on one stream (the constructor's; default: the legacy default stream);
// forward() synchronises to return the loss, backward() and adam_step() do not.
#pragma once

#include "../gpt_config.hpp"
#include "../host/model.hpp"  // initial_layer: the same initialisation as the host model
#include "block.cuh"
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.cuh"

#include <strata/core/dtype.hpp>
#include <strata/optim/adam.hpp>
#include <strata/optim/device_adam.cuh>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace gpt::gpu {

template <class X>
class basic_gpt_cuda_model {
public:
  /// A model for batches of up to max_batch sequences of up to cfg.context tokens, on
  /// `stream`. Parameters start at zero: call init_weights or set_*_params. Needs width a
  /// multiple of 8 (16-byte aligned tensors for cuBLASLt) and a head size attention.cuh
  /// instantiates (8, 16, 32, 64, 128).
  basic_gpt_cuda_model(const gpt_config& cfg, int max_batch, bool checkpoint_activations = false,
                       cudaStream_t stream = nullptr)
      : cfg_(validated(cfg, max_batch)),
        max_batch_(max_batch),
        checkpoint_(checkpoint_activations),
        stream_(stream),
        vp_((cfg.vocab + 63) / 64 * 64),
        embed_n_(embed_numel(cfg)),
        block_n_(block_numel(cfg)),
        total_n_(embed_n_ + static_cast<std::size_t>(cfg.layers) * block_n_),
        params_(total_n_, "master parameters"),
        grads_(total_n_, "gradients"),
        params_x_(total_n_, "parameter copy"),
        acts_((static_cast<std::size_t>(cfg.layers) + 1) * rows() * cfg.width, "block inputs"),
        scratch_(cfg, max_batch),
        xf_(rows() * cfg.width, "ln_f output"),
        lnf_mean_(rows(), "ln_f mean"),
        lnf_rstd_(rows(), "ln_f rstd"),
        logits_(rows() * static_cast<std::size_t>(vp_), "logits"),
        losses_(rows(), "losses"),
        row_lse_(rows(), "row lse"),
        dxf_(rows() * cfg.width, "dxf"),
        dres_(rows() * cfg.width, "residual gradient"),
        tokens_(rows(), "tokens"),
        targets_(rows(), "targets"),
        token_index_(static_cast<int>(rows())) {
    const int sets = checkpoint_ ? 1 : cfg.layers;
    block_acts_.reserve(static_cast<std::size_t>(sets));
    for (int i = 0; i < sets; ++i) block_acts_.emplace_back(cfg, max_batch);
    strata::check_cuda(cudaMemsetAsync(params_.data(), 0, params_.bytes(), stream_), "zeroing parameters");
    strata::check_cuda(cudaMemsetAsync(grads_.data(), 0, grads_.bytes(), stream_), "zeroing gradients");
    strata::check_cuda(cudaMemsetAsync(params_x_.data(), 0, params_x_.bytes(), stream_),
                       "zeroing the parameter copy");
    synchronize();
  }

  /// GPT-2 initialisation (initial_layer), the same numbers as host_model::init_weights(seed).
  void init_weights(std::uint64_t seed) {
    set_embed_params(initial_layer(cfg_, 0, seed));
    for (int l = 0; l < cfg_.layers; ++l)
      set_block_params(l, initial_layer(cfg_, static_cast<std::size_t>(l) + 1, seed));
  }

  /// Master parameters from the host (embed_numel / block_numel floats); the X copy follows.
  void set_embed_params(const std::vector<float>& values) { set_params(0, embed_n_, values, "embed"); }
  void set_block_params(int l, const std::vector<float>& values) {
    set_params(block_offset(l), block_n_, values, "block " + std::to_string(l));
  }

  std::vector<float> embed_params() const { return fetch(params_.data(), 0, embed_n_); }
  std::vector<float> block_params(int l) const { return fetch(params_.data(), block_offset(l), block_n_); }
  /// The X copy the kernels read (== the master parameters rounded to X).
  std::vector<float> embed_params_copy() const { return fetch_copy(0, embed_n_); }
  std::vector<float> block_params_copy(int l) const { return fetch_copy(block_offset(l), block_n_); }
  std::vector<float> embed_grads() const { return fetch(grads_.data(), 0, embed_n_); }
  std::vector<float> block_grads(int l) const { return fetch(grads_.data(), block_offset(l), block_n_); }

  /// Runs tokens (B,T) (host memory) through the model; returns the mean cross-entropy over
  /// the positions whose target (B,T) is >= 0, or 0 when targets is nullptr (logits only).
  float forward(const int* tokens, const int* targets, int B, int T) {
    check_batch(tokens, targets, B, T);
    const int C = cfg_.width, V = cfg_.vocab, N = B * T;
    B_ = B, T_ = T, have_targets_ = targets != nullptr, logits_hold_gradient_ = false;
    tokens_host_.assign(tokens, tokens + N);
    copy_in(tokens_.data(), tokens, N, "tokens");
    target_count_ = 0;
    if (targets != nullptr) {
      copy_in(targets_.data(), targets, N, "targets");
      for (int n = 0; n < N; ++n) target_count_ += targets[n] >= 0 ? 1 : 0;
    }
    const X* wte = params_x_.data();
    const X* wpe = wte + static_cast<std::size_t>(V) * C;
    const X* lnf_w = wpe + static_cast<std::size_t>(cfg_.context) * C;
    const X* lnf_b = lnf_w + C;

    encoder_forward(act(0), tokens_.data(), wte, wpe, B, T, C, stream_);
    for (int l = 0; l < cfg_.layers; ++l)
      block_forward(gemm_, cfg_, B, T, block_copy(l), act(l), act(l + 1), acts_for(l), stream_);
    layernorm_forward(xf_.data(), lnf_mean_.data(), lnf_rstd_.data(), act(cfg_.layers), lnf_w,
                      lnf_b, N, C, stream_);
    matmul_forward(gemm_, logits_.data(), xf_.data(), wte, static_cast<const X*>(nullptr), N, C, V,
                   stream_, vp_);
    loss_ = 0.0f;
    if (targets == nullptr) {
      synchronize();  // like the path with targets: the caller's token buffer is free on return
      return loss_;
    }
    crossentropy_forward(losses_.data(), row_lse_.data(), logits_.data(), targets_.data(), N, V,
                         vp_, stream_);
    losses_host_.resize(static_cast<std::size_t>(N));
    copy_out(losses_host_.data(), losses_.data(), N, "losses");
    // The mean as the host model takes it: in double, in row order.
    double total = 0;
    for (int n = 0; n < N; ++n)
      if (targets[n] >= 0) total += static_cast<double>(losses_host_[static_cast<std::size_t>(n)]);
    loss_ = target_count_ > 0 ? static_cast<float>(total / target_count_) : 0.0f;
    return loss_;
  }

  /// Gradients of the last forward's loss (times dloss) with respect to every parameter,
  /// overwritten. The logits of that forward are overwritten by their gradient.
  void backward(float dloss = 1.0f) {
    if (B_ == 0 || !have_targets_)
      throw std::logic_error("gpt_cuda_model::backward: no forward with targets to differentiate");
    if (logits_hold_gradient_)
      throw std::logic_error("gpt_cuda_model::backward: this forward was already differentiated "
                             "(its logits now hold their gradient): run forward again");
    logits_hold_gradient_ = true;
    const int B = B_, T = T_, C = cfg_.width, V = cfg_.vocab, N = B * T;
    const std::size_t NC = static_cast<std::size_t>(N) * C;
    const X* wte = params_x_.data();
    const X* lnf_w = wte + (static_cast<std::size_t>(V) + cfg_.context) * C;
    float* dwte = grads_.data();
    float* dwpe = dwte + static_cast<std::size_t>(V) * C;
    float* dlnf_w = dwpe + static_cast<std::size_t>(cfg_.context) * C;
    float* dlnf_b = dlnf_w + C;
    float* ws = scratch_.colsum_ws.data();

    // The embedding gradients collect from two places (the tied head and the encoder): zero
    // them, and let both add. The block gradients are overwritten by block_backward.
    strata::check_cuda(cudaMemsetAsync(grads_.data(), 0, embed_n_ * sizeof(float), stream_),
                       "zeroing the embedding gradients");
    strata::check_cuda(cudaMemsetAsync(dres_.data(), 0, NC * sizeof(X), stream_),
                       "zeroing the residual gradient");
    if (target_count_ > 0) {  // else every gradient is 0, as in the host model
      const float scale = dloss / static_cast<float>(target_count_);
      crossentropy_backward(logits_.data(), logits_.data(), row_lse_.data(), targets_.data(),
                            scale, N, V, vp_, stream_);
      const X* dlogits = logits_.data();
      // Through the tied head: dxf = dlogits · wte, dwte += dlogits^T · xf; then ln_f.
      matmul_backward_input(gemm_, dxf_.data(), dlogits, wte, N, C, V, false, stream_, vp_);
      matmul_backward_weight(gemm_, dwte, dlogits, xf_.data(), N, C, V, true, stream_, vp_);
      layernorm_backward(dres_.data(), dlnf_w, dlnf_b, ws, dxf_.data(), act(cfg_.layers), lnf_w,
                         lnf_mean_.data(), lnf_rstd_.data(), N, C, true, stream_);
    }
    for (int l = cfg_.layers - 1; l >= 0; --l) {
      block_activations<X>& a = acts_for(l);
      if (checkpoint_)  // the recompute: this block's activations, from its kept input
        block_forward_activations(gemm_, cfg_, B, T, block_copy(l), act(l), a, stream_);
      block_backward(gemm_, cfg_, B, T, block_copy(l), act(l), dres_.data(),
                     grads_.data() + block_offset(l), a, scratch_, stream_);
    }
    token_index_.assign(build_token_index(tokens_host_.data(), N, V), stream_);
    encoder_backward(dwte, dwpe, dres_.data(), token_index_, B, T, C, stream_);
  }

  /// One AdamW (or Adam, per hp.mode) step over every parameter with strata's fused device
  /// kernel: weight_decay applies to the matrices (wte, wpe and the four Linear weights of each
  /// block), not to biases and layernorm parameters. t counts from 1; grad_multiplier scales the
  /// gradients (1 / loss scale, a clipping coefficient). The X copy is refreshed in the same pass.
  void adam_step(const strata::optim::adam_params& hp, std::uint64_t t, float grad_multiplier = 1.0f) {
    hp.validate("gpt_cuda_model::adam_step");
    if (!adam_) adam_ = std::make_unique<adam_state>(*this);
    strata::optim::adam_params plain = hp;
    plain.weight_decay = 0.0f;
    adam_->decayed.step(strata::optim::adam_step_scalars::make(hp, t, grad_multiplier), stream_);
    adam_->plain.step(strata::optim::adam_step_scalars::make(plain, t, grad_multiplier), stream_);
  }

  void synchronize() const { strata::check_cuda(cudaStreamSynchronize(stream_), "gpt_cuda_model"); }

  /// (B,T,V) logits of the last forward as fp32 on the host (until backward overwrites them:
  /// then a logic_error).
  std::vector<float> logits() const {
    if (logits_hold_gradient_)
      throw std::logic_error("gpt_cuda_model::logits: backward has overwritten them with their gradient");
    const std::size_t N = static_cast<std::size_t>(B_) * T_, V = static_cast<std::size_t>(cfg_.vocab);
    std::vector<X> raw(N * static_cast<std::size_t>(vp_));
    copy_out(raw.data(), logits_.data(), raw.size(), "logits");
    std::vector<float> out(N * V);
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t v = 0; v < V; ++v) out[n * V + v] = to_f32(raw[n * vp_ + v]);
    return out;
  }

  const gpt_config& config() const noexcept { return cfg_; }
  int max_batch() const noexcept { return max_batch_; }
  bool checkpointing() const noexcept { return checkpoint_; }
  float loss() const noexcept { return loss_; }
  std::size_t parameter_count() const noexcept { return total_n_; }
  /// Device bytes this model holds (parameters, optimizer state once created, activations).
  std::size_t device_bytes() const noexcept {
    std::size_t b = params_.bytes() + grads_.bytes() + params_x_.bytes() + acts_.bytes() +
                    xf_.bytes() + lnf_mean_.bytes() + lnf_rstd_.bytes() + logits_.bytes() +
                    losses_.bytes() + row_lse_.bytes() + dxf_.bytes() + dres_.bytes() +
                    tokens_.bytes() + targets_.bytes();
    for (const auto& a : block_acts_)
      b += a.ln1.bytes() + a.ln1_mean.bytes() + a.ln1_rstd.bytes() + a.qkv.bytes() + a.atty.bytes() +
           a.att_lse.bytes() + a.res2.bytes() + a.ln2.bytes() + a.ln2_mean.bytes() +
           a.ln2_rstd.bytes() + a.fch.bytes() + a.fch_gelu.bytes();
    b += scratch_.dln.bytes() + scratch_.datty.bytes() + scratch_.dqkv.bytes() +
         scratch_.dfch.bytes() + scratch_.dfch_gelu.bytes() + scratch_.attention_ws.bytes() +
         scratch_.colsum_ws.bytes();
    if (adam_) b += adam_->m.bytes() + adam_->v.bytes();
    return b;
  }

private:
  // The parameter copy's element type as strata's optimizer writes it (bit-identical to X).
  using copy_type = std::conditional_t<std::is_same_v<X, float>, float, strata::bf16>;
  static_assert(sizeof(copy_type) == sizeof(X));

  struct adam_state {
    explicit adam_state(basic_gpt_cuda_model& model)
        : m(zeroed_device_array<float>(model.total_n_, "adam m")),
          v(zeroed_device_array<float>(model.total_n_, "adam v")),
          decayed(model.adam_tensors(m.data(), v.data(), true)),
          plain(model.adam_tensors(m.data(), v.data(), false)) {}
    device_array<float> m, v;
    strata::optim::device_adam_batch<float, copy_type> decayed, plain;
  };

  // The tensors of one weight-decay group (matrices, or the rest), as strata's device Adam
  // takes them: slices of the flat master, moment, gradient and copy arrays.
  std::vector<strata::optim::device_adam_tensor<float, copy_type>> adam_tensors(float* m, float* v,
                                                                               bool matrices) {
    std::vector<strata::optim::device_adam_tensor<float, copy_type>> list;
    auto add = [&](std::size_t base, const std::vector<tensor_slot>& slots) {
      for (const auto& s : slots) {
        if ((s.shape.size() == 2) != matrices) continue;
        const std::size_t off = base + s.offset;
        list.push_back({params_.data() + off, m + off, v + off, grads_.data() + off,
                        reinterpret_cast<copy_type*>(params_x_.data() + off), s.numel});
      }
    };
    add(0, embed_slots(cfg_));
    const auto bs = block_slots(cfg_);
    for (int l = 0; l < cfg_.layers; ++l) add(block_offset(l), bs);
    return list;
  }

  static const gpt_config& validated(const gpt_config& cfg, int max_batch) {
    cfg.validate();
    if (max_batch <= 0)
      throw std::invalid_argument("gpt_cuda_model: max_batch must be > 0, got " + std::to_string(max_batch));
    if (cfg.width % 8 != 0)
      throw std::invalid_argument("gpt_cuda_model: width (" + std::to_string(cfg.width) +
                                  ") must be a multiple of 8, so every tensor of the flat "
                                  "parameter arrays is 16-byte aligned for cuBLASLt");
    detail::with_head_size(cfg.head_size(), "gpt_cuda_model", [](auto) {});
    return cfg;
  }

  void check_batch(const int* tokens, const int* targets, int B, int T) const {
    if (B <= 0 || B > max_batch_ || T <= 0 || T > cfg_.context)
      throw std::invalid_argument("gpt_cuda_model::forward: batch " + std::to_string(B) + " x " +
                                  std::to_string(T) + " tokens does not fit (batch <= " +
                                  std::to_string(max_batch_) + ", context " +
                                  std::to_string(cfg_.context) + ")");
    for (int n = 0; n < B * T; ++n) {
      if (tokens[n] < 0 || tokens[n] >= cfg_.vocab)
        throw std::invalid_argument("gpt_cuda_model::forward: token " + std::to_string(tokens[n]) +
                                    " at position " + std::to_string(n) +
                                    " is outside the vocab [0, " + std::to_string(cfg_.vocab) + ")");
      if (targets && (targets[n] < -1 || targets[n] >= cfg_.vocab))
        throw std::invalid_argument("gpt_cuda_model::forward: target " + std::to_string(targets[n]) +
                                    " at position " + std::to_string(n) + " is outside [-1, " +
                                    std::to_string(cfg_.vocab) + ")");
    }
  }

  std::size_t rows() const noexcept {
    return static_cast<std::size_t>(max_batch_) * static_cast<std::size_t>(cfg_.context);
  }
  std::size_t block_offset(int l) const {
    if (l < 0 || l >= cfg_.layers)
      throw std::out_of_range("gpt_cuda_model: layer " + std::to_string(l) + " of " +
                              std::to_string(cfg_.layers));
    return embed_n_ + static_cast<std::size_t>(l) * block_n_;
  }
  X* act(int l) noexcept {  // input of block l (l = layers: the final residual stream)
    return acts_.data() + static_cast<std::size_t>(l) * rows() * cfg_.width;
  }
  const X* block_copy(int l) const { return params_x_.data() + block_offset(l); }
  block_activations<X>& acts_for(int l) { return block_acts_[checkpoint_ ? 0 : static_cast<std::size_t>(l)]; }

  void set_params(std::size_t offset, std::size_t n, const std::vector<float>& values,
                  const std::string& what) {
    if (values.size() != n)
      throw std::invalid_argument("gpt_cuda_model: " + what + " parameters need " + std::to_string(n) +
                                  " floats, got " + std::to_string(values.size()));
    copy_in(params_.data() + offset, values.data(), n, what.c_str());
    convert(params_x_.data() + offset, params_.data() + offset, n, stream_);
    synchronize();
  }

  std::vector<float> fetch(const float* base, std::size_t offset, std::size_t n) const {
    std::vector<float> out(n);
    copy_out(out.data(), base + offset, n, "parameters or gradients");
    return out;
  }

  std::vector<float> fetch_copy(std::size_t offset, std::size_t n) const {
    std::vector<X> raw(n);
    copy_out(raw.data(), params_x_.data() + offset, n, "parameter copy");
    std::vector<float> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = to_f32(raw[i]);
    return out;
  }

  template <class E>
  void copy_in(E* dst, const E* src, std::size_t n, const char* what) const {
    strata::check_cuda(cudaMemcpyAsync(dst, src, n * sizeof(E), cudaMemcpyHostToDevice, stream_),
                       std::string("gpt_cuda_model: upload of ") + what);
  }
  template <class E>
  void copy_out(E* dst, const E* src, std::size_t n, const char* what) const {
    strata::check_cuda(cudaMemcpyAsync(dst, src, n * sizeof(E), cudaMemcpyDeviceToHost, stream_),
                       std::string("gpt_cuda_model: download of ") + what);
    synchronize();
  }

  gpt_config cfg_;
  int max_batch_;
  bool checkpoint_;
  cudaStream_t stream_;
  int vp_;  // the logits' row stride: the vocab rounded up to a multiple of 64
  std::size_t embed_n_, block_n_, total_n_;
  gemm_engine gemm_;
  device_array<float> params_, grads_;  // (total_n_): embed array, then block 0 .. L-1
  device_array<X> params_x_;            // (total_n_): what the kernels read
  device_array<X> acts_;                // (L+1, B, T, C): each block's input, the checkpoints
  std::vector<block_activations<X>> block_acts_;  // L sets, or 1 when checkpointing
  block_grad_scratch<X> scratch_;
  device_array<X> xf_;                      // (N, C): ln_f output
  device_array<float> lnf_mean_, lnf_rstd_;  // (N), (N)
  device_array<X> logits_;                  // (N, vp_), then dlogits in place
  device_array<float> losses_, row_lse_;    // (N), (N)
  device_array<X> dxf_, dres_;              // (N, C), (N, C)
  device_array<int> tokens_, targets_;      // (N), (N)
  device_token_index token_index_;
  std::unique_ptr<adam_state> adam_;
  std::vector<int> tokens_host_;
  std::vector<float> losses_host_;
  int B_ = 0, T_ = 0, target_count_ = 0;
  bool have_targets_ = false, logits_hold_gradient_ = false;
  float loss_ = 0.0f;
};

/// The fast model: bf16 activations and parameter copy, fp32 master weights and gradients.
using gpt_cuda_model = basic_gpt_cuda_model<bf16>;
/// The exact model: fp32 throughout, for checking against host_model.
using gpt_cuda_model_f32 = basic_gpt_cuda_model<float>;

}  // namespace gpt::gpu
