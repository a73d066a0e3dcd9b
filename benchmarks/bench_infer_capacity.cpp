// benchmarks/bench_infer_capacity.cpp — generation from a GPT whose weights are larger than this
// machine's memory, streamed from NVMe, against the IO bound measured in the same run (built by
// examples/gpt/CMakeLists.txt: it needs the example's decoder).
//
// What it does: sizes a GPT (width --width, context --context) with as many layers as make its
// stored weights at least --ram-multiple x this machine's RAM (MemTotal), or --weights-mib of
// them (a smoke run); checks the free space of the directory first and refuses, naming the
// bytes, when the weights would not fit; plans the session (blocks on nvme, lookahead --depth,
// the KV cache on the device tier) and refuses it up front when it exceeds a tier's budget;
// writes random weights (the shape is what matters: one random block, each layer's own
// layernorm bias) straight into the NVMe store, a block at a time, so the model is never in
// memory; prefills a batch of random prompts and generates --tokens per row, each decode pass
// followed by a pass that computes nothing (the IO bound beside it); fio reads the same file
// before and after, where fio exists.
//
//   infer-capacity ratio=X tokens_per_s=A bound=B weights_gib=W ram_gib=R peak_rss_gib=P
//                  rss_of_ram=Q read_gbps=G fio_gbps=F stream_over_fio=Y swap_kib=S
//                  over_budgets=O
//     X = A / B: decode tokens per second ÷ the IO bound. Each decode pass (one token per
//         row, every block streamed once) is followed by a pass of the same stream that
//         computes nothing; A = rows / median(decode pass), B = rows / median(IO-only pass):
//         what the decode would reach if compute were free. Interleaved, because this disk's
//         speed swings 2x over minutes. Goal >= 0.9.
//     G, F, Y: the stream's read rate in its IO-only passes, fio's sequential O_DIRECT read of
//         the weight file (1 MiB x qd 16, before and after; -1 without fio), and G / F: how
//         close the streaming path comes to the disk.
//     W, R: the stored weights and this machine's RAM (GiB); W / R >= 2 is the capacity claim.
//     P, Q: the process's peak resident memory (VmHWM) and P / R. Goal Q <= 0.25.
//     S: swap the process used (VmSwap; 0 means none).
//     O: the weights ÷ the budgets of every memory tier together (device, pinned, host; set
//        with --device-mib etc.): above 1, the model fits in no tier, so it can only stream.
//        The smoke run in CI sets small budgets and a model over twice their sum.
//
//   scripts/bench infer-capacity [--ram-multiple M | --weights-mib N] [--width C --heads H
//       --context T] [--quant bf16|f16|4bit|none] [--batch B --block K] [--prompt P]
//       [--tokens N] [--depth D] [--device-mib N --pinned-mib N --host-mib N --staging-mib N]
//       [--dir DIR]
// DIR: default $STRATA_BENCH_DIR, else nvme-scratch/ beside this program (a real file system;
// tmpfs is refused). The weight file is removed at the end.
#include "infer_session.hpp"
#include "sampler.hpp"  // argmax
#include "random.hpp"

#include "bench_common.hpp"  // seconds_since, scratch_dir, disk_free_bytes, proc_kib
#include "example_support.hpp"
#include "nvme_fio.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using bench_support::proc_kib;
using bench_support::seconds_since;

constexpr double gib = 1024.0 * 1024.0 * 1024.0;

struct options {
  double ram_multiple = 2.0;
  std::size_t weights_mib = 0;  // instead of the RAM multiple
  int width = 4096, heads = 32, context = 64;
  gpt::weight_format format = gpt::weight_format::bf16;
  int batch = 4, block = 1, prompt = 8, tokens = 4, depth = 2;
  // Budgets of the memory tiers (MiB); the staging ring is 4 slots of staging_mib in pinned.
  std::size_t device_mib = 64 << 10, pinned_mib = 1 << 10, host_mib = 64 << 10, staging_mib = 32;
  std::string dir;
};

void parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  while (r.next()) {
    if (r.is("--ram-multiple")) o.ram_multiple = r.number(0.001, 1000);
    else if (r.is("--weights-mib")) o.weights_mib = r.integer<std::size_t>(1, std::size_t(1) << 30);
    else if (r.is("--width")) o.width = r.integer(8, 1 << 16);
    else if (r.is("--heads")) o.heads = r.integer(1, 1 << 10);
    else if (r.is("--context")) o.context = r.integer(2, 1 << 16);
    else if (r.is("--quant")) {
      try {
        o.format = gpt::parse_weight_format(r.value());
      } catch (const std::invalid_argument& e) {
        throw example::bad_argument(std::string("--quant: ") + e.what());
      }
    } else if (r.is("--batch")) o.batch = r.integer(1, 1 << 12);
    else if (r.is("--block")) o.block = r.integer(1, 1 << 12);
    else if (r.is("--prompt")) o.prompt = r.integer(1, 1 << 16);
    else if (r.is("--tokens")) o.tokens = r.integer(2, 1 << 16);
    else if (r.is("--depth")) o.depth = r.integer(0, 3);
    else if (r.is("--device-mib")) o.device_mib = r.integer<std::size_t>(1, std::size_t(1) << 30);
    else if (r.is("--pinned-mib")) o.pinned_mib = r.integer<std::size_t>(1, std::size_t(1) << 30);
    else if (r.is("--host-mib")) o.host_mib = r.integer<std::size_t>(1, std::size_t(1) << 30);
    else if (r.is("--staging-mib")) o.staging_mib = r.integer<std::size_t>(1, 1024);
    else if (r.is("--dir")) o.dir = r.path();
    else r.unknown();
  }
  if (o.prompt + o.tokens > o.context)
    throw example::bad_argument("--prompt + --tokens (" + std::to_string(o.prompt + o.tokens) +
                                ") exceed the context of " + std::to_string(o.context));
}

/// One block's random weights: GPT-2's scale (std ~0.02 from a sum of uniforms), layernorm
/// weights 1; the layer's own bias in ln_1 makes every layer's bytes its own.
std::vector<float> random_block(const gpt::gpt_config& cfg) {
  std::vector<float> b(gpt::block_numel(cfg));
  gpt::rng gen(2024, 0);
  for (float& x : b) x = 0.02f * float(gen.uniform() + gen.uniform() + gen.uniform() - 1.5) * 2.0f;
  for (const gpt::tensor_slot& s : gpt::block_slots(cfg))
    if (s.name == "ln_1.weight" || s.name == "ln_2.weight")
      std::fill_n(b.begin() + std::ptrdiff_t(s.offset), s.numel, 1.0f);
  return b;
}

int run(const options& o) {
  example::voice say;
  const long long ram_kib = proc_kib("/proc/meminfo", "MemTotal:");
  const double ram = double(ram_kib) * 1024.0;
  gpt::gpt_config cfg;
  cfg.vocab = 256;
  cfg.width = o.width;
  cfg.heads = o.heads;
  cfg.context = o.context;
  cfg.layers = 1;
  cfg.validate();
  const std::size_t block_bytes = gpt::make_block_layout(cfg, o.format).bytes;
  const double target = o.weights_mib ? double(o.weights_mib) * (1 << 20) : o.ram_multiple * ram;
  cfg.layers = std::max(1, int(std::ceil(target / double(block_bytes))));
  const double weights = double(block_bytes) * cfg.layers;

  const std::string dir = bench_support::scratch_dir(o.dir);
  const double free_bytes = bench_support::disk_free_bytes(dir, "infer-capacity", "the weights");
  if (free_bytes < 0) return 1;
  const double needed = weights * 1.02 + (64 << 20);  // the store's block padding and checksums
  say("infer-capacity: GPT of %d layers, width %d, context %d: %.2f GiB of %s weights "
      "(%.2f x this machine's %.2f GiB of RAM) in %s (%.1f GiB free)\n",
      cfg.layers, cfg.width, cfg.context, weights / gib, gpt::format_name(o.format),
      weights / ram, ram / gib, dir.c_str(), free_bytes / gib);
  if (needed > free_bytes) {
    std::fprintf(stderr,
                 "infer-capacity: refused: the weights need %.2f GiB (%.0f bytes) in %s, which "
                 "has %.2f GiB (%.0f bytes) free; free some space, pass --dir elsewhere, or "
                 "lower --ram-multiple\n",
                 needed / gib, needed, dir.c_str(), free_bytes / gib, free_bytes);
    return 1;
  }

  gpt::infer_options io;
  io.home = gpt::weight_home::nvme;
  io.format = o.format;
  io.depth = o.depth;
  io.kv = gpt::kv_home::device;
  io.micro_batch = o.batch;
  io.nvme_dir = dir;
  io.device_bytes = o.device_mib << 20;
  io.pinned_bytes = o.pinned_mib << 20;
  io.host_bytes = o.host_mib << 20;
  io.staging_slot_bytes = o.staging_mib << 20;
  const double budgets = double((o.device_mib + o.pinned_mib + o.host_mib) << 20);
  const int B = o.batch * o.block;
  gpt::infer_session session(cfg, io, B, o.prompt);
  say("memory plan:\n%s", session.plan().to_string(&session.ctx()).c_str());

  // The weights, straight into the store.
  const std::vector<float> base = random_block(cfg);
  const std::vector<gpt::tensor_slot> slots = gpt::block_slots(cfg);
  const gpt::tensor_slot& bias = gpt::find_slot(slots, "ln_1.bias");
  std::vector<float> block = base;
  auto t0 = clock_type::now();
  for (int l = 0; l < cfg.layers; ++l) {
    std::fill_n(block.begin() + std::ptrdiff_t(bias.offset), bias.numel, 0.001f * float(l));
    session.set_block(std::size_t(l), block);
    if ((l + 1) % 16 == 0 || l + 1 == cfg.layers)
      say("writing: block %d/%d, %.1f s\n", l + 1, cfg.layers, seconds_since(t0));
  }
  session.ctx().synchronize();
  const double write_s = seconds_since(t0);
  say("wrote %.2f GiB in %.1f s (%.2f GB/s)\n", weights / gib, write_s, weights / write_s / 1e9);

  // fio's sequential O_DIRECT read of the weight file: the disk's own rate (before and after
  // the generation: a cloud disk's speed drifts over minutes).
  auto fio_read = [&]() -> double {
    if (nvme_fio::fio_version().empty()) return -1;
    const fs::path arena = session.ctx().nvme().path();
    nvme_fio::job j;
    j.directory = arena.parent_path().string();
    j.file = arena.filename().string();
    j.size = std::min<std::uint64_t>(std::uint64_t(weights), std::uint64_t(4) << 30) / (1 << 20) * (1 << 20);
    j.block = std::size_t(1) << 20;
    j.queue_depth = 16;
    if (j.size < j.block) return -1;
    const nvme_fio::result r = nvme_fio::run(j);
    if (!r.ok) say("fio: %s\n", r.error.c_str());
    return r.ok ? r.bytes_per_s : -1;
  };
  std::vector<double> fio;
  if (const double f = fio_read(); f > 0) fio.push_back(f);

  // Generation: random prompts, greedy. After the prefill, each decode pass is followed by a
  // pass of the same stream that computes nothing (the IO bound, measured beside it, so that a
  // slow spell of the disk weighs on both alike).
  std::vector<float> embed(gpt::embed_numel(cfg));
  gpt::rng gen(7, 1);
  for (float& x : embed) x = 0.02f * float(gen.uniform() - 0.5);
  std::vector<std::vector<int>> prompts(static_cast<std::size_t>(B));
  for (auto& p : prompts)
    for (int t = 0; t < o.prompt; ++t) p.push_back(int(gen.uniform() * 255.99));
  gpt::kv_decoder& dec = session.decoder(embed);
  t0 = clock_type::now();
  dec.append(prompts);
  const double prefill_s = seconds_since(t0);
  say("prefill: %.1f s (%d rows x %d tokens)\n", prefill_s, B, o.prompt);
  std::vector<double> decode, io_only;
  auto nothing = [](std::size_t, std::size_t, const std::byte*) {};
  for (int step = 1; step < o.tokens; ++step) {
    std::vector<std::vector<int>> next(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b) next[std::size_t(b)] = {gpt::argmax(dec.logits() + std::size_t(b) * cfg.vocab, cfg.vocab)};
    t0 = clock_type::now();
    dec.append(next);
    decode.push_back(seconds_since(t0));
    t0 = clock_type::now();
    session.blocks().walk(1, nothing);
    io_only.push_back(seconds_since(t0));
    say("token %d/%d: decode pass %.2f s, IO-only pass %.2f s\n", step + 1, o.tokens,
        decode.back(), io_only.back());
  }
  if (const double f = fio_read(); f > 0) fio.push_back(f);

  const double pass_bytes = double(session.blocks().home_bytes());
  const double decode_tps = double(B) / bench_support::median(decode);
  const double bound = double(B) / bench_support::median(io_only);
  const double read_rate = pass_bytes / bench_support::median(io_only);
  const double fio_rate = fio.empty() ? -1 : bench_support::median(fio);
  const double rss = double(proc_kib("/proc/self/status", "VmHWM:")) * 1024.0;
  const long long swap = proc_kib("/proc/self/status", "VmSwap:");
  say("decode %.3f tokens/s (%d rows), IO bound %.3f tokens/s; stream reads %.2f GB/s, fio "
      "%.2f GB/s; peak RSS %.2f GiB (%.1f%% of RAM), swap %lld KiB\n",
      decode_tps, B, bound, read_rate / 1e9, fio_rate / 1e9, rss / gib, 100 * rss / ram, swap);
  say("infer-capacity ratio=%.3f tokens_per_s=%.4f bound=%.4f weights_gib=%.2f ram_gib=%.2f "
      "peak_rss_gib=%.2f rss_of_ram=%.3f read_gbps=%.3f fio_gbps=%.3f stream_over_fio=%.2f "
      "swap_kib=%lld over_budgets=%.2f\n",
      decode_tps / bound, decode_tps, bound, weights / gib, ram / gib, rss / gib, rss / ram,
      read_rate / 1e9, fio_rate > 0 ? fio_rate / 1e9 : -1.0,
      fio_rate > 0 ? read_rate / fio_rate : -1.0, swap, weights / budgets);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    parse(argc, argv, o);
  } catch (const example::bad_argument& e) {
    std::fprintf(stderr, "bench_infer_capacity: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_infer_capacity: %s\n", e.what());
    return 1;
  }
}
