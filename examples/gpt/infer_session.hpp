// examples/gpt/infer_session.hpp — one generation setup: the context, the streamed blocks, the
// KV cache and the decoder, planned together and refused together.
//
// What this is: what gpt_generate and the capacity benchmark (benchmarks/bench_infer_capacity)
// share. From the policy (where the weights and the cache live, the weight format, the
// lookahead, the batch-block shape) it builds the context with its budgets, the block stream
// whose plan includes the KV cache and the decoder's activations (so that one check refuses a
// setup that cannot fit, before any block is loaded), then the cache and the decoder. It loads
// blocks one at a time (pack from f32, or already packed), measures the tier's read rate with
// one pass that computes nothing (the IO bound of the setup), and counts the bytes one pass
// moves. What it is not: the command line (generate.cpp) or the model's math (decoder.hpp).
#pragma once

#include "decoder.hpp"
#include "streamed_model.hpp"

#include <strata/comm/solo.hpp>
#include <strata/exec/context.hpp>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace gpt {

struct infer_options {
  weight_home home = weight_home::resident;
  weight_format format = weight_format::f32;
  int depth = 1;                // layers in flight beside the one computed (0 .. 3)
  kv_home kv = kv_home::device;
  int micro_batch = 0;          // rows per micro-batch; 0: all rows in one
  std::string nvme_dir;         // the NVMe tier's directory (a weight or KV home on nvme)
  std::size_t device_bytes = std::size_t{4} << 30;
  std::size_t pinned_bytes = std::size_t{1} << 30;
  std::size_t host_bytes = strata::tier_budget::unlimited;
  // The pinned staging ring's slots (4 of them): a block streams from NVMe to the compute tier
  // one slot at a time, so a slot is one read call. 32 MiB slots keep the engine's 16 requests
  // of 1 MiB in flight; with the context's default 4 MiB the stream read this disk at 0.4-0.5
  // of fio's rate, with 32 MiB at 0.7-1.0 (bench infer-capacity, interleaved runs).
  std::size_t staging_slot_bytes = std::size_t{32} << 20;
  bool trace = false;
};

class infer_session {
public:
  /// Plans (and refuses) everything for B rows with prompts of up to `positions` tokens.
  infer_session(const gpt_config& cfg, const infer_options& o, int B, int positions)
      : cfg_(cfg), opt_(o), B_(B), mb_(o.micro_batch > 0 ? o.micro_batch : B) {
    if (B < 1) throw strata::config_error("generation: " + std::to_string(B) + " rows");
    if (mb_ > B)
      throw strata::config_error("generation: micro-batch of " + std::to_string(mb_) +
                                 " rows is larger than the batch of " + std::to_string(B));
    ctx_.emplace(context_config());
    strata::memory_plan extra = kv_plan(*ctx_, cfg, B, o.kv);
    extra.add(strata::tier_id::host, "embeddings (wte, wpe, ln_f; f32)", embed_numel(cfg) * 4);
    extra.add(strata::tier_id::host,
              "decoder activations (" + std::to_string(positions) + " positions x " +
                  std::to_string(B) + " rows)",
              kv_decoder::host_bytes(cfg, B, mb_, positions));
    blocks_ = make_block_stream(*ctx_, solo_, cfg, o.format, o.home, o.depth, extra);
  }

  strata::context& ctx() { return *ctx_; }
  block_stream& blocks() { return *blocks_; }
  const strata::memory_plan& plan() const { return blocks_->plan(); }
  int rows() const noexcept { return B_; }

  /// Block l from its f32 array (block_numel floats), packed into the session's format.
  void set_block(std::size_t l, std::span<const float> block) {
    packed_.resize(blocks_->layout().bytes);
    pack_block(blocks_->layout(), block, packed_);
    blocks_->set_block(l, packed_);
  }

  /// The weight traffic of one pass at the tier's own speed: the bytes of a pass divided by
  /// the time a pass takes when it computes nothing (after one untimed pass, so that the
  /// first reads of a small model do not weigh in the timing). Bytes per second; 0 for a
  /// resident home.
  double measure_read_rate() {
    if (blocks_->home_bytes() == 0) return 0;
    auto nothing = [](std::size_t, std::size_t, const std::byte*) {};
    blocks_->walk(1, nothing);
    const auto t0 = std::chrono::steady_clock::now();
    blocks_->walk(1, nothing);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return s > 0 ? double(blocks_->home_bytes()) / s : 0;
  }

  /// The decoder over the session's blocks and cache; `embed` must outlive it.
  kv_decoder& decoder(const std::vector<float>& embed) {
    if (!kv_) kv_ = make_tiered_kv(*ctx_, cfg_, B_, opt_.kv);
    if (!dec_) dec_ = std::make_unique<kv_decoder>(cfg_, embed, *blocks_, *kv_, B_, mb_);
    return *dec_;
  }

private:
  strata::context_config context_config() const {
    strata::context_config c;
    c.device_bytes = opt_.device_bytes;
    c.pinned_bytes = opt_.pinned_bytes;
    c.host_bytes = opt_.host_bytes;
    c.staging_slot_bytes = opt_.staging_slot_bytes;
    c.trace = opt_.trace;
    const bool nvme = opt_.home == weight_home::nvme || opt_.kv == kv_home::nvme;
    if (nvme) {
      if (opt_.nvme_dir.empty())
        throw strata::config_error("generation: the policy puts data on nvme, but no NVMe "
                                   "directory was given (--nvme-dir)");
      c.nvme_directory = opt_.nvme_dir;
    }
    return c;
  }

  gpt_config cfg_;
  infer_options opt_;
  int B_, mb_;
  strata::comm::solo solo_;
  std::optional<strata::context> ctx_;
  std::unique_ptr<block_stream> blocks_;
  std::unique_ptr<kv_source> kv_;
  std::unique_ptr<kv_decoder> dec_;
  std::vector<std::byte> packed_;
};

}  // namespace gpt
