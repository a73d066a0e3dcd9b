// Tests for exporting a training checkpoint (examples/gpt/checkpoint_export.hpp, export.cpp),
// starting a run from a file (init_from.hpp), and the streamed writer under both
// (safetensors.hpp's stream_safetensors).
//
// The checkpoint: a 4-layer model trained 2 steps on 2 thread ranks with ZeRO-3 host offload,
// saved by strata's checkpoint::saver with the model's config in its metadata, as gpt_train
// saves it (and, before that, three checkpoints whose "model" is missing or wrong).
// - The F32 export is byte for byte the file save_gpt writes from the trainer's weights (both
//   go through write_gpt), and load_gpt reads it bitwise; BF16 likewise against save_gpt BF16.
// - One layer at a time: the heap's peak while exporting (this binary counts operator new and
//   delete) stays within one layer + one tensor + one checksum block (the reader's scratch) and
//   a small slack, well under the model's size; every layer is read once, each checksum block
//   of the parameters' shards once, and nothing of the Adam moments.
// - A checkpoint without "model", with a field missing, or with a config its tensors
//   contradict is a format_error naming the checkpoint and the key; a missing tag or root an
//   io_error naming it; a checksum failure mid-export leaves the previous file and no temporary.
// - gpt_export: bad arguments exit 2, a failed export 1, a good one 0 with the same file.
// - initial_weights_from round-trips (F32 bitwise, BF16 as strata's conversion), sets a
//   trainer's weights, and refuses a file of another config naming the field and both values.
#include "catch.hpp"
#include "gpt_test_support.hpp"

#include "checkpoint_export.hpp"
#include "init_from.hpp"
#include "safetensors.hpp"
#include "trainer.hpp"

#include <strata/checkpoint/saver.hpp>
#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>
#include <strata/core/dtype.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;

// ---- operator new, counted: the heap's peak while a test measures it -------------------------
// Every plain allocation carries its size in a 16-byte header (malloc's alignment, so the
// pointer handed out keeps it), so that a delete can subtract what its new added: while this
// thread counts, `live` is the bytes allocated and not yet freed since counting began, and
// `peak` its largest value. Over-aligned forms are left to the library (they pair among
// themselves). The two helpers are not inlined: a compiler that sees a delete's pointer come
// from a new would take the header in front of it for bytes outside the object.
namespace {
thread_local bool counting = false;
thread_local std::int64_t live_bytes = 0, peak_bytes = 0;
constexpr std::size_t header = 16;

[[gnu::noinline]] void* counted_malloc(std::size_t bytes) noexcept {
  auto* p = static_cast<unsigned char*>(std::malloc(bytes + header));
  if (!p) return nullptr;
  std::memcpy(p, &bytes, sizeof bytes);
  if (counting) {
    live_bytes += static_cast<std::int64_t>(bytes);
    peak_bytes = std::max(peak_bytes, live_bytes);
  }
  return p + header;
}
[[gnu::noinline]] void counted_free(void* q) noexcept {
  if (!q) return;
  auto* p = static_cast<unsigned char*>(q) - header;
  if (counting) {
    std::size_t bytes = 0;
    std::memcpy(&bytes, p, sizeof bytes);
    live_bytes -= static_cast<std::int64_t>(bytes);
  }
  std::free(p);
}
}  // namespace

void* operator new(std::size_t bytes) {
  if (void* p = counted_malloc(bytes)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t bytes) { return operator new(bytes); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept { return counted_malloc(bytes); }
void* operator new[](std::size_t bytes, const std::nothrow_t&) noexcept { return counted_malloc(bytes); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

namespace {

using gpt_test::contains;
using gpt_test::message_of;
using gpt_test::temp_dir;

/// The heap's peak (bytes above what was live when f began) while f ran on this thread.
template <class F>
std::int64_t peak_heap_during(F&& f) {
  live_bytes = peak_bytes = 0;
  counting = true;
  try {
    f();
  } catch (...) {
    counting = false;
    throw;
  }
  counting = false;
  return peak_bytes;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

gpt::train_config tiny() {
  gpt::train_config tc;
  tc.model.layers = 4;
  tc.model.heads = 2;
  tc.model.width = 64;  // a block (200 KB) well above the reader's and JSON's small change
  tc.model.context = 16;
  tc.batch = 2;
  tc.seq = 16;
  tc.steps = 2;
  tc.warmup = 1;
  return tc;
}

nlohmann::json model_json(const gpt::gpt_config& c) {
  return {{"vocab", c.vocab}, {"context", c.context}, {"layers", c.layers},
          {"heads", c.heads}, {"width", c.width}};
}

gpt::text_split corpus() {
  std::string text;
  while (text.size() < 8000) text += "the quick brown fox jumps over the lazy dog. ";
  gpt::text_split s;
  s.source = "test corpus";
  s.train.assign(text.begin(), text.end() - 800);
  s.val.assign(text.end() - 800, text.end());
  return s;
}

/// One training run's checkpoints, made once for the whole binary (see the top):
///   bare, no-heads, wrong-width (after step 1; "model" missing, without "heads", width 32),
///   step-2 (after step 2, the right "model"; `latest`),
/// and save_gpt's files of the weights after step 2, F32 and BF16.
struct trained_checkpoint {
  temp_dir dir{"export"};
  std::string root = dir / "ckpt";
  gpt::train_config tc = tiny();
  static constexpr std::uint64_t block_bytes = 16384;
  std::vector<std::vector<float>> weights;  // per executor layer, after step 2
  std::string ref_f32 = dir / "ref.safetensors", ref_bf16 = dir / "ref_bf16.safetensors";

  trained_checkpoint() {
    using executor = gpt::trainer<strata::comm::threads, strata::zero3_offload>::executor_type;
    const gpt::text_split data = corpus();
    strata::comm::thread_world world(2);
    world.run([&](strata::comm::threads& comm) {
      strata::context_config cc;
      cc.device_bytes = std::size_t{64} << 20;
      cc.pinned_bytes = std::size_t{32} << 20;
      cc.staging_slot_bytes = std::size_t{1} << 20;
      cc.rank = comm.rank();
      strata::context ctx(cc);
      gpt::trainer<strata::comm::threads, strata::zero3_offload> tr(ctx, comm, tc, data);
      // Small checksum blocks, so that the export's reads go block by block through each shard.
      strata::checkpoint::saver<executor> ck(
          tr.executor(), tr.optimizer(),
          {.directory = root, .keep = 0, .writer = {.block_bytes = block_bytes}});
      auto committed = [&](const char* tag) {
        const auto r = ck.finish();
        if (!r || !r->committed)
          throw std::runtime_error(std::string("test setup: checkpoint ") + tag + " failed: " +
                                   (r ? r->error : "no report"));
      };
      (void)tr.train_step(0);
      nlohmann::json no_heads = model_json(tc.model);
      no_heads.erase("heads");
      nlohmann::json wrong_width = model_json(tc.model);
      wrong_width["width"] = 32;
      ck.save("bare", 1, {{"data_pos", 1}});
      committed("bare");
      ck.save("no-heads", 1, {{"model", no_heads}});
      committed("no-heads");
      ck.save("wrong-width", 1, {{"model", wrong_width}});
      committed("wrong-width");
      (void)tr.train_step(1);
      ck.save("step-2", 2, {{"model", model_json(tc.model)}});
      committed("step-2");
      std::vector<std::vector<float>> w = tr.weights();  // a collective
      if (comm.rank() == 0) weights = std::move(w);
    });
    const std::vector<std::vector<float>> blocks(weights.begin() + 1, weights.end());
    gpt::save_gpt(ref_f32, tc.model, weights[0], blocks);
    gpt::save_gpt(ref_bf16, tc.model, weights[0], blocks, gpt::st_dtype::bf16);
  }
};

const trained_checkpoint& fixture() {
  static trained_checkpoint t;
  return t;
}

/// Every rank's "<layer>/param" entries: their bytes (padding included), and the checksum
/// blocks that hold their real elements — what an export reads, each once, and nothing else.
struct param_extent {
  std::uint64_t bytes = 0, blocks = 0;
};
param_extent param_entries(const std::string& root, const std::string& tag) {
  const strata::checkpoint::checkpoint_root r(root, {.create = false, .recover = false});
  const strata::checkpoint::checkpoint_reader reader(r, tag);
  param_extent x;
  for (int q = 0; q < reader.world(); ++q)
    for (const auto& e : reader.of_rank(q).tensors)
      if (e.name.ends_with("/param")) {
        x.bytes += e.bytes;
        const std::uint64_t real = e.shard->valid() * sizeof(float);
        x.blocks += (real + e.block_bytes - 1) / e.block_bytes;
      }
  return x;
}

bool no_temporaries_in(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (contains(e.path().filename().string(), ".tmp.")) return false;
  return true;
}

}  // namespace

TEST_CASE("export: the F32 file is save_gpt's of the trained weights, byte for byte",
          "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  const gpt::gpt_config& cfg = f.tc.model;
  const std::string out = f.dir / "export.safetensors";
  const gpt::export_report r = gpt::export_checkpoint(f.root, gpt::latest_checkpoint, out);
  CHECK(r.tag == "step-2");
  CHECK(r.step == 2);
  CHECK(r.saved_world == 2);
  CHECK(r.cfg.layers == cfg.layers);
  CHECK(r.cfg.width == cfg.width);
  CHECK(r.tensors == 4 + 12 * std::size_t(cfg.layers));
  CHECK(r.file_bytes == fs::file_size(out));
  CHECK(file_bytes(out) == file_bytes(f.ref_f32));
  CHECK(no_temporaries_in(f.dir.path));

  // And what gpt_generate reads: load_gpt gives the trainer's arrays bitwise.
  const gpt::gpt_weights w = gpt::load_gpt(out);
  CHECK(w.cfg.vocab == cfg.vocab);
  CHECK(w.cfg.context == cfg.context);
  CHECK(w.cfg.heads == cfg.heads);
  CHECK(same_bits(w.embed, f.weights[0]));
  REQUIRE(w.blocks.size() == std::size_t(cfg.layers));
  for (int l = 0; l < cfg.layers; ++l) CHECK(same_bits(w.blocks[l], f.weights[l + 1]));
}

TEST_CASE("export: BF16 is save_gpt's BF16 file, for a tag named explicitly", "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  const std::string out = f.dir / "export_bf16.safetensors";
  const gpt::export_report r = gpt::export_checkpoint(f.root, "step-2", out, gpt::st_dtype::bf16);
  CHECK(r.dtype == gpt::st_dtype::bf16);
  CHECK(file_bytes(out) == file_bytes(f.ref_bf16));
  CHECK(fs::file_size(out) < fs::file_size(f.ref_f32) / 2 + 4096);
}

TEST_CASE("export: one layer at a time, never the model", "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  const gpt::gpt_config& cfg = f.tc.model;
  const std::string out = f.dir / "export_memory.safetensors";
  gpt::export_report r;
  const std::int64_t peak = peak_heap_during(
      [&] { r = gpt::export_checkpoint(f.root, gpt::latest_checkpoint, out); });

  const std::size_t layer = std::max(gpt::embed_numel(cfg), gpt::block_numel(cfg));
  const std::size_t largest_tensor = 4 * std::size_t(cfg.width) * cfg.width;  // mlp weights
  CHECK(r.layers_read == std::size_t(cfg.layers) + 1);
  CHECK(r.layer_buffer_floats == layer);
  CHECK(r.writer_held_floats == largest_tensor);
  // Read: each checksum block of each rank's parameter shards once, and no moment.
  const param_extent params = param_entries(f.root, "step-2");
  CHECK(r.read.reads == params.blocks);
  CHECK(r.read.bytes >= gpt::parameter_count(cfg) * sizeof(float));
  CHECK(r.read.bytes <= params.bytes);

  // The heap: the layer buffer, one transpose, the reader's scratch (one checksum block), and
  // small change (manifests with their checksums, JSON, names; measured ~80 KiB). A second
  // layer (200 KB) would not fit the bound, let alone the model (870 KB).
  const std::int64_t model = std::int64_t(gpt::parameter_count(cfg) * sizeof(float));
  const std::int64_t bound = std::int64_t((layer + largest_tensor) * sizeof(float) +
                                          trained_checkpoint::block_bytes) +
                             (std::int64_t{128} << 10);
  INFO("peak " << peak << " bytes, bound " << bound << ", model " << model);
  CHECK(peak >= std::int64_t(layer * sizeof(float)));  // the counter sees the layer buffer
  CHECK(peak <= bound);
  CHECK(peak < model * 3 / 4);
}

TEST_CASE("export: a checkpoint without a usable model config is refused, naming it",
          "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  const std::string out = f.dir / "refused.safetensors";
  auto refusal = [&](const std::string& tag) {
    const std::string msg =
        message_of<strata::format_error>([&] { gpt::export_checkpoint(f.root, tag, out); });
    INFO(msg);
    CHECK(contains(msg, f.root + "/" + tag));
    CHECK_FALSE(fs::exists(out));
    return msg;
  };
  SECTION("no 'model' in the metadata") {
    const std::string msg = refusal("bare");
    INFO(msg);
    CHECK(contains(msg, "no 'model' object"));
  }
  SECTION("a field missing") {
    const std::string msg = refusal("no-heads");
    INFO(msg);
    CHECK(contains(msg, "'model' has no 'heads'"));
  }
  SECTION("a config the tensors contradict") {
    const std::string msg = refusal("wrong-width");
    INFO(msg);
    CHECK(contains(msg, "tensor 'embed/param' has " +
                            std::to_string(gpt::embed_numel(f.tc.model)) + " elements"));
  }
  CHECK(no_temporaries_in(f.dir.path));
}

TEST_CASE("export: a missing tag, root or checkpoint is an io_error naming it", "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  const std::string out = f.dir / "none.safetensors";
  std::string msg = message_of<strata::io_error>([&] { gpt::export_checkpoint(f.root, "step-9", out); });
  INFO(msg);
  CHECK(contains(msg, "no committed checkpoint 'step-9'"));
  CHECK(contains(msg, "step-2"));  // the ones there are
  msg = message_of<strata::io_error>(
      [&] { gpt::export_checkpoint(f.dir / "nowhere", gpt::latest_checkpoint, out); });
  CHECK(contains(msg, f.dir / "nowhere"));
  temp_dir empty("export_empty");
  msg = message_of<strata::io_error>(
      [&] { gpt::export_checkpoint(empty.path.string(), gpt::latest_checkpoint, out); });
  CHECK(contains(msg, "no committed checkpoint"));
  CHECK_FALSE(fs::exists(empty.path / "latest"));  // and nothing was created there
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("export: a checksum failure mid-file leaves the previous file, and no temporary",
          "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  temp_dir d("export_damaged");
  const std::string root = d / "ckpt";
  fs::copy(f.root, root, fs::copy_options::recursive);
  // Flip a byte of the last block's parameters in rank 1's data file: the export has written
  // most of the file when it reads them.
  const std::string last = "h." + std::to_string(f.tc.model.layers - 1) + "/param";
  std::uint64_t at = 0;
  {
    const strata::checkpoint::checkpoint_root r(root, {.create = false, .recover = false});
    const strata::checkpoint::checkpoint_reader reader(r, "step-2");
    at = reader.of_rank(1).find(last)->offset + 8;
  }
  {
    std::fstream data(root + "/step-2/rank-1.bin", std::ios::binary | std::ios::in | std::ios::out);
    data.seekg(std::streamoff(at));
    char c = 0;
    data.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    data.seekp(std::streamoff(at));
    data.write(&c, 1);
  }
  const std::string out = d / "out.safetensors";
  std::ofstream(out) << "the previous file";
  const std::string msg =
      message_of<strata::format_error>([&] { gpt::export_checkpoint(root, "step-2", out); });
  INFO(msg);
  CHECK(contains(msg, "rank-1.bin"));
  CHECK(contains(msg, last));
  CHECK(contains(msg, "checksum"));
  CHECK(file_bytes(out) == "the previous file");
  CHECK(no_temporaries_in(d.path));
}

TEST_CASE("stream_safetensors: a source of the wrong length is refused, the old file kept",
          "[gpt][export][safetensors]") {
  temp_dir d("stream_bad");
  const std::string out = d / "s.safetensors";
  std::ofstream(out) << "old";
  const std::vector<float> three = {1, 2, 3};
  const std::vector<gpt::st_tensor_spec> specs = {{"a", {3}}, {"b", {2, 2}, gpt::st_dtype::bf16, true}};
  const std::string msg = message_of<strata::config_error>([&] {
    gpt::stream_safetensors(out, specs, {}, [&](std::size_t) { return std::span<const float>(three); });
  });
  INFO(msg);
  CHECK(contains(msg, "tensor 'b'"));
  CHECK(contains(msg, "its source gave 3"));
  CHECK(file_bytes(out) == "old");
  CHECK(no_temporaries_in(d.path));

  // And a good one: the values as given, the transposed one transposed, halves converted.
  const std::vector<float> four = {1.5f, 2.25f, -3.0f, 4.0f};  // (2, 2)^T, stored transposed
  const gpt::st_write_summary s = gpt::stream_safetensors(out, specs, {{"k", "v"}}, [&](std::size_t i) {
    return i == 0 ? std::span<const float>(three) : std::span<const float>(four);
  });
  CHECK(s.tensors == 2);
  CHECK(s.file_bytes == fs::file_size(out));
  CHECK(s.held_floats == 4);
  const gpt::safetensors_reader r(out);
  CHECK(r.metadata().at("k") == "v");
  std::vector<float> a(3), b(4);
  r.read_f32("a", {3}, a.data());
  r.read_f32("b", {2, 2}, b.data());
  CHECK(a == three);
  CHECK(b == std::vector<float>{1.5f, -3.0f, 2.25f, 4.0f});
}

TEST_CASE("initial_weights_from: the exported file, per executor layer", "[gpt][export][init]") {
  const trained_checkpoint& f = fixture();
  const gpt::gpt_config& cfg = f.tc.model;
  const std::vector<std::vector<float>> w = gpt::initial_weights_from(f.ref_f32, cfg);
  REQUIRE(w.size() == f.weights.size());
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(same_bits(w[i], f.weights[i]));

  // BF16: each value is the float's BF16 rounding, widened back.
  const std::vector<std::vector<float>> h = gpt::initial_weights_from(f.ref_bf16, cfg);
  REQUIRE(h.size() == f.weights.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    std::vector<strata::bf16> narrow(f.weights[i].size());
    std::vector<float> expect(f.weights[i].size());
    strata::convert(f.weights[i].data(), narrow.data(), narrow.size());
    strata::convert(narrow.data(), expect.data(), expect.size());
    CHECK(same_bits(h[i], expect));
  }

  // What gpt_train --init-from does with them: a fresh trainer's weights are the file's.
  strata::comm::solo solo;
  strata::context_config cc;
  cc.device_bytes = std::size_t{64} << 20;
  cc.pinned_bytes = std::size_t{32} << 20;
  cc.staging_slot_bytes = std::size_t{1} << 20;
  strata::context ctx(cc);
  const gpt::text_split data = corpus();  // the trainer's samplers point into it
  gpt::trainer<strata::comm::solo, strata::zero0> tr(ctx, solo, f.tc, data);
  for (std::size_t i = 0; i < w.size(); ++i) tr.executor().set_params(i, w[i]);
  const std::vector<std::vector<float>> back = tr.weights();
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(same_bits(back[i], f.weights[i]));
}

TEST_CASE("initial_weights_from: another config is refused naming the field", "[gpt][export][init]") {
  const trained_checkpoint& f = fixture();
  gpt::gpt_config other = f.tc.model;
  other.width = 32;
  std::string msg =
      message_of<strata::config_error>([&] { gpt::initial_weights_from(f.ref_f32, other); });
  INFO(msg);
  CHECK(contains(msg, f.ref_f32));
  CHECK(contains(msg, "the file's width is 64, the run's is 32"));
  other = f.tc.model;
  other.layers = 6;
  msg = message_of<strata::config_error>([&] { gpt::initial_weights_from(f.ref_f32, other); });
  CHECK(contains(msg, "the file's layers is 4, the run's is 6"));
  // A file that is not a model at all stays a format_error.
  temp_dir d("init_bad");
  std::ofstream(d / "junk.safetensors") << "not a safetensors file";
  msg = message_of<strata::format_error>(
      [&] { gpt::initial_weights_from(d / "junk.safetensors", f.tc.model); });
  CHECK(contains(msg, d / "junk.safetensors"));
}

#if defined(GPT_EXPORT_EXE)
TEST_CASE("gpt_export: arguments, exit codes, and the library's file", "[gpt][export]") {
  const trained_checkpoint& f = fixture();
  auto run = [](const std::string& args) { return gpt_test::run_program(GPT_EXPORT_EXE, args); };
  const std::string out = f.dir / "program.safetensors";

  gpt_test::run_result r = run("");
  CHECK(r.code == 2);
  CHECK(contains(r.output, "--checkpoint-dir is required"));
  r = run("--checkpoint-dir '" + f.root + "' --dtype f8");
  CHECK(r.code == 2);
  CHECK(contains(r.output, "--dtype expects f32 or bf16, got 'f8'"));
  r = run("--checkpoint-dir '" + f.root + "' --bogus 1");
  CHECK(r.code == 2);
  CHECK(contains(r.output, "unknown option '--bogus'"));
  r = run("--help");
  CHECK(r.code == 0);
  CHECK(contains(r.output, "usage: gpt_export"));

  r = run("--checkpoint-dir '" + f.root + "' --tag bare --out '" + out + "'");
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK(contains(r.output, "no 'model' object"));
  CHECK_FALSE(fs::exists(out));

  r = run("--checkpoint-dir '" + f.root + "' --out '" + out + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(contains(r.output, "tag step-2, step 2, saved by 2 rank(s)"));
  CHECK(contains(r.output, std::to_string(4 + 12 * f.tc.model.layers) + " tensors, " +
                               std::to_string(fs::file_size(out)) + " bytes, F32"));
  CHECK(file_bytes(out) == file_bytes(f.ref_f32));

  r = run("--checkpoint-dir=" + f.root + " --tag=step-2 --dtype=bf16 --out=" + out);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(contains(r.output, "BF16"));
  CHECK(file_bytes(out) == file_bytes(f.ref_bf16));
}
#endif
