// Tests for the planner applied to the mini-GPT (gpt_plan.hpp on strata/plan/):
// - The predicted memory is the trainer's own plan, line for line and byte for byte, for every
//   policy of gpt_train and every rank of 1-3 ranks (trainer::plan_for with comm::planned vs
//   the plan a real trainer checked on thread ranks).
// - The predicted NVMe traffic of a step is what the executor really moves: the bytes an
//   io::counting engine saw in a steady-state step, per rank, fp32 and bf16 working copies.
// - The model's structure: the ranking of the policies on a machine whose NVMe is slow puts
//   resident first and NVMe last; the layers and their element counts are the executor's.
// - strata-plan end to end: calibrate --quick writes a calibration that predict, search (with a
//   device budget that refuses the resident policy, named, and admits bf16 copies on NVMe) and
//   predict --generate read; cluster reproduces the GPT-3 checkpoint size; --json gives JSON;
//   a bad subcommand is exit 2.
// Timing is not tested here (a loaded machine must not turn a test red): the predicted and
// measured step times are compared by scripts/bench plan (the README's validation table).
#include "catch.hpp"

#include "gpt_plan.hpp"
#include "gpt_test_support.hpp"

#include <strata/comm/threads.hpp>
#include <strata/io/counting.hpp>
#include <strata/plan/calibration_json.hpp>

#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace {

gpt::text_split corpus() {
  std::string text;
  while (text.size() < 20000) text += "the quick brown fox jumps over the lazy dog. ";
  gpt::text_split s;
  s.source = "test corpus";
  s.train.assign(text.begin(), text.end() - 2000);
  s.val.assign(text.end() - 2000, text.end());
  return s;
}

gpt::train_config small(int accum = 1) {
  gpt::train_config tc;
  tc.model.layers = 3;
  tc.model.heads = 2;
  tc.model.width = 64;
  tc.model.context = 16;
  tc.batch = 2;
  tc.seq = 16;
  tc.accum = accum;
  tc.steps = 4;
  tc.warmup = 1;
  return tc;
}

std::string scratch_dir(const std::string& name) {
  const char* base = std::getenv("STRATA_TEST_TMPDIR");
  std::filesystem::path p = std::filesystem::path(base ? base : ".") / name;
  std::filesystem::create_directories(p);
  return p.string();
}

bool same_lines(const strata::memory_plan& a, const strata::memory_plan& b) {
  if (a.lines().size() != b.lines().size()) return false;
  for (std::size_t i = 0; i < a.lines().size(); ++i) {
    const auto &x = a.lines()[i], &y = b.lines()[i];
    if (x.tier != y.tier || x.what != y.what || x.bytes != y.bytes) return false;
  }
  return true;
}

const std::vector<gpt::train_policy> policies{gpt::train_policy::resident, gpt::train_policy::host,
                                              gpt::train_policy::nvme, gpt::train_policy::nvme_bf16};

template <class Bundle>
void real_plans(gpt::train_policy p, int ranks, const std::string& dir) {
  const auto data = corpus();
  const gpt::train_config tc = small();
  strata::comm::thread_world world(ranks);
  std::mutex mutex;
  world.run([&](strata::comm::threads& c) {
    const bool nvme = p == gpt::train_policy::nvme || p == gpt::train_policy::nvme_bf16;
    const auto cc = gpt::train_context_config(0, 64, nvme ? dir : std::string(), c.rank());
    strata::context ctx(cc);
    gpt::trainer<strata::comm::threads, Bundle> tr(ctx, c, tc, data);
    const strata::memory_plan real = tr.plan();
    // The planner's context: the same config, made afresh (as strata-plan does).
    strata::context planning(cc);
    const strata::memory_plan predicted = gpt::memory_plan_for(p, planning, tc, ranks, c.rank());
    std::lock_guard lock(mutex);
    INFO("policy " << gpt::policy_name(p) << ", rank " << c.rank() << " of " << ranks
                   << "\npredicted:\n" << predicted.to_string() << "real:\n" << real.to_string());
    CHECK(same_lines(predicted, real));
    for (auto t : {strata::tier_id::device, strata::tier_id::pinned, strata::tier_id::host,
                   strata::tier_id::nvme})
      CHECK(predicted.peak(t) == real.peak(t));
  });
}

}  // namespace

TEST_CASE("gpt plan: the predicted memory is the trainer's plan, byte for byte",
          "[gpt][plan]") {
  const std::string dir = scratch_dir("gpt-plan-memory");
  for (int ranks : {1, 2, 3}) {
    real_plans<strata::zero0>(gpt::train_policy::resident, ranks, dir);
    real_plans<strata::zero3_offload>(gpt::train_policy::host, ranks, dir);
    real_plans<strata::zero3_infinity>(gpt::train_policy::nvme, ranks, dir);
    real_plans<strata::zero3_infinity_bf16>(gpt::train_policy::nvme_bf16, ranks, dir);
  }
}

namespace {

// NVMe bytes each rank read and wrote from the end of step 1 (its update ended: nothing
// pending) through `more` further steps and the last one's update. A step's forward under
// the previous step's deferred update takes the new parameters from that update, not from
// NVMe; the first of these steps has no update before it and reads them. So the steady
// step's bytes are counted(.., 2) - counted(.., 1).
template <class Bundle>
std::vector<std::pair<std::uint64_t, std::uint64_t>> counted(int ranks, const gpt::train_config& tc,
                                                             const std::string& dir, int more) {
  const auto data = corpus();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out(static_cast<std::size_t>(ranks));
  strata::comm::thread_world world(ranks);
  world.run([&](strata::comm::threads& c) {
    auto cc = gpt::train_context_config(0, 64, dir, c.rank());
    strata::io::counting* counter = nullptr;
    cc.wrap_io_engine = [&](std::unique_ptr<strata::io::engine> e) {
      auto k = std::make_unique<strata::io::counting>(std::move(e));
      counter = k.get();
      return std::unique_ptr<strata::io::engine>(std::move(k));
    };
    strata::context ctx(cc);
    gpt::trainer<strata::comm::threads, Bundle> tr(ctx, c, tc, data);
    tr.train_step(0);
    tr.train_step(1);
    tr.executor().sync();  // step 1's deferred update: before the count
    const std::uint64_t r0 = counter->read_bytes(), w0 = counter->written_bytes();
    for (int s = 2; s < 2 + more; ++s) tr.train_step(s);
    tr.executor().sync();  // the last step's deferred update: the bytes the next step moves
    out[static_cast<std::size_t>(c.rank())] = {counter->read_bytes() - r0,
                                               counter->written_bytes() - w0};
  });
  return out;
}

template <class Bundle>
std::vector<std::pair<std::uint64_t, std::uint64_t>> steady_step(int ranks,
                                                                 const gpt::train_config& tc,
                                                                 const std::string& dir) {
  auto two = counted<Bundle>(ranks, tc, dir, 2);
  const auto one = counted<Bundle>(ranks, tc, dir, 1);
  for (std::size_t r = 0; r < two.size(); ++r) {
    REQUIRE(two[r].first >= one[r].first);
    two[r] = {two[r].first - one[r].first, two[r].second - one[r].second};
  }
  return two;
}

}  // namespace

TEST_CASE("gpt plan: a step's predicted NVMe traffic is what the executor moves", "[gpt][plan]") {
  strata::plan::calibration c;  // rates do not change bytes
  c.gemm_flops = 1e10, c.triad_bytes_s = 1e10, c.copy_bytes_s = 1e10;
  c.nvme_read_bytes_s = 1e9, c.nvme_write_bytes_s = 1e9, c.allgather_bytes_s = {{2, 1e9}};
  const std::string dir = scratch_dir("gpt-plan-bytes");
  for (int accum : {1, 2})
    for (int ranks : {1, 2}) {
      const gpt::train_config tc = small(accum);
      for (auto p : {gpt::train_policy::nvme, gpt::train_policy::nvme_bf16}) {
        INFO("policy " << gpt::policy_name(p) << ", " << ranks << " rank(s), accumulation " << accum);
        const auto layers = gpt::layer_costs(tc.model, tc.batch, tc.seq, c);
        strata::context planning(gpt::train_context_config(0, 64, dir, 0));  // its store's rules
        const auto predicted =
            strata::plan::predict_step(layers, gpt::schedule_for(p, tc, ranks, &planning), c);
        const auto real = p == gpt::train_policy::nvme
                              ? steady_step<strata::zero3_infinity>(ranks, tc, dir)
                              : steady_step<strata::zero3_infinity_bf16>(ranks, tc, dir);
        for (const auto& [read, written] : real) {
          CHECK(read == predicted.nvme_read_bytes);
          CHECK(written == predicted.nvme_write_bytes);
        }
      }
    }
}

TEST_CASE("gpt plan: the layers are the executor's, and a slow disk ranks NVMe last",
          "[gpt][plan]") {
  const gpt::train_config tc = small();
  strata::plan::calibration c;
  c.gemm_flops = 1e10, c.triad_bytes_s = 1e10, c.copy_bytes_s = 1e10;
  c.nvme_read_bytes_s = 1e7, c.nvme_write_bytes_s = 2e7;  // 10 and 20 MB/s
  const auto layers = gpt::layer_costs(tc.model, tc.batch, tc.seq, c);
  REQUIRE(layers.size() == std::size_t(tc.model.layers) + 1);
  CHECK(layers[0].numel == gpt::embed_numel(tc.model));
  CHECK(layers[1].numel == gpt::block_numel(tc.model));
  std::vector<double> t;
  for (auto p : policies) t.push_back(strata::plan::predict_step(layers, gpt::schedule_for(p, tc, 1), c).seconds);
  CHECK(t[0] <= t[1]);     // resident before host (host copies its shards in and out)
  CHECK(t[1] < t[3]);      // host before NVMe
  // bf16 copies halve the fetched bytes (the backward's: the forward takes the update's) for
  // 2 bytes more written per parameter; reads are the slower here, as on most disks.
  CHECK(t[3] < t[2]);
  const auto nvme = strata::plan::predict_step(layers, gpt::schedule_for(gpt::train_policy::nvme, tc, 1), c);
  CHECK_THAT(nvme.bound, Catch::Contains("IO-bound"));
}

TEST_CASE("gpt plan: strata-plan calibrates, predicts, searches and sizes a cluster",
          "[gpt][plan]") {
  const std::string dir = scratch_dir("gpt-plan-tool");
  const std::string cal = dir + "/calibration.json";
  const auto run = [](const std::string& args) { return gpt_test::run_program(STRATA_PLAN_EXE, args); };
  const auto c = run("calibrate --quick --nvme-dir '" + dir + "' --out '" + cal + "'");
  INFO(c.output);
  REQUIRE(c.code == 0);
  CHECK(gpt_test::contains(c.output, "calibrate: nvme: read"));
  CHECK(strata::plan::load_calibration(cal).kernel("gpt.matmul.4bit.flops_per_s") > 0);

  const std::string model = " --calibration '" + cal + "' --layers 2 --width 64 --heads 2 --seq 16 ";
  const auto p = run("predict" + model + "--policy nvme --nvme-dir '" + dir + "'");
  INFO(p.output);
  CHECK(p.code == 0);
  CHECK(gpt_test::contains(p.output, "memory plan of rank 0"));
  CHECK(gpt_test::contains(p.output, "predicted"));
  const auto j = run("predict" + model + "--policy host --json");
  CHECK(j.code == 0);
  const auto parsed = nlohmann::json::parse(j.output, nullptr, false);
  REQUIRE_FALSE(parsed.is_discarded());
  CHECK(parsed.at("step_s").get<double>() > 0);
  const auto s = run("search" + model + "--device-mib 2 --batches 1,16 --nvme-dir '" + dir + "'");
  INFO(s.output);
  CHECK(s.code == 0);
  CHECK(gpt_test::contains(s.output, "device (emulated) over budget by"));
  CHECK(gpt_test::contains(s.output, "best: "));
  const auto g = run("predict --generate" + model + "--quant 4bit --kv-tier host");
  CHECK(g.code == 0);
  CHECK(gpt_test::contains(g.output, "decode step"));
  const auto k = run("cluster --preset gpt3-175b --rows 2");
  CHECK(k.code == 0);
  CHECK(gpt_test::contains(k.output, "2.44 TB"));
  CHECK(run("plan-everything").code == 2);
}
