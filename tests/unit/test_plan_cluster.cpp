// plan::size_cluster and its formulas against published figures: OpenGPT-X's 13.6B model
// (56 GB of ZeRO-1 state, PP=2 on 40 GB A100s, 160 GPUs), GPT-3 175B's parameter count and
// 2.45 TB checkpoint, ZeRO-Infinity's 1T parameters on one DGX-2 (NVMe offload only), and
// Narayanan et al.'s 34 days for GPT-3 on 1024 A100s. Plus the formulas by hand on a tiny
// shape (parameters, Megatron FLOPs, ZeRO state, Korthikanti activations), the enumeration's
// rules and order, and bad input named in the message.
#include "catch.hpp"

#include <strata/plan/cluster.hpp>

#include <algorithm>
#include <string>

using namespace strata::plan;

namespace {

constexpr double gib = 1024.0 * 1024.0 * 1024.0;

// l = 2, h = 64, a = 4, s = 384, V = 1024: s/(6h) = 1, V/(16lh) = 1/2, V/(12lh) = 2/3, so the
// Megatron factors are 5/2 and 8/3 and every number below is exact.
const transformer_shape tiny{.layers = 2, .hidden = 64, .heads = 4, .seq = 384, .vocab = 1024};

// OpenGPT-X's 13.6B (ISC'23 poster): l = 40, h = 5120 as in Megatron's 13B. GPT-2's 50257-token
// vocabulary gives only 12.85e9 parameters with this shape; their multilingual tokenizer is
// larger, and V = 196608 (a multiple of 128, as Megatron pads) brings the count to 13.60e9.
// The vocabulary is our assumption, not a published figure.
const transformer_shape gpt_13b6{
    .layers = 40, .hidden = 5120, .heads = 40, .seq = 2048, .vocab = 196608};

const transformer_shape gpt3{.layers = 96, .hidden = 12288, .heads = 96, .seq = 2048,
                             .vocab = 50257};

// JUWELS Booster: 4 A100-40GB per node, 40 nodes for the poster's 160 GPUs.
cluster_spec juwels_booster(int nodes) {
  return {.nodes = nodes, .gpus_per_node = 4, .hbm_bytes = 40 * gib, .host_ram_bytes = 512e9,
          .nvme_bytes = 0, .nvme_bytes_s = 0, .intra_node_bytes_s = 200e9,
          .inter_node_bytes_s = 25e9, .gpu_flops = 312e12};
}

const cluster_choice& find(const std::vector<cluster_choice>& all, int dp, int pp, int tp,
                           int stage, offload_kind o) {
  auto it = std::find_if(all.begin(), all.end(), [&](const cluster_choice& c) {
    return c.dp == dp && c.pp == pp && c.tp == tp && c.stage == stage && c.offload == o;
  });
  REQUIRE(it != all.end());
  return *it;
}

}  // namespace

TEST_CASE("parameter count and Megatron FLOPs, by hand", "[plan]") {
  // 12·2·64² + 13·2·64 + (1024 + 384)·64 + 2·64 = 98304 + 1664 + 90112 + 128
  CHECK(tiny.params() == 190208.0);
  // 96·1·384·2·64²·(1 + 1 + 1/2) and 72·1·384·2·64²·(1 + 1 + 2/3)
  CHECK(flops_per_iteration(tiny, 1, true) == Approx(754974720.0).epsilon(1e-12));
  CHECK(flops_per_iteration(tiny, 1, false) == Approx(603979776.0).epsilon(1e-12));
  CHECK(flops_per_iteration(tiny, 8, true) == Approx(8 * 754974720.0).epsilon(1e-12));

  // On a real shape the ratio is exactly the ratio of the two formulas.
  const double l = 96, h = 12288, s = 2048, v = 50257;
  const double ratio = (96 * (1 + s / (6 * h) + v / (16 * l * h))) /
                       (72 * (1 + s / (6 * h) + v / (12 * l * h)));
  CHECK(flops_per_iteration(gpt3, 1536, true) / flops_per_iteration(gpt3, 1536, false) ==
        Approx(ratio).epsilon(1e-12));
  CHECK(ratio == Approx(1.3322).epsilon(1e-4));  // recomputation costs a third more
}

TEST_CASE("ZeRO model state per GPU: the paper's formulas, and offload moves it", "[plan]") {
  const double psi = tiny.params();
  const parallel_layout p{.dp = 4, .pp = 1, .tp = 1};
  auto hbm = [&](int stage, offload_kind o) {
    return model_state_per_gpu(tiny, p, stage, o, 8).hbm;
  };
  CHECK(hbm(0, offload_kind::none) == Approx(16 * psi));
  CHECK(hbm(1, offload_kind::none) == Approx(4 * psi + 12 * psi / 4));
  CHECK(hbm(2, offload_kind::none) == Approx(2 * psi + 14 * psi / 4));
  // Stage 3 also holds two gathered layers of fp16 params and grads: 2 · 4 B · Ψ/2. With two
  // layers that is the whole model, and stage 3 costs more than stage 2 — true of real runs.
  CHECK(hbm(3, offload_kind::none) == Approx(16 * psi / 4 + 2 * 4 * psi / 2));

  const auto cpu1 = model_state_per_gpu(tiny, p, 1, offload_kind::cpu, 8);
  CHECK(cpu1.hbm == Approx(4 * psi));
  CHECK(cpu1.host_per_node == Approx(8 * 12 * psi / 4));  // 8 GPUs' optimizer shares
  CHECK(cpu1.nvme_per_node == 0);
  const auto cpu0 = model_state_per_gpu(tiny, p, 0, offload_kind::cpu, 8);
  CHECK(cpu0.host_per_node == Approx(8 * 12 * psi));
  const auto nvme = model_state_per_gpu(tiny, p, 3, offload_kind::nvme, 8);
  CHECK(nvme.hbm == Approx(2 * 4 * psi / 2));
  CHECK(nvme.host_per_node == 0);
  CHECK(nvme.nvme_per_node == Approx(8 * 16 * psi / 4));

  // With enough layers the state falls with every stage, for any DP > 1.
  for (int dp : {2, 8, 160}) {
    INFO("dp " << dp);
    double last = 0;
    for (int stage = 0; stage <= 3; ++stage) {
      const double b = model_state_per_gpu(gpt_13b6, {dp, 1, 1}, stage, offload_kind::none, 4).hbm;
      if (stage > 0) CHECK(b < last);
      last = b;
    }
  }
  // PP and TP divide Ψ: a quarter of the model per GPU at PP=2, TP=2.
  CHECK(model_state_per_gpu(gpt_13b6, {8, 2, 2}, 0, offload_kind::none, 4).hbm ==
        Approx(16 * gpt_13b6.params() / 4));
}

TEST_CASE("activations: Korthikanti's bytes per layer, recompute keeps the inputs", "[plan]") {
  // One layer: s·b·h·(34 + 5·a·s/h) = 384·64·(34 + 120) = 3784704 bytes.
  CHECK(activation_bytes_per_gpu(tiny, {1, 1, 1}, 1, 1, false) == Approx(2 * 3784704.0));
  // Recompute: inputs 2·s·b·h per layer, plus one layer's full set.
  CHECK(activation_bytes_per_gpu(tiny, {1, 1, 1}, 1, 1, true) ==
        Approx(2 * 2 * 24576.0 + 3784704.0));
  // PP=2, TP=2: one layer per stage, two micro-batches in flight on the first stage, /2 for TP.
  CHECK(activation_bytes_per_gpu(tiny, {1, 2, 2}, 1, 8, false) == Approx(3784704.0));
  CHECK(activation_bytes_per_gpu(tiny, {1, 2, 2}, 1, 8, true) ==
        Approx(2 * 24576.0 / 2 * 2 + 3784704.0 / 2));
  // Fewer micro-batches than stages: only those are in flight.
  CHECK(activation_bytes_per_gpu(tiny, {1, 2, 1}, 1, 1, false) == Approx(3784704.0));
  // Micro-batch size scales the inputs linearly.
  CHECK(activation_bytes_per_gpu(tiny, {1, 1, 1}, 4, 1, false) == Approx(8 * 3784704.0));
}

TEST_CASE("OpenGPT-X 13.6B: 56 GB of ZeRO-1 state, PP=2 is what fits 40 GB A100s", "[plan]") {
  CHECK(gpt_13b6.params() == Approx(13.6e9).epsilon(0.01));
  // 4Ψ + 12Ψ/160 = 54.4 + 1.0 GB; the poster says 56 GB.
  const auto z1 = model_state_per_gpu(gpt_13b6, {160, 1, 1}, 1, offload_kind::none, 4);
  CHECK(z1.hbm == Approx(56e9).epsilon(0.03));
  // At PP=2 each GPU holds half: the poster's 28 GB.
  const auto z1_pp2 = model_state_per_gpu(gpt_13b6, {80, 2, 1}, 1, offload_kind::none, 4);
  CHECK(z1_pp2.hbm == Approx(28e9).epsilon(0.03));

  const training_target t{.model = gpt_13b6, .tokens = 300e9, .global_batch = 960};
  const auto all = size_cluster(t, juwels_booster(40));
  const auto& pp1 = find(all, 160, 1, 1, 1, offload_kind::none);
  CHECK_FALSE(pp1.fits);
  CHECK(pp1.why == "HBM over by 13.5 GiB (53.5 GiB of 40.0 GiB)");
  CHECK(pp1.micro_batches == 6);
  const auto& pp2 = find(all, 80, 2, 1, 1, offload_kind::none);
  CHECK(pp2.fits);
  CHECK(pp2.why.empty());
  CHECK(pp2.micro_batches == 12);
  CHECK(pp2.hbm_bytes == Approx(z1_pp2.hbm + pp2.activation_bytes));
  CHECK(pp2.hbm_bytes / gib == Approx(28.2).epsilon(0.01));

  int smallest = 0;
  for (const auto& c : all)
    if (c.fits && c.tp == 1 && c.stage == 1 && c.offload == offload_kind::none)
      smallest = smallest == 0 ? c.pp : std::min(smallest, c.pp);
  CHECK(smallest == 2);
}

TEST_CASE("GPT-3 175B: parameters and the 2.45 TB checkpoint", "[plan]") {
  CHECK(gpt3.params() == Approx(175e9).epsilon(0.01));
  CHECK(checkpoint_bytes(gpt3.params()) == Approx(2.45e12).epsilon(0.02));
  CHECK(checkpoint_bytes(gpt3.params(), 16) == Approx(16 * gpt3.params()));
}

TEST_CASE("ZeRO-Infinity: 1T parameters on one DGX-2 fit only with NVMe offload", "[plan]") {
  const transformer_shape t1{.layers = 128, .hidden = 25600, .heads = 160, .seq = 2048,
                             .vocab = 50257};
  CHECK(t1.params() == Approx(1e12).epsilon(0.01));
  // 16 V100-32GB, 1.5 TB DRAM, 28 TB NVMe at 25 GB/s (the paper's DGX-2), PCIe 3.0 links.
  const cluster_spec dgx2{.nodes = 1, .gpus_per_node = 16, .hbm_bytes = 32 * gib,
                          .host_ram_bytes = 1.5e12, .nvme_bytes = 28e12, .nvme_bytes_s = 25e9,
                          .intra_node_bytes_s = 150e9, .inter_node_bytes_s = 0,
                          .gpu_flops = 125e12, .host_link_bytes_s = 12e9};
  const training_target t{.model = t1, .tokens = 1e9, .global_batch = 64};
  const auto all = size_cluster(t, dgx2);
  int nvme_fits = 0;
  for (const auto& c : all) {
    INFO("dp " << c.dp << " pp " << c.pp << " tp " << c.tp << " stage " << c.stage << " "
               << to_string(c.offload) << ": " << c.why);
    if (c.offload == offload_kind::none) CHECK_FALSE(c.fits);
    if (c.offload == offload_kind::cpu) {
      CHECK_FALSE(c.fits);
      CHECK(c.why.find("host RAM per node over") != std::string::npos);
    }
    if (c.offload == offload_kind::nvme) {
      CHECK(c.stage == 3);
      CHECK(c.nvme_bytes_per_node == Approx(16 * t1.params()));
      nvme_fits += c.fits;
    }
  }
  CHECK(nvme_fits > 0);
  CHECK(all.front().fits);
  CHECK(all.front().offload == offload_kind::nvme);
  // The stage-3 CPU offload needs 12Ψ of host RAM on the one node: ~12 TB of 1.5 TB.
  const auto& cpu = find(all, 16, 1, 1, 3, offload_kind::cpu);
  CHECK(cpu.host_bytes_per_node == Approx(12 * t1.params()));
  // Two gathered layers of 7.9e9 parameters do not fit one GPU without tensor slicing (the paper
  // tiles its operators instead); TP=4 does.
  CHECK_FALSE(find(all, 16, 1, 1, 3, offload_kind::nvme).fits);
  CHECK(find(all, 4, 1, 4, 3, offload_kind::nvme).fits);
}

TEST_CASE("Megatron-LM: GPT-3 175B, 300B tokens, 1024 A100s at 140 TFLOP/s, ~34 days",
          "[plan]") {
  const training_target t{.model = gpt3, .tokens = 300e9, .global_batch = 1536};
  // Narayanan et al.: 8·T·P / (n·X) = 8 · 300e9 · 175e9 / (1024 · 140e12) s = 33.9 days.
  const double days = training_days(t, 140e12, 1024);
  CHECK(days == Approx(34).epsilon(0.10));
  CHECK(days == Approx(34.73).epsilon(0.005));

  const cluster_spec selene{.nodes = 128, .gpus_per_node = 8, .hbm_bytes = 80 * gib,
                            .host_ram_bytes = 2e12, .nvme_bytes = 0, .nvme_bytes_s = 0,
                            .intra_node_bytes_s = 250e9, .inter_node_bytes_s = 25e9,
                            .gpu_flops = 312e12, .efficiency = 140.0 / 312.0};
  const auto all = size_cluster(t, selene);
  REQUIRE(all.front().fits);
  const double iterations = 300e9 / (1536.0 * 2048);
  // The best choice's compute part is the same figure; bubble and communication come on top.
  CHECK(iterations * all.front().compute_s / 86400 == Approx(days).epsilon(1e-9));
  CHECK(all.front().days > days);
  CHECK(all.front().days < 1.25 * days);
  // TP=1 cannot hold 175B on 80 GB at PP=1 without partitioning it.
  CHECK_FALSE(find(all, 1024, 1, 1, 0, offload_kind::none).fits);
}

TEST_CASE("size_cluster enumerates valid layouts and ranks fitting ones by days", "[plan]") {
  const training_target t{.model = gpt_13b6, .tokens = 100e9, .global_batch = 960};
  const auto c = juwels_booster(40);
  const auto all = size_cluster(t, c);
  // TP ∈ {1, 2, 4} (divides 4 and 40); PP | 40 with 160 % (PP·TP) == 0: all eight divisors
  // of 40 for each TP (TP=4, PP=40 is DP=1). Nine (stage, offload) pairs each: stages 0-3 with
  // none or cpu, and stage 3 with nvme.
  CHECK(all.size() == 3 * 8 * 9);
  bool seen_unfit = false;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& r = all[i];
    CHECK(r.dp * r.pp * r.tp == 160);
    CHECK(4 % r.tp == 0);
    CHECK(40 % r.pp == 0);
    CHECK((r.offload != offload_kind::nvme || r.stage == 3));
    CHECK(r.fits == r.why.empty());
    CHECK(r.fits == (r.memory_ratio <= 1 && 960 % (r.dp * 1) == 0));
    if (!r.fits) seen_unfit = true;
    if (r.fits) CHECK_FALSE(seen_unfit);  // fitting first
    if (i > 0 && r.fits) CHECK(all[i - 1].days <= r.days);
    if (i > 0 && !r.fits && !all[i - 1].fits) CHECK(all[i - 1].memory_ratio <= r.memory_ratio);
    CHECK(r.iteration_s >= r.compute_s + r.bubble_s);
    CHECK(r.days == Approx(100e9 / (960.0 * 2048) * r.iteration_s / 86400));
  }
  CHECK(seen_unfit);

  // A global batch that DP does not divide is refused with the reason, memory or not.
  const training_target odd{.model = gpt_13b6, .tokens = 100e9, .global_batch = 1000};
  const auto r = evaluate_choice(odd, c, {80, 2, 1}, 1, offload_kind::none);
  CHECK_FALSE(r.fits);
  CHECK(r.why == "global batch 1000 is not a multiple of dp x micro_batch = 80");

  const std::string table = to_string(all, 3);
  CHECK(std::count(table.begin(), table.end(), '\n') == 1 + 3 + 1);
  CHECK(table.find("... " + std::to_string(all.size() - 3) + " more choices") !=
        std::string::npos);
  CHECK(to_string(all, 1000).find("no: HBM over by") != std::string::npos);
}

TEST_CASE("bad input is a config_error that names the field", "[plan]") {
  using strata::config_error;
  transformer_shape no_layers = tiny;
  no_layers.layers = 0;
  CHECK_THROWS_AS(no_layers.validate(), config_error);
  CHECK_THROWS_WITH(no_layers.validate(), Catch::Contains("transformer_shape.layers"));
  CHECK_THROWS_WITH(flops_per_iteration(no_layers, 8, true), Catch::Contains("layers"));

  transformer_shape odd_heads = tiny;
  odd_heads.heads = 3;
  CHECK_THROWS_AS(odd_heads.validate(), config_error);
  CHECK_THROWS_WITH(odd_heads.validate(),
                    Catch::Contains("transformer_shape.heads = 3 does not divide hidden = 64"));

  const training_target t{.model = gpt_13b6, .tokens = 1e9, .global_batch = 960};
  cluster_spec no_nodes = juwels_booster(40);
  no_nodes.nodes = 0;
  CHECK_THROWS_AS(size_cluster(t, no_nodes), config_error);
  CHECK_THROWS_WITH(size_cluster(t, no_nodes), Catch::Contains("cluster_spec.nodes"));
  cluster_spec greedy = juwels_booster(40);
  greedy.efficiency = 1.5;
  CHECK_THROWS_WITH(size_cluster(t, greedy), Catch::Contains("cluster_spec.efficiency"));

  training_target no_tokens = t;
  no_tokens.tokens = 0;
  CHECK_THROWS_WITH(size_cluster(no_tokens, juwels_booster(40)),
                    Catch::Contains("training_target.tokens"));

  CHECK_THROWS_WITH(model_state_per_gpu(tiny, {4, 1, 1}, 1, offload_kind::nvme, 8),
                    Catch::Contains("offload"));
  CHECK_THROWS_WITH(model_state_per_gpu(tiny, {4, 1, 1}, 4, offload_kind::none, 8),
                    Catch::Contains("stage"));
  CHECK_THROWS_WITH(model_state_per_gpu(tiny, {4, 3, 1}, 1, offload_kind::none, 8),
                    Catch::Contains("parallel_layout.pp"));
  CHECK_THROWS_WITH(evaluate_choice(t, juwels_booster(40), {80, 1, 1}, 1, offload_kind::none),
                    Catch::Contains("is not the cluster's 160 GPUs"));
  CHECK_THROWS_WITH(evaluate_choice(t, juwels_booster(40), {20, 1, 8}, 1, offload_kind::none),
                    Catch::Contains("gpus_per_node"));
}
