// Tests for streamed inference: examples/gpt/decoder.hpp over streamed_model.hpp (strata's
// infer::layer_stream and infer::kv_cache).
//
// - streamed == resident, bitwise (logits after every append and the sampled tokens), for
//   every weight home (resident, pinned, host, NVMe), lookahead depth, micro-batch size and KV
//   tier, in each weight format;
// - several ranks (threads; each stores 1/R of every block and all-gathers) == one rank;
// - a batch block reads every stored byte once per pass, whatever the number of micro-batches;
// - 4-bit weights: the decoder on 4-bit blocks == the decoder on f32 blocks holding their
//   dequantised values, bitwise; bf16 == f32 blocks holding the bf16-rounded values;
// - a plan that does not fit is refused before anything is loaded, naming the tier.
#include "catch.hpp"
#include "gpt_test_support.hpp"
#include "io/io_test_support.hpp"

#include "decoder.hpp"
#include "sampler.hpp"
#include "stored_file.hpp"
#include "streamed_model.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

using gpt_test::test_config;
using gpt_test::test_weights;

namespace {

const std::vector<std::vector<int>> prompts = {gpt::encode("Hello"), gpt::encode("A"),
                                               gpt::encode("a third prompt"), gpt::encode("xy")};

/// Logits (B x V per append) after the prompts and after `steps` greedy one-token appends.
struct trace {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int>> tokens;
};

trace decode(gpt::kv_decoder& dec, int steps) {
  trace t;
  const int B = dec.rows(), V = dec.config().vocab;
  auto keep = [&] { t.logits.emplace_back(dec.logits(), dec.logits() + std::size_t(B) * V); };
  dec.reset();
  dec.append(prompts);
  keep();
  for (int s = 0; s < steps; ++s) {
    std::vector<std::vector<int>> next(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b) next[b] = {gpt::argmax(dec.logits() + std::size_t(b) * V, V)};
    t.tokens.push_back({});
    for (auto& n : next) t.tokens.back().push_back(n[0]);
    dec.append(next);
    keep();
  }
  return t;
}

bool same_bits(const trace& a, const trace& b) {
  if (a.logits.size() != b.logits.size() || a.tokens != b.tokens) return false;
  for (std::size_t i = 0; i < a.logits.size(); ++i)
    if (a.logits[i].size() != b.logits[i].size() ||
        std::memcmp(a.logits[i].data(), b.logits[i].data(), a.logits[i].size() * 4) != 0)
      return false;
  return true;
}

/// The resident, unblocked reference: blocks packed in `f`, caches in host vectors.
trace resident_run(const gpt::gpt_weights& w, gpt::weight_format f, int steps) {
  gpt::resident_blocks blocks(w, f);
  gpt::resident_kv kv(w.cfg, int(prompts.size()));
  gpt::kv_decoder dec(w.cfg, w.embed, blocks, kv, int(prompts.size()), int(prompts.size()));
  return decode(dec, steps);
}

struct stream_setup {
  gpt::weight_format format = gpt::weight_format::f32;
  gpt::weight_home home = gpt::weight_home::host;
  int depth = 1;
  gpt::kv_home kv = gpt::kv_home::device;
  int micro_batch = 4;
};

std::string describe(const stream_setup& s) {
  return std::string("format ") + gpt::format_name(s.format) + ", home " + gpt::home_name(s.home) +
         ", depth " + std::to_string(s.depth) + ", KV " + gpt::home_name(s.kv) + ", micro-batch " +
         std::to_string(s.micro_batch);
}

template <class Comm>
trace streamed_run(Comm& comm, const gpt::gpt_weights& w, const stream_setup& s, int steps,
                   strata::infer::stream_stats* stats = nullptr, std::size_t* home = nullptr) {
  strata::context ctx(io_test::toy_nvme_config(comm.rank()));
  const int B = int(prompts.size());
  auto blocks = gpt::make_block_stream(ctx, comm, w.cfg, s.format, s.home, s.depth,
                                       gpt::kv_plan(ctx, w.cfg, B, s.kv));
  auto kv = gpt::make_tiered_kv(ctx, w.cfg, B, s.kv);
  std::vector<std::byte> packed(blocks->layout().bytes);
  for (int l = 0; l < w.cfg.layers; ++l) {
    gpt::pack_block(blocks->layout(), w.blocks[std::size_t(l)], packed);
    blocks->set_block(std::size_t(l), packed);
  }
  gpt::kv_decoder dec(w.cfg, w.embed, *blocks, *kv, B, s.micro_batch);
  trace t = decode(dec, steps);
  if (stats) *stats = blocks->stats();
  if (home) *home = blocks->home_bytes();
  CHECK(blocks->plan().covers_peaks(ctx));
  return t;
}

}  // namespace

TEST_CASE("streamed == resident, bitwise, for every home, depth, micro-batch and KV tier",
          "[gpt][infer]") {
  const gpt::gpt_weights w = test_weights(test_config(), 3);
  const int steps = 4;
  strata::comm::solo one;
  for (gpt::weight_format f : {gpt::weight_format::f32, gpt::weight_format::bf16,
                               gpt::weight_format::q4}) {
    const trace ref = resident_run(w, f, steps);
    std::vector<stream_setup> setups;
    for (gpt::weight_home h : {gpt::weight_home::resident, gpt::weight_home::pinned,
                               gpt::weight_home::host, gpt::weight_home::nvme})
      setups.push_back({f, h, 1, gpt::kv_home::device, 4});
    for (int depth : {0, 2, 3}) setups.push_back({f, gpt::weight_home::nvme, depth, gpt::kv_home::device, 4});
    for (int mb : {1, 3}) setups.push_back({f, gpt::weight_home::nvme, 1, gpt::kv_home::device, mb});
    for (gpt::kv_home kv : {gpt::kv_home::pinned, gpt::kv_home::host, gpt::kv_home::nvme})
      setups.push_back({f, gpt::weight_home::host, 1, kv, 2});
    for (const stream_setup& s : setups) {
      INFO(describe(s));
      CHECK(same_bits(streamed_run(one, w, s, steps), ref));
    }
  }
}

TEST_CASE("a batch block reads each stored byte once per pass", "[gpt][infer]") {
  const gpt::gpt_weights w = test_weights(test_config(), 4);
  strata::comm::solo one;
  for (int mb : {1, 2, 4}) {
    INFO("micro-batch " << mb);
    strata::infer::stream_stats st;
    std::size_t home = 0;
    (void)streamed_run(one, w, {gpt::weight_format::f32, gpt::weight_home::nvme, 1,
                                gpt::kv_home::device, mb}, 3, &st, &home);
    const std::size_t passes = 1 + 3;  // prefill + 3 decode steps
    CHECK(st.passes == passes);
    CHECK(st.home_bytes == passes * home);
    CHECK(st.computes == passes * std::size_t(w.cfg.layers) * std::size_t((4 + mb - 1) / mb));
  }
}

TEST_CASE("several ranks, each streaming 1/R of every block, == one rank", "[gpt][infer]") {
  const gpt::gpt_weights w = test_weights(test_config(), 5);
  const trace ref = resident_run(w, gpt::weight_format::bf16, 3);
  for (int world : {2, 3}) {
    for (gpt::weight_home h : {gpt::weight_home::host, gpt::weight_home::nvme}) {
      INFO("world " << world << ", home " << gpt::home_name(h));
      strata::comm::thread_world tw(world, std::chrono::seconds(30));
      std::mutex m;
      bool all_same = true;
      std::size_t home_total = 0, home_one = 0;
      tw.run([&](strata::comm::threads& c) {
        strata::infer::stream_stats st;
        std::size_t home = 0;
        const trace t = streamed_run(c, w, {gpt::weight_format::bf16, h, 1, gpt::kv_home::host, 2},
                                     3, &st, &home);
        std::lock_guard lock(m);
        all_same = all_same && same_bits(t, ref);
        home_total += home;
        home_one = home;
      });
      CHECK(all_same);
      // Each rank holds (and reads) one slice: together about one model, not R models.
      const std::size_t model = gpt::make_block_layout(w.cfg, gpt::weight_format::bf16).bytes *
                                std::size_t(w.cfg.layers);
      CHECK(home_total >= model);
      CHECK(home_total < model + std::size_t(w.cfg.layers) * 64 * std::size_t(world));
      CHECK(home_one < model);
    }
  }
}

TEST_CASE("4-bit and bf16 blocks compute with exactly their stored values", "[gpt][infer]") {
  const gpt::gpt_weights w = test_weights(test_config(), 6);
  for (gpt::weight_format f : {gpt::weight_format::q4, gpt::weight_format::bf16}) {
    INFO(gpt::format_name(f));
    // The same model with every block replaced by its stored values, in f32.
    gpt::gpt_weights rounded = w;
    const gpt::block_layout lay = gpt::make_block_layout(w.cfg, f);
    std::vector<std::byte> packed(lay.bytes);
    for (auto& b : rounded.blocks) {
      gpt::pack_block(lay, b, packed);
      gpt::unpack_block(lay, packed.data(), b);
    }
    CHECK(same_bits(resident_run(w, f, 3), resident_run(rounded, gpt::weight_format::f32, 3)));
    // ... and those values differ from the originals (the format is not f32 in disguise).
    CHECK(rounded.blocks[0] != w.blocks[0]);
  }
  // The stored sizes: bf16 halves the matrices, 4-bit groups take 36 bytes per 64 values.
  const gpt::gpt_config cfg = test_config();
  const std::size_t C = std::size_t(cfg.width), mats = 12 * C * C, vecs = 13 * C;
  CHECK(gpt::make_block_layout(cfg, gpt::weight_format::f32).bytes == 4 * (mats + vecs));
  CHECK(gpt::make_block_layout(cfg, gpt::weight_format::bf16).bytes >= 2 * mats + 4 * vecs);
  CHECK(gpt::make_block_layout(cfg, gpt::weight_format::bf16).bytes < 2 * mats + 4 * vecs + 12 * 64);
}

TEST_CASE("a generation plan that does not fit is refused before any block is loaded",
          "[gpt][infer]") {
  const gpt::gpt_config cfg = test_config();
  strata::comm::solo one;
  auto c = io_test::toy_nvme_config(0);
  c.device_bytes = 64 << 10;  // the KV cache of 4 rows alone needs 2 x 4 x 24 x 16 x 4 x 2 bytes
  strata::context ctx(c);
  std::string what;
  try {
    (void)gpt::make_block_stream(ctx, one, cfg, gpt::weight_format::f32, gpt::weight_home::nvme,
                                 2, gpt::kv_plan(ctx, cfg, 64, gpt::kv_home::device));
  } catch (const strata::out_of_budget& e) {
    what = e.what();
  }
  INFO(what);
  CHECK(what.find("refused before the first step") != std::string::npos);
  CHECK(what.find("KV cache: all layers") != std::string::npos);
  CHECK(what.find("2 whole-layer buffers (Depth+1)") != std::string::npos);  // 2 layers
  CHECK(ctx.budget(strata::tier_id::device).used() == 0);
}

// =============================================================================================
// The program
// =============================================================================================

#if defined(GPT_GENERATE_EXE)
TEST_CASE("gpt_generate streams: same text as resident, its numbers, and clear refusals",
          "[gpt][infer]") {
  gpt_test::temp_dir dir("infer");
  const std::string weights = dir.file("w.safetensors");
  const gpt::gpt_config cfg = test_config(32);
  const gpt::gpt_weights w = test_weights(cfg, 17);
  gpt::save_gpt(weights, cfg, w.embed, w.blocks);
  auto run = [&](const std::string& args) {
    return gpt_test::run_program(GPT_GENERATE_EXE, "--weights '" + weights + "' " + args);
  };
  auto samples = [](const std::string& out) { return out.substr(0, out.find("\nprefill: ")).substr(out.find("--- sample 0")); };

  // The library's text: bf16 blocks, 2 micro-batches of 2 rows (prompts repeat over the rows).
  gpt::resident_blocks blocks(w, gpt::weight_format::bf16);
  gpt::resident_kv kv(cfg, 4);
  gpt::kv_decoder dec(cfg, w.embed, blocks, kv, 4, 4);
  const gpt::generation g = gpt::generate(
      dec, {gpt::encode("Hi"), gpt::encode("yo"), gpt::encode("Hi"), gpt::encode("yo")}, 10,
      {0.8f, 50, 9});
  const std::string common = "--prompt Hi --prompt yo --tokens 10 --seed 9 --top-k 50 --quant bf16 --batch 2 --block 2";
  const auto resident = run(common);
  const auto nvme = run(common + " --policy nvme --depth 2 --kv-tier nvme --nvme-dir '" + dir.path.string() + "'");
  INFO(resident.output << "\n----\n" << nvme.output);
  REQUIRE(resident.code == 0);
  REQUIRE(nvme.code == 0);
  for (int b = 0; b < 4; ++b) {
    const std::string sample = "--- sample " + std::to_string(b) + " ---\n" +
                               std::string(b % 2 == 0 ? "Hi" : "yo") +
                               gpt::printable(gpt::decode(g.tokens[std::size_t(b)])) + "\n";
    CHECK(gpt_test::contains(resident.output, sample));
  }
  CHECK(samples(nvme.output) == samples(resident.output));
  CHECK(gpt_test::contains(nvme.output, "2 whole-layer buffers (Depth+1)"));  // 2 layers, depth 2
  CHECK(gpt_test::contains(nvme.output, "KV cache: all layers"));
  CHECK(gpt_test::contains(nvme.output, "token 10/10"));  // the progress lines
  CHECK(gpt_test::contains(nvme.output, "IO bound"));
  CHECK(gpt_test::contains(nvme.output, "row(s) balance them; suggestion --batch 2 --block "));
  CHECK(gpt_test::contains(nvme.output, "4 row(s) = 2 micro-batch(es) of 2"));

  // Bad words name the option and the choices (exit 2).
  const auto bad_policy = run("--policy floppy");
  CHECK(bad_policy.code == 2);
  CHECK(gpt_test::contains(bad_policy.output, "--policy: policy 'floppy': expected resident, pinned, host or nvme"));
  const auto bad_quant = run("--quant 3bit");
  CHECK(bad_quant.code == 2);
  CHECK(gpt_test::contains(bad_quant.output, "expected none (f32), bf16, f16 or 4bit"));

  // A plan over a budget is refused before loading, with the table (exit 1).
  const auto refused = run("--policy host --batch 64 --block 8 --device-mib 1 --tokens 2");
  INFO(refused.output);
  CHECK(refused.code == 1);
  CHECK(gpt_test::contains(refused.output, "refused before the first step"));
  CHECK(gpt_test::contains(refused.output, "KV cache: all layers"));
  CHECK(!gpt_test::contains(refused.output, "loading: block"));

  // A truncated file and a file whose tensors contradict its config: exit 1, named.
  const std::string cut = dir.file("cut.safetensors");
  std::filesystem::copy_file(weights, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) - 100);
  const auto truncated = gpt_test::run_program(GPT_GENERATE_EXE, "--weights '" + cut + "' --policy nvme");
  CHECK(truncated.code == 1);
  CHECK(gpt_test::contains(truncated.output, "cut.safetensors"));
  gpt::gpt_config other = cfg;
  other.layers = 3;
  const std::string mismatched = dir.file("mismatched.safetensors");
  gpt::save_gpt(mismatched, other, test_weights(other, 1).embed, test_weights(other, 1).blocks);
  {  // keep the 3-layer config's metadata, drop a block: rewrite with 2 blocks' tensors only
    gpt::gpt_weights two = test_weights(other, 1);
    two.blocks.pop_back();
    std::vector<gpt::st_tensor_ref> refs;
    const gpt::safetensors_reader r(mismatched);
    std::vector<std::vector<float>> keep;
    for (const auto& t : r.tensors()) {
      if (t.name.rfind("h.2.", 0) == 0) continue;
      keep.emplace_back(gpt::st_detail::numel(t.shape));
      r.read_f32(t.name, t.shape, keep.back().data());
      refs.push_back({t.name, t.shape, keep.back().data()});
    }
    gpt::write_safetensors(mismatched, refs, r.metadata());
  }
  const auto wrong = gpt_test::run_program(GPT_GENERATE_EXE, "--weights '" + mismatched + "' --policy nvme");
  INFO(wrong.output);
  CHECK(wrong.code == 1);
  CHECK(gpt_test::contains(wrong.output, "mismatched.safetensors"));
  CHECK(gpt_test::contains(wrong.output, "'layers' is 3, but the file has block tensors of 2 layers"));
}
#endif

// =============================================================================================
// Stored models: the file gpt_quantize writes and gpt_generate streams as it is
// =============================================================================================

TEST_CASE("a stored model holds exactly the packed blocks, and its errors name the tensor",
          "[gpt][infer]") {
  gpt_test::temp_dir dir("stored");
  const gpt::gpt_config cfg = test_config();
  const gpt::gpt_weights w = test_weights(cfg, 23);
  const std::string path = dir.file("w.4bit.safetensors");
  gpt::write_stored_gpt(path, cfg, gpt::weight_format::q4, w.embed,
                        [&](int l) { return std::span<const float>(w.blocks[std::size_t(l)]); });
  const gpt::safetensors_reader r(path);
  REQUIRE(gpt::is_stored_gpt(r));
  const gpt::stored_gpt_info info = gpt::read_stored_gpt_info(r);
  CHECK(info.format == gpt::weight_format::q4);
  CHECK(info.cfg.layers == cfg.layers);
  std::vector<std::byte> got(info.layout.bytes), want(info.layout.bytes);
  for (int l = 0; l < cfg.layers; ++l) {
    gpt::read_stored_block(r, info, l, got.data());
    gpt::pack_block(info.layout, w.blocks[std::size_t(l)], want);
    CHECK(got == want);
  }
  std::vector<float> embed(gpt::embed_numel(cfg));
  gpt::read_gpt_embed(r, cfg, embed.data());
  CHECK(embed == w.embed);

  // A block of the wrong size (another format's, under this file's metadata) is named.
  const std::string wrong = dir.file("wrong.safetensors");
  {
    std::vector<gpt::st_tensor_spec> specs;
    for (const auto& t : r.tensors())
      specs.push_back({t.name, t.name == "h.1.stored" ? std::vector<std::int64_t>{64} : t.shape,
                       t.dtype == "U8" ? gpt::st_dtype::u8 : gpt::st_dtype::f32});
    std::vector<std::vector<float>> floats;
    std::vector<std::vector<std::byte>> bytes;
    for (const auto& s : specs) {
      floats.emplace_back(s.dtype == gpt::st_dtype::f32 ? gpt::st_detail::numel(s.shape) : 0);
      bytes.emplace_back(s.dtype == gpt::st_dtype::u8 ? gpt::st_detail::numel(s.shape) : 0);
    }
    gpt::stream_safetensors(
        wrong, specs, r.metadata(), [&](std::size_t i) { return std::span<const float>(floats[i]); },
        [&](std::size_t i) { return std::span<const std::byte>(bytes[i]); });
  }
  const gpt::safetensors_reader bad(wrong);
  CHECK_THROWS_WITH(gpt::read_stored_gpt_info(bad),
                    Catch::Contains("tensor 'h.1.stored' is U8 [64], expected U8 [") &&
                        Catch::Contains("a 4bit block of this config"));
}

#if defined(GPT_GENERATE_EXE) && defined(GPT_QUANTIZE_EXE)
TEST_CASE("gpt_quantize writes what gpt_generate streams as it is, and measures the loss",
          "[gpt][infer]") {
  gpt_test::temp_dir dir("quantize");
  const std::string weights = dir.file("w.safetensors"), q4 = dir.file("w.4bit.safetensors");
  const gpt::gpt_config cfg = test_config(32);
  const gpt::gpt_weights w = test_weights(cfg, 29);
  gpt::save_gpt(weights, cfg, w.embed, w.blocks);
  {
    std::FILE* f = std::fopen(dir.file("text.txt").c_str(), "w");
    REQUIRE(f);
    for (int i = 0; i < 200; ++i) std::fputs("the quick brown fox jumps over the lazy dog\n", f);
    std::fclose(f);
  }
  const auto q = gpt_test::run_program(GPT_QUANTIZE_EXE, "--weights '" + weights + "' --out '" + q4 +
                                                             "' --quant 4bit --data '" +
                                                             dir.file("text.txt") + "' --eval-batches 2 --batch 2");
  INFO(q.output);
  REQUIRE(q.code == 0);
  CHECK(gpt_test::contains(q.output, "validation loss (2 batches of 2 x 32 bytes"));
  CHECK(gpt_test::contains(q.output, "f32 "));
  CHECK(gpt_test::contains(q.output, "4bit "));
  CHECK(gpt_test::contains(q.output, "delta "));

  const std::string args = " --prompt Hi --tokens 8 --seed 3 --quiet";
  const auto from_stored = gpt_test::run_program(GPT_GENERATE_EXE, "--weights '" + q4 + "' --policy nvme" + args);
  const auto converted = gpt_test::run_program(GPT_GENERATE_EXE, "--weights '" + weights + "' --quant 4bit" + args);
  INFO(from_stored.output << "\n----\n" << converted.output);
  REQUIRE(from_stored.code == 0);
  REQUIRE(converted.code == 0);
  auto sample = [](const std::string& out) {
    const auto at = out.find("--- sample 0");
    return out.substr(at, out.find("\nprefill: ") - at);
  };
  CHECK(sample(from_stored.output) == sample(converted.output));
  CHECK(gpt_test::contains(from_stored.output, "blocks nvme in 4bit"));
  const auto clash = gpt_test::run_program(GPT_GENERATE_EXE, "--weights '" + q4 + "' --quant bf16" + args);
  CHECK(clash.code == 1);
  CHECK(gpt_test::contains(clash.output, "is a stored model in 4bit; --quant bf16"));
}
#endif
