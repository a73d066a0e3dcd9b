// examples/gpt/host/model.hpp — the whole mini-GPT on the host, every parameter resident.
//
// What this is: the reference model. It owns the parameters and their gradients (one flat
// array for the embeddings + ln_f, one per block; layouts in gpt_config.hpp), runs
// encoder -> L blocks -> head forward, and the backward with activation checkpointing: the
// forward keeps only each block's input, the backward recomputes a block's activations in one
// shared block_scratch just before it needs them. train.cpp runs the same kernels in the same
// order with the block parameters streamed through strata; this class is what that run is
// checked against, and what a quick CPU training or sampling run uses directly. Here too is
// initial_layer, the one GPT-2 initialisation: trainer.hpp, this model and the CUDA model all
// start from it.
// What it is not: an optimizer, a data loader, or a KV-cache sampler (see train.cpp, data.hpp,
// sampler.hpp).
#pragma once

#include "../gpt_config.hpp"
#include "../random.hpp"
#include "block.hpp"
#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpt {

/// GPT-2's initialisation of layer `layer` of the model as the trainer's executor holds it
/// (0: the embedding array, 1+l: block l's array; layouts in gpt_config.hpp): weight matrices
/// N(0, 0.02), the two residual projections (attn.c_proj, mlp.c_proj) N(0, 0.02/sqrt(2L)),
/// biases 0, layernorm weights 1. A pure function of (seed, layer), so every rank computes the
/// same weights without sending them, and host_model::init_weights(seed) starts from the same
/// weights as a training run with that seed.
///
/// The normal draws are Box-Muller pairs over std::mt19937_64, seeded per layer through
/// splitmix64: mt19937_64's output is fixed by the standard, so these are the same numbers with
/// every standard library (std::normal_distribution's are not).
inline std::vector<float> initial_layer(const gpt_config& cfg, std::size_t layer,
                                        std::uint64_t seed) {
  const bool embed = layer == 0;
  const auto slots = embed ? embed_slots(cfg) : block_slots(cfg);
  std::vector<float> w(embed ? embed_numel(cfg) : block_numel(cfg), 0.0f);
  std::mt19937_64 bits(splitmix64(seed * 1000003 + layer));
  const float proj_std = 0.02f / std::sqrt(2.0f * static_cast<float>(cfg.layers));
  for (const auto& s : slots) {
    float* p = w.data() + s.offset;
    const bool is_ln_weight = s.name.find("ln") != std::string::npos &&
                              s.name.find(".weight") != std::string::npos;
    if (is_ln_weight) {
      std::fill(p, p + s.numel, 1.0f);
    } else if (s.shape.size() == 2) {
      const float sd = s.name.find("c_proj.weight") != std::string::npos ? proj_std : 0.02f;
      for (std::size_t i = 0; i < s.numel; i += 2) {
        const double u1 = (static_cast<double>(bits() >> 11) + 0.5) / 9007199254740992.0;
        const double u2 = static_cast<double>(bits() >> 11) / 9007199254740992.0;
        const double r = std::sqrt(-2.0 * std::log(u1));
        p[i] = static_cast<float>(sd * r * std::cos(6.283185307179586 * u2));
        if (i + 1 < s.numel) p[i + 1] = static_cast<float>(sd * r * std::sin(6.283185307179586 * u2));
      }
    }
  }
  return w;
}

template <class real>
class basic_host_model {
public:
  /// A model for batches of up to max_batch sequences of up to cfg.context tokens. Parameters
  /// start at zero: call init_weights (or load them).
  basic_host_model(const gpt_config& cfg, int max_batch)
      : cfg_(cfg), max_batch_(max_batch), scratch_(cfg, max_batch) {  // validates cfg and max_batch
    const std::size_t N = static_cast<std::size_t>(max_batch) * cfg.context;
    const std::size_t C = cfg.width, V = cfg.vocab;
    embed_.assign(embed_numel(cfg), real(0));
    embed_grad_.assign(embed_numel(cfg), real(0));
    blocks_.assign(cfg.layers, std::vector<real>(block_numel(cfg), real(0)));
    block_grads_.assign(cfg.layers, std::vector<real>(block_numel(cfg), real(0)));
    acts_.assign((static_cast<std::size_t>(cfg.layers) + 1) * N * C, real(0));
    xf_.resize(N * C), lnf_mean_.resize(N), lnf_rstd_.resize(N);
    logits_.resize(N * V), losses_.resize(N);
    dlogits_.resize(N * V), dxf_.resize(N * C), dres_.resize(N * C);
    tokens_.resize(N), targets_.resize(N);
  }

  /// GPT-2 initialisation (initial_layer), deterministic in `seed`: the weights a training
  /// run with this seed starts from.
  void init_weights(std::uint64_t seed) {
    const std::vector<float> e = initial_layer(cfg_, 0, seed);
    embed_.assign(e.begin(), e.end());
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      const std::vector<float> b = initial_layer(cfg_, l + 1, seed);
      blocks_[l].assign(b.begin(), b.end());
    }
  }

  /// Runs tokens (B,T) through the model; returns the mean cross-entropy against targets
  /// (B,T) over the positions whose target is >= 0, or 0 when targets is nullptr (then only the
  /// logits are wanted, and backward cannot follow).
  real forward(const int* tokens, const int* targets, int B, int T) {
    check_batch(tokens, targets, B, T);
    const int C = cfg_.width, V = cfg_.vocab, N = B * T;
    B_ = B, T_ = T, have_targets_ = targets != nullptr;
    std::memcpy(tokens_.data(), tokens, sizeof(int) * N);
    if (targets) std::memcpy(targets_.data(), targets, sizeof(int) * N);

    const real* wte = embed_.data();
    const real* wpe = wte + static_cast<std::size_t>(V) * C;
    const real* lnf_w = wpe + static_cast<std::size_t>(cfg_.context) * C;
    const real* lnf_b = lnf_w + C;
    encoder_forward(act(0), tokens, wte, wpe, B, T, C);
    for (int l = 0; l < cfg_.layers; ++l)
      block_forward(cfg_, B, T, blocks_[l].data(), act(l), act(l + 1), scratch_);
    loss_ = head_forward(xf_.data(), lnf_mean_.data(), lnf_rstd_.data(), logits_.data(),
                         losses_.data(), act(cfg_.layers), targets, wte, lnf_w, lnf_b, N, C, V);
    return loss_;
  }

  /// Gradients of the last forward's loss with respect to every parameter (overwritten, not
  /// accumulated). dloss scales them (1/k to average k micro-batches by summing their grads).
  void backward(real dloss = real(1)) {
    if (B_ == 0 || !have_targets_)
      throw std::logic_error("host_model::backward: no forward with targets to differentiate");
    const int B = B_, T = T_, C = cfg_.width, V = cfg_.vocab, N = B * T;
    std::fill(embed_grad_.begin(), embed_grad_.end(), real(0));
    const real* wte = embed_.data();
    const real* lnf_w = wte + (static_cast<std::size_t>(V) + cfg_.context) * C;
    real* dwte = embed_grad_.data();
    real* dwpe = dwte + static_cast<std::size_t>(V) * C;
    real* dlnf_w = dwpe + static_cast<std::size_t>(cfg_.context) * C;
    real* dlnf_b = dlnf_w + C;

    real* dx = dres_.data();  // dL/d(residual stream), carried down through the blocks
    std::memset(dx, 0, sizeof(real) * static_cast<std::size_t>(N) * C);
    head_backward(dx, dlnf_w, dlnf_b, dwte, dlogits_.data(), dxf_.data(), logits_.data(),
                  xf_.data(), act(cfg_.layers), lnf_mean_.data(), lnf_rstd_.data(),
                  targets_.data(), wte, lnf_w, N, C, V, dloss);
    for (int l = cfg_.layers - 1; l >= 0; --l)
      block_backward(cfg_, B, T, blocks_[l].data(), act(l), dx, dx, block_grads_[l].data(),
                     scratch_);
    encoder_backward(dwte, dwpe, dx, tokens_.data(), B, T, C);
  }

  const gpt_config& config() const noexcept { return cfg_; }
  int max_batch() const noexcept { return max_batch_; }
  /// (B,T,V) of the last forward, B and T as given to it.
  const real* logits() const noexcept { return logits_.data(); }
  /// (B,T) per-position cross-entropy of the last forward (0 where the target was < 0).
  const real* losses() const noexcept { return losses_.data(); }
  real loss() const noexcept { return loss_; }

  std::vector<real>& embed_params() noexcept { return embed_; }
  std::vector<real>& embed_grads() noexcept { return embed_grad_; }
  std::vector<real>& block_params(int l) { return blocks_.at(static_cast<std::size_t>(l)); }
  std::vector<real>& block_grads(int l) { return block_grads_.at(static_cast<std::size_t>(l)); }
  const std::vector<real>& embed_params() const noexcept { return embed_; }
  const std::vector<real>& embed_grads() const noexcept { return embed_grad_; }
  const std::vector<real>& block_params(int l) const {
    return blocks_.at(static_cast<std::size_t>(l));
  }
  const std::vector<real>& block_grads(int l) const {
    return block_grads_.at(static_cast<std::size_t>(l));
  }

private:
  real* act(int l) noexcept {  // input of block l (l = layers: the final residual stream)
    return acts_.data() + static_cast<std::size_t>(l) * max_batch_ * cfg_.context * cfg_.width;
  }

  void check_batch(const int* tokens, const int* targets, int B, int T) const {
    if (B <= 0 || B > max_batch_ || T <= 0 || T > cfg_.context)
      throw std::invalid_argument("host_model::forward: batch " + std::to_string(B) + " x " +
                                  std::to_string(T) + " tokens does not fit (batch <= " +
                                  std::to_string(max_batch_) + ", context " +
                                  std::to_string(cfg_.context) + ")");
    for (int n = 0; n < B * T; ++n) {
      if (tokens[n] < 0 || tokens[n] >= cfg_.vocab)
        throw std::invalid_argument("host_model::forward: token " + std::to_string(tokens[n]) +
                                    " at position " + std::to_string(n) +
                                    " is outside the vocab [0, " + std::to_string(cfg_.vocab) +
                                    ")");
      if (targets && (targets[n] < -1 || targets[n] >= cfg_.vocab))
        throw std::invalid_argument("host_model::forward: target " + std::to_string(targets[n]) +
                                    " at position " + std::to_string(n) + " is outside [-1, " +
                                    std::to_string(cfg_.vocab) + ")");
    }
  }

  gpt_config cfg_;
  int max_batch_;
  std::vector<real> embed_, embed_grad_;                 // embed_numel: wte, wpe, ln_f w, b
  std::vector<std::vector<real>> blocks_, block_grads_;  // layers x block_numel
  std::vector<real> acts_;                // (L+1, B, T, C): the checkpoints, block inputs
  std::vector<real> xf_, lnf_mean_, lnf_rstd_;  // (N, C), (N), (N)
  std::vector<real> logits_, losses_;           // (N, V), (N)
  std::vector<real> dlogits_, dxf_, dres_;      // (N, V), (N, C), (N, C)
  std::vector<int> tokens_, targets_;           // (N), kept for backward
  basic_block_scratch<real> scratch_;
  int B_ = 0, T_ = 0;
  bool have_targets_ = false;
  real loss_ = 0;
};
using host_model = basic_host_model<float>;

}  // namespace gpt
