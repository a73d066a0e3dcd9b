// examples/gpt/sampler.hpp — generating text: a seeded token sampler, and the loop that runs
// prompts through a KV-cache decoder and samples.
//
// What this is: sample_token picks a token from logits with temperature and top-k, drawing
// from a splitmix64 stream per batch row (random.hpp: the same numbers on every standard
// library); generate() ties it to a kv_decoder (decoder.hpp: resident or streamed weights),
// times prefill and decode, and reports each step to an optional progress callback.
// What it is not: a beam search, or a batched server (all rows advance together, one token
// per step).
#pragma once

#include "data.hpp"
#include "random.hpp"
#include "gpt_config.hpp"
#include "decoder.hpp"
#include "safetensors.hpp"

#include <strata/core/error.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

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

/// What generate() tells its progress callback after each token of every row is sampled.
struct generation_step {
  int token = 0;          // 1 .. n_new: tokens sampled per row so far
  int n_new = 0;
  double step_ms = 0;     // since the previous report (the first: the prefill)
  double elapsed_ms = 0;  // since generate() started
};
using generation_progress = std::function<void(const generation_step&)>;

/// Runs the prompts (each non-empty; one longer than the context keeps its last `context`
/// tokens) and samples n_new tokens per row. Row b draws from rng(seed, b), its own stream.
/// When a row reaches the context, every row keeps the last context/2 tokens of its text and
/// the cache is rebuilt from them (positions restart at 0, as they would in a fresh prompt).
/// `progress`, if given, hears of each token as soon as it is sampled for every row.
inline generation generate(kv_decoder& dec, const std::vector<std::vector<int>>& prompts,
                           int n_new, const sampling_options& opt,
                           const generation_progress& progress = {}) {
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
  auto last = t1;
  for (int n = 0; n < n_new; ++n) {
    for (int b = 0; b < B; ++b) {
      const int tok = sample_token(dec.logits() + std::size_t(b) * V, V, opt, streams[b]);
      g.tokens[b].push_back(tok);
      text[b].push_back(tok);
      step[b][0] = tok;
    }
    if (progress) {
      const auto now = clock::now();
      progress({n + 1, n_new,
                std::chrono::duration<double, std::milli>(now - (n == 0 ? t0 : last)).count(),
                std::chrono::duration<double, std::milli>(now - t0).count()});
      last = now;
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
