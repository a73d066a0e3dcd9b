// Tests for text generation: examples/gpt/sampler.hpp and the gpt_generate program.
//
// - kv_decoder: after every append (a batched prefill of prompts of different lengths, then
//   one token per row, then uneven appends), each row's logits equal host_model's full forward
//   over that row's whole prefix. The two share layernorm/matmul/gelu kernels but not the
//   attention (a cache walk here, tiled online softmax there) nor the summation order, so
//   they agree to float rounding: |diff| <= 1e-5 * max(1, max |logit|) (measured: 3e-7).
// - generate(): with and without cache rebuilds at the context limit, the tokens are those of
//   a cache-free loop that runs host_model over each row's visible text and samples with the
//   same sampler (greedy, and temperature + top-k); so greedy really is argmax of the model.
// - sampling: greedy = argmax (first index on ties), top-k keeps only the k largest, the
//   empirical distribution matches softmax(logits / temperature), a seed fixes the text and
//   another seed changes it, a row's text does not depend on the rows beside it; the RNG is
//   splitmix64 (its published first output) and a stream is a state of its own.
// - gpt_generate: bad arguments exit 2 with a message, unusable weights exit 1, and a run
//   prints the same text as generate() and its latencies.
#include "catch.hpp"
#include "gpt_test_support.hpp"

#include "data.hpp"
#include "gpt_config.hpp"
#include "host/model.hpp"
#include "safetensors.hpp"
#include "sampler.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;

namespace {

using gpt_test::test_config;
using gpt_test::test_weights;

/// A host_model holding the weights, for full forwards of up to `B` rows.
gpt::host_model reference_model(const gpt::gpt_weights& w, int B) {
  gpt::host_model m(w.cfg, B);
  m.embed_params() = w.embed;
  for (int l = 0; l < w.cfg.layers; ++l) m.block_params(l) = w.blocks[l];
  return m;
}

/// Logits (V) at the last position of host_model's full forward over `seq`.
std::vector<float> full_forward_last(gpt::host_model& m, const std::vector<int>& seq) {
  const int T = static_cast<int>(seq.size()), V = m.config().vocab;
  m.forward(seq.data(), nullptr, 1, T);
  const float* last = m.logits() + std::size_t(T - 1) * V;
  return std::vector<float>(last, last + V);
}

/// max |a - b| relative to max(1, max |b|).
double scaled_diff(const float* a, const std::vector<float>& b) {
  double diff = 0, scale = 1;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return diff / scale;
}

constexpr double logit_tolerance = 1e-5;

/// generate() without a cache: every token comes from host_model over the row's visible text,
/// with generate()'s policy (prompts cut to the context; when a row's visible text fills the
/// context, every row restarts from the last context/2 tokens of its text).
std::vector<std::vector<int>> reference_generate(const gpt::gpt_weights& w,
                                                 std::vector<std::vector<int>> text, int n_new,
                                                 const gpt::sampling_options& opt) {
  const int B = static_cast<int>(text.size()), V = w.cfg.vocab, ctx = w.cfg.context;
  gpt::host_model m = reference_model(w, 1);
  std::vector<std::size_t> start(B, 0);  // text[b][start[b]:] is what the model sees
  for (int b = 0; b < B; ++b)
    if (text[b].size() > std::size_t(ctx)) start[b] = text[b].size() - ctx;
  std::vector<gpt::rng> rng;
  for (int b = 0; b < B; ++b) rng.emplace_back(opt.seed, std::uint64_t(b));
  std::vector<std::vector<int>> out(B);
  for (int n = 0; n < n_new; ++n) {
    bool full = false;
    for (int b = 0; b < B; ++b) {
      const std::vector<int> visible(text[b].begin() + std::ptrdiff_t(start[b]), text[b].end());
      full |= visible.size() >= std::size_t(ctx);
      const std::vector<float> logits = full_forward_last(m, visible);
      const int tok = gpt::sample_token(logits.data(), V, opt, rng[b]);
      out[b].push_back(tok);
      text[b].push_back(tok);
    }
    if (full)
      for (int b = 0; b < B; ++b)
        start[b] = text[b].size() - std::min(text[b].size(), std::size_t(ctx / 2));
  }
  return out;
}

}  // namespace

// =============================================================================================
// KV cache == full forward
// =============================================================================================

TEST_CASE("kv_decoder: logits after every append equal a full forward over the prefix",
          "[gpt][generate]") {
  const gpt::gpt_config cfg = test_config();
  const gpt::gpt_weights w = test_weights(cfg, 21);
  gpt::host_model ref = reference_model(w, 1);
  const int B = 3, V = cfg.vocab;
  gpt::kv_decoder dec(w, B);

  std::vector<std::vector<int>> seq = {gpt::encode("Hello"), gpt::encode("A"),
                                       gpt::encode("prompt #3")};
  dec.append(seq);
  double worst = 0;
  int checks = 0;
  auto check_all_rows = [&] {
    for (int b = 0; b < B; ++b) {
      REQUIRE(dec.length(b) == int(seq[b].size()));
      worst = std::max(worst, scaled_diff(dec.logits() + std::size_t(b) * V, full_forward_last(ref, seq[b])));
      ++checks;
    }
  };
  check_all_rows();

  // One token per row for a while (the decode path).
  for (int step = 0; step < 10; ++step) {
    std::vector<std::vector<int>> next(B);
    for (int b = 0; b < B; ++b) {
      next[b] = {int(gpt::splitmix64(step * 31 + b) % 256)};
      seq[b].push_back(next[b][0]);
    }
    dec.append(next);
    check_all_rows();
  }

  // Uneven appends: several tokens to one row, none to another (its logits must stay).
  const std::vector<float> untouched(dec.logits() + V, dec.logits() + 2 * V);
  std::vector<std::vector<int>> uneven = {gpt::encode("xyz"), {}, gpt::encode("!")};
  for (int b = 0; b < B; ++b) seq[b].insert(seq[b].end(), uneven[b].begin(), uneven[b].end());
  dec.append(uneven);
  check_all_rows();
  CHECK(std::equal(untouched.begin(), untouched.end(), dec.logits() + V));

  INFO("worst scaled logit difference " << worst << " over " << checks << " row checks");
  CHECK(worst <= logit_tolerance);
  CHECK(checks == 3 * 12);

  // Filling a row to the context is allowed, one more is an error naming the row.
  std::vector<std::vector<int>> fill(B);
  fill[0].assign(std::size_t(cfg.context - dec.length(0)), 'a');
  dec.append(fill);
  CHECK(dec.length(0) == cfg.context);
  std::vector<std::vector<int>> over(B);
  over[0] = {'b'};
  std::string msg;
  try {
    dec.append(over);
  } catch (const strata::config_error& e) {
    msg = e.what();
  }
  INFO(msg);
  CHECK(msg.find("row 0") != std::string::npos);
  CHECK(msg.find("context of 24") != std::string::npos);
}

// =============================================================================================
// generate() == a cache-free loop
// =============================================================================================

TEST_CASE("generate: tokens equal a cache-free loop over host_model, with and without rebuilds",
          "[gpt][generate]") {
  const gpt::gpt_config cfg = test_config(16);
  const gpt::gpt_weights w = test_weights(cfg, 5);
  const std::vector<std::vector<int>> prompts = {gpt::encode("The "), gpt::encode("q"),
                                                 gpt::encode("a prompt longer than sixteen")};
  gpt::kv_decoder dec(w, int(prompts.size()));

  const gpt::sampling_options greedy{0.0f, 0, 1};
  const gpt::sampling_options sampled{0.9f, 20, 77};
  for (const gpt::sampling_options& opt : {greedy, sampled}) {
    for (int n_new : {6, 40}) {  // 40 tokens cross the 16-token context several times
      INFO("temperature " << opt.temperature << ", " << n_new << " tokens");
      const gpt::generation g = gpt::generate(dec, prompts, n_new, opt);
      CHECK(g.truncated_prompts == 1);
      // The cut prompt fills the context at once: one rebuild; 40 tokens need more.
      CHECK((n_new == 6 ? g.refills == 1 : g.refills >= 3));
      CHECK(g.decode_steps == n_new - 1);
      CHECK(g.tokens == reference_generate(w, prompts, n_new, opt));
    }
  }
}

// =============================================================================================
// Sampling
// =============================================================================================

TEST_CASE("sampling: the generator is splitmix64", "[gpt][generate]") {
  // splitmix64's first output from state 0 (Vigna's reference splitmix64.c).
  CHECK(gpt::splitmix64(0) == 0xe220a8397b1dcdafull);
  // The generator is that function, stepped by gamma; a stream starts from its own state.
  gpt::rng plain(0);
  CHECK(plain.next_u64() == 0xe220a8397b1dcdafull);
  CHECK(plain.next_u64() == gpt::splitmix64(gpt::splitmix64_gamma));
  gpt::rng a(1, 0), b(1, 0), c(2, 0), d(1, 1);
  const std::uint64_t a0 = a.next_u64();
  CHECK(a0 == gpt::splitmix64(gpt::splitmix64(1) ^ gpt::splitmix64(~std::uint64_t{0})));
  CHECK(a0 == b.next_u64());
  CHECK(a0 != c.next_u64());
  CHECK(a0 != d.next_u64());
  for (int i = 0; i < 1000; ++i) {
    const double u = a.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
  }
}

TEST_CASE("sampling: greedy is argmax, top-k keeps the k largest, frequencies follow softmax",
          "[gpt][generate]") {
  const int V = 8;
  const std::array<float, V> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.0f, -3.0f, 1.5f};
  gpt::rng rng(3, 0);

  // Greedy: the first of the tied maxima, and no random number drawn.
  gpt::rng untouched(3, 0);
  CHECK(gpt::sample_token(logits.data(), V, {0.0f, 0, 3}, rng) == 1);
  CHECK(gpt::sample_token(logits.data(), V, {0.0f, 3, 3}, rng) == 1);
  CHECK(rng.next_u64() == untouched.next_u64());
  CHECK(gpt::argmax(logits.data(), V) == 1);

  // top-k = 1 is argmax at any temperature.
  for (int i = 0; i < 100; ++i) REQUIRE(gpt::sample_token(logits.data(), V, {5.0f, 1, 3}, rng) == 1);

  // Frequencies: top-k = 4 keeps {1, 3, 7, 4} (2.0, 2.0, 1.5, 1.0), at temperature 0.7.
  for (auto [temperature, k] : {std::pair{0.7f, 4}, {1.0f, 0}, {2.5f, 0}}) {
    INFO("temperature " << temperature << " top-k " << k);
    const gpt::sampling_options opt{temperature, k, 3};
    std::array<double, V> expected{};
    double total = 0;
    for (int v = 0; v < V; ++v) {
      const bool kept = k == 0 || v == 1 || v == 3 || v == 7 || v == 4;
      expected[v] = kept ? std::exp(double(logits[v]) / temperature) : 0.0;
      total += expected[v];
    }
    const int draws = 200000;
    std::array<int, V> count{};
    for (int i = 0; i < draws; ++i) ++count[gpt::sample_token(logits.data(), V, opt, rng)];
    for (int v = 0; v < V; ++v) {
      const double p = expected[v] / total;
      INFO("token " << v << ": expected p " << p << ", got " << double(count[v]) / draws);
      if (p == 0.0) {
        CHECK(count[v] == 0);
      } else {
        // 5 standard deviations of a binomial frequency.
        CHECK(std::fabs(double(count[v]) / draws - p) <= 5 * std::sqrt(p * (1 - p) / draws));
      }
    }
  }
}

TEST_CASE("sampling: a seed fixes the text, another seed changes it, rows are independent",
          "[gpt][generate]") {
  const gpt::gpt_config cfg = test_config(32);
  const gpt::gpt_weights w = test_weights(cfg, 8);
  const std::vector<std::vector<int>> prompts = {gpt::encode("One"), gpt::encode("Two")};
  gpt::kv_decoder dec(w, 2);
  const gpt::sampling_options opt{1.0f, 0, 42};
  const gpt::generation a = gpt::generate(dec, prompts, 20, opt);
  const gpt::generation b = gpt::generate(dec, prompts, 20, opt);
  CHECK(a.tokens == b.tokens);
  gpt::sampling_options other = opt;
  other.seed = 43;
  const gpt::generation c = gpt::generate(dec, prompts, 20, other);
  CHECK(c.tokens[0] != a.tokens[0]);
  CHECK(c.tokens[1] != a.tokens[1]);

  // A row's text depends on (seed, row index) only, not on the rows beside it: row 0 of a
  // one-row batch is row 0 of the pair.
  gpt::kv_decoder one(w, 1);
  CHECK(gpt::generate(one, {prompts[0]}, 20, opt).tokens[0] == a.tokens[0]);
}

// =============================================================================================
// The program
// =============================================================================================

#if defined(GPT_GENERATE_EXE)
namespace {

using gpt_test::run_result;

run_result run(const std::string& args) { return gpt_test::run_program(GPT_GENERATE_EXE, args); }

}  // namespace

TEST_CASE("gpt_generate: arguments, exit codes, and the library's text", "[gpt][generate]") {
  const char* base = std::getenv("STRATA_TEST_TMPDIR");
  const fs::path dir = fs::path(base ? base : fs::temp_directory_path().string()) /
                       ("gpt_generate_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string weights = (dir / "w.safetensors").string();
  const gpt::gpt_config cfg = test_config(32);
  const gpt::gpt_weights w = test_weights(cfg, 13);
  gpt::save_gpt(weights, cfg, w.embed, w.blocks);

  const run_result help = run("--help");
  CHECK(help.code == 0);
  CHECK(help.output.find("--top-k") != std::string::npos);

  for (const char* bad : {"--tokens -1", "--tokens 12x", "--temperature -0.5", "--top-k",
                          "--frobnicate", "--prompt ''", "--seed abc"}) {
    const run_result r = run(std::string("--weights '") + weights + "' " + bad);
    INFO(bad << " -> " << r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find("gpt_generate: ") != std::string::npos);
  }
  // Numbers beyond their type or not finite: refused naming the option, the range and the value.
  const std::pair<const char*, const char*> out_of_range[] = {
      {"--tokens 99999999999", "--tokens expects an integer in [0, 2147483647], got '99999999999'"},
      {"--top-k 2.5", "--top-k expects an integer in [0, 2147483647], got '2.5'"},
      {"--top-k=1e10", "--top-k expects an integer in [0, 2147483647], got '1e10'"},
      {"--seed 18446744073709551616",
       "--seed expects an integer in [0, 18446744073709551615], got '18446744073709551616'"},
      {"--temperature nan", "--temperature expects a finite number, got 'nan'"},
      {"--temperature 1e39", "--temperature expects a number in [0, 3.402823466e+38], got '1e39'"},
      {"--weights ''", "--weights expects a path, got ''"}};
  for (const auto& [bad, says] : out_of_range) {
    const run_result r = run(std::string("--weights '") + weights + "' " + bad);
    INFO(bad << " -> " << r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find(says) != std::string::npos);
  }

  const run_result missing = run("--weights '" + (dir / "absent.safetensors").string() + "'");
  INFO(missing.output);
  CHECK(missing.code == 1);
  CHECK(missing.output.find("absent.safetensors") != std::string::npos);

  const run_result ok = run("--weights '" + weights +
                            "' --prompt 'Hi' --prompt 'yo' --tokens 12 --temperature 0.8 "
                            "--top-k 50 --seed 9");
  INFO(ok.output);
  REQUIRE(ok.code == 0);
  gpt::kv_decoder dec(w, 2);
  const gpt::generation g =
      gpt::generate(dec, {gpt::encode("Hi"), gpt::encode("yo")}, 12, {0.8f, 50, 9});
  for (int b = 0; b < 2; ++b) {
    const std::string sample = "--- sample " + std::to_string(b) + " ---\n" +
                               gpt::printable(std::string(b == 0 ? "Hi" : "yo")) +
                               gpt::printable(gpt::decode(g.tokens[b])) + "\n";
    CHECK(ok.output.find(sample) != std::string::npos);
  }
  CHECK(ok.output.find("prefill: ") != std::string::npos);
  CHECK(ok.output.find("tokens/s") != std::string::npos);
  fs::remove_all(dir);
}
#endif
