// examples/gpt/decoder.hpp — the KV-cache decoder: a few new positions per row through the
// model, against a cache of every earlier position's keys and values.
//
// What this is: kv_decoder appends tokens to B rows (each at its own position, so prompts of
// different lengths need no padding) and runs them through the blocks; a token costs one row
// through each matmul instead of a pass over the whole prefix. Prefill (the prompts) and
// decode (one token per row) are the same code. Where the blocks' weights and the caches live
// is not the decoder's business: it walks a block_source (resident arrays, or
// infer::layer_stream bringing each layer from host memory or NVMe: streamed_model.hpp) and
// opens each layer's cache from a kv_source (host vectors, or infer::kv_cache on any tier).
// Batch blocks: the B rows are split into micro-batches of `micro_batch` rows; a walk takes
// each layer once and runs every micro-batch through it before the next layer (FlexGen's
// zig-zag order), so one transfer of a layer serves all B rows, while the per-layer scratch
// (qkv, MLP) is only one micro-batch high.
// Every kernel here works row by row in a fixed order (host/stored_matmul.hpp says why), so the
// logits are bitwise the same for any micro-batch size, any weight home, any lookahead depth,
// any cache tier and any thread count: streamed == resident is an equality, not a tolerance.
// What it is not: a training path (no backward), or attention on another tier than the
// compute tier's.
//
// Layernorm, gelu and residual are host/kernels.hpp's; attention over the cache is written
// here (one query row against positions 0..p of its own row), so a test that compares the
// decoder's logits with host_model's full forward checks two independent attentions.
#pragma once

#include "gpt_config.hpp"
#include "host/kernels.hpp"
#include "host/stored_matmul.hpp"
#include "safetensors.hpp"
#include "stored_block.hpp"

#include <strata/core/error.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace gpt {

/// Called for each (layer, micro-batch) of a walk with the layer's stored bytes.
using block_visit = std::function<void(std::size_t layer, std::size_t micro_batch,
                                       const std::byte* block)>;

/// Where the blocks' weights come from: walk() calls f for every layer in order and, within a
/// layer, for micro-batches 0 .. micro_batches-1, with that layer's bytes (block_layout()).
class block_source {
public:
  virtual ~block_source() = default;
  virtual const gpt::block_layout& layout() const = 0;
  virtual std::size_t layers() const = 0;
  virtual void walk(std::size_t micro_batches, const block_visit& f) = 0;
};

/// Where the per-layer caches live: a walk opens layer 0, 1, ... in order, between begin() and
/// end(); open(l) gives layer l's cache (2 x rows x NH x context x HS floats: K then V) until
/// close(l). abandon() ends a walk that failed part-way.
class kv_source {
public:
  virtual ~kv_source() = default;
  virtual void begin() = 0;
  virtual float* open(std::size_t layer) = 0;
  virtual void close(std::size_t layer) = 0;
  virtual void end() = 0;
  virtual void abandon() noexcept = 0;
};

/// Floats in one layer's cache for B rows: K and V, each (B, NH, context, HS).
inline std::size_t kv_floats_per_layer(const gpt_config& cfg, int B) {
  return 2 * std::size_t(B) * std::size_t(cfg.context) * std::size_t(cfg.width);
}

/// Blocks held in memory: gpt_weights' f32 arrays as they are, or blocks packed into a format.
class resident_blocks final : public block_source {
public:
  /// The f32 arrays of `w`, in place (w must outlive this).
  explicit resident_blocks(const gpt_weights& w)
      : layout_(make_block_layout(w.cfg, weight_format::f32)) {
    for (const auto& b : w.blocks) blocks_.push_back(reinterpret_cast<const std::byte*>(b.data()));
  }
  resident_blocks(gpt_weights&&) = delete;
  /// w's blocks packed into `format` (a copy of their own).
  resident_blocks(const gpt_weights& w, weight_format format)
      : layout_(make_block_layout(w.cfg, format)) {
    for (const auto& b : w.blocks) {
      owned_.emplace_back(layout_.bytes);
      pack_block(layout_, b, owned_.back());
      blocks_.push_back(owned_.back().data());
    }
  }
  const gpt::block_layout& layout() const override { return layout_; }
  std::size_t layers() const override { return blocks_.size(); }
  void walk(std::size_t micro_batches, const block_visit& f) override {
    for (std::size_t l = 0; l < blocks_.size(); ++l)
      for (std::size_t j = 0; j < micro_batches; ++j) f(l, j, blocks_[l]);
  }

private:
  gpt::block_layout layout_;
  std::vector<std::vector<std::byte>> owned_;
  std::vector<const std::byte*> blocks_;
};

/// Caches in host vectors.
class resident_kv final : public kv_source {
public:
  resident_kv(const gpt_config& cfg, int B)
      : layers_(std::size_t(cfg.layers), std::vector<float>(kv_floats_per_layer(cfg, B))) {}
  void begin() override {}
  float* open(std::size_t l) override { return layers_.at(l).data(); }
  void close(std::size_t) override {}
  void end() override {}
  void abandon() noexcept override {}

private:
  std::vector<std::vector<float>> layers_;
};

/// Holds B rows of cache, each up to cfg.context positions long. Refers to the embeddings and
/// the sources: they must outlive the decoder.
class kv_decoder {
public:
  kv_decoder(gpt_weights&&, int) = delete;  // would keep a pointer to a temporary
  /// The resident f32 model, caches in host memory, one micro-batch.
  kv_decoder(const gpt_weights& w, int B)
      : cfg_(w.cfg),
        owned_blocks_(std::make_unique<resident_blocks>(w)),
        owned_kv_(std::make_unique<resident_kv>(w.cfg, std::max(B, 1))) {
    init(w.embed, *owned_blocks_, *owned_kv_, B, B);
  }

  /// Any sources: `embed` (embed_numel floats: wte, wpe, ln_f) stays resident, the blocks come
  /// from `blocks`, the caches (kv_floats_per_layer(cfg, B) floats per layer) from `kv`; rows
  /// go through each layer `micro_batch` at a time.
  kv_decoder(const gpt_config& cfg, const std::vector<float>& embed, block_source& blocks,
             kv_source& kv, int B, int micro_batch)
      : cfg_(cfg) {
    init(embed, blocks, kv, B, micro_batch);
  }

  kv_decoder(const kv_decoder&) = delete;
  kv_decoder& operator=(const kv_decoder&) = delete;

  const gpt_config& config() const noexcept { return cfg_; }
  int rows() const noexcept { return B_; }
  int micro_batch() const noexcept { return mb_; }
  /// Micro-batches per block: a walk runs each layer this many times.
  int micro_batches() const noexcept { return (B_ + mb_ - 1) / mb_; }
  /// Positions held in row b's cache.
  int length(int b) const { return len_.at(std::size_t(b)); }
  /// (B, V): for each row, the logits after the last token appended to it.
  const float* logits() const noexcept { return logits_.data(); }

  /// Empties every row's cache.
  void reset() { std::fill(len_.begin(), len_.end(), 0); }

  /// Bytes of the decoder's own host arrays for B rows, `positions` new positions per row at
  /// most (a prefill of that length), `mb` rows per micro-batch: the residual stream of every
  /// new row, one micro-batch's scratch (size_scratch), the head and the logits, the scores.
  static std::size_t host_bytes(const gpt_config& cfg, int B, int mb, int positions) {
    const std::size_t C = std::size_t(cfg.width), V = std::size_t(cfg.vocab);
    const std::size_t rows = std::size_t(B) * std::size_t(positions);
    const std::size_t mb_rows = std::size_t(mb) * std::size_t(positions);
    return 4 * (rows * C + mb_rows * (15 * C + 2) + std::size_t(B) * (2 * C + 2 * V) +
                std::size_t(cfg.context) * 16);
  }

  /// What the blocks' compute has cost since the decoder was made: seconds inside the blocks
  /// (not waiting for weights), and rows times layers computed. Their ratio is the compute of
  /// one row through one layer, which a batch-block size is chosen against (gpt_generate).
  double block_seconds() const noexcept { return block_seconds_; }
  std::size_t block_rows() const noexcept { return block_rows_; }

  /// Appends tokens[b] (any count, possibly none) to row b at positions length(b).. and runs
  /// them through the model. Rows that received tokens get new logits; the others keep theirs.
  void append(const std::vector<std::vector<int>>& tokens);

private:
  void init(const std::vector<float>& embed, block_source& blocks, kv_source& kv, int B,
            int micro_batch) {
    embed_ = &embed;
    blocks_ = &blocks;
    kv_ = &kv;
    B_ = B;
    mb_ = micro_batch;
    cfg_.validate();
    if (B < 1) throw strata::config_error("kv_decoder: batch rows B = " + std::to_string(B) + " must be >= 1");
    if (micro_batch < 1 || micro_batch > B)
      throw strata::config_error("kv_decoder: micro-batch of " + std::to_string(micro_batch) +
                                 " rows for a batch of " + std::to_string(B) + " (1 .. B)");
    if (embed.size() != embed_numel(cfg_))
      throw strata::config_error("kv_decoder: embeddings of " + std::to_string(embed.size()) +
                                 " floats; the config needs " + std::to_string(embed_numel(cfg_)));
    const block_layout& lay = blocks.layout();
    if (blocks.layers() != std::size_t(cfg_.layers) ||
        lay.bytes != make_block_layout(cfg_, lay.format).bytes)
      throw strata::config_error("kv_decoder: weights do not match their config (" +
                                 std::to_string(blocks.layers()) + " blocks of " +
                                 std::to_string(lay.bytes) + " bytes for " +
                                 std::to_string(cfg_.layers) + " layers)");
    len_.assign(std::size_t(B), 0);
    logits_.assign(std::size_t(B) * cfg_.vocab, 0.0f);
    // Offsets by name, so the decoder does not depend on the order of the slots.
    static const char* embed_names[] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    static const char* block_names[] = {
        "ln_1.weight", "ln_1.bias",   "attn.c_attn.weight", "attn.c_attn.bias",
        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    const std::vector<tensor_slot> es = embed_slots(cfg_);
    for (const char* name : embed_names) embed_off_.push_back(find_slot(es, name).offset);
    for (const char* name : block_names) block_tensors_.push_back(lay.find(name));
  }

  const float* embed(int slot) const { return embed_->data() + embed_off_[slot]; }
  // Indices into embed_off_ / block_tensors_ (the order of the name lists in the constructor).
  enum { wte = 0, wpe = 1, ln_f_w = 2, ln_f_b = 3 };
  enum { ln_1_w = 0, ln_1_b, c_attn_w, c_attn_b, c_proj_w, c_proj_b, ln_2_w, ln_2_b,
         c_fc_w, c_fc_b, mlp_proj_w, mlp_proj_b };
  const float* vec(const std::byte* block, int t) const {
    return reinterpret_cast<const float*>(block + block_tensors_[std::size_t(t)].offset);
  }
  weight_view mat(const std::byte* block, int t) const {
    return view_of(block_tensors_[std::size_t(t)], block);
  }

  /// Below this many matmul FLOPs per layer a call runs on one thread (see forward_rows).
  static constexpr double serial_flops_per_layer = 4e6;

  /// Sets OpenMP's thread count for this thread's next parallel regions, and restores it.
  struct omp_threads_guard {
    int saved = 0;
    explicit omp_threads_guard(bool serial) {
#if defined(_OPENMP)
      saved = omp_get_max_threads();
      if (serial) omp_set_num_threads(1);
#else
      (void)serial;
#endif
    }
    ~omp_threads_guard() {
#if defined(_OPENMP)
      omp_set_num_threads(saved);
#endif
    }
    omp_threads_guard(const omp_threads_guard&) = delete;
    omp_threads_guard& operator=(const omp_threads_guard&) = delete;
  };

  void forward_rows(int N) {
    const int C = cfg_.width, V = cfg_.vocab;
    const std::size_t NC = std::size_t(N) * C;
    // A decode step of the small model is a few rows: under ~4 MFLOP per layer, OpenMP's
    // fork/join costs more than the work, and on a busy machine one descheduled thread stalls
    // every barrier (measured on 2 shared cores: 21 ms per step threaded, 0.45 ms serial).
    const omp_threads_guard threads(24.0 * N * double(C) * C < serial_flops_per_layer);
    x_.resize(NC);

    // x (N, C) = wte[token] + wpe[position]
    const float* te = embed(wte);
    const float* pe = embed(wpe);
#pragma omp parallel for
    for (int i = 0; i < N; ++i)
      for (int c = 0; c < C; ++c)
        x_[std::size_t(i) * C + c] = te[std::size_t(tok_[i]) * C + c] + pe[std::size_t(pos_[i]) * C + c];

    // Micro-batch j's new rows: [first_[j], first_[j+1]).
    const int k = micro_batches();
    first_.assign(std::size_t(k) + 1, N);
    for (int i = N - 1; i >= 0; --i) first_[std::size_t(row_[i] / mb_)] = i;
    for (int j = k - 1; j >= 0; --j) first_[j] = std::min(first_[j], first_[j + 1]);
    int widest = 0;
    for (int j = 0; j < k; ++j) widest = std::max(widest, first_[j + 1] - first_[j]);
    size_scratch(widest);

    const std::size_t kv_half = kv_floats_per_layer(cfg_, B_) / 2;
    float* cache = nullptr;
    kv_->begin();
    try {
      blocks_->walk(std::size_t(k), [&](std::size_t l, std::size_t j, const std::byte* block) {
        if (j == 0) cache = kv_->open(l);
        const int i0 = first_[j], i1 = first_[j + 1];
        if (i1 > i0) {
          const auto t0 = std::chrono::steady_clock::now();
          block_forward(block, cache, cache + kv_half, i0, i1 - i0);
          block_seconds_ +=
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          block_rows_ += std::size_t(i1 - i0);
        }
        if (int(j) == k - 1) kv_->close(l);
      });
      kv_->end();
    } catch (...) {
      kv_->abandon();
      throw;
    }

    // The head only for each row's last new position: (R, C) -> ln_f -> (R, V) with the tied wte.
    std::vector<int> last_of(std::size_t(B_), -1);
    for (int i = 0; i < N; ++i) last_of[std::size_t(row_[i])] = i;
    std::vector<int> rows;
    for (int b = 0; b < B_; ++b)
      if (last_of[b] >= 0) rows.push_back(b);
    const int R = static_cast<int>(rows.size());
    head_in_.resize(std::size_t(R) * C);
    head_ln_.resize(std::size_t(R) * C);
    mean_.resize(std::max<std::size_t>(mean_.size(), std::size_t(R)));
    rstd_.resize(std::max<std::size_t>(rstd_.size(), std::size_t(R)));
    for (int r = 0; r < R; ++r)
      std::copy_n(x_.data() + std::size_t(last_of[rows[r]]) * C, C, head_in_.data() + std::size_t(r) * C);
    layernorm_forward(head_ln_.data(), mean_.data(), rstd_.data(), head_in_.data(), embed(ln_f_w),
                      embed(ln_f_b), R, C);
    head_.resize(std::size_t(R) * V);
    const weight_view wte_view{weight_format::f32, reinterpret_cast<const std::byte*>(te), V, C};
    matmul_stored_forward(head_.data(), head_ln_.data(), wte_view, nullptr, R, C, V);
    for (int r = 0; r < R; ++r)
      std::copy_n(head_.data() + std::size_t(r) * V, V, logits_.data() + std::size_t(rows[r]) * V);
  }

  void size_scratch(int rows) {
    const std::size_t NC = std::size_t(rows) * cfg_.width;
    x2_.resize(NC);
    ln_.resize(NC);
    att_.resize(NC);
    proj_.resize(NC);
    qkv_.resize(NC * 3);
    fc_.resize(NC * 4);
    fc_gelu_.resize(NC * 4);
    mean_.resize(std::size_t(rows));
    rstd_.resize(std::size_t(rows));
  }

  /// One block for new rows [i0, i0 + n): x_ (their residual) in place, their K, V stored into
  /// the layer's cache first (a row appended in this call attends to the ones before it).
  void block_forward(const std::byte* w, float* K, float* Vc, int i0, int n) {
    const int C = cfg_.width, NH = cfg_.heads, HS = C / NH;
    const std::size_t NC = std::size_t(n) * C;
    float* x = x_.data() + std::size_t(i0) * C;
    layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x, vec(w, ln_1_w), vec(w, ln_1_b), n, C);
    matmul_stored_forward(qkv_.data(), ln_.data(), mat(w, c_attn_w), vec(w, c_attn_b), n, C, 3 * C);
#pragma omp parallel for
    for (int i = 0; i < n; ++i)
      for (int h = 0; h < NH; ++h) {
        const std::size_t at = cache_index(row_[i0 + i], h, pos_[i0 + i]);
        const float* q = qkv_.data() + std::size_t(i) * 3 * C;
        std::copy_n(q + C + h * HS, HS, K + at);
        std::copy_n(q + 2 * C + h * HS, HS, Vc + at);
      }
    cached_attention(i0, n, K, Vc);
    matmul_stored_forward(proj_.data(), att_.data(), mat(w, c_proj_w), vec(w, c_proj_b), n, C, C);
    residual_forward(x2_.data(), x, proj_.data(), NC);
    layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x2_.data(), vec(w, ln_2_w),
                      vec(w, ln_2_b), n, C);
    matmul_stored_forward(fc_.data(), ln_.data(), mat(w, c_fc_w), vec(w, c_fc_b), n, C, 4 * C);
    gelu_forward(fc_gelu_.data(), fc_.data(), NC * 4);
    matmul_stored_forward(proj_.data(), fc_gelu_.data(), mat(w, mlp_proj_w), vec(w, mlp_proj_b),
                          n, 4 * C, C);
    residual_forward(x, x2_.data(), proj_.data(), NC);
  }

  std::size_t cache_index(int b, int h, int t) const {
    const int HS = cfg_.width / cfg_.heads;
    return ((std::size_t(b) * cfg_.heads + h) * cfg_.context + t) * HS;
  }

  /// att (n, C): for new row i0+i and head h, softmax(q k^T / sqrt(HS)) v over positions
  /// 0..pos of its row's cache. Two passes over the scores (max, then exp-sum) with a
  /// per-thread score buffer of context floats.
  void cached_attention(int i0, int n, const float* K, const float* Vc) {
    const int C = cfg_.width, NH = cfg_.heads, HS = C / NH, T = cfg_.context;
    const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
    int threads = 1;
#if defined(_OPENMP)
    threads = omp_get_max_threads();
#endif
    scores_.resize(std::size_t(threads) * T);
#pragma omp parallel for collapse(2)
    for (int i = 0; i < n; ++i)
      for (int h = 0; h < NH; ++h) {
        int tid = 0;
#if defined(_OPENMP)
        tid = omp_get_thread_num();
#endif
        float* s = scores_.data() + std::size_t(tid) * T;
        const float* q = qkv_.data() + std::size_t(i) * 3 * C + h * HS;
        const float* k = K + cache_index(row_[i0 + i], h, 0);
        const float* v = Vc + cache_index(row_[i0 + i], h, 0);
        const int P = pos_[i0 + i] + 1;
        float smax = -INFINITY;
        for (int t = 0; t < P; ++t) {
          s[t] = dot_fixed(q, k + std::size_t(t) * HS, HS) * scale;
          smax = std::max(smax, s[t]);
        }
        float sum = 0;
        for (int t = 0; t < P; ++t) {
          s[t] = std::exp(s[t] - smax);
          sum += s[t];
        }
        float* out = att_.data() + std::size_t(i) * C + h * HS;
        std::fill_n(out, HS, 0.0f);
        const float inv = 1.0f / sum;
        for (int t = 0; t < P; ++t) {
          const float p = s[t] * inv;
#pragma omp simd
          for (int d = 0; d < HS; ++d) out[d] += p * v[std::size_t(t) * HS + d];
        }
      }
  }

  gpt_config cfg_;
  const std::vector<float>* embed_;
  block_source* blocks_;
  kv_source* kv_;
  std::unique_ptr<block_source> owned_blocks_;  // the resident constructor's own sources
  std::unique_ptr<kv_source> owned_kv_;
  int B_ = 0, mb_ = 0;
  double block_seconds_ = 0;
  std::size_t block_rows_ = 0;
  std::vector<std::size_t> embed_off_;
  std::vector<stored_tensor> block_tensors_;
  std::vector<int> len_;                   // (B,) positions held per row
  std::vector<float> logits_;              // (B, V)
  // Per-call scratch for N new rows.
  std::vector<int> row_, pos_, tok_;       // (N,)
  std::vector<int> first_;                 // (micro-batches + 1,) first new row of each
  std::vector<float> x_;                   // (N, C) the residual stream of every new row
  // One micro-batch high (its widest: n rows).
  std::vector<float> x2_, ln_, att_, proj_;  // (n, C)
  std::vector<float> qkv_;                 // (n, 3C)
  std::vector<float> fc_, fc_gelu_;        // (n, 4C)
  std::vector<float> mean_, rstd_;         // (n,)
  std::vector<float> scores_;              // (threads, context)
  std::vector<float> head_in_, head_ln_;   // (rows, C)
  std::vector<float> head_;                // (rows, V)
};

inline void kv_decoder::append(const std::vector<std::vector<int>>& tokens) {
  if (tokens.size() != std::size_t(B_))
    throw strata::config_error("kv_decoder: append got " + std::to_string(tokens.size()) +
                               " rows, the decoder has " + std::to_string(B_));
  // Flatten: new row i is batch row row_[i] at position pos_[i], in batch-row order, so a
  // micro-batch's new rows are one contiguous range.
  row_.clear();
  pos_.clear();
  tok_.clear();
  for (int b = 0; b < B_; ++b) {
    if (len_[b] + tokens[b].size() > std::size_t(cfg_.context))
      throw strata::config_error("kv_decoder: row " + std::to_string(b) + " holds " +
                                 std::to_string(len_[b]) + " positions; " +
                                 std::to_string(tokens[b].size()) +
                                 " more exceed the context of " + std::to_string(cfg_.context));
    for (std::size_t t = 0; t < tokens[b].size(); ++t) {
      const int tok = tokens[b][t];
      if (tok < 0 || tok >= cfg_.vocab)
        throw strata::config_error("kv_decoder: token " + std::to_string(tok) + " of row " +
                                   std::to_string(b) + " is outside the vocabulary of " +
                                   std::to_string(cfg_.vocab));
      row_.push_back(b);
      pos_.push_back(len_[b] + int(t));
      tok_.push_back(tok);
    }
  }
  const int N = static_cast<int>(tok_.size());
  if (N == 0) return;
  forward_rows(N);
  for (int b = 0; b < B_; ++b) len_[b] += static_cast<int>(tokens[b].size());
}

}  // namespace gpt
