// Tests for the mini-GPT's data and weights: examples/gpt/data.hpp and safetensors.hpp.
//
// - tokenizer: every byte survives encode -> decode; console rendering; bad tokens refused.
// - corpus: directory rules (name order, symlinks / *.dat / *.u8 / binary skipped), errors
//   that name the path, and the default corpus loads.
// - split: the last 10% exactly, train + val == corpus.
// - batches: targets are tokens shifted by one, windows are real text, a seed fixes them and
//   another changes them, every start is reachable; and the claim in data.hpp: R ranks x
//   micro-batch B x accumulation A see exactly the samples of 1 rank x (R*B*A), in the
//   documented order.
// - safetensors: save -> load is bit-exact (tensors, config) and gives host_model the same
//   logits bit for bit; the file really is GPT-2's layout (Conv1D weights transposed); F16 and
//   BF16 files read back as strata's conversions; no .tmp left behind, and a save that fails
//   leaves the old file; every malformed file gives a strata::format_error whose message
//   names the file and the fault.
#include "catch.hpp"

#include "data.hpp"
#include "gpt_config.hpp"
#include "host/model.hpp"
#include "safetensors.hpp"

#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

/// A fresh directory under STRATA_TEST_TMPDIR (or the system temp dir), removed at the end.
struct temp_dir {
  fs::path path;
  explicit temp_dir(const std::string& tag) {
    const char* base = std::getenv("STRATA_TEST_TMPDIR");
    path = fs::path(base ? base : fs::temp_directory_path().string()) /
           ("gpt_io_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

/// The message of the E thrown by f, or "<no exception>" / "<other: ...>".
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<other exception: ") + e.what() + ">";
  }
  return "<no exception>";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

gpt::gpt_config small_config() {
  gpt::gpt_config cfg;
  cfg.vocab = 256;
  cfg.context = 16;
  cfg.layers = 2;
  cfg.heads = 2;
  cfg.width = 8;
  return cfg;
}

/// Parameters with every float distinct and not representable in 16 bits, so a lost or
/// misplaced element (or a silent F16 round trip) shows.
gpt::gpt_weights random_weights(const gpt::gpt_config& cfg, std::uint64_t seed) {
  gpt::rng gen(seed);
  gpt::gpt_weights w;
  w.cfg = cfg;
  w.embed.resize(gpt::embed_numel(cfg));
  for (float& x : w.embed) x = static_cast<float>(gen.normal());
  w.blocks.assign(cfg.layers, std::vector<float>(gpt::block_numel(cfg)));
  for (auto& b : w.blocks)
    for (float& x : b) x = static_cast<float>(gen.normal());
  return w;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- raw safetensors surgery: header JSON + data bytes ---------------------------------------

struct raw_file {
  nlohmann::json header;
  std::string data;
};

raw_file read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  raw_file r;
  r.header = nlohmann::json::parse(text);
  r.data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

void write_raw(const std::string& path, const std::string& header_text, const std::string& data,
               std::uint64_t claimed_length) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(&claimed_length), 8);
  out << header_text << data;
}

void write_raw(const std::string& path, const raw_file& r) {
  const std::string text = r.header.dump();
  write_raw(path, text, r.data, text.size());
}

}  // namespace

// =============================================================================================
// Tokenizer
// =============================================================================================

TEST_CASE("byte tokenizer: every byte round-trips, console rendering, bad tokens", "[gpt][data]") {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int> tokens = gpt::encode(all);
  REQUIRE(tokens.size() == 256);
  for (int b = 0; b < 256; ++b) CHECK(tokens[b] == b);
  CHECK(gpt::decode(tokens) == all);
  const std::string utf8 = "na\xc3\xafve caf\xc3\xa9\n";
  CHECK(gpt::decode(gpt::encode(utf8)) == utf8);

  CHECK(gpt::printable('a') == "a");
  CHECK(gpt::printable('\n') == "\n");
  CHECK(gpt::printable(0) == "\\x00");
  CHECK(gpt::printable(0xff) == "\\xff");
  CHECK(gpt::printable(std::string("a\x01" "b\x7f")) == "a\\x01b\\x7f");

  const std::vector<int> bad = {65, 66, 256};
  const std::string msg = message_of<std::invalid_argument>([&] { gpt::decode(bad); });
  INFO(msg);
  CHECK(contains(msg, "token 256"));
  CHECK(contains(msg, "position 2"));
}

// =============================================================================================
// Corpus and split
// =============================================================================================

TEST_CASE("corpus: a directory is read in name order, skipping links, indexes and binaries",
          "[gpt][data]") {
  temp_dir dir("corpus");
  write_text(dir.file("b_second"), "second file\n");
  write_text(dir.file("a_first"), "first file, no newline");
  write_text(dir.file("a_first.dat"), "index");
  write_text(dir.file("c.u8"), "u8 twin");
  write_text(dir.file("binary"), std::string("bin\0ary", 7));
  write_text(dir.file("empty"), "");
  fs::create_symlink(dir.file("b_second"), dir.file("z_link"));
  fs::create_directory(dir.path / "subdir");

  const gpt::corpus c = gpt::load_corpus(dir.path.string());
  CHECK(c.source == dir.path.string());
  REQUIRE(c.files == std::vector<std::string>{dir.file("a_first"), dir.file("b_second")});
  const std::string text(c.bytes.begin(), c.bytes.end());
  CHECK(text == "first file, no newline\nsecond file\n");

  SECTION("a file given by name, symlink or not, is read as it is") {
    const gpt::corpus one = gpt::load_corpus(dir.file("z_link"));
    CHECK(std::string(one.bytes.begin(), one.bytes.end()) == "second file\n");
  }
}

TEST_CASE("corpus: errors name the path", "[gpt][data]") {
  temp_dir dir("corpus_err");
  const std::string missing = dir.file("no_such_corpus");
  std::string msg = message_of<strata::io_error>([&] { gpt::load_corpus(missing); });
  INFO(msg);
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "does not exist"));

  fs::create_directory(dir.path / "only_junk");
  write_text((dir.path / "only_junk" / "x.dat").string(), "index");
  const std::string junk = (dir.path / "only_junk").string();
  msg = message_of<strata::io_error>([&] { gpt::load_corpus(junk); });
  INFO(msg);
  CHECK(contains(msg, junk));
  CHECK(contains(msg, "no non-empty text file"));

  write_text(dir.file("empty.txt"), "");
  msg = message_of<strata::io_error>([&] { gpt::load_corpus(dir.file("empty.txt")); });
  INFO(msg);
  CHECK(contains(msg, dir.file("empty.txt")));
  CHECK(contains(msg, "empty"));
}

TEST_CASE("corpus: the default corpus loads as text", "[gpt][data]") {
  const std::string path = gpt::default_corpus_path();
  const gpt::corpus c = gpt::load_corpus(path);
  CHECK(c.bytes.size() > 100000);
  CHECK(std::find(c.bytes.begin(), c.bytes.end(), std::uint8_t{0}) == c.bytes.end());
  CHECK(std::is_sorted(c.files.begin(), c.files.end()));
  for (const std::string& f : c.files) {
    CHECK_FALSE(gpt::data_detail::ends_with(f, ".dat"));
    CHECK_FALSE(gpt::data_detail::ends_with(f, ".u8"));
    CHECK_FALSE(fs::is_symlink(f));
  }
}

TEST_CASE("split: the last 10% is validation, nothing lost or repeated", "[gpt][data]") {
  gpt::corpus c;
  c.source = "memory";
  for (int i = 0; i < 1005; ++i) c.bytes.push_back(static_cast<std::uint8_t>(i * 7));
  const gpt::text_split s = gpt::split_corpus(c);
  CHECK(s.val.size() == 100);  // floor(1005 * 0.1)
  CHECK(s.train.size() == 905);
  std::vector<std::uint8_t> joined = s.train;
  joined.insert(joined.end(), s.val.begin(), s.val.end());
  CHECK(joined == c.bytes);
  CHECK(gpt::split_corpus(c, 0.25).val.size() == 251);
  CHECK(gpt::split_corpus(c, 0.0).val.empty());
  const std::string msg = message_of<strata::config_error>([&] { gpt::split_corpus(c, 1.0); });
  CHECK(contains(msg, "memory"));
}

// =============================================================================================
// Batches
// =============================================================================================

TEST_CASE("batch sampler: windows are text, targets are shifted tokens, seeds decide",
          "[gpt][data]") {
  std::vector<std::uint8_t> data(300);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>((i * 131 + 7) % 251);
  const int T = 8, B = 4;
  const gpt::batch_sampler s(data, T, 42, "test data");
  const gpt::batch_sampler same(data, T, 42, "test data");
  const gpt::batch_sampler other(data, T, 43, "test data");

  std::vector<int> tok(B * T), tgt(B * T), tok2(B * T), tgt2(B * T);
  int differing_steps = 0;
  for (std::uint64_t step = 0; step < 50; ++step) {
    s.batch(step, 0, 1, 0, 1, B, tok.data(), tgt.data());
    for (int b = 0; b < B; ++b) {
      const std::size_t start = s.window_start(step * B + b);
      REQUIRE(start + T < data.size());
      for (int t = 0; t < T; ++t) {
        REQUIRE(tok[b * T + t] == data[start + t]);
        REQUIRE(tgt[b * T + t] == data[start + t + 1]);
      }
    }
    same.batch(step, 0, 1, 0, 1, B, tok2.data(), tgt2.data());
    REQUIRE(tok == tok2);
    REQUIRE(tgt == tgt2);
    other.batch(step, 0, 1, 0, 1, B, tok2.data(), tgt2.data());
    differing_steps += tok != tok2 ? 1 : 0;
  }
  CHECK(differing_steps >= 45);

  // Every one of the n - T starts (0 .. n-T-1) is drawn, none beyond.
  std::set<std::size_t> starts;
  for (std::uint64_t i = 0; i < 20000; ++i) starts.insert(s.window_start(i));
  CHECK(starts.size() == data.size() - T);
  CHECK(*starts.rbegin() == data.size() - T - 1);
}

TEST_CASE("batch sampler: R ranks x micro-batch B x accumulation A == one rank x (R*B*A)",
          "[gpt][data]") {
  std::vector<std::uint8_t> data(5000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(gpt::splitmix64(i));
  const int T = 16, global = 16;
  const gpt::batch_sampler s(data, T, 7, "test data");

  for (std::uint64_t step : {0ull, 1ull, 9ull}) {
    // The reference: one rank, micro-batch 16, no accumulation.
    std::vector<int> ref_tok(global * T), ref_tgt(global * T);
    s.batch(step, 0, 1, 0, 1, global, ref_tok.data(), ref_tgt.data());

    for (auto [R, B, A] : {std::tuple{2, 8, 1}, {4, 2, 2}, {1, 4, 4}, {8, 1, 2}, {16, 1, 1}}) {
      INFO("step " << step << ", R=" << R << " B=" << B << " A=" << A);
      REQUIRE(R * B * A == global);
      // The documented order: rank r's row b at accumulation step a is global row (a*R + r)*B + b.
      std::vector<int> got_tok(global * T, -1), got_tgt(global * T, -1);
      std::vector<int> tok(B * T), tgt(B * T);
      for (int a = 0; a < A; ++a)
        for (int r = 0; r < R; ++r) {
          s.batch(step, a, A, r, R, B, tok.data(), tgt.data());
          const std::size_t row = std::size_t(a * R + r) * B;
          std::copy(tok.begin(), tok.end(), got_tok.begin() + row * T);
          std::copy(tgt.begin(), tgt.end(), got_tgt.begin() + row * T);
        }
      CHECK(got_tok == ref_tok);
      CHECK(got_tgt == ref_tgt);
    }
  }
}

TEST_CASE("batch sampler: evaluation windows see every byte once; short data is refused",
          "[gpt][data]") {
  std::vector<std::uint8_t> data(101);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i);
  const int T = 10, B = 3;
  const gpt::batch_sampler s(data, T, 1, "val data");
  REQUIRE(s.eval_windows() == 10);
  std::vector<int> tok(B * T), tgt(B * T), seen_targets;
  for (std::uint64_t i = 0; i * B < s.eval_windows(); ++i) {
    s.eval_batch(i, B, tok.data(), tgt.data());
    for (int b = 0; b < B && i * B + b < s.eval_windows(); ++b)
      seen_targets.insert(seen_targets.end(), tgt.begin() + b * T, tgt.begin() + (b + 1) * T);
  }
  std::vector<int> expected(100);
  for (int i = 0; i < 100; ++i) expected[i] = i + 1;
  CHECK(seen_targets == expected);

  const std::vector<std::uint8_t> tiny(10, 'x');
  const std::string msg = message_of<strata::config_error>(
      [&] { gpt::batch_sampler(tiny, 10, 1, "validation split of /some/corpus"); });
  INFO(msg);
  CHECK(contains(msg, "validation split of /some/corpus"));
  CHECK(contains(msg, "10 bytes"));
  CHECK(contains(msg, "T+1 = 11"));
}

// =============================================================================================
// safetensors
// =============================================================================================

TEST_CASE("safetensors: save -> load is exact, and host_model gives the same logits",
          "[gpt][safetensors]") {
  temp_dir dir("st_roundtrip");
  const gpt::gpt_config cfg = small_config();
  gpt::host_model model(cfg, 2);
  model.init_weights(11);
  // Non-zero biases and layernorm parameters too, so every tensor matters for the logits.
  gpt::rng gen(5);
  for (int l = 0; l < cfg.layers; ++l)
    for (float& x : model.block_params(l)) x += static_cast<float>(0.05 * gen.normal());
  for (float& x : model.embed_params()) x += static_cast<float>(0.05 * gen.normal());

  std::vector<const float*> blocks;
  for (int l = 0; l < cfg.layers; ++l) blocks.push_back(model.block_params(l).data());
  const std::string path = dir.file("model.safetensors");
  write_text(path, "an older file that the save replaces");
  gpt::save_gpt(path, cfg, model.embed_params().data(), blocks);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const gpt::gpt_weights w = gpt::load_gpt(path);
  CHECK(w.cfg.vocab == cfg.vocab);
  CHECK(w.cfg.context == cfg.context);
  CHECK(w.cfg.layers == cfg.layers);
  CHECK(w.cfg.heads == cfg.heads);
  CHECK(w.cfg.width == cfg.width);
  CHECK(same_bits(w.embed, model.embed_params()));
  REQUIRE(w.blocks.size() == std::size_t(cfg.layers));
  for (int l = 0; l < cfg.layers; ++l) CHECK(same_bits(w.blocks[l], model.block_params(l)));

  gpt::host_model loaded(w.cfg, 2);
  loaded.embed_params() = w.embed;
  for (int l = 0; l < cfg.layers; ++l) loaded.block_params(l) = w.blocks[l];
  const int B = 2, T = 12;
  std::vector<int> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = int(gpt::splitmix64(i) % 256);
  model.forward(tokens.data(), nullptr, B, T);
  loaded.forward(tokens.data(), nullptr, B, T);
  CHECK(std::memcmp(model.logits(), loaded.logits(), sizeof(float) * B * T * cfg.vocab) == 0);
}

TEST_CASE("safetensors: the file is GPT-2's names and layout, with the config in metadata",
          "[gpt][safetensors]") {
  temp_dir dir("st_layout");
  const gpt::gpt_config cfg = small_config();
  const gpt::gpt_weights w = random_weights(cfg, 3);
  const std::string path = dir.file("m.safetensors");
  gpt::save_gpt(path, cfg, w.embed, w.blocks);

  const gpt::safetensors_reader r(path);
  CHECK(r.metadata().at("format") == "strata-gpt");
  CHECK(r.metadata().at("layers") == "2");
  CHECK(r.metadata().at("width") == "8");
  CHECK(r.tensors().size() == 4 + 12 * std::size_t(cfg.layers));
  const int C = cfg.width;
  for (const char* name : {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias",
                           "h.1.attn.c_attn.weight", "h.0.mlp.c_proj.bias"})
    CHECK(r.find(name) != nullptr);
  const gpt::st_tensor_info* fc = r.find("h.1.mlp.c_fc.weight");
  REQUIRE(fc != nullptr);
  CHECK(fc->shape == std::vector<std::int64_t>{C, 4 * C});  // Conv1D: (in, out)
  CHECK(fc->dtype == "F32");

  // Element (i, o) in the file is our weight (o, i).
  std::vector<float> file_order(std::size_t(4) * C * C);
  r.read_f32("h.1.mlp.c_fc.weight", {C, 4 * C}, file_order.data());
  const gpt::tensor_slot& slot = gpt::find_slot(gpt::block_slots(cfg), "mlp.c_fc.weight");
  const float* ours = w.blocks[1].data() + slot.offset;  // (4C, C)
  bool all_equal = true;
  for (int o = 0; o < 4 * C; ++o)
    for (int i = 0; i < C; ++i) all_equal &= file_order[std::size_t(i) * 4 * C + o] == ours[std::size_t(o) * C + i];
  CHECK(all_equal);

  // The header is padded so the data starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
}

TEST_CASE("safetensors: F16 and BF16 files read back as strata's conversions", "[gpt][safetensors]") {
  temp_dir dir("st_half");
  const gpt::gpt_config cfg = small_config();
  const gpt::gpt_weights w = random_weights(cfg, 9);
  for (gpt::st_dtype dt : {gpt::st_dtype::f16, gpt::st_dtype::bf16}) {
    INFO(gpt::st_dtype_name(dt));
    const std::string path = dir.file(std::string("half_") + gpt::st_dtype_name(dt));
    gpt::save_gpt(path, cfg, w.embed, w.blocks, dt);
    CHECK(fs::file_size(path) < gpt::parameter_count(cfg) * 2 + 4096);
    const gpt::gpt_weights back = gpt::load_gpt(path);
    auto rounded = [&](float x) {
      return dt == gpt::st_dtype::f16 ? strata::to_float(strata::to_f16(x))
                                      : strata::to_float(strata::to_bf16(x));
    };
    std::size_t mismatches = 0, changed = 0;
    for (std::size_t i = 0; i < w.embed.size(); ++i) {
      mismatches += back.embed[i] != rounded(w.embed[i]);
      changed += back.embed[i] != w.embed[i];
    }
    for (int l = 0; l < cfg.layers; ++l)
      for (std::size_t i = 0; i < w.blocks[l].size(); ++i)
        mismatches += back.blocks[l][i] != rounded(w.blocks[l][i]);
    CHECK(mismatches == 0);
    CHECK(changed > w.embed.size() / 2);  // it really went through 16 bits
  }
}

TEST_CASE("safetensors: every malformed file is a format_error naming the file and the fault",
          "[gpt][safetensors]") {
  temp_dir dir("st_bad");
  const gpt::gpt_config cfg = small_config();
  const gpt::gpt_weights w = random_weights(cfg, 4);
  const std::string good = dir.file("good.safetensors");
  gpt::save_gpt(good, cfg, w.embed, w.blocks);
  const raw_file base = read_raw(good);
  const std::string bad = dir.file("bad.safetensors");

  // Loads `bad` and returns the format_error's message, which must name the file.
  auto load_error = [&] {
    const std::string msg = message_of<strata::format_error>([&] { gpt::load_gpt(bad); });
    CHECK(contains(msg, bad));
    return msg;
  };
  auto with = [&](const std::function<void(raw_file&)>& edit) {
    raw_file r = base;
    edit(r);
    write_raw(bad, r);
    return load_error();
  };

  SECTION("shorter than the 8-byte length") {
    write_text(bad, "abc");
    const std::string msg = load_error();
    INFO(msg);
    CHECK(contains(msg, "not a safetensors file"));
    CHECK(contains(msg, "8-byte header length"));
  }
  SECTION("header length beyond the file") {
    write_raw(bad, "{}", "", 1000);
    const std::string msg = load_error();
    INFO(msg);
    CHECK(contains(msg, "header length 1000"));
    CHECK(contains(msg, "beyond the file"));
  }
  SECTION("truncated header JSON") {
    const std::string text = base.header.dump();
    const std::string cut = text.substr(0, text.size() / 2);
    write_raw(bad, cut, "", cut.size());
    const std::string msg = load_error();
    INFO(msg);
    CHECK(contains(msg, "truncated header"));
  }
  SECTION("not JSON at all") {
    write_raw(bad, "GIF89a, not json", "", 16);
    const std::string msg = load_error();
    INFO(msg);
    CHECK(contains(msg, "not JSON"));
  }
  SECTION("missing tensor") {
    const std::string msg = with([](raw_file& r) { r.header.erase("h.1.mlp.c_fc.bias"); });
    INFO(msg);
    CHECK(contains(msg, "missing tensor 'h.1.mlp.c_fc.bias'"));
  }
  SECTION("shape mismatch") {
    const std::string msg = with([](raw_file& r) { r.header["h.0.ln_1.weight"]["shape"] = {4, 2}; });
    INFO(msg);
    CHECK(contains(msg, "shape mismatch for tensor 'h.0.ln_1.weight'"));
    CHECK(contains(msg, "expected [8]"));
    CHECK(contains(msg, "found [4, 2]"));
  }
  SECTION("data_offsets out of range") {
    const std::string msg = with([](raw_file& r) {
      auto& off = r.header["ln_f.bias"]["data_offsets"];
      const std::uint64_t end = r.data.size() + 32;
      off = {end - 32, end};
    });
    INFO(msg);
    CHECK(contains(msg, "'ln_f.bias'"));
    CHECK(contains(msg, "out of range"));
  }
  SECTION("data_offsets that disagree with the shape") {
    const std::string msg = with([](raw_file& r) {
      auto& off = r.header["ln_f.bias"]["data_offsets"];
      off[1] = off[1].get<std::uint64_t>() - 4;
    });
    INFO(msg);
    CHECK(contains(msg, "'ln_f.bias'"));
    CHECK(contains(msg, "needs 32"));
  }
  SECTION("overlapping data_offsets") {
    const std::string msg = with([](raw_file& r) {
      r.header["h.0.ln_1.bias"]["data_offsets"] = r.header["h.0.ln_1.weight"]["data_offsets"];
    });
    INFO(msg);
    CHECK(contains(msg, "'h.0.ln_1.weight'"));
    CHECK(contains(msg, "'h.0.ln_1.bias'"));
    CHECK(contains(msg, "overlapping"));
  }
  SECTION("unknown dtype") {
    const std::string msg = with([](raw_file& r) { r.header["wpe.weight"]["dtype"] = "F99"; });
    INFO(msg);
    CHECK(contains(msg, "'wpe.weight'"));
    CHECK(contains(msg, "unknown dtype 'F99'"));
  }
  SECTION("a dtype that is not a float") {
    const std::string msg = with([](raw_file& r) { r.header["wpe.weight"]["dtype"] = "I32"; });
    INFO(msg);
    CHECK(contains(msg, "'wpe.weight'"));
    CHECK(contains(msg, "I32"));
  }
  SECTION("config missing") {
    std::string msg = with([](raw_file& r) { r.header["__metadata__"].erase("layers"); });
    INFO(msg);
    CHECK(contains(msg, "config missing"));
    CHECK(contains(msg, "'layers'"));
    msg = with([](raw_file& r) { r.header.erase("__metadata__"); });
    INFO(msg);
    CHECK(contains(msg, "config missing"));
    msg = with([](raw_file& r) { r.header["__metadata__"]["heads"] = "three"; });
    INFO(msg);
    CHECK(contains(msg, "'heads'"));
    CHECK(contains(msg, "three"));
    msg = with([](raw_file& r) { r.header["__metadata__"]["heads"] = "3"; });  // 8 % 3 != 0
    INFO(msg);
    CHECK(contains(msg, "heads"));
  }
  SECTION("a tensor the config does not have") {
    const std::string msg = with([](raw_file& r) {
      const std::uint64_t at = r.data.size();
      r.data.append(32, '\0');
      r.header["h.7.ln_1.weight"] = {{"dtype", "F32"}, {"shape", {8}}, {"data_offsets", {at, at + 32}}};
    });
    INFO(msg);
    CHECK(contains(msg, "unexpected tensor 'h.7.ln_1.weight'"));
  }
  SECTION("the untouched file still loads") {
    write_raw(bad, base);
    CHECK(gpt::load_gpt(bad).blocks.size() == 2);
  }
}

TEST_CASE("safetensors: a failed save leaves the previous file as it was", "[gpt][safetensors]") {
  temp_dir dir("st_failed_save");
  const gpt::gpt_config cfg = small_config();
  const gpt::gpt_weights old_w = random_weights(cfg, 1), new_w = random_weights(cfg, 2);
  const std::string path = dir.file("m.safetensors");
  gpt::save_gpt(path, cfg, old_w.embed, old_w.blocks);
  fs::create_directory(path + ".tmp");  // the temporary file cannot be created
  const std::string msg =
      message_of<strata::io_error>([&] { gpt::save_gpt(path, cfg, new_w.embed, new_w.blocks); });
  INFO(msg);
  CHECK(contains(msg, path + ".tmp"));
  const gpt::gpt_weights back = gpt::load_gpt(path);
  CHECK(same_bits(back.embed, old_w.embed));
}

TEST_CASE("safetensors: a missing file is an io_error naming it", "[gpt][safetensors]") {
  temp_dir dir("st_missing");
  const std::string path = dir.file("nothing_here.safetensors");
  const std::string msg = message_of<strata::io_error>([&] { gpt::load_gpt(path); });
  INFO(msg);
  CHECK(contains(msg, path));
}
