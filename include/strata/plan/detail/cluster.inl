// strata/plan/detail/cluster.inl — bodies of plan/cluster.hpp: validation with field-naming
// messages, the memory and time formulas, the enumeration and the table.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

STRATA_NAMESPACE_BEGIN
namespace plan {
namespace detail {

[[noreturn]] inline void bad_field(const std::string& field, const std::string& why) {
  throw config_error("plan: " + field + " " + why);
}

inline std::string number_text(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

inline void require_positive(const char* field, int v) {
  if (v < 1) bad_field(field, "must be >= 1 (got " + std::to_string(v) + ")");
}

// `!(v > 0)` rather than `v <= 0`: a NaN is as bad as a zero and must not slip through.
inline void require_positive(const char* field, double v) {
  if (!(v > 0) || !std::isfinite(v)) bad_field(field, "must be > 0 (got " + number_text(v) + ")");
}

inline void require_non_negative(const char* field, double v) {
  if (!(v >= 0) || !std::isfinite(v))
    bad_field(field, "must be >= 0 (got " + number_text(v) + ")");
}

// Both numbers of a message in one unit, so "41.9 GiB of 40.0 GiB" reads at a glance; TiB once
// the larger passes 1024 GiB (host RAM and NVMe for 1T-parameter models).
inline std::string over_text(const char* what, double need, double have) {
  constexpr double gib = 1024.0 * 1024.0 * 1024.0;
  const bool tib = std::max(need, have) >= 1024.0 * gib;
  const double unit = tib ? 1024.0 * gib : gib;
  const char* name = tib ? "TiB" : "GiB";
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s over by %.1f %s (%.1f %s of %.1f %s)", what,
                (need - have) / unit, name, need / unit, name, have / unit, name);
  return buf;
}

// need / have, with nothing needed from nothing counting as fitting.
inline double ratio(double need, double have) {
  if (need <= 0) return 0;
  return have > 0 ? need / have : std::numeric_limits<double>::infinity();
}

// Time to move `bytes` at `bytes_s`; nothing to move takes no time even on a missing link.
inline double transfer_s(double bytes, double bytes_s) {
  if (bytes <= 0) return 0;
  return bytes_s > 0 ? bytes / bytes_s : std::numeric_limits<double>::infinity();
}

inline void check_stage(int stage, offload_kind offload) {
  if (stage < 0 || stage > 3)
    bad_field("stage", "must be 0, 1, 2 or 3 (got " + std::to_string(stage) + ")");
  if (offload == offload_kind::nvme && stage != 3)
    bad_field("offload", "nvme needs stage 3 (got stage " + std::to_string(stage) +
                             "): ZeRO-Infinity partitions the parameters too");
}

inline void check_layout(const transformer_shape& m, const parallel_layout& p) {
  require_positive("parallel_layout.dp", p.dp);
  require_positive("parallel_layout.pp", p.pp);
  require_positive("parallel_layout.tp", p.tp);
  if (m.layers % p.pp != 0)
    bad_field("parallel_layout.pp", "= " + std::to_string(p.pp) + " does not divide layers = " +
                                        std::to_string(m.layers));
  if (m.heads % p.tp != 0)
    bad_field("parallel_layout.tp", "= " + std::to_string(p.tp) + " does not divide heads = " +
                                        std::to_string(m.heads));
}

// Ψ' of the header: the parameters on one GPU's pipeline stage and tensor slice.
inline double params_per_gpu(const transformer_shape& m, const parallel_layout& p) {
  return m.params() / (static_cast<double>(p.pp) * p.tp);
}

// Where the optimizer's 12 bytes per parameter go, for one GPU: all of them at stage 0, its
// 1/N_d share from stage 1 up.
inline double optimizer_bytes(double psi, int stage, int dp) {
  return stage == 0 ? 12 * psi : 12 * psi / dp;
}

// The fp16 parameters and gradients a GPU keeps: replicated, or its share from the stage that
// partitions them (grads at 2, params at 3).
inline double fp16_bytes(double psi, int stage, int dp) {
  const double params = stage >= 3 ? 2 * psi / dp : 2 * psi;
  const double grads = stage >= 2 ? 2 * psi / dp : 2 * psi;
  return params + grads;
}

// Bytes that cross the offload link per step, for one GPU. cpu: the fp16 gradient share goes
// down to the CPU optimizer and the updated fp16 parameter share comes back up. nvme: the CPU
// optimizer reads and writes fp32 master, m and v (24), gradients are written in backward and
// read by the optimizer (4), fp16 parameters are written after the step and read in forward
// and again in backward (6): 34 bytes per parameter of the GPU's share.
inline double offload_traffic_bytes(double psi, int stage, int dp, offload_kind o) {
  const double share = stage == 0 ? psi : psi / dp;
  switch (o) {
    case offload_kind::none: return 0;
    case offload_kind::cpu: return 4 * share;
    case offload_kind::nvme: return 34 * share;
  }
  return 0;
}

inline void fill_memory(cluster_choice& r, const training_target& t, const cluster_spec& c,
                        const parallel_layout& p) {
  const double dp_micro = static_cast<double>(p.dp) * t.micro_batch;
  const double m = t.global_batch / dp_micro;
  r.micro_batches = m >= 1 ? static_cast<int>(std::floor(m)) : 0;
  const auto s = model_state_per_gpu(t.model, p, r.stage, r.offload, c.gpus_per_node);
  r.activation_bytes =
      activation_bytes_per_gpu(t.model, p, t.micro_batch, std::max(1, r.micro_batches), t.recompute);
  r.hbm_bytes = s.hbm + r.activation_bytes;
  r.host_bytes_per_node = s.host_per_node;
  r.nvme_bytes_per_node = s.nvme_per_node;
}

// A layout fits when all three tiers hold what it needs and the batch splits into whole
// micro-batches (frameworks refuse a remainder rather than pad it).
inline void fill_fit(cluster_choice& r, const training_target& t, const cluster_spec& c) {
  r.memory_ratio = std::max({ratio(r.hbm_bytes, c.hbm_bytes),
                             ratio(r.host_bytes_per_node, c.host_ram_bytes),
                             ratio(r.nvme_bytes_per_node, c.nvme_bytes)});
  std::vector<std::string> over;
  if (r.hbm_bytes > c.hbm_bytes) over.push_back(over_text("HBM", r.hbm_bytes, c.hbm_bytes));
  if (r.host_bytes_per_node > c.host_ram_bytes)
    over.push_back(over_text("host RAM per node", r.host_bytes_per_node, c.host_ram_bytes));
  if (r.nvme_bytes_per_node > c.nvme_bytes)
    over.push_back(over_text("NVMe per node", r.nvme_bytes_per_node, c.nvme_bytes));
  const double dp_micro = static_cast<double>(r.dp) * t.micro_batch;
  if (r.micro_batches < 1 || std::fmod(t.global_batch, dp_micro) != 0)
    over.push_back("global batch " + number_text(t.global_batch) +
                   " is not a multiple of dp x micro_batch = " + number_text(dp_micro));
  r.fits = over.empty();
  r.why.clear();
  for (const auto& o : over) r.why += (r.why.empty() ? "" : "; ") + o;
}

// Communication is charged in full, not overlapped: the TP all-reduces sit on Megatron's
// critical path, and the DP traffic is the part a framework cannot hide behind the last
// micro-batch's backward, which at these sizes is most of it. Ranks are ordered TP fastest,
// then DP, then PP (Megatron's order), so a DP group leaves the node when dp · tp exceeds it.
inline void fill_comm(cluster_choice& r, const training_target& t, const cluster_spec& c,
                      double m) {
  const auto& md = t.model;
  const parallel_layout p{r.dp, r.pp, r.tp};
  const double psi = params_per_gpu(md, p);
  // Gradient reduce-scatter + parameter all-gather (or one all-reduce) of 2Ψ' fp16 bytes;
  // stage 3 gathers the parameters twice (forward and backward), 1.5× (ZeRO paper §7).
  const double dp_passes = r.stage == 3 ? 3 : 2;
  const double dp_bytes = dp_passes * 2 * psi * (r.dp - 1) / r.dp;
  const bool dp_leaves_node = static_cast<long long>(r.dp) * r.tp > c.gpus_per_node;
  const double dp_bw = dp_leaves_node ? c.inter_node_bytes_s : c.intra_node_bytes_s;
  // Per layer and micro-batch: 2 all-reduces of the fp16 (s, b, h) activations forward, 2
  // backward, 2 more for the recomputed forward; a ring moves 2(t−1)/t of the buffer.
  const double tp_calls = t.recompute ? 6 : 4;
  const double tp_buffer = 2.0 * md.seq * t.micro_batch * md.hidden;
  const double tp_bytes = tp_calls * 2.0 * (r.tp - 1) / r.tp * tp_buffer *
                          (static_cast<double>(md.layers) / r.pp) * m;
  r.comm_s = transfer_s(dp_bytes, dp_bw) + transfer_s(tp_bytes, c.intra_node_bytes_s);
}

inline void fill_time(cluster_choice& r, const training_target& t, const cluster_spec& c) {
  const parallel_layout p{r.dp, r.pp, r.tp};
  const double gpus = static_cast<double>(c.nodes) * c.gpus_per_node;
  const double m = std::max(1.0, t.global_batch / (static_cast<double>(r.dp) * t.micro_batch));
  r.flops_per_iteration = flops_per_iteration(t.model, t.global_batch, t.recompute);
  r.compute_s = r.flops_per_iteration / (gpus * c.gpu_flops * c.efficiency);
  r.bubble_s = r.compute_s * (r.pp - 1) / m;  // 1F1B: (p − 1) / m idle
  fill_comm(r, t, c, m);
  const double io_bytes = offload_traffic_bytes(params_per_gpu(t.model, p), r.stage, r.dp, r.offload);
  const double io_bw = r.offload == offload_kind::nvme ? c.nvme_bytes_s / c.gpus_per_node
                                                       : c.host_link_bytes_s;
  r.offload_io_s = transfer_s(io_bytes, io_bw);
  // Offload traffic is prefetched and written back behind compute (that is what ZeRO-Offload
  // and -Infinity are built for), so the slower of the two sets the pace.
  r.iteration_s = std::max(r.compute_s + r.bubble_s, r.offload_io_s) + r.comm_s;
  const double iterations = t.tokens / (t.global_batch * t.model.seq);
  r.days = iterations * r.iteration_s / 86400.0;
}

}  // namespace detail

inline double transformer_shape::params() const {
  const double l = layers, h = hidden, s = seq, v = vocab;
  return 12 * l * h * h + 13 * l * h + (v + s) * h + 2 * h;
}

inline void transformer_shape::validate() const {
  detail::require_positive("transformer_shape.layers", layers);
  detail::require_positive("transformer_shape.hidden", hidden);
  detail::require_positive("transformer_shape.heads", heads);
  detail::require_positive("transformer_shape.seq", seq);
  detail::require_positive("transformer_shape.vocab", vocab);
  if (hidden % heads != 0)
    detail::bad_field("transformer_shape.heads", "= " + std::to_string(heads) +
                                                     " does not divide hidden = " +
                                                     std::to_string(hidden));
}

// Forward per layer: 24·B·s·h² (QKV, projection, 4h MLP) + 4·B·s²·h (scores, weighted sum);
// logits 2·B·s·h·V. Backward is 2× forward; recomputation adds 1× forward of the layers only.
inline double flops_per_iteration(const transformer_shape& m, double global_batch,
                                  bool recompute) {
  m.validate();
  detail::require_positive("global_batch", global_batch);
  const double b = global_batch, l = m.layers, h = m.hidden, s = m.seq, v = m.vocab;
  if (recompute) return 96 * b * s * l * h * h * (1 + s / (6 * h) + v / (16 * l * h));
  return 72 * b * s * l * h * h * (1 + s / (6 * h) + v / (12 * l * h));
}

inline const char* to_string(offload_kind o) {
  switch (o) {
    case offload_kind::none: return "none";
    case offload_kind::cpu: return "cpu";
    case offload_kind::nvme: return "nvme";
  }
  return "?";
}

inline model_state_bytes model_state_per_gpu(const transformer_shape& m, const parallel_layout& p,
                                             int stage, offload_kind offload, int gpus_per_node) {
  m.validate();
  detail::check_layout(m, p);
  detail::check_stage(stage, offload);
  detail::require_positive("gpus_per_node", gpus_per_node);
  const double psi = detail::params_per_gpu(m, p);
  const double working =
      stage == 3 ? zero3_working_layers * 4.0 * psi / (static_cast<double>(m.layers) / p.pp) : 0;
  const double fp16 = detail::fp16_bytes(psi, stage, p.dp);
  const double optim = detail::optimizer_bytes(psi, stage, p.dp);
  model_state_bytes r;
  switch (offload) {
    case offload_kind::none: r.hbm = fp16 + optim + working; break;
    case offload_kind::cpu:
      r.hbm = fp16 + working;
      r.host_per_node = optim * gpus_per_node;
      break;
    case offload_kind::nvme:
      r.hbm = working;
      r.nvme_per_node = (fp16 + optim) * gpus_per_node;
      break;
  }
  return r;
}

inline double activation_bytes_per_gpu(const transformer_shape& m, const parallel_layout& p,
                                       int micro_batch, int micro_batches, bool recompute) {
  m.validate();
  detail::check_layout(m, p);
  detail::require_positive("micro_batch", micro_batch);
  detail::require_positive("micro_batches", micro_batches);
  const double s = m.seq, b = micro_batch, h = m.hidden, a = m.heads, tp = p.tp;
  const double layers = static_cast<double>(m.layers) / p.pp;
  const double in_flight = std::min(p.pp, micro_batches);
  const double full_layer = s * b * h * (34 + 5 * a * s / h) / tp;
  if (!recompute) return layers * full_layer * in_flight;
  return layers * (2 * s * b * h / tp) * in_flight + full_layer;
}

inline double checkpoint_bytes(double params, double bytes_per_param) {
  detail::require_positive("params", params);
  detail::require_positive("bytes_per_param", bytes_per_param);
  return params * bytes_per_param;
}

inline void cluster_spec::validate() const {
  detail::require_positive("cluster_spec.nodes", nodes);
  detail::require_positive("cluster_spec.gpus_per_node", gpus_per_node);
  detail::require_positive("cluster_spec.hbm_bytes", hbm_bytes);
  detail::require_positive("cluster_spec.host_ram_bytes", host_ram_bytes);
  detail::require_non_negative("cluster_spec.nvme_bytes", nvme_bytes);
  detail::require_non_negative("cluster_spec.nvme_bytes_s", nvme_bytes_s);
  // A link is required only where the cluster has one to use.
  if (nvme_bytes > 0) detail::require_positive("cluster_spec.nvme_bytes_s", nvme_bytes_s);
  if (gpus_per_node > 1)
    detail::require_positive("cluster_spec.intra_node_bytes_s", intra_node_bytes_s);
  if (nodes > 1) detail::require_positive("cluster_spec.inter_node_bytes_s", inter_node_bytes_s);
  detail::require_positive("cluster_spec.gpu_flops", gpu_flops);
  detail::require_positive("cluster_spec.efficiency", efficiency);
  if (efficiency > 1)
    detail::bad_field("cluster_spec.efficiency",
                      "must be at most 1 (got " + detail::number_text(efficiency) + ")");
  detail::require_positive("cluster_spec.host_link_bytes_s", host_link_bytes_s);
}

inline void training_target::validate() const {
  model.validate();
  detail::require_positive("training_target.tokens", tokens);
  detail::require_positive("training_target.global_batch", global_batch);
  detail::require_positive("training_target.micro_batch", micro_batch);
}

inline cluster_choice evaluate_choice(const training_target& t, const cluster_spec& c,
                                      const parallel_layout& p, int stage, offload_kind offload) {
  t.validate();
  c.validate();
  detail::check_layout(t.model, p);
  detail::check_stage(stage, offload);
  const long long gpus = static_cast<long long>(c.nodes) * c.gpus_per_node;
  if (static_cast<long long>(p.dp) * p.pp * p.tp != gpus)
    detail::bad_field("parallel_layout", "dp x pp x tp = " + std::to_string(p.dp) + " x " +
                                             std::to_string(p.pp) + " x " + std::to_string(p.tp) +
                                             " is not the cluster's " + std::to_string(gpus) +
                                             " GPUs");
  if (c.gpus_per_node % p.tp != 0)
    detail::bad_field("parallel_layout.tp", "= " + std::to_string(p.tp) +
                                                " does not divide gpus_per_node = " +
                                                std::to_string(c.gpus_per_node) +
                                                " (tensor parallelism stays inside a node)");
  cluster_choice r;
  r.dp = p.dp;
  r.pp = p.pp;
  r.tp = p.tp;
  r.stage = stage;
  r.offload = offload;
  detail::fill_memory(r, t, c, p);
  detail::fill_fit(r, t, c);
  detail::fill_time(r, t, c);
  return r;
}

inline std::vector<cluster_choice> size_cluster(const training_target& t, const cluster_spec& c) {
  t.validate();
  c.validate();
  const long long gpus = static_cast<long long>(c.nodes) * c.gpus_per_node;
  std::vector<cluster_choice> out;
  for (int tp = 1; tp <= c.gpus_per_node; tp *= 2) {
    if (c.gpus_per_node % tp != 0 || t.model.heads % tp != 0) continue;
    for (int pp = 1; pp <= t.model.layers; ++pp) {
      if (t.model.layers % pp != 0 || gpus % (static_cast<long long>(pp) * tp) != 0) continue;
      const parallel_layout p{static_cast<int>(gpus / (static_cast<long long>(pp) * tp)), pp, tp};
      for (int stage = 0; stage <= 3; ++stage) {
        out.push_back(evaluate_choice(t, c, p, stage, offload_kind::none));
        out.push_back(evaluate_choice(t, c, p, stage, offload_kind::cpu));
        if (stage == 3) out.push_back(evaluate_choice(t, c, p, stage, offload_kind::nvme));
      }
    }
  }
  // Stable, so equal keys keep the enumeration's order (smaller TP, then PP, then stage).
  std::stable_sort(out.begin(), out.end(), [](const cluster_choice& a, const cluster_choice& b) {
    if (a.fits != b.fits) return a.fits;
    if (a.fits) return a.days < b.days;
    if (a.memory_ratio != b.memory_ratio) return a.memory_ratio < b.memory_ratio;
    return a.days < b.days;
  });
  return out;
}

inline double training_days(const training_target& t, double achieved_flops_per_gpu, int gpus) {
  t.validate();
  detail::require_positive("achieved_flops_per_gpu", achieved_flops_per_gpu);
  detail::require_positive("gpus", gpus);
  const double iterations = t.tokens / (t.global_batch * t.model.seq);
  const double f = flops_per_iteration(t.model, t.global_batch, t.recompute);
  return iterations * f / (gpus * achieved_flops_per_gpu) / 86400.0;
}

inline std::string to_string(const std::vector<cluster_choice>& choices, std::size_t max_rows) {
  constexpr double gib = 1024.0 * 1024.0 * 1024.0;
  std::string out =
      "    dp   pp   tp zero offload     m  HBM GiB  host GiB/node  NVMe GiB/node     s/iter"
      "       days  fits\n";
  char buf[320];
  const std::size_t n = std::min(max_rows, choices.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto& r = choices[i];
    std::snprintf(buf, sizeof buf, "%6d %4d %4d %4d %-7s %5d %8.1f %14.1f %14.1f %10.2f %10.1f  ",
                  r.dp, r.pp, r.tp, r.stage, to_string(r.offload), r.micro_batches,
                  r.hbm_bytes / gib, r.host_bytes_per_node / gib, r.nvme_bytes_per_node / gib,
                  r.iteration_s, r.days);
    out += buf;
    out += r.fits ? std::string("yes") : "no: " + r.why;
    out += '\n';
  }
  if (choices.size() > n)
    out += "... " + std::to_string(choices.size() - n) + " more choices\n";
  return out;
}

}  // namespace plan
STRATA_NAMESPACE_END
