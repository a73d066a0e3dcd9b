// strata-plan — the planner on the command line: calibrate this machine, predict a training
// run's memory, step time and checkpoint cost, search the policies that fit a budget, and size
// a cluster for a model and a token count.
//
//   strata-plan calibrate --nvme-dir /mnt/nvme/strata --out calibration.json
//   strata-plan predict --calibration calibration.json --layers 8 --width 512 --heads 8 \
//                       --batch 8 --seq 64 --policy nvme
//   strata-plan search --calibration calibration.json --layers 24 --width 2048 --heads 16 \
//                      --device-mib 8192 --host-mib 16384 --nvme-gib 200
//   strata-plan cluster --preset gpt3-175b           (or --layers/--hidden/... and a cluster)
//
// Every subcommand prints tables by default and one JSON object with --json. Memory is never
// estimated: predict and search ask the trainer for its own plan (gpt_plan.hpp's
// memory_plan_for, the bytes gpt_train checks). Time is strata/plan/train_time.hpp's model of
// the executor's queues on the calibration's rates; cluster sizing is strata/plan/cluster.hpp.
// What it is not: a run (gpt_train prints its predicted step time beside the measured one when
// given --calibration).
#include "gpt_plan.hpp"

#include "example_support.hpp"

#include <strata/plan/calibration_json.hpp>
#include <strata/plan/checkpoint_cost.hpp>
#include <strata/plan/cluster.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using strata::plan::calibration;
using json = nlohmann::json;

const char* usage = R"(strata-plan — calibrate, predict, search, size a cluster

  strata-plan calibrate [--nvme-dir DIR] [--out FILE] [--quick] [--threads N]
      Measures GEMM FLOP/s over the GPT's shapes, triad and memcpy bandwidth, NVMe read and
      write through strata's store (in DIR; skipped without it), comm::threads all-gather, and
      on a GPU H2D/D2H; writes FILE (default calibration.json). --quick: tiny sizes (CI).

  strata-plan predict [model] [run] [--calibration FILE] [--json]
      The memory plan of rank 0 (exact: the trainer's own), a steady-state step's time, the
      bounds, tokens/s, and a checkpoint's size, persist time and stall.
  strata-plan predict --generate [model] [--weights-home resident|pinned|host|nvme (nvme)]
                      [--quant none|bf16|f16|4bit] [--batch B] [--block K] [--depth D]
                      [--kv-tier device|pinned|host|nvme] [--position P] [--json]
      A streamed decode step (one token for each of B x K rows at an average cached length
      P, default context / 2): its time, bounds and NVMe bytes (gpt_generate prints the plan).

  strata-plan search [model] [run] --device-mib N --pinned-mib N --host-mib N --nvme-gib N
                     [--batches 1,4,8] [--ranks 1,2] [--calibration FILE] [--json]
      Every policy x batch x ranks: the ones that fit the budgets ranked by tokens/s, then the
      ones that do not, each with why.

  strata-plan cluster (--preset opengptx-13b|gpt3-175b|zero-infinity-1t | [cluster model])
                      [--json] [--rows N]
      FLOPs per iteration (Megatron), memory per GPU per ZeRO stage and offload, the
      DP x PP x TP choices that fit, time per iteration and days to train.

  model: --layers L (4) --width C (128) --heads NH (4) --context T (128) --vocab V (256)
  run:   --policy resident|host|nvme|nvme-bf16 (host) --batch B (8) --seq T (64) --accum A (1)
         --ranks R (1, thread ranks of one process) --no-overlap --nvme-dir DIR (nvme)
         --device-mib N --pinned-mib N (64) --no-recompute (the trainer keeps every block's
         activations; for cluster: Megatron's count without recomputation)
  cluster: --nodes N --gpus-per-node G --hbm-gib X --host-ram-gib X --nvme-tb X --nvme-gbs X
           --intra-gbs X --inter-gbs X --gpu-tflops X --efficiency F  --hidden H --seq S
           --tokens X --global-batch B --micro-batch b --no-recompute
)";

struct options {
  std::string command;
  std::string calibration = "calibration.json", out = "calibration.json", nvme_dir;
  bool quick = false, json_out = false;
  int threads = 0;
  gpt::train_config tc;
  gpt::train_policy policy = gpt::train_policy::host;
  int ranks = 1;
  double device_mib = 0, pinned_mib = 64, host_mib = 0, nvme_gib = 0;
  std::vector<int> batches{1, 4, 8, 16}, rank_list{1};
  // cluster
  std::string preset;
  strata::plan::training_target target;
  strata::plan::cluster_spec cluster;
  std::size_t rows = 12;
  // predict --generate
  bool generate = false;
  gpt::weight_home weights_home = gpt::weight_home::nvme;
  gpt::weight_format quant = gpt::weight_format::f32;
  gpt::kv_home kv = gpt::kv_home::device;
  int block = 1, depth = 1;
  double position = -1;
};

std::vector<int> int_list(const std::string& name, const std::string& v) {
  std::vector<int> out;
  std::size_t at = 0;
  while (at <= v.size()) {
    const std::size_t comma = std::min(v.find(',', at), v.size());
    out.push_back(example::parse_integer<int>(name, v.substr(at, comma - at), 1, 1 << 20));
    at = comma + 1;
  }
  return out;
}

bool parse(int argc, char** argv, options& o) {
  if (argc < 2) throw example::bad_argument("a subcommand: calibrate, predict, search or cluster");
  o.command = argv[1];
  if (o.command == "--help" || o.command == "-h") return false;
  if (o.command != "calibrate" && o.command != "predict" && o.command != "search" &&
      o.command != "cluster")
    throw example::bad_argument("unknown subcommand '" + o.command +
                                "' (calibrate, predict, search or cluster)");
  o.tc.model = {256, 128, 4, 4, 128};
  o.tc.plan_checkpoints = false;
  auto& t = o.target;
  t.model = {};
  example::option_reader r(argc - 1, argv + 1);
  auto word = [&](auto parse_word) {
    try {
      return parse_word(r.value());
    } catch (const std::invalid_argument& e) {
      throw example::bad_argument(r.name() + ": " + e.what());
    }
  };
  while (r.next()) {
    if (r.flag("--help")) return false;
    else if (r.flag("--json")) o.json_out = true;
    else if (r.flag("--quick")) o.quick = true;
    else if (r.flag("--no-overlap")) o.tc.overlap_step = false;
    else if (r.flag("--no-recompute")) t.recompute = o.tc.recompute = false;
    else if (r.flag("--generate")) o.generate = true;
    else if (r.is("--weights-home")) o.weights_home = word(gpt::parse_weight_home);
    else if (r.is("--quant")) o.quant = word(gpt::parse_weight_format);
    else if (r.is("--kv-tier")) o.kv = word(gpt::parse_kv_home);
    else if (r.is("--block")) o.block = r.integer(1, 1 << 16);
    else if (r.is("--depth")) o.depth = r.integer(0, 3);
    else if (r.is("--position")) o.position = r.number(0, 1e9);
    else if (r.is("--calibration")) o.calibration = r.path();
    else if (r.is("--out")) o.out = r.path();
    else if (r.is("--nvme-dir")) o.nvme_dir = r.path();
    else if (r.is("--threads")) o.threads = r.integer(1, 1024);
    else if (r.is("--layers")) o.tc.model.layers = t.model.layers = r.integer(1, 1 << 16);
    else if (r.is("--width")) o.tc.model.width = r.integer(1, 1 << 16);
    else if (r.is("--hidden")) t.model.hidden = r.integer(1, 1 << 20);
    else if (r.is("--heads")) o.tc.model.heads = t.model.heads = r.integer(1, 1 << 12);
    else if (r.is("--context")) o.tc.model.context = r.integer(1, 1 << 20);
    else if (r.is("--vocab")) o.tc.model.vocab = t.model.vocab = r.integer(1, 1 << 24);
    else if (r.is("--policy")) o.policy = gpt::parse_policy(r.value());
    else if (r.is("--batch")) o.tc.batch = r.integer(1, 1 << 16);
    else if (r.is("--seq")) o.tc.seq = t.model.seq = r.integer(1, 1 << 20);
    else if (r.is("--accum")) o.tc.accum = r.integer(1, 1 << 16);
    else if (r.is("--ranks")) o.ranks = r.integer(1, 1024);
    else if (r.is("--device-mib")) o.device_mib = r.number(1, 1e9, "MiB");
    else if (r.is("--pinned-mib")) o.pinned_mib = r.number(0, 1e9, "MiB");
    else if (r.is("--host-mib")) o.host_mib = r.number(1, 1e12, "MiB");
    else if (r.is("--nvme-gib")) o.nvme_gib = r.number(0, 1e9, "GiB");
    else if (r.is("--batches")) o.batches = int_list("--batches", r.value());
    else if (r.is("--ranks-list")) o.rank_list = int_list("--ranks-list", r.value());
    else if (r.is("--preset")) o.preset = r.value();
    else if (r.is("--rows")) o.rows = r.integer<std::size_t>(1, 100000);
    else if (r.is("--nodes")) o.cluster.nodes = r.integer(1, 1 << 20);
    else if (r.is("--gpus-per-node")) o.cluster.gpus_per_node = r.integer(1, 1024);
    else if (r.is("--hbm-gib")) o.cluster.hbm_bytes = r.number(0, 1e6) * (1 << 30);
    else if (r.is("--host-ram-gib")) o.cluster.host_ram_bytes = r.number(0, 1e9) * (1 << 30);
    else if (r.is("--nvme-tb")) o.cluster.nvme_bytes = r.number(0, 1e6) * 1e12;
    else if (r.is("--nvme-gbs")) o.cluster.nvme_bytes_s = r.number(0, 1e6) * 1e9;
    else if (r.is("--intra-gbs")) o.cluster.intra_node_bytes_s = r.number(0, 1e6) * 1e9;
    else if (r.is("--inter-gbs")) o.cluster.inter_node_bytes_s = r.number(0, 1e6) * 1e9;
    else if (r.is("--gpu-tflops")) o.cluster.gpu_flops = r.number(0, 1e9) * 1e12;
    else if (r.is("--efficiency")) o.cluster.efficiency = r.number(1e-3, 1);
    else if (r.is("--tokens")) t.tokens = r.number(1, 1e18);
    else if (r.is("--global-batch")) t.global_batch = r.number(1, 1e9);
    else if (r.is("--micro-batch")) t.micro_batch = r.integer(1, 1 << 20);
    else r.unknown();
  }
  if (!o.generate && o.tc.seq > o.tc.model.context) o.tc.model.context = o.tc.seq;
  return true;
}

double gib(double b) { return b / double(1 << 30); }
// GiB for sizes of a GiB or more, MiB below: a budget message that reads at any scale.
std::string size_text(double b) {
  char t[32];
  if (b >= double(1 << 30)) std::snprintf(t, sizeof t, "%.2f GiB", gib(b));
  else std::snprintf(t, sizeof t, "%.2f MiB", b / double(1 << 20));
  return t;
}

// ---- calibrate ---------------------------------------------------------------------------

int calibrate(const options& o) {
  const auto c = gpt::calibrate_machine(o.nvme_dir, o.quick, o.threads);
  strata::plan::save_calibration(c, o.out);
  std::printf("calibration of %s written to %s\n", c.machine.c_str(), o.out.c_str());
  return 0;
}

calibration load(const options& o) {
  calibration c = strata::plan::load_calibration(o.calibration);
  if (strata::plan::is_stale(c, c.nvme_dir))
    std::fprintf(stderr, "strata-plan: %s was measured on other hardware (%s); run "
                         "strata-plan calibrate again\n", o.calibration.c_str(), c.machine.c_str());
  return c;
}

// ---- predict -----------------------------------------------------------------------------

// One configuration: its plan (rank 0), its step, its checkpoint.
struct evaluated {
  gpt::train_policy policy;
  int batch = 0, ranks = 1;
  strata::memory_plan plan;
  strata::plan::step_prediction step;
  strata::plan::checkpoint_prediction checkpoint;
  double tokens_per_s = 0;
  std::string why;  // empty: fits
};

bool uses_nvme(gpt::train_policy p) {
  return p == gpt::train_policy::nvme || p == gpt::train_policy::nvme_bf16;
}

evaluated evaluate(const options& o, const calibration& c, gpt::train_policy p,
                   const gpt::train_config& tc, int ranks) {
  evaluated e{p, tc.batch, ranks, {}, {}, {}, 0, {}};
  // The planning context: gpt_train's, with the budgets given (unlimited where not).
  auto cc = gpt::train_context_config(o.device_mib, o.pinned_mib,
                                      uses_nvme(p) ? (o.nvme_dir.empty() ? std::string(".") : o.nvme_dir)
                                                   : std::string(), 0);
  strata::context ctx(cc);
  e.plan = gpt::memory_plan_for(p, ctx, tc, ranks);
  const auto layers = gpt::layer_costs(tc.model, tc.batch, tc.seq, c, ranks, tc.recompute);
  e.step = strata::plan::predict_step(layers, gpt::schedule_for(p, tc, ranks, &ctx), c);
  e.tokens_per_s = double(ranks) * tc.batch * tc.seq * tc.accum / e.step.seconds;
  double owned = 0;
  for (const auto& l : layers) owned += p == gpt::train_policy::resident ? double(l.numel)
                                                                          : std::ceil(double(l.numel) / ranks);
  const auto home = gpt::schedule_for(p, tc, ranks).home;
  e.checkpoint = strata::plan::predict_checkpoint(owned, ranks, home, e.step.compute_bound_s, c);
  return e;
}

json step_json(const evaluated& e) {
  json lanes = json::object();
  for (std::size_t l = 0; l < strata::plan::lane_count; ++l)
    lanes[strata::plan::lane_name(static_cast<strata::plan::lane>(l))] = e.step.busy[l];
  json plan = json::array();
  for (const auto& l : e.plan.lines())
    plan.push_back({{"tier", strata::tier_name(l.tier)}, {"what", l.what}, {"bytes", l.bytes}});
  return {{"policy", gpt::policy_name(e.policy)}, {"batch", e.batch}, {"ranks", e.ranks},
          {"step_s", e.step.seconds}, {"tokens_per_s", e.tokens_per_s},
          {"compute_bound_s", e.step.compute_bound_s}, {"io_bound_s", e.step.io_bound_s},
          {"nvme_read_bytes", e.step.nvme_read_bytes}, {"nvme_write_bytes", e.step.nvme_write_bytes},
          {"bound", e.step.bound}, {"lanes_busy_s", lanes}, {"memory_plan", plan},
          {"checkpoint", {{"bytes_per_rank", e.checkpoint.bytes_per_rank},
                          {"bytes_total", e.checkpoint.bytes_total},
                          {"snapshot_s", e.checkpoint.snapshot_s},
                          {"persist_s", e.checkpoint.persist_s},
                          {"stall_s", e.checkpoint.stall_s}}},
          {"fits", e.why.empty()}, {"why", e.why}};
}

// A streamed decode step of the GPT (predict --generate).
int predict_generate(const options& o, const calibration& c) {
  const auto& m = o.tc.model;
  // No store here: the NVMe bytes unpadded (gpt_generate --calibration pads them as its store does).
  const auto s = gpt::infer_schedule_for(o.weights_home, o.kv, o.depth);
  const double position = o.position >= 0 ? o.position : m.context / 2.0;
  const auto p = strata::plan::predict_pass(
      gpt::infer_costs(m, o.quant, o.tc.batch, o.block, position, c), s, c);
  const int rows = o.tc.batch * o.block;
  if (o.json_out) {
    const json j = {{"step_s", p.seconds}, {"tokens_per_s", rows / p.seconds},
                    {"compute_bound_s", p.compute_bound_s}, {"io_bound_s", p.io_bound_s},
                    {"nvme_read_bytes", p.nvme_read_bytes}, {"nvme_write_bytes", p.nvme_write_bytes},
                    {"bound", p.bound}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("decode step of %d layers x width %d, blocks %s in %s, KV cache on %s, %d row(s) "
              "= %d x %d, cached length %.0f: %.2f ms predicted (%.0f tokens/s), %s; compute "
              "bound %.2f ms, IO bound %.2f ms (NVMe %.2f MB read, %.2f MB written)\n",
              m.layers, m.width, gpt::format_name(o.quant), gpt::home_name(o.weights_home),
              gpt::home_name(o.kv), rows, o.block, o.tc.batch, position, p.seconds * 1e3,
              rows / p.seconds, p.bound.c_str(), p.compute_bound_s * 1e3, p.io_bound_s * 1e3,
              double(p.nvme_read_bytes) / 1e6, double(p.nvme_write_bytes) / 1e6);
  return 0;
}

int predict(const options& o) {
  const calibration c = load(o);
  if (o.generate) return predict_generate(o, c);
  const evaluated e = evaluate(o, c, o.policy, o.tc, o.ranks);
  if (o.json_out) {
    std::printf("%s\n", step_json(e).dump(2).c_str());
    return 0;
  }
  const auto& m = o.tc.model;
  std::printf("model: %d layers, width %d, %d heads, vocab %d: %.2f M parameters; policy %s, "
              "%d rank(s), batch %d x seq %d x accum %d\n",
              m.layers, m.width, m.heads, m.vocab, double(gpt::parameter_count(m)) / 1e6,
              gpt::policy_name(o.policy), o.ranks, o.tc.batch, o.tc.seq, o.tc.accum);
  std::printf("calibration: %s (%s)\n\nmemory plan of rank 0 (the trainer's own):\n%s\n",
              c.machine.c_str(), c.measured_at.c_str(), e.plan.to_string().c_str());
  std::printf("step: %.3f s predicted, %.0f tokens/s; compute bound %.3f s, IO bound %.3f s "
              "(NVMe %.2f GB read, %.2f GB written): %s\n",
              e.step.seconds, e.tokens_per_s, e.step.compute_bound_s, e.step.io_bound_s,
              double(e.step.nvme_read_bytes) / 1e9, double(e.step.nvme_write_bytes) / 1e9,
              e.step.bound.c_str());
  const auto layers =
      gpt::layer_costs(o.tc.model, o.tc.batch, o.tc.seq, c, o.ranks, o.tc.recompute);
  std::printf("per layer (one micro-batch): embed %.2f / %.2f ms, block %.2f / %.2f ms, last block "
              "with the head %.2f / %.2f ms (forward / backward)\n",
              layers.front().forward_s * 1e3, layers.front().backward_s * 1e3,
              layers[1].forward_s * 1e3, layers[1].backward_s * 1e3, layers.back().forward_s * 1e3,
              layers.back().backward_s * 1e3);
  std::printf("queues busy in the step:");
  for (std::size_t l = 0; l < strata::plan::lane_count; ++l)
    if (e.step.busy[l] > 0)
      std::printf(" %s %.3f s", strata::plan::lane_name(static_cast<strata::plan::lane>(l)), e.step.busy[l]);
  std::printf("\ncheckpoint: %.2f GiB per rank, %.2f GiB in all; snapshot %.2f s under the next "
              "step, persist %.2f s, stall %.2f s\n",
              gib(e.checkpoint.bytes_per_rank), gib(e.checkpoint.bytes_total),
              e.checkpoint.snapshot_s, e.checkpoint.persist_s, e.checkpoint.stall_s);
  return 0;
}

// ---- search ------------------------------------------------------------------------------

std::string over_budget(const strata::memory_plan& plan, const options& o) {
  const std::pair<strata::tier_id, double> budgets[] = {
      {strata::tier_id::device, o.device_mib * 1024 * 1024},
      {strata::tier_id::pinned, o.pinned_mib * 1024 * 1024},
      {strata::tier_id::host, o.host_mib * 1024 * 1024},
      {strata::tier_id::nvme, o.nvme_gib * double(1 << 30)}};
  for (const auto& [tier, limit] : budgets) {
    if (limit <= 0) continue;  // not given: unlimited
    const double need = double(plan.peak(tier));
    if (need > limit) {
      return std::string(strata::tier_name(tier)) + " over budget by " + size_text(need - limit) +
             " (" + size_text(need) + " of " + size_text(limit) + ")";
    }
  }
  return {};
}

int search(const options& o) {
  const calibration c = load(o);
  std::vector<evaluated> all;
  for (auto p : {gpt::train_policy::resident, gpt::train_policy::host, gpt::train_policy::nvme,
                 gpt::train_policy::nvme_bf16})
    for (int b : o.batches)
      for (int r : o.rank_list) {
        gpt::train_config tc = o.tc;
        tc.batch = b;
        options unlimited = o;  // the plan itself is not refused: over_budget says by how much
        unlimited.device_mib = 0;
        evaluated e = evaluate(unlimited, c, p, tc, r);
        e.why = over_budget(e.plan, o);
        all.push_back(std::move(e));
      }
  std::stable_sort(all.begin(), all.end(), [](const evaluated& a, const evaluated& b) {
    if (a.why.empty() != b.why.empty()) return a.why.empty();
    return a.tokens_per_s > b.tokens_per_s;
  });
  const double best = all.empty() || !all.front().why.empty() ? 0 : all.front().tokens_per_s;
  for (auto& e : all)
    if (e.why.empty() && e.tokens_per_s < best) {
      char why[200];
      std::snprintf(why, sizeof why, "%.0f%% of the best: %s", 100 * e.tokens_per_s / best,
                    e.step.bound.c_str());
      e.why = why;
    } else if (e.why.empty()) {
      e.why = "best: " + e.step.bound;
    }
  if (o.json_out) {
    json j = json::array();
    for (const auto& e : all) j.push_back(step_json(e));
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%-10s %5s %5s %10s %12s %10s %10s %10s  %s\n", "policy", "batch", "ranks",
              "step s", "tokens/s", "device GiB", "host GiB", "nvme GiB", "why");
  for (const auto& e : all)
    std::printf("%-10s %5d %5d %10.3f %12.0f %10.2f %10.2f %10.2f  %s\n", gpt::policy_name(e.policy),
                e.batch, e.ranks, e.step.seconds, e.tokens_per_s,
                gib(double(e.plan.peak(strata::tier_id::device))),
                gib(double(e.plan.peak(strata::tier_id::host) + e.plan.peak(strata::tier_id::pinned))),
                gib(double(e.plan.peak(strata::tier_id::nvme))), e.why.c_str());
  return 0;
}

// ---- cluster -----------------------------------------------------------------------------

constexpr double gib_bytes = double(1 << 30);

// The published setups the README's cluster table reproduces (sources there).
void apply_preset(options& o) {
  auto& t = o.target;
  auto& c = o.cluster;
  if (o.preset == "opengptx-13b") {  // 160 A100-40GB on JUWELS Booster (4 per node)
    t.model = {40, 5120, 40, 2048, 196608};
    t.tokens = 1e9, t.global_batch = 960;  // the poster's global batch
    c = {.nodes = 40, .gpus_per_node = 4, .hbm_bytes = 40 * gib_bytes, .host_ram_bytes = 512e9,
         .nvme_bytes = 0, .nvme_bytes_s = 0, .intra_node_bytes_s = 200e9,
         .inter_node_bytes_s = 25e9, .gpu_flops = 312e12};
  } else if (o.preset == "gpt3-175b") {  // Megatron-LM's 1024 A100-80GB (Selene), 300B tokens
    t.model = {96, 12288, 96, 2048, 50257};
    t.tokens = 300e9, t.global_batch = 1536;
    c = {.nodes = 128, .gpus_per_node = 8, .hbm_bytes = 80 * gib_bytes, .host_ram_bytes = 2e12,
         .nvme_bytes = 0, .nvme_bytes_s = 0, .intra_node_bytes_s = 250e9,
         .inter_node_bytes_s = 25e9, .gpu_flops = 312e12, .efficiency = 140.0 / 312.0};
  } else if (o.preset == "zero-infinity-1t") {  // one DGX-2: 16 V100-32GB, 1.5 TB, 28 TB NVMe
    t.model = {128, 25600, 160, 2048, 50257};
    t.tokens = 1e9, t.global_batch = 64;
    c = {.nodes = 1, .gpus_per_node = 16, .hbm_bytes = 32 * gib_bytes, .host_ram_bytes = 1.5e12,
         .nvme_bytes = 28e12, .nvme_bytes_s = 25e9, .intra_node_bytes_s = 150e9,
         .inter_node_bytes_s = 0, .gpu_flops = 125e12, .host_link_bytes_s = 12e9};
  } else if (!o.preset.empty()) {
    throw example::bad_argument("--preset is opengptx-13b, gpt3-175b or zero-infinity-1t, got '" +
                                o.preset + "'");
  }
}

int cluster(options o) {
  apply_preset(o);
  const auto choices = strata::plan::size_cluster(o.target, o.cluster);
  const auto& m = o.target.model;
  const double flops = strata::plan::flops_per_iteration(m, o.target.global_batch, o.target.recompute);
  if (o.json_out) {
    json j = {{"params", m.params()}, {"flops_per_iteration", flops},
              {"checkpoint_bytes", strata::plan::checkpoint_bytes(m.params())},
              {"choices", json::array()}};
    for (std::size_t i = 0; i < choices.size() && i < o.rows; ++i) {
      const auto& ch = choices[i];
      j["choices"].push_back({{"dp", ch.dp}, {"pp", ch.pp}, {"tp", ch.tp}, {"stage", ch.stage},
                              {"offload", strata::plan::to_string(ch.offload)},
                              {"hbm_bytes", ch.hbm_bytes}, {"fits", ch.fits}, {"why", ch.why},
                              {"iteration_s", ch.iteration_s}, {"days", ch.days}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model: %.2f B parameters; %.3g FLOPs per iteration of %g sequences (%s "
              "recomputation); a resumable checkpoint (14 B/param) %.2f TB\n",
              m.params() / 1e9, flops, o.target.global_batch,
              o.target.recompute ? "with" : "without", strata::plan::checkpoint_bytes(m.params()) / 1e12);
  std::printf("%s", strata::plan::to_string(choices, o.rows).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::program_main<options>(
      "strata-plan", usage, argc, argv,
      [](int ac, char** av, options& o) { return parse(ac, av, o); },
      [](const options& o) {
        if (o.command == "calibrate") return calibrate(o);
        if (o.command == "predict") return predict(o);
        if (o.command == "search") return search(o);
        return cluster(o);
      });
}
