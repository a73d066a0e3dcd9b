// Tests for the mini-GPT's training through strata (examples/gpt/trainer.hpp).
//
// - ZeRO-3 over 4 thread ranks with the shards and Adam state on NVMe gives, step for step,
//   bitwise the losses and weights of 1 rank with everything resident on the device and 4
//   accumulation steps: the same global batch (data.hpp's sample order), the same sums
//   (rank-order reductions == accumulation order; the mean's division by 4 == the step's
//   multiplication by 1/4, a power of two), and the same elementwise AdamW.
// - With clipping on, the same within a tight tolerance: the global norm is summed per shard
//   and then over ranks, a different order of the same terms, so it can differ in its last
//   bits, and so can the clip coefficient.
// - Host offload (zero3_offload) over 2 ranks == the same bitwise.
// - The optimizer step overlapped with the next forward (the default) == the step at once,
//   bitwise (ZeRO-3 on NVMe, 2 ranks, clipped, 2 accumulation steps).
// - Every block's activations kept for the backward (train_config::recompute off) == the
//   backward recomputing them, bitwise (resident; ZeRO-3 on NVMe over 2 ranks, clipped, 2
//   accumulation steps, bf16 too); the kept sets are a planned line.
// - bf16 working parameters (zero3_infinity_bf16): 2 ranks == 1 rank with 2 accumulation
//   steps, bitwise; within 0.01 nats of the fp32 run's losses over 5 steps.
// - Training lowers the loss on a small real corpus: below a stated value within a bounded
//   number of steps (GPL-3's text, always present on Debian).
// - The trainer's memory plan is one table (executor, activations, Adam), honest (a step's
//   device peak stays within it) and refused once, whole, before anything is allocated.
#include "catch.hpp"
#include "gpt_test_support.hpp"

#include "trainer.hpp"

#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

// Text for the tests: the first part of a licence Debian always has, else a fixed string.
gpt::text_split small_corpus(std::size_t bytes) {
  std::string text;
  const char* gpl = "/usr/share/common-licenses/GPL-3";
  if (std::filesystem::exists(gpl)) {
    const gpt::corpus c = gpt::load_corpus(gpl);
    text.assign(c.bytes.begin(), c.bytes.begin() + std::min(bytes, c.bytes.size()));
  }
  while (text.size() < bytes) text += "the quick brown fox jumps over the lazy dog. ";
  gpt::text_split s;
  s.source = "test corpus";
  const std::size_t n_val = text.size() / 10;
  s.train.assign(text.begin(), text.end() - static_cast<std::ptrdiff_t>(n_val));
  s.val.assign(text.end() - static_cast<std::ptrdiff_t>(n_val), text.end());
  return s;
}

gpt::train_config tiny(int accum, float clip) {
  gpt::train_config tc;
  tc.model.layers = 2;
  tc.model.heads = 2;
  tc.model.width = 32;
  tc.model.context = 16;
  tc.batch = 2;
  tc.seq = 16;
  tc.accum = accum;
  tc.steps = 5;
  tc.warmup = 2;
  tc.clip = clip;
  return tc;
}

struct run_result {
  std::vector<double> losses;
  std::vector<std::vector<float>> weights;
};

std::string scratch_dir(const std::string& name) {
  const char* base = std::getenv("STRATA_TEST_TMPDIR");
  std::filesystem::path p = std::filesystem::path(base ? base : ".") / name;
  std::filesystem::create_directories(p);
  return p.string();
}

template <class Bundle, class Comm>
run_result train_on(Comm& comm, const gpt::train_config& tc, const gpt::text_split& data,
                    const std::string& nvme_dir = {}) {
  strata::context_config cc;
  cc.device_bytes = std::size_t{64} << 20;
  cc.pinned_bytes = std::size_t{32} << 20;
  cc.staging_slot_bytes = std::size_t{1} << 20;  // a multiple of the NVMe checksum block
  cc.staging_slots = 4;
  cc.rank = comm.rank();
  cc.nvme_directory = nvme_dir;
  strata::context ctx(cc);
  gpt::trainer<Comm, Bundle> tr(ctx, comm, tc, data);
  run_result r;
  for (int s = 0; s < tc.steps; ++s) r.losses.push_back(tr.train_step(s).loss);
  r.weights = tr.weights();
  return r;
}

run_result resident_one_rank(const gpt::train_config& tc, const gpt::text_split& data) {
  strata::comm::solo solo;
  return train_on<strata::zero0>(solo, tc, data);
}

template <class Bundle>
std::vector<run_result> on_thread_ranks(int ranks, const gpt::train_config& tc,
                                        const gpt::text_split& data, const std::string& nvme) {
  std::vector<run_result> out(static_cast<std::size_t>(ranks));
  strata::comm::thread_world world(ranks);
  world.run([&](strata::comm::threads& c) {
    out[static_cast<std::size_t>(c.rank())] = train_on<Bundle>(c, tc, data, nvme);
  });
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using gpt_test::contains;

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(double(a[i]) - b[i]) / std::max(1e-3, std::abs(double(b[i]))));
  return m;
}

// Every rank's losses and weights of two runs, bitwise.
void same_runs(const std::vector<run_result>& a, const std::vector<run_result>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t r = 0; r < a.size(); ++r) {
    INFO("rank " << r);
    CHECK(a[r].losses == b[r].losses);
    REQUIRE(a[r].weights.size() == b[r].weights.size());
    for (std::size_t l = 0; l < a[r].weights.size(); ++l)
      CHECK(same_bits(a[r].weights[l], b[r].weights[l]));
  }
}

}  // namespace

TEST_CASE("gpt zero: 4 ranks ZeRO-3 on NVMe == 1 rank resident with 4 accumulation steps",
          "[gpt][zero]") {
  const auto data = small_corpus(20000);
  const run_result ref = resident_one_rank(tiny(4, 0.0f), data);
  const auto ranks = on_thread_ranks<strata::zero3_infinity>(4, tiny(1, 0.0f), data,
                                                              scratch_dir("gpt-zero-nvme"));
  for (const auto& r : ranks) {
    REQUIRE(r.losses.size() == ref.losses.size());
    for (std::size_t s = 0; s < r.losses.size(); ++s) {
      INFO("step " << s);
      CHECK(r.losses[s] == ref.losses[s]);
    }
    REQUIRE(r.weights.size() == ref.weights.size());
    for (std::size_t l = 0; l < r.weights.size(); ++l) {
      INFO("layer " << l);
      CHECK(same_bits(r.weights[l], ref.weights[l]));
    }
  }
  // The model learned something in 5 steps: the weights moved from their initial values.
  CHECK_FALSE(same_bits(ref.weights[1], gpt::initial_layer(tiny(1, 0).model, 1, 1337)));
}

TEST_CASE("gpt zero: 2 ranks host offload == 1 rank resident, bitwise", "[gpt][zero]") {
  const auto data = small_corpus(20000);
  const run_result ref = resident_one_rank(tiny(2, 0.0f), data);
  const auto ranks = on_thread_ranks<strata::zero3_offload>(2, tiny(1, 0.0f), data, {});
  for (const auto& r : ranks) {
    CHECK(r.losses == ref.losses);
    for (std::size_t l = 0; l < r.weights.size(); ++l) CHECK(same_bits(r.weights[l], ref.weights[l]));
  }
}

TEST_CASE("gpt zero: the step overlapped with the next forward == the step at once, bitwise",
          "[gpt][zero]") {
  // ZeRO-3 on NVMe over 2 ranks, clipped, 2 accumulation steps: the deferred update (the
  // default) against train_config::overlap_step off.
  const auto data = small_corpus(20000);
  gpt::train_config at_once = tiny(2, 0.05f);
  at_once.overlap_step = false;
  gpt::train_config overlapped = tiny(2, 0.05f);
  REQUIRE(overlapped.overlap_step);
  const auto a = on_thread_ranks<strata::zero3_infinity>(2, at_once, data,
                                                          scratch_dir("gpt-zero-at-once"));
  const auto b = on_thread_ranks<strata::zero3_infinity>(2, overlapped, data,
                                                          scratch_dir("gpt-zero-overlapped"));
  same_runs(a, b);
}

TEST_CASE("gpt zero: activations kept for the backward == recomputed, bitwise", "[gpt][zero]") {
  const auto data = small_corpus(20000);
  gpt::train_config kept = tiny(2, 0.05f);
  kept.recompute = false;
  REQUIRE(tiny(2, 0.05f).recompute);
  SECTION("resident, one rank") {
    same_runs({resident_one_rank(tiny(2, 0.05f), data)}, {resident_one_rank(kept, data)});
  }
  SECTION("ZeRO-3 on NVMe, 2 ranks, the step deferred") {
    same_runs(on_thread_ranks<strata::zero3_infinity>(2, tiny(2, 0.05f), data,
                                                      scratch_dir("gpt-recompute")),
              on_thread_ranks<strata::zero3_infinity>(2, kept, data, scratch_dir("gpt-kept")));
  }
  SECTION("bf16 working parameters, 2 ranks") {
    same_runs(on_thread_ranks<strata::zero3_infinity_bf16>(2, tiny(2, 0.05f), data,
                                                           scratch_dir("gpt-recompute-bf16")),
              on_thread_ranks<strata::zero3_infinity_bf16>(2, kept, data,
                                                           scratch_dir("gpt-kept-bf16")));
  }
  SECTION("the kept sets are planned: the activation line grows by one set per block") {
    strata::context ctx;
    strata::comm::solo solo;
    using tr = gpt::trainer<strata::comm::solo, strata::zero3_offload>;
    auto activations = [&](const gpt::train_config& tc) {
      const strata::memory_plan plan = tr::plan_for(ctx, solo, tc);
      for (const auto& l : plan.lines())
        if (l.what.find("gpt activations") != std::string::npos) return l.bytes;
      return std::size_t{0};
    };
    const std::size_t per_block = gpt::block_activations<float>::floats(kept.model, kept.batch,
                                                                        kept.seq) * sizeof(float);
    CHECK(activations(kept) == activations(tiny(2, 0.05f)) + kept.model.layers * per_block);
  }
}

TEST_CASE("gpt zero: bf16 working parameters: 2 ranks == 1 rank bitwise, and near fp32",
          "[gpt][zero][bf16]") {
  // zero3_infinity_bf16: the walks gather bf16 copies of the shards, the kernels compute in
  // fp32 from them, the masters, gradients, m and v stay fp32. Sharding changes no bit (1 rank
  // with 2 accumulation steps == 2 ranks); against fp32 parameters the losses move by the
  // weights' rounding (2^-9 relative): within 0.01 nats over these 5 steps.
  const auto data = small_corpus(20000);
  const auto ranks = on_thread_ranks<strata::zero3_infinity_bf16>(2, tiny(1, 0.0f), data,
                                                                   scratch_dir("gpt-bf16-2"));
  strata::comm::solo solo;
  const run_result one = train_on<strata::zero3_infinity_bf16>(solo, tiny(2, 0.0f), data,
                                                               scratch_dir("gpt-bf16-1"));
  const run_result fp32 = resident_one_rank(tiny(2, 0.0f), data);
  for (const auto& r : ranks) {
    CHECK(r.losses == one.losses);
    for (std::size_t l = 0; l < r.weights.size(); ++l) CHECK(same_bits(r.weights[l], one.weights[l]));
  }
  bool moved = false;
  for (std::size_t s = 0; s < one.losses.size(); ++s) {
    INFO("step " << s << ": bf16 " << one.losses[s] << ", fp32 " << fp32.losses[s]);
    CHECK(std::abs(one.losses[s] - fp32.losses[s]) < 0.01);
    moved = moved || one.losses[s] != fp32.losses[s];
  }
  CHECK(moved);  // the copy is bf16 indeed: the losses are not the fp32 ones
}

TEST_CASE("gpt zero: with clipping, 4 ranks == 1 rank within a tight tolerance", "[gpt][zero]") {
  // clip 0.05 is far below the gradient norm, so every step is clipped.
  const auto data = small_corpus(20000);
  const run_result ref = resident_one_rank(tiny(4, 0.05f), data);
  const auto ranks = on_thread_ranks<strata::zero3_offload>(4, tiny(1, 0.05f), data, {});
  for (const auto& r : ranks) {
    for (std::size_t s = 0; s < r.losses.size(); ++s) CHECK(r.losses[s] == Approx(ref.losses[s]).epsilon(1e-5));
    // The clip coefficients may differ in their last bit (see the top): 1e-4 relative over 5
    // AdamW steps of lr ~1e-3 leaves a wide margin against any real difference (a wrong
    // coefficient or a missed shard moves weights by ~1e-3 relative).
    for (std::size_t l = 0; l < r.weights.size(); ++l)
      CHECK(max_rel_diff(r.weights[l], ref.weights[l]) < 1e-4);
  }
}

TEST_CASE("gpt zero: the loss falls on a real text", "[gpt][zero]") {
  // A 2-layer, width-64 model on GPL-3's text: at init the loss is ln(256) = 5.55; in 120
  // steps of 8 x 32 bytes (30k tokens) it learns the byte statistics (a unigram model of
  // English text is about 3.3 nats/byte here) and starts on common pairs: measured 3.03
  // (train) and 2.99 (validation). A model that does not learn stays near 5.5; one that only
  // learned byte frequencies stays near 3.3.
  const auto data = small_corpus(30000);
  gpt::train_config tc;
  tc.model.layers = 2;
  tc.model.heads = 4;
  tc.model.width = 64;
  tc.model.context = 32;
  tc.batch = 8;
  tc.seq = 32;
  tc.steps = 120;
  tc.warmup = 10;
  tc.lr = 1e-2;
  tc.min_lr = 1e-3;
  strata::comm::solo solo;
  strata::context_config cc;
  strata::context ctx(cc);
  gpt::trainer<strata::comm::solo, strata::zero0> tr(ctx, solo, tc, data);
  const double initial = tr.validation_loss(4);
  CHECK(initial == Approx(std::log(256.0)).margin(0.15));
  double last = 0;
  for (int s = 0; s < tc.steps; ++s) last = tr.train_step(s).loss;
  const double val = tr.validation_loss(4);
  INFO("train loss " << last << ", validation loss " << val);
  CHECK(last < 3.2);
  CHECK(val < 3.2);
}

TEST_CASE("gpt zero: one memory plan, every line in it, refused once before anything is allocated",
          "[gpt][zero]") {
  // The executor's buffers, the trainer's activations and Adam's m and v are one plan, checked
  // when the executor is made. Before, the activations were allocated first (a too-small device
  // refused them with a bare out_of_budget and no table), and Adam's lines came in a second
  // check after the executor's own.
  const auto data = small_corpus(4000);
  const gpt::train_config tc = tiny(1, 1.0f);
  strata::comm::solo solo;
  auto context_with = [](std::size_t device_bytes) {
    strata::context_config cc;
    cc.device_bytes = device_bytes;
    cc.staging_slot_bytes = std::size_t{1} << 20;
    cc.staging_slots = 2;
    return cc;
  };
  using resident = gpt::trainer<strata::comm::solo, strata::zero0>;

  // What the plan says the device needs, and that it is honest: a step never holds more.
  std::size_t planned = 0;
  std::string table;
  {
    strata::context ctx(context_with(std::size_t{64} << 20));
    resident tr(ctx, solo, tc, data);
    planned = tr.plan().peak(strata::tier_id::device);
    table = tr.plan().to_string();
    tr.train_step(0);
    CHECK(ctx.budget(strata::tier_id::device).peak() <= planned);
  }
  INFO(table);
  CHECK(contains(table, "gpt activations (x[0..L], dx, head)"));
  CHECK(contains(table, "adam: Adam m and v (this rank's part, all layers)"));
  CHECK(contains(table, "2 full-gradient buffers"));

  auto refusal = [&](std::size_t device_bytes) {
    strata::context ctx(context_with(device_bytes));
    try {
      resident tr(ctx, solo, tc, data);
    } catch (const strata::out_of_budget& e) {
      CHECK(ctx.budget(strata::tier_id::device).used() == 0);  // nothing allocated yet
      return std::string(e.what());
    }
    return std::string("<no refusal>");
  };
  for (const std::size_t budget : {std::size_t{1} << 10, planned - 1}) {
    const std::string msg = refusal(budget);
    INFO("budget " << budget << ": " << msg);
    CHECK(msg.find("memory plan of 'gpt' refused before the first step: tier 'device") == 0);
    CHECK(contains(msg, "gpt activations (x[0..L], dx, head)"));
    CHECK(contains(msg, "adam: Adam m and v (this rank's part, all layers)"));
    CHECK(contains(msg, "2 full-gradient buffers"));
    CHECK(contains(msg, "(" + std::to_string(planned) + " bytes)"));
  }
  strata::context exact(context_with(planned));
  CHECK_NOTHROW(resident(exact, solo, tc, data));
}
