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
//   names the file and the fault; the config's claims are checked against the tensors and the
//   file before any array is sized from them (a 136-byte file that claims a million layers is
//   refused, naming the key, the value and the file's bytes, after allocating next to nothing:
//   this binary counts operator new's bytes to show it).
// - corpus given by name: a device, a FIFO or a binary file is refused before it is read (or at
//   its first NUL byte), naming the path and why.
#include "catch.hpp"
#include "gpt_test_support.hpp"

#include "data.hpp"
#include "gpt_config.hpp"
#include "host/model.hpp"
#include "safetensors.hpp"

#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <new>
#include <set>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

namespace fs = std::filesystem;

// ---- operator new, counted: the bytes a call asks for while a test measures it ---------------
// Replacing the global operator new (and the deletes that pair with it) is how a test can see
// that load_gpt sizes nothing from a header before checking it; the count is per thread and
// only while counting, so Catch and the other tests are not affected.
namespace {
thread_local bool counting_news = false;
thread_local std::size_t counted_new_bytes = 0;
}  // namespace

// Every plain (not over-aligned) form is replaced, new and delete alike, so that each pair
// is malloc/free (sanitizers check that pairs match).
namespace {
void* counted_malloc(std::size_t bytes) noexcept {
  if (counting_news) counted_new_bytes += bytes;
  return std::malloc(bytes ? bytes : 1);
}
}  // namespace

void* operator new(std::size_t bytes) {
  if (void* p = counted_malloc(bytes)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t bytes) { return operator new(bytes); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept { return counted_malloc(bytes); }
void* operator new[](std::size_t bytes, const std::nothrow_t&) noexcept { return counted_malloc(bytes); }
// GCC, inlining these into a delete expression, sees free() meet a pointer from operator new
// and warns; here that pair is the point.
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic pop
#endif

namespace {

using gpt_test::temp_dir;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

using gpt_test::contains;
using gpt_test::message_of;

/// Bytes operator new was asked for while f ran (on this thread).
template <class F>
std::size_t new_bytes_during(F&& f) {
  counted_new_bytes = 0;
  counting_news = true;
  try {
    f();
  } catch (...) {
    counting_news = false;
    throw;
  }
  counting_news = false;
  return counted_new_bytes;
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

TEST_CASE("corpus: a file given by name must be a regular text file", "[gpt][data]") {
  // --data /dev/zero used to read until memory ran out, a FIFO until its writer closed it,
  // and --data /bin/ls trained on machine code. A file named on the command line follows the
  // directory walk's rule: regular, no NUL byte.
  temp_dir dir("corpus_kinds");
  auto refusal = [](const std::string& path) {
    return message_of<strata::io_error>([&] { gpt::load_corpus(path); });
  };
  std::string msg = refusal("/dev/zero");
  INFO(msg);
  CHECK(contains(msg, "'/dev/zero' is a character device, not a regular text file"));

  const std::string fifo = dir.file("pipe");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  msg = refusal(fifo);  // returns at once: nothing opens the FIFO
  INFO(msg);
  CHECK(contains(msg, "'" + fifo + "' is a FIFO (named pipe), not a regular text file"));

  fs::create_symlink("/dev/zero", dir.file("zero_link"));  // a link is followed, then judged
  msg = refusal(dir.file("zero_link"));
  INFO(msg);
  CHECK(contains(msg, dir.file("zero_link")));
  CHECK(contains(msg, "character device"));

  write_text(dir.file("program"), std::string("\x7f" "ELF\x02\x01\x01\0\0\0 more", 16));
  msg = refusal(dir.file("program"));
  INFO(msg);
  CHECK(contains(msg, "'" + dir.file("program") + "' is not text: byte 7 of 16 is NUL"));
  if (fs::is_regular_file("/bin/ls")) {
    msg = refusal("/bin/ls");
    INFO(msg);
    CHECK(contains(msg, "'/bin/ls' is not text"));
  }

  // Text (UTF-8 included) still loads, and so does a link to it.
  write_text(dir.file("text"), "caf\xc3\xa9\n");
  fs::create_symlink(dir.file("text"), dir.file("text_link"));
  CHECK(gpt::load_corpus(dir.file("text_link")).bytes.size() == 6);
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
  const std::vector<gpt::tensor_slot> slots = gpt::block_slots(cfg);
  const gpt::tensor_slot& slot = gpt::find_slot(slots, "mlp.c_fc.weight");
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

TEST_CASE("safetensors: __metadata__'s sizes are checked against the file before anything is "
          "sized from them", "[gpt][safetensors]") {
  temp_dir dir("st_claims");
  const gpt::gpt_config cfg = small_config();  // V 256, T 16, L 2, NH 2, C 8
  const gpt::gpt_weights w = random_weights(cfg, 5);
  const std::string good = dir.file("good.safetensors");
  gpt::save_gpt(good, cfg, w.embed, w.blocks);
  const raw_file base = read_raw(good);
  const std::string bad = dir.file("claims.safetensors");

  // load_gpt(bad)'s format_error and the bytes operator new was asked for meanwhile. A correct
  // load of the good file takes about twice its floats; a refusal must take no more than the
  // header's parsing does, whatever the header claims.
  struct outcome {
    std::string message;
    std::size_t allocated;
  };
  auto load = [&](bool names_file_size = true) {
    outcome o;
    o.allocated = new_bytes_during(
        [&] { o.message = message_of<strata::format_error>([&] { gpt::load_gpt(bad); }); });
    INFO(o.message);
    CHECK(contains(o.message, bad));
    if (names_file_size)
      CHECK(contains(o.message, "(the file has " + std::to_string(fs::file_size(bad)) + " bytes)"));
    CHECK(o.allocated < (std::size_t{1} << 20));
    return o;
  };
  auto metadata_only = [&](const std::map<std::string, std::string>& changes) {
    nlohmann::json meta = base.header["__metadata__"];
    for (const auto& [k, v] : changes) meta[k] = v;
    const std::string text = nlohmann::json{{"__metadata__", meta}}.dump();
    write_raw(bad, text, "", text.size());
  };
  auto claiming = [&](const std::map<std::string, std::string>& changes) {
    raw_file r = base;
    for (const auto& [k, v] : changes) r.header["__metadata__"][k] = v;
    write_raw(bad, r);
  };

  SECTION("a header of ~136 bytes claiming a million layers (it took 1 GB before failing)") {
    metadata_only({{"layers", "1000000"}});
    REQUIRE(fs::file_size(bad) < 200);
    const outcome o = load();
    INFO(o.message);
    CHECK(contains(o.message, "__metadata__ 'layers' is 1000000, but the file has no block "
                              "tensors (h.<i>.*)"));
  }
  SECTION("a million layers over a file with two") {
    claiming({{"layers", "1000000"}});
    const outcome o = load();
    INFO(o.message);
    CHECK(contains(o.message, "'layers' is 1000000"));
    CHECK(contains(o.message, "the file has block tensors of 2 layers (h.0.* .. h.1.*)"));
  }
  SECTION("fewer layers than the file has") {
    claiming({{"layers", "1"}});
    const outcome o = load();
    INFO(o.message);
    CHECK(contains(o.message, "unexpected tensor 'h.1."));
    CHECK(contains(o.message, "a model with 1 layers"));
  }
  SECTION("width 2147483647 (a bare std::bad_alloc before)") {
    claiming({{"width", "2147483647"}, {"heads", "1"}});
    const outcome o = load();
    INFO(o.message);
    CHECK(contains(o.message, "config in __metadata__ is not valid"));
    CHECK(contains(o.message, "width must be at most 536870911"));
    CHECK(contains(o.message, "got 2147483647"));
  }
  SECTION("a width the tensors contradict") {
    claiming({{"width", "1000000"}});
    const outcome o = load();
    INFO(o.message);
    CHECK(contains(o.message, "__metadata__ 'width' is 1000000, but tensor 'wte.weight' has "
                              "shape [256, 8], not [256, 1000000]"));
  }
  SECTION("a vocab and a context the tensors contradict") {
    claiming({{"vocab", "100000"}});
    outcome o = load();
    INFO(o.message);
    CHECK(contains(o.message, "__metadata__ 'vocab' is 100000, but tensor 'wte.weight'"));
    claiming({{"context", "70000"}});
    o = load();
    INFO(o.message);
    CHECK(contains(o.message, "__metadata__ 'context' is 70000, but tensor 'wpe.weight' has "
                              "shape [16, 8], not [70000, 8]"));
  }
  SECTION("a value beyond int") {
    claiming({{"layers", "99999999999"}});
    const outcome o = load(false);
    INFO(o.message);
    CHECK(contains(o.message, "config field 'layers' is '99999999999', out of range for an int"));
  }
  SECTION("a shape whose byte count wraps around 64 bits") {
    // 2^32 x 2^32 F32 elements are 2^66 bytes, which wrapped to 0 and matched data_offsets [0, 0].
    raw_file r = base;
    r.header["h.0.ln_1.weight"]["shape"] = {std::uint64_t{1} << 32, std::uint64_t{1} << 32};
    r.header["h.0.ln_1.weight"]["data_offsets"] = {0, 0};
    write_raw(bad, r);
    const std::string msg = message_of<strata::format_error>([&] { gpt::load_gpt(bad); });
    INFO(msg);
    CHECK(contains(msg, "tensor 'h.0.ln_1.weight': shape [4294967296, 4294967296] of F32 needs "
                        "more bytes than the data holds"));
  }
  SECTION("the good file loads, and sizes its arrays from the config") {
    gpt::gpt_weights back;
    const std::size_t bytes = new_bytes_during([&] { back = gpt::load_gpt(good); });
    CHECK(same_bits(back.embed, w.embed));
    CHECK(bytes >= gpt::parameter_count(cfg) * sizeof(float));
  }
}

TEST_CASE("safetensors: a failed save leaves the previous file as it was", "[gpt][safetensors]") {
  temp_dir dir("st_failed_save");
  const gpt::gpt_config cfg = small_config();
  const gpt::gpt_weights old_w = random_weights(cfg, 1), new_w = random_weights(cfg, 2);
  const std::string path = dir.file("m.safetensors");
  gpt::save_gpt(path, cfg, old_w.embed, old_w.blocks);
  // Writing more than 4 KiB fails now (EFBIG; the signal it would raise is ignored), whoever
  // runs the test: the save fails while writing its temporary file.
  struct rlimit before {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &before) == 0);
  struct rlimit small = before;
  small.rlim_cur = 4096;
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  const std::string msg =
      message_of<strata::io_error>([&] { gpt::save_gpt(path, cfg, new_w.embed, new_w.blocks); });
  ::setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, old_handler);
  INFO(msg);
  for (auto& e : fs::directory_iterator(dir.path))  // the temporary file is gone
    CHECK_FALSE(contains(e.path().filename().string(), ".tmp."));
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
