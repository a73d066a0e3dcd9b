// examples/gpt/sampler.hpp — generating text: a KV-cache decoder and a seeded token sampler.
//
// What this is: kv_decoder runs the model forward for a few new positions per row against a
// cache of every earlier position's keys and values, per layer K, V (B, NH, context, HS), so
// a token costs one row through each matmul instead of a pass over the whole prefix. The
// prompt (prefill) and each generated token (decode) go through the same code: append tokens
// to each row at that row's own position, so prompts of different lengths need no padding.
// sample_token picks a token from logits with temperature and top-k, drawing from a splitmix64
// stream per batch row (random.hpp: the same numbers on every standard library); generate()
// ties them together and times prefill and decode.
// What it is not: a training path (no backward, nothing kept for one), a beam search, or a
// batched server (all rows advance together, one token per step).
//
// Layernorm, matmul, gelu and residual are host/kernels.hpp's; attention over the cache is
// written here (one query row against positions 0..p of its own row), so a test that compares
// the decoder's logits with host_model's full forward checks two independent attentions.
#pragma once

#include "data.hpp"
#include "random.hpp"
#include "gpt_config.hpp"
#include "host/kernels.hpp"
#include "safetensors.hpp"

#include <strata/core/error.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace gpt {

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

struct sampling_options {
  float temperature = 1.0f;  // 0: greedy (argmax); otherwise softmax(logits / temperature)
  int top_k = 0;             // keep the k largest logits; 0 (or >= vocab): keep all
  std::uint64_t seed = 1337;
};

/// The index of the largest logit (the first one on ties).
inline int argmax(const float* logits, int V) {
  return static_cast<int>(std::max_element(logits, logits + V) - logits);
}

/// One token from logits (V,). temperature <= 0 is greedy and draws no random number.
/// Otherwise the candidates (all, or the top k ordered by logit, ties by index) get
/// probabilities exp((l - max) / temperature), summed in double, and one uniform draw walks
/// their cumulative sum.
inline int sample_token(const float* logits, int V, const sampling_options& opt, rng& gen) {
  if (!(opt.temperature > 0.0f)) return argmax(logits, V);
  std::vector<int> idx(static_cast<std::size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  int k = V;
  if (opt.top_k > 0 && opt.top_k < V) {
    k = opt.top_k;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
  }
  double lmax = logits[idx[0]];
  for (int i = 1; i < k; ++i) lmax = std::max(lmax, double(logits[idx[i]]));
  std::vector<double> p(static_cast<std::size_t>(k));
  double total = 0;
  for (int i = 0; i < k; ++i) {
    p[i] = std::exp((double(logits[idx[i]]) - lmax) / double(opt.temperature));
    total += p[i];
  }
  const double u = gen.uniform() * total;
  double cum = 0;
  for (int i = 0; i < k; ++i) {
    cum += p[i];
    if (u < cum) return idx[i];
  }
  return idx[k - 1];  // u within rounding of total
}

// ---------------------------------------------------------------------------------------------
// The KV-cache decoder
// ---------------------------------------------------------------------------------------------

/// Holds B rows of cache, each up to cfg.context positions long. Refers to the weights: they
/// must outlive the decoder.
class kv_decoder {
public:
  kv_decoder(gpt_weights&&, int) = delete;  // would keep a pointer to a temporary
  kv_decoder(const gpt_weights& w, int B) : w_(&w), cfg_(w.cfg), B_(B) {
    cfg_.validate();
    if (B < 1) throw strata::config_error("kv_decoder: batch rows B = " + std::to_string(B) + " must be >= 1");
    if (w.embed.size() != embed_numel(cfg_) || w.blocks.size() != std::size_t(cfg_.layers))
      throw strata::config_error("kv_decoder: weights do not match their config (embed " +
                                 std::to_string(w.embed.size()) + " floats, " +
                                 std::to_string(w.blocks.size()) + " blocks)");
    const std::size_t per_layer = std::size_t(B) * cfg_.context * cfg_.width;  // (B, NH, T, HS)
    k_.assign(std::size_t(cfg_.layers), std::vector<float>(per_layer));
    v_.assign(std::size_t(cfg_.layers), std::vector<float>(per_layer));
    len_.assign(std::size_t(B), 0);
    logits_.assign(std::size_t(B) * cfg_.vocab, 0.0f);
    // Offsets by name, so the decoder does not depend on the order of the slots.
    static const char* embed_names[] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    static const char* block_names[] = {
        "ln_1.weight", "ln_1.bias",   "attn.c_attn.weight", "attn.c_attn.bias",
        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    const std::vector<tensor_slot> es = embed_slots(cfg_), bs = block_slots(cfg_);
    for (const char* name : embed_names) embed_off_.push_back(find_slot(es, name).offset);
    for (const char* name : block_names) block_off_.push_back(find_slot(bs, name).offset);
  }

  const gpt_config& config() const noexcept { return cfg_; }
  int rows() const noexcept { return B_; }
  /// Positions held in row b's cache.
  int length(int b) const { return len_.at(std::size_t(b)); }
  /// (B, V): for each row, the logits after the last token appended to it.
  const float* logits() const noexcept { return logits_.data(); }

  /// Empties every row's cache.
  void reset() { std::fill(len_.begin(), len_.end(), 0); }

  /// Appends tokens[b] (any count, possibly none) to row b at positions length(b).. and runs
  /// them through the model. Rows that received tokens get new logits; the others keep theirs.
  void append(const std::vector<std::vector<int>>& tokens) {
    if (tokens.size() != std::size_t(B_))
      throw strata::config_error("kv_decoder: append got " + std::to_string(tokens.size()) +
                                 " rows, the decoder has " + std::to_string(B_));
    // Flatten: new row i is batch row row_[i] at position pos_[i].
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

private:
  const float* embed(int slot) const { return w_->embed.data() + embed_off_[slot]; }
  const float* param(int layer, int slot) const {
    return w_->blocks[std::size_t(layer)].data() + block_off_[slot];
  }
  // Indices into embed_off_ / block_off_ (the order of the name lists in the constructor).
  enum { wte = 0, wpe = 1, ln_f_w = 2, ln_f_b = 3 };
  enum { ln_1_w = 0, ln_1_b, c_attn_w, c_attn_b, c_proj_w, c_proj_b, ln_2_w, ln_2_b,
         c_fc_w, c_fc_b, mlp_proj_w, mlp_proj_b };

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
    const int C = cfg_.width, NH = cfg_.heads, HS = C / NH, V = cfg_.vocab;
    const std::size_t NC = std::size_t(N) * C;
    // A decode step of the small model is a few rows: under ~4 MFLOP per layer, OpenMP's
    // fork/join costs more than the work, and on a busy machine one descheduled thread stalls
    // every barrier (measured on 2 shared cores: 21 ms per step threaded, 0.45 ms serial).
    const omp_threads_guard threads(24.0 * N * double(C) * C < serial_flops_per_layer);
    x_.resize(NC);
    x2_.resize(NC);
    ln_.resize(NC);
    att_.resize(NC);
    proj_.resize(NC);
    qkv_.resize(NC * 3);
    fc_.resize(NC * 4);
    fc_gelu_.resize(NC * 4);
    mean_.resize(std::size_t(N));
    rstd_.resize(std::size_t(N));

    // x (N, C) = wte[token] + wpe[position]
    const float* te = embed(wte);
    const float* pe = embed(wpe);
#pragma omp parallel for
    for (int i = 0; i < N; ++i)
      for (int c = 0; c < C; ++c)
        x_[std::size_t(i) * C + c] = te[std::size_t(tok_[i]) * C + c] + pe[std::size_t(pos_[i]) * C + c];

    for (int l = 0; l < cfg_.layers; ++l) {
      layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), param(l, ln_1_w),
                        param(l, ln_1_b), N, C);
      matmul_forward(qkv_.data(), ln_.data(), param(l, c_attn_w), param(l, c_attn_b), N, C, 3 * C);
      // Store every new row's k, v first: a row appended in this call attends to the ones
      // before it in the same call.
      float* K = k_[std::size_t(l)].data();
      float* Vc = v_[std::size_t(l)].data();
#pragma omp parallel for
      for (int i = 0; i < N; ++i)
        for (int h = 0; h < NH; ++h) {
          const std::size_t at = cache_index(row_[i], h, pos_[i]);
          const float* q = qkv_.data() + std::size_t(i) * 3 * C;
          std::copy_n(q + C + h * HS, HS, K + at);
          std::copy_n(q + 2 * C + h * HS, HS, Vc + at);
        }
      cached_attention(N, K, Vc);
      matmul_forward(proj_.data(), att_.data(), param(l, c_proj_w), param(l, c_proj_b), N, C, C);
      residual_forward(x2_.data(), x_.data(), proj_.data(), NC);
      layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x2_.data(), param(l, ln_2_w),
                        param(l, ln_2_b), N, C);
      matmul_forward(fc_.data(), ln_.data(), param(l, c_fc_w), param(l, c_fc_b), N, C, 4 * C);
      gelu_forward(fc_gelu_.data(), fc_.data(), NC * 4);
      matmul_forward(proj_.data(), fc_gelu_.data(), param(l, mlp_proj_w), param(l, mlp_proj_b), N,
                     4 * C, C);
      residual_forward(x_.data(), x2_.data(), proj_.data(), NC);
    }

    // The head only for each row's last new position: (R, C) -> ln_f -> (R, V) with the tied wte.
    std::vector<int> last_of(std::size_t(B_), -1);
    for (int i = 0; i < N; ++i) last_of[std::size_t(row_[i])] = i;
    std::vector<int> rows;
    for (int b = 0; b < B_; ++b)
      if (last_of[b] >= 0) rows.push_back(b);
    const int R = static_cast<int>(rows.size());
    for (int r = 0; r < R; ++r)
      std::copy_n(x_.data() + std::size_t(last_of[rows[r]]) * C, C, x2_.data() + std::size_t(r) * C);
    layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x2_.data(), embed(ln_f_w),
                      embed(ln_f_b), R, C);
    head_.resize(std::size_t(R) * V);
    matmul_forward(head_.data(), ln_.data(), te, nullptr, R, C, V);
    for (int r = 0; r < R; ++r)
      std::copy_n(head_.data() + std::size_t(r) * V, V, logits_.data() + std::size_t(rows[r]) * V);
  }

  std::size_t cache_index(int b, int h, int t) const {
    const int HS = cfg_.width / cfg_.heads;
    return ((std::size_t(b) * cfg_.heads + h) * cfg_.context + t) * HS;
  }

  /// att (N, C): for new row i and head h, softmax(q k^T / sqrt(HS)) v over positions
  /// 0..pos_[i] of row row_[i]'s cache. Two passes over the scores (max, then exp-sum) with a
  /// per-thread score buffer of context floats.
  void cached_attention(int N, const float* K, const float* Vc) {
    const int C = cfg_.width, NH = cfg_.heads, HS = C / NH, T = cfg_.context;
    const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
    int threads = 1;
#if defined(_OPENMP)
    threads = omp_get_max_threads();
#endif
    scores_.resize(std::size_t(threads) * T);
#pragma omp parallel for collapse(2)
    for (int i = 0; i < N; ++i)
      for (int h = 0; h < NH; ++h) {
        int tid = 0;
#if defined(_OPENMP)
        tid = omp_get_thread_num();
#endif
        float* s = scores_.data() + std::size_t(tid) * T;
        const float* q = qkv_.data() + std::size_t(i) * 3 * C + h * HS;
        const float* k = K + cache_index(row_[i], h, 0);
        const float* v = Vc + cache_index(row_[i], h, 0);
        const int P = pos_[i] + 1;
        float smax = -INFINITY;
        for (int t = 0; t < P; ++t) {
          float dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int d = 0; d < HS; ++d) dot += q[d] * k[std::size_t(t) * HS + d];
          s[t] = dot * scale;
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

  const gpt_weights* w_;
  gpt_config cfg_;
  int B_;
  std::vector<std::size_t> embed_off_, block_off_;
  std::vector<std::vector<float>> k_, v_;  // (layers) x (B, NH, context, HS)
  std::vector<int> len_;                   // (B,) positions held per row
  std::vector<float> logits_;              // (B, V)
  // Per-call scratch for N new rows.
  std::vector<int> row_, pos_, tok_;       // (N,)
  std::vector<float> x_, x2_, ln_, att_, proj_;  // (N, C)
  std::vector<float> qkv_;                 // (N, 3C)
  std::vector<float> fc_, fc_gelu_;        // (N, 4C)
  std::vector<float> mean_, rstd_;         // (N,)
  std::vector<float> scores_;              // (threads, context)
  std::vector<float> head_;                // (rows, V)
};

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

struct generation {
  std::vector<std::vector<int>> tokens;  // (B, n_new): the sampled tokens, prompt excluded
  double prefill_ms = 0;                 // the prompts through the model, first logits ready
  double decode_ms = 0;                  // after that: n_new samples, n_new - 1 appends (+ refills)
  int decode_steps = 0;                  // appends of one token per row (n_new - 1 at most)
  int refills = 0;                       // times the cache was rebuilt at the context limit
  int truncated_prompts = 0;             // prompts longer than the context, cut to their end
};

/// Runs the prompts (each non-empty; one longer than the context keeps its last `context`
/// tokens) and samples n_new tokens per row. Row b draws from rng(seed, b), its own stream.
/// When a row reaches the context, every row keeps the last context/2 tokens of its text and
/// the cache is rebuilt from them (positions restart at 0, as they would in a fresh prompt).
inline generation generate(kv_decoder& dec, const std::vector<std::vector<int>>& prompts,
                           int n_new, const sampling_options& opt) {
  using clock = std::chrono::steady_clock;
  const int B = dec.rows(), V = dec.config().vocab, ctx = dec.config().context;
  if (prompts.size() != std::size_t(B))
    throw strata::config_error("generate: " + std::to_string(prompts.size()) +
                               " prompts for a decoder of " + std::to_string(B) + " rows");
  if (n_new < 0) throw strata::config_error("generate: token count " + std::to_string(n_new) + " < 0");
  generation g;
  std::vector<std::vector<int>> text(prompts);  // (B, *) prompt + generated, for refills
  for (int b = 0; b < B; ++b) {
    if (text[b].empty())
      throw strata::config_error("generate: prompt " + std::to_string(b) + " is empty");
    if (text[b].size() > std::size_t(ctx)) {
      text[b].erase(text[b].begin(), text[b].end() - ctx);
      ++g.truncated_prompts;
    }
  }
  std::vector<rng> streams;
  for (int b = 0; b < B; ++b) streams.emplace_back(opt.seed, std::uint64_t(b));
  g.tokens.assign(std::size_t(B), {});

  auto t0 = clock::now();
  dec.reset();
  dec.append(text);
  auto t1 = clock::now();
  g.prefill_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

  std::vector<std::vector<int>> step(std::size_t(B), std::vector<int>(1));
  for (int n = 0; n < n_new; ++n) {
    for (int b = 0; b < B; ++b) {
      const int tok = sample_token(dec.logits() + std::size_t(b) * V, V, opt, streams[b]);
      g.tokens[b].push_back(tok);
      text[b].push_back(tok);
      step[b][0] = tok;
    }
    if (n + 1 == n_new) break;  // the last token needs no logits after it
    bool full = false;
    for (int b = 0; b < B; ++b) full |= dec.length(b) >= ctx;
    if (full) {
      std::vector<std::vector<int>> tails(static_cast<std::size_t>(B));
      for (int b = 0; b < B; ++b) {
        const std::size_t keep = std::min(text[b].size(), std::size_t(std::max(1, ctx / 2)));
        tails[b].assign(text[b].end() - std::ptrdiff_t(keep), text[b].end());
      }
      dec.reset();
      dec.append(tails);
      ++g.refills;
    } else {
      dec.append(step);
    }
    ++g.decode_steps;
  }
  g.decode_ms = std::chrono::duration<double, std::milli>(clock::now() - t1).count();
  return g;
}

}  // namespace gpt
