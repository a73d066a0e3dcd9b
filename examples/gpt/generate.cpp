// examples/gpt/generate.cpp — gpt_generate: text from a trained mini-GPT, resident or streamed.
//
// What this is: loads weights written by gpt_train (safetensors.hpp) block by block into the
// home the policy names — the compute tier (resident), pinned or host memory, or an NVMe
// directory — in the weight format asked for (f32, bf16, f16 or 4-bit groups), prints the
// memory plan (refused up front if it does not fit the budgets), then runs the prompts
// through the KV-cache decoder, whose walk over the blocks streams each one through a ring of
// Depth+1 buffers (strata's infer::layer_stream) in batch blocks of micro-batches, with the
// cache on the tier --kv-tier names. It prints a progress line per generated token, each
// sample, the prefill and decode latencies, tokens per second and, for a streamed home, the
// ratio of tokens per second to the IO bound (the rows of a pass over the bytes a pass
// streams, at the read rate measured by a pass that computes nothing).
// What it is not: a chat loop or a server.
//
//   gpt_generate --weights gpt.safetensors --prompt "The " --prompt "Q: " --tokens 200
//   gpt_generate --weights gpt.safetensors --policy nvme --nvme-dir /mnt/nvme --quant 4bit \
//                --batch 4 --block 2 --tokens 32
//
// Exit codes: 0 done, 1 the weights could not be used or the plan does not fit (the message
// says why), 2 bad arguments.
#include "data.hpp"
#include "gpt_plan.hpp"  // the predicted decode step
#include "infer_session.hpp"
#include "safetensors.hpp"
#include "sampler.hpp"
#include "stored_file.hpp"

#include "example_support.hpp"  // examples/common/: option_reader, bad_argument

#include <strata/plan/calibration_json.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(usage: gpt_generate [options]

Generates text from a mini-GPT trained by gpt_train (byte-level: every byte is a token).

  --weights FILE      safetensors file written by gpt_train (default gpt.safetensors), or a
                      stored model written by gpt_quantize (streamed as it is)
  --prompt TEXT       a prompt; repeat for several, generated side by side as one batch
                      (default: one prompt "The "); with more rows than prompts (--batch,
                      --block) the prompts repeat
  --tokens N          bytes to generate per prompt (default 200)
  --temperature F     softmax temperature, 0 = greedy / argmax (default 0.8)
  --top-k K           sample among the K most likely bytes only, 0 = all (default 40)
  --seed S            seed of the sampler; same seed, same text (default 1337)

Where the model lives and how it streams:
  --policy P          home of the blocks' weights: resident (on the compute tier), pinned,
                      host, or nvme (files in --nvme-dir) (default resident)
  --quant Q           weight format of the blocks: none (f32), bf16, f16, 4bit (default none;
                      a stored model's own format)
  --depth D           blocks in flight beside the one computed, 0 .. 3 (default 1)
  --batch B           rows per micro-batch (default: one row per prompt)
  --block K           micro-batches per block: each block goes through the weights of a layer
                      before the next layer (B x K rows in all; default 1)
  --kv-tier T         home of the KV cache: device, pinned, host, nvme (default device)
  --nvme-dir DIR      directory of the NVMe tier (default: the weights' directory)
  --device-mib N      budget of the compute tier in MiB (default 4096)
  --pinned-mib N      budget of pinned host memory in MiB (default 1024)
  --calibration FILE  strata-plan calibrate's file: print the planner's decode step time,
                      and beside it at the end the measured one
  --quiet             no progress line per token
  --help              this text

Bytes that are not printable ASCII are shown as \xHH.
)";

struct options {
  std::string weights = "gpt.safetensors";
  std::vector<std::string> prompts;
  int tokens = 200;
  gpt::sampling_options sampling{0.8f, 40, 1337};
  gpt::infer_options infer;
  int batch = 0, block = 1;
  bool quiet = false, quant_given = false;
  std::string calibration;  // strata-plan calibrate's file: the predicted decode step
};

using example::bad_argument;

/// Reads the command line (`--flag value` or `--flag=value`). Returns false for --help.
bool parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  auto word = [&](auto parse_word) {
    try {
      return parse_word(r.value());
    } catch (const std::invalid_argument& e) {
      throw bad_argument(std::string(r.name()) + ": " + e.what());
    }
  };
  while (r.next()) {
    if (r.flag("--help") || r.flag("-h")) return false;
    if (r.flag("--quiet")) o.quiet = true;
    else if (r.is("--weights")) o.weights = r.path();
    else if (r.is("--prompt")) o.prompts.push_back(r.value());
    else if (r.is("--tokens")) o.tokens = r.integer(0);
    else if (r.is("--temperature")) o.sampling.temperature = static_cast<float>(r.number(0, FLT_MAX));
    else if (r.is("--top-k")) o.sampling.top_k = r.integer(0);
    else if (r.is("--seed")) o.sampling.seed = r.integer<std::uint64_t>(0);
    else if (r.is("--policy")) o.infer.home = word(gpt::parse_weight_home);
    else if (r.is("--quant")) {
      o.infer.format = word(gpt::parse_weight_format);
      o.quant_given = true;
    }
    else if (r.is("--depth")) o.infer.depth = r.integer(0, 3);
    else if (r.is("--batch")) o.batch = r.integer(1, 1 << 16);
    else if (r.is("--block")) o.block = r.integer(1, 1 << 16);
    else if (r.is("--kv-tier")) o.infer.kv = word(gpt::parse_kv_home);
    else if (r.is("--nvme-dir")) o.infer.nvme_dir = r.path();
    else if (r.is("--calibration")) o.calibration = r.path();
    else if (r.is("--device-mib")) o.infer.device_bytes = r.integer<std::size_t>(1, std::size_t(1) << 30) << 20;
    else if (r.is("--pinned-mib")) o.infer.pinned_bytes = r.integer<std::size_t>(1, std::size_t(1) << 30) << 20;
    else r.unknown();
  }
  if (o.prompts.empty()) o.prompts.push_back("The ");
  for (std::size_t b = 0; b < o.prompts.size(); ++b)
    if (o.prompts[b].empty()) throw bad_argument("--prompt number " + std::to_string(b + 1) + " is empty");
  if (o.infer.nvme_dir.empty()) {
    const std::filesystem::path dir = std::filesystem::path(o.weights).parent_path();
    o.infer.nvme_dir = dir.empty() ? "." : dir.string();
  }
  return true;
}

/// Loads every block into the session, one at a time (a model larger than memory never is in
/// memory), printing progress for a model whose load takes a while: a stored model's blocks
/// as they are, a gpt_train file's packed from f32.
void load_blocks(const gpt::safetensors_reader& r, const gpt::gpt_config& cfg,
                 const gpt::stored_gpt_info* stored, gpt::infer_session& s, bool quiet) {
  using clock = std::chrono::steady_clock;
  std::vector<float> block(stored ? 0 : gpt::block_numel(cfg));
  std::vector<std::byte> packed(stored ? stored->layout.bytes : 0);
  const auto t0 = clock::now();
  auto last = t0;
  for (int l = 0; l < cfg.layers; ++l) {
    if (stored) {
      gpt::read_stored_block(r, *stored, l, packed.data());
      s.blocks().set_block(std::size_t(l), packed);
    } else {
      gpt::read_gpt_block(r, cfg, l, block.data());
      s.set_block(std::size_t(l), block);
    }
    const auto now = clock::now();
    if (!quiet && (now - last > std::chrono::seconds(2) || l + 1 == cfg.layers)) {
      std::fprintf(stderr, "loading: block %d/%d, %.1f s\n", l + 1, cfg.layers,
                   std::chrono::duration<double>(now - t0).count());
      last = now;
    }
  }
}

/// The batch shape that would balance compute with IO: a pass reads the blocks in `io_s`
/// seconds whatever the batch, and computes `row_s` seconds per row; about io_s / row_s rows
/// make the two equal (fewer leave the decode IO-bound, more make it compute-bound). Bounded by
/// memory: each row's KV cache, on the tier that holds it, against that tier's budget left.
void print_block_suggestion(const gpt::gpt_config& cfg, const options& opt,
                            gpt::infer_session& session, double io_s, double row_s) {
  if (!(row_s > 0) || !(io_s > 0)) return;
  const int mb = opt.infer.micro_batch;
  const std::size_t balance = std::size_t(std::ceil(io_s / row_s));
  const std::size_t kv_row = gpt::kv_floats_per_layer(cfg, 1) * sizeof(float) * std::size_t(cfg.layers);
  const strata::tier_id kv_tier = gpt::home_tier_of(opt.infer.kv);
  const strata::tier_budget& budget = session.ctx().budget(kv_tier);
  const std::size_t planned = session.plan().peak(kv_tier);
  const std::size_t room = budget.limit() > planned ? budget.limit() - planned : 0;
  const std::size_t fit = std::size_t(session.rows()) + room / std::max<std::size_t>(kv_row, 1);
  const std::size_t rows = std::min(balance, fit);
  const std::size_t block = std::max<std::size_t>(1, (rows + std::size_t(mb) - 1) / std::size_t(mb));
  std::printf("batch: a pass reads the blocks in %.1f ms and computes %.3f ms per row: about %zu "
              "row(s) balance them%s; suggestion --batch %d --block %zu (%zu rows; their KV "
              "cache %.1f MiB on %s)\n",
              1000 * io_s, 1000 * row_s, balance,
              rows < balance ? (", but the KV cache's budget holds " + std::to_string(fit)).c_str() : "",
              mb, block, block * std::size_t(mb),
              double(block * std::size_t(mb) * kv_row) / (1 << 20), gpt::home_name(opt.infer.kv));
}

int run(options& opt) {
  const gpt::safetensors_reader reader(opt.weights);
  std::optional<gpt::stored_gpt_info> stored;
  if (gpt::is_stored_gpt(reader)) {
    stored = gpt::read_stored_gpt_info(reader);
    if (opt.quant_given && opt.infer.format != stored->format)
      throw strata::config_error("'" + opt.weights + "' is a stored model in " +
                                 gpt::format_name(stored->format) + "; --quant " +
                                 gpt::format_name(opt.infer.format) +
                                 " would need the original weights (or leave --quant out)");
    opt.infer.format = stored->format;
  }
  const gpt::gpt_config cfg = stored ? stored->cfg : gpt::read_gpt_config(reader);
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

  // Rows: --batch x --block, or one per prompt; prompts repeat over the rows.
  const int mb = opt.batch > 0 ? opt.batch : int(opt.prompts.size());
  const int B = mb * opt.block;
  std::vector<std::vector<int>> prompts;
  std::vector<std::string> row_prompt;
  std::size_t prompt_tokens = 0, longest = 1;
  for (int b = 0; b < B; ++b) {
    const std::string& p = opt.prompts[std::size_t(b) % opt.prompts.size()];
    row_prompt.push_back(p);
    prompts.push_back(gpt::encode(p));
    prompt_tokens += std::min<std::size_t>(p.size(), std::size_t(cfg.context));
    longest = std::max(longest, std::min<std::size_t>(p.size(), std::size_t(cfg.context)));
  }
  opt.infer.micro_batch = mb;
  const bool streamed = opt.infer.home != gpt::weight_home::resident;
  std::printf("policy: blocks %s in %s, %s; KV cache on %s; %d row(s) = %d micro-batch(es) of %d\n",
              gpt::home_name(opt.infer.home), gpt::format_name(opt.infer.format),
              streamed ? ("lookahead " + std::to_string(opt.infer.depth)).c_str() : "no stream",
              gpt::home_name(opt.infer.kv), B, opt.block, mb);

  gpt::infer_session session(cfg, opt.infer, B, int(std::max<std::size_t>(longest, 1)));
  std::printf("memory plan (per tier; refused up front when over a budget):\n%s",
              session.plan().to_string(&session.ctx()).c_str());
  std::fflush(stdout);

  // The planner's decode step at the run's average cached length.
  double predicted_ms = 0;
  if (!opt.calibration.empty()) {
    const auto c = strata::plan::load_calibration(opt.calibration);
    const double position = double(longest) + opt.tokens / 2.0;
    const auto s = gpt::infer_schedule_for(opt.infer.home, opt.infer.kv, opt.infer.depth,
                                           &session.ctx());
    const auto p = strata::plan::predict_pass(
        gpt::infer_costs(cfg, opt.infer.format, mb, opt.block, position, c), s, c);
    predicted_ms = p.seconds * 1e3;
    std::printf("predicted decode step (strata-plan, calibration %s): %.2f ms, %s; compute "
                "bound %.2f ms, IO bound %.2f ms\n",
                opt.calibration.c_str(), predicted_ms, p.bound.c_str(), p.compute_bound_s * 1e3,
                p.io_bound_s * 1e3);
  }

  std::vector<float> embed(gpt::embed_numel(cfg));
  gpt::read_gpt_embed(reader, cfg, embed.data());
  load_blocks(reader, cfg, stored ? &*stored : nullptr, session, opt.quiet);
  const double read_rate = session.measure_read_rate();

  gpt::kv_decoder& dec = session.decoder(embed);
  // The decode's own compute cost: the decoder's counters from the first token on.
  double prefill_block_s = 0;
  std::size_t prefill_block_rows = 0;
  gpt::generation_progress progress = [&](const gpt::generation_step& s) {
    if (s.token == 1) {
      prefill_block_s = dec.block_seconds();
      prefill_block_rows = dec.block_rows();
    }
    if (!opt.quiet)
      std::fprintf(stderr, "token %d/%d: %.1f ms%s, %.1f tokens/s so far\n", s.token, s.n_new,
                   s.step_ms, s.token == 1 ? " (prefill)" : "",
                   1000.0 * B * s.token / s.elapsed_ms);
  };
  const gpt::generation g = gpt::generate(dec, prompts, opt.tokens, opt.sampling, progress);

  for (int b = 0; b < B; ++b) {
    std::printf("\n--- sample %d ---\n%s%s\n", b, gpt::printable(row_prompt[std::size_t(b)]).c_str(),
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
    const double tps = 1000.0 * B * opt.tokens / g.decode_ms;
    std::printf("decode:  %.3f ms per step (one token for each of %d row(s)), %.0f tokens/s",
                g.decode_ms / opt.tokens, B, tps);
    if (g.refills > 0)
      std::printf(" (%d cache rebuild(s) at the context limit included)", g.refills);
    std::printf("\n");
    if (predicted_ms > 0)
      std::printf("decode step: predicted %.2f ms, measured %.2f ms: %+.1f%%\n", predicted_ms,
                  g.decode_ms / opt.tokens,
                  100.0 * (predicted_ms - g.decode_ms / opt.tokens) / (g.decode_ms / opt.tokens));
    if (streamed && read_rate > 0) {
      // The IO bound: a pass yields one token per row and reads every stored byte once.
      const double per_pass = double(session.blocks().home_bytes());
      const double bound = B * read_rate / per_pass;
      std::printf("streamed: %.2f MiB per pass from %s at %.2f GB/s measured: IO bound "
                  "%.1f tokens/s, decode at %.2f of it\n",
                  per_pass / (1 << 20), gpt::home_name(opt.infer.home), read_rate / 1e9, bound,
                  tps / bound);
      const std::size_t rows = dec.block_rows() - prefill_block_rows;
      if (rows > 0)
        print_block_suggestion(cfg, opt, session, per_pass / read_rate,
                               (dec.block_seconds() - prefill_block_s) / double(rows) * cfg.layers);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::program_main<options>("gpt_generate", usage, argc, argv, parse, run);
}
