// examples/gpt/generate.cpp — gpt_generate: text from a trained mini-GPT.
//
// What this is: loads weights written by gpt_train (safetensors.hpp), runs one or more prompts
// through the model with a KV cache (sampler.hpp), samples --tokens bytes per prompt with
// temperature / top-k / seed, prints each sample, then the prefill latency, the per-step
// decode latency and tokens per second.
// What it is not: a chat loop or a server; the host float32 path only.
//
//   gpt_generate --weights gpt.safetensors --prompt "The " --prompt "Q: " --tokens 200
//
// Exit codes: 0 done, 1 the weights could not be used (the message says why), 2 bad arguments.
#include "data.hpp"
#include "safetensors.hpp"
#include "sampler.hpp"

#include "example_support.hpp"  // examples/common/: option_reader, bad_argument

#include <cfloat>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(usage: gpt_generate [options]

Generates text from a mini-GPT trained by gpt_train (byte-level: every byte is a token).

  --weights FILE      safetensors file written by gpt_train (default gpt.safetensors)
  --prompt TEXT       a prompt; repeat for several, generated side by side as one batch
                      (default: one prompt "The ")
  --tokens N          bytes to generate per prompt (default 200)
  --temperature F     softmax temperature, 0 = greedy / argmax (default 0.8)
  --top-k K           sample among the K most likely bytes only, 0 = all (default 40)
  --seed S            seed of the sampler; same seed, same text (default 1337)
  --help              this text

Bytes that are not printable ASCII are shown as \xHH.
)";

struct options {
  std::string weights = "gpt.safetensors";
  std::vector<std::string> prompts;
  int tokens = 200;
  gpt::sampling_options sampling{0.8f, 40, 1337};
};

using example::bad_argument;

/// Reads the command line (`--flag value` or `--flag=value`). Returns false for --help.
bool parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  while (r.next()) {
    if (r.flag("--help") || r.flag("-h")) return false;
    if (r.is("--weights")) o.weights = r.path();
    else if (r.is("--prompt")) o.prompts.push_back(r.value());
    else if (r.is("--tokens")) o.tokens = r.integer(0);
    else if (r.is("--temperature")) o.sampling.temperature = static_cast<float>(r.number(0, FLT_MAX));
    else if (r.is("--top-k")) o.sampling.top_k = r.integer(0);
    else if (r.is("--seed")) o.sampling.seed = r.integer<std::uint64_t>(0);
    else r.unknown();
  }
  if (o.prompts.empty()) o.prompts.push_back("The ");
  for (std::size_t b = 0; b < o.prompts.size(); ++b)
    if (o.prompts[b].empty()) throw bad_argument("--prompt number " + std::to_string(b + 1) + " is empty");
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  try {
    if (!parse(argc, argv, opt)) {
      std::fputs(usage, stdout);
      return 0;
    }
  } catch (const bad_argument& e) {
    std::fprintf(stderr, "gpt_generate: %s\n(see gpt_generate --help)\n", e.what());
    return 2;
  }

  try {
    const gpt::gpt_weights w = gpt::load_gpt(opt.weights);
    const gpt::gpt_config& cfg = w.cfg;
    if (cfg.vocab != gpt::byte_vocab)
      throw strata::config_error("'" + opt.weights + "' has vocab " + std::to_string(cfg.vocab) +
                                 "; gpt_generate speaks bytes (vocab 256)");
    std::printf("gpt_generate: %s: %d layers, width %d, %d heads, context %d, vocab %d "
                "(%.2fM parameters)\n",
                opt.weights.c_str(), cfg.layers, cfg.width, cfg.heads, cfg.context, cfg.vocab,
                double(gpt::parameter_count(cfg)) / 1e6);
    std::printf("sampling: %d bytes per prompt, %zu prompt(s), temperature %g, top-k %d, seed %llu\n",
                opt.tokens, opt.prompts.size(), double(opt.sampling.temperature),
                opt.sampling.top_k, static_cast<unsigned long long>(opt.sampling.seed));

    const int B = static_cast<int>(opt.prompts.size());
    std::vector<std::vector<int>> prompts;
    std::size_t prompt_tokens = 0;
    for (const std::string& p : opt.prompts) {
      prompts.push_back(gpt::encode(p));
      prompt_tokens += std::min<std::size_t>(p.size(), std::size_t(cfg.context));
    }

    gpt::kv_decoder dec(w, B);
    const gpt::generation g = gpt::generate(dec, prompts, opt.tokens, opt.sampling);

    for (int b = 0; b < B; ++b) {
      std::printf("\n--- sample %d ---\n%s%s\n", b, gpt::printable(opt.prompts[b]).c_str(),
                  gpt::printable(gpt::decode(g.tokens[b])).c_str());
    }
    std::printf("\n");
    if (g.truncated_prompts > 0)
      std::printf("note: %d prompt(s) longer than the context of %d kept their last %d bytes\n",
                  g.truncated_prompts, cfg.context, cfg.context);
    std::printf("prefill: %.2f ms (%d row(s), %zu prompt tokens)\n", g.prefill_ms, B, prompt_tokens);
    if (opt.tokens > 0 && g.decode_ms > 0) {
      // A step samples one token per row and appends it; the first step samples from the
      // prefill's logits, the last appends nothing.
      std::printf("decode:  %.3f ms per step (one token for each of %d row(s)), %.0f tokens/s",
                  g.decode_ms / opt.tokens, B, 1000.0 * B * opt.tokens / g.decode_ms);
      if (g.refills > 0)
        std::printf(" (%d cache rebuild(s) at the context limit included)", g.refills);
      std::printf("\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpt_generate: %s\n", e.what());
    return 1;
  }
}
