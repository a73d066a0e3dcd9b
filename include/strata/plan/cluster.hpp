// strata/plan/cluster.hpp — cluster sizing on paper: for a transformer, a token count and a
// described cluster, which DP × PP × TP layouts and ZeRO stages / offloads fit, and how long
// each would train.
//
// What lives here: transformer_shape (a GPT-2-style decoder and its parameter count), the
// Megatron-LM FLOPs per iteration (with and without activation recomputation), model-state bytes
// per GPU for ZeRO stages 0-3 with no offload, ZeRO-Offload (cpu) or ZeRO-Infinity (nvme),
// activation bytes per GPU (Korthikanti et al.), cluster_spec / training_target, size_cluster()
// that enumerates and ranks the layouts, checkpoint_bytes(), training_days() and a text table.
// What does not: anything measured. This is closed-form arithmetic from the papers cited below,
// made for choosing a cluster before one is booked; the executor's own memory plan
// (schedule/memory_plan.hpp) and a calibration on the machine are what a run is held to. No
// JSON either: every struct has plain fields, and the tool that prints JSON serialises them.
//
// Units: bytes and bytes/s are decimal doubles (1 GB = 1e9 B); tables and messages print GiB.
//
//   plan::training_target t{.model = {.layers = 96, .hidden = 12288, .heads = 96, .seq = 2048,
//                                     .vocab = 50257},
//                           .tokens = 300e9, .global_batch = 1536};
//   plan::cluster_spec c{.nodes = 128, .gpus_per_node = 8, .hbm_bytes = 80e9, ...};
//   auto choices = plan::size_cluster(t, c);   // fitting ones first, fastest first
//   std::cout << plan::to_string(choices, 10);
//
// What the model leaves out, on purpose (each is small next to what it keeps, or depends on
// the framework rather than on the shapes): the logits' and loss's activations, temporary
// buffers and fragmentation, the CUDA context, communication buckets, pipeline point-to-point
// traffic, and the CPU optimizer's own time under ZeRO-Offload.
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/error.hpp>

#include <cstddef>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace plan {

/// A GPT-2-style decoder: `layers` blocks of attention (`heads` heads) and a 4h MLP, learned
/// position embeddings for `seq` tokens, a token embedding of `vocab` rows tied to the output.
struct transformer_shape {
  int layers = 0;  // l
  int hidden = 0;  // h
  int heads = 0;   // a; divides h
  int seq = 0;     // s, tokens per sequence
  int vocab = 0;   // V

  /// 12·l·h² + 13·l·h + (V + s)·h + 2h: per block 12h² weights and 13h biases and layernorm
  /// gains, the token and position embeddings, and the final layernorm.
  double params() const;
  /// config_error naming the first bad field (non-positive, or heads not dividing hidden).
  void validate() const;
};

/// Training FLOPs of one iteration of `global_batch` sequences (Narayanan et al., SC'21,
/// "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", eq. 3):
///   recompute: 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))
///   otherwise: 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))
double flops_per_iteration(const transformer_shape& m, double global_batch, bool recompute);

/// Where the state that ZeRO partitions lives besides HBM.
enum class offload_kind {
  none,  // everything on the GPUs
  cpu,   // ZeRO-Offload: optimizer state and fp32 master weights in host RAM
  nvme,  // ZeRO-Infinity (stage 3 only): parameters, gradients and optimizer state on NVMe
};
/// "none", "cpu", "nvme".
const char* to_string(offload_kind o);

/// How the cluster's GPUs are split: dp · pp · tp of them.
struct parallel_layout {
  int dp = 1;  // data-parallel replicas, N_d (ZeRO partitions across these)
  int pp = 1;  // pipeline stages
  int tp = 1;  // tensor-parallel slices, inside one node
};

/// Model-state bytes (mixed-precision Adam: 2Ψ fp16 params + 2Ψ fp16 grads + 12Ψ fp32 master,
/// m, v; Rajbhandari et al., SC'20, "ZeRO") of one GPU, and where the offloaded part lands.
struct model_state_bytes {
  double hbm = 0;            // on one GPU
  double host_per_node = 0;  // host RAM of one node (all its GPUs' shares)
  double nvme_per_node = 0;  // NVMe of one node (all its GPUs' shares)
};

/// Layers' worth of fp16 parameters and gradients that a stage-3 GPU holds gathered while it
/// computes: the layer in use and the one being prefetched / reduce-scattered.
inline constexpr int zero3_working_layers = 2;

/// Model-state bytes per GPU for ZeRO `stage` (0-3) and `offload`, with Ψ' = Ψ/(pp·tp):
///   stage 0: 16Ψ'   1: 4Ψ' + 12Ψ'/N_d   2: 2Ψ' + 14Ψ'/N_d   3: 16Ψ'/N_d + working set
/// cpu moves the 12 optimizer bytes (12Ψ'/N_d, or 12Ψ' at stage 0) to host RAM; nvme (stage 3
/// only) moves all 16Ψ'/N_d to NVMe and leaves the working set on the GPU. The working set is
/// zero3_working_layers × 4 bytes × Ψ'/(l/pp). config_error on a bad stage, layout, or nvme
/// below stage 3.
model_state_bytes model_state_per_gpu(const transformer_shape& m, const parallel_layout& p,
                                      int stage, offload_kind offload, int gpus_per_node);

/// Activation bytes per GPU, micro-batch `micro_batch` sequences (Korthikanti et al. 2022,
/// "Reducing Activation Recomputation in Large Transformer Models"): one layer stores
/// s·b·h·(34 + 5·a·s/h) bytes, over tp (sequence parallelism, as the paper assumes when it
/// divides by t). With full recomputation a layer keeps only its input, 2·s·b·h/tp, and one
/// layer at a time holds its full set again during backward. The first pipeline stage of 1F1B
/// holds min(pp, micro_batches) micro-batches in flight, which is what it is sized for.
double activation_bytes_per_gpu(const transformer_shape& m, const parallel_layout& p,
                                int micro_batch, int micro_batches, bool recompute);

/// 14 bytes per parameter by default: fp32 master + Adam m + v + fp16 parameters, what a
/// checkpoint that can resume training holds.
double checkpoint_bytes(double params, double bytes_per_param = 14);

/// A cluster of identical nodes. Bandwidths are what one GPU gets, unless named per node.
struct cluster_spec {
  int nodes = 0;
  int gpus_per_node = 0;
  double hbm_bytes = 0;           // per GPU
  double host_ram_bytes = 0;      // per node
  double nvme_bytes = 0;          // per node (0: none)
  double nvme_bytes_s = 0;        // per node, shared by its GPUs
  double intra_node_bytes_s = 0;  // per GPU, to the GPUs of its node (NVLink / NVSwitch)
  double inter_node_bytes_s = 0;  // per GPU, to other nodes (its share of the node's NICs)
  double gpu_flops = 0;           // peak dense half-precision FLOP/s of one GPU
  double efficiency = 0.4;        // model FLOPs utilisation a well-tuned run reaches
  double host_link_bytes_s = 25e9;  // per GPU, host <-> GPU (PCIe 4.0 x16 in practice)

  /// config_error naming the first bad field.
  void validate() const;
};

/// What to train: a model for `tokens` tokens in steps of `global_batch` sequences.
struct training_target {
  transformer_shape model;
  double tokens = 0;
  double global_batch = 0;  // sequences per iteration, B
  int micro_batch = 1;      // sequences per micro-batch, b
  bool recompute = true;    // full activation recomputation

  /// config_error naming the first bad field (the model's included).
  void validate() const;
};

/// One layout and ZeRO configuration, what it needs and how long it takes.
struct cluster_choice {
  int dp = 1, pp = 1, tp = 1;
  int stage = 0;
  offload_kind offload = offload_kind::none;
  int micro_batches = 0;  // m = B / (dp · b) per pipeline, per iteration

  double hbm_bytes = 0;            // per GPU: model states + activations
  double host_bytes_per_node = 0;  // offloaded state (cpu)
  double nvme_bytes_per_node = 0;  // offloaded state (nvme)
  double activation_bytes = 0;     // per GPU, part of hbm_bytes
  double memory_ratio = 0;         // largest need / have over HBM, host RAM, NVMe (<= 1 fits)
  bool fits = false;
  std::string why;  // empty when it fits: "HBM over by 3.2 GiB (43.2 GiB of 40.0 GiB)"

  double flops_per_iteration = 0;
  double compute_s = 0;     // F / (N · gpu_flops · efficiency)
  double bubble_s = 0;      // compute_s · (pp − 1) / m
  double comm_s = 0;        // DP gradient (and stage-3 parameter) traffic + TP all-reduces
  double offload_io_s = 0;  // host link or NVMe traffic, overlapped with compute
  double iteration_s = 0;   // max(compute + bubble, offload IO) + comm
  double days = 0;          // tokens / (B · s) iterations
};

/// One configuration on one cluster; size_cluster() calls it for every candidate. A layout
/// that cannot be built is a config_error: dp · pp · tp not the cluster's GPU count, pp not
/// dividing layers, tp not dividing heads or gpus_per_node. One that merely does not fit
/// (memory, or a global batch that dp · b does not divide) comes back with fits = false.
cluster_choice evaluate_choice(const training_target& t, const cluster_spec& c,
                               const parallel_layout& p, int stage, offload_kind offload);

/// Every TP in {1, 2, 4, ...} dividing gpus_per_node and heads, PP dividing layers, DP = the
/// rest of the GPUs, stages 0-3, offload none / cpu (and nvme at stage 3). Fitting choices first
/// by days, then the others by memory_ratio (closest to fitting first).
std::vector<cluster_choice> size_cluster(const training_target& t, const cluster_spec& c);

/// Compute-only days: the iterations' FLOPs at `achieved_flops_per_gpu` on `gpus` GPUs, no
/// bubble, no communication — the figure Narayanan et al.'s 8·T·P / (n·X) estimates.
double training_days(const training_target& t, double achieved_flops_per_gpu, int gpus);

/// A table of the first `max_rows` choices, one per line, with a header and a count of the rest.
std::string to_string(const std::vector<cluster_choice>& choices, std::size_t max_rows);

}  // namespace plan
STRATA_NAMESPACE_END

#include <strata/plan/detail/cluster.inl>
