// strata/plan/detail/train_time.inl — the body of plan::predict_step (plan/train_time.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>

STRATA_NAMESPACE_BEGIN
namespace plan {

inline void train_schedule::validate() const {
  auto bad = [](const std::string& what) { throw config_error("plan::train_schedule: " + what); };
  if (stage != 0 && stage != 3) bad("stage must be 0 or 3 (the executor's deferred and fused "
                                     "schedules), got " + std::to_string(stage));
  if (world < 1) bad("world must be >= 1, got " + std::to_string(world));
  if (depth < 0) bad("depth must be >= 0, got " + std::to_string(depth));
  if (working_bytes != 2 && working_bytes != 4)
    bad("working_bytes must be 4 (fp32) or 2 (bf16), got " + std::to_string(working_bytes));
  if (working_bytes == 2 && (stage != 3 || home == state_home::compute))
    bad("bf16 working copies are for stage 3 with a host or nvme home");
  if (accum < 1) bad("accum must be >= 1, got " + std::to_string(accum));
}

namespace detail {

// The rates predict_step uses, each checked once: a calibration without one is an error
// naming it, not a division by zero.
struct step_rates {
  double copy_in, copy_out, triad, gather;
  const calibration& cal;
  // NVMe rates for one tensor of `bytes` (the calibration's, by size).
  double read_at(std::size_t bytes) const { return cal.nvme_read_rate(bytes); }
  double write_at(std::size_t bytes) const { return cal.nvme_write_rate(bytes); }
  step_rates(const train_schedule& s, const calibration& c) : cal(c) {
    auto need = [](double v, const char* what) {
      if (!(v > 0))
        throw config_error(std::string("plan::predict_step: the calibration has no ") + what +
                           " (measure it: strata-plan calibrate)");
      return v;
    };
    // copy_bytes_s counts both sides of a memcpy: a copy of X bytes moves 2X.
    copy_in = s.gpu ? need(c.h2d_bytes_s, "h2d_bytes_s") : need(c.copy_bytes_s, "copy_bytes_s") / 2;
    copy_out = s.gpu ? need(c.d2h_bytes_s, "d2h_bytes_s") : need(c.copy_bytes_s, "copy_bytes_s") / 2;
    triad = need(c.triad_bytes_s, "triad_bytes_s");
    gather = 0;
    if (s.home == state_home::nvme) {  // read_at / write_at fall back on these
      need(c.nvme_read_bytes_s, "nvme_read_bytes_s");
      need(c.nvme_write_bytes_s, "nvme_write_bytes_s");
    }
    if (s.world > 1) gather = need(c.allgather_rate(s.world), "all-gather rate");
  }
};

// Lays the tasks of `steps` steps onto a timeline and remembers where each step ended.
class step_builder {
public:
  using id = timeline::task_id;
  step_builder(const std::vector<layer_cost>& layers, const train_schedule& s, const calibration& c)
      : L_(layers), s_(s), r_(s, c), updated_(layers.size(), npos) {}

  void add_step() {
    for (int a = 0; a < s_.accum; ++a) {
      walk(false, a);
      walk(true, a);
    }
    if (!s_.watched) read_grads_for_norm();
    updates();
    step_end_.push_back(s_.deferred ? last_compute_ : last_update_);
  }
  timeline& t() { return t_; }
  const std::vector<id>& step_ends() const { return step_end_; }

  // Per step: NVMe bytes, and the summed work of each kind.
  std::size_t read_bytes = 0, write_bytes = 0;
  double io_s = 0, copy_s = 0;

private:
  static constexpr id npos = ~id{0};
  std::size_t padded(std::size_t i) const {
    const std::size_t w = std::size_t(s_.world);
    return (L_[i].numel + w - 1) / w * w;
  }
  std::size_t shard(std::size_t i) const { return padded(i) / std::size_t(s_.world); }
  std::size_t part(std::size_t i) const { return s_.stage == 3 ? shard(i) : L_[i].numel; }
  // The step whose bytes and summed work are reported: the second, the first that runs an
  // earlier step's deferred update (the bytes of every later one are the same).
  bool counted_step() const { return step_end_.size() == 1; }

  id copy(lane on, double bytes, std::vector<id> after, const std::string& what) {
    const double sec = bytes / (on == lane::h2d ? r_.copy_in : r_.copy_out);
    if (counted_step()) copy_s += sec;
    return on_cpu(on, sec, std::move(after), what);
  }
  // CPU work on lane `on`: one task, or in a host build slices of cpu_slice_s holding the
  // cores, so that work on other lanes interleaves with it as the OS time-shares the cores.
  id on_cpu(lane on, double sec, std::vector<id> after, const std::string& what) {
    if (!cpu_) return t_.add(on, sec, std::move(after), what);
    const int slices = std::max(1, int(std::ceil(sec / cpu_slice_s)));
    id last = npos;
    for (int k = 0; k < slices; ++k) {
      last = t_.add(on, sec / slices, k == 0 ? std::move(after) : std::vector<id>{last}, what, cpu_);
    }
    return last;
  }
  // What the store moves to read or write a whole tensor of `bytes` bytes.
  std::size_t read_cost(std::size_t bytes) const {
    return io::nvme_store::read_cost(bytes, 0, bytes, s_.nvme_align, s_.checksum_block);
  }
  std::size_t write_cost(std::size_t bytes) const {
    return io::nvme_store::write_cost(bytes, s_.nvme_align, s_.checksum_block);
  }
  // A whole tensor of `bytes` bytes read or written through the store.
  id nvme(bool write, std::size_t bytes, std::vector<id> after, const std::string& what) {
    const std::size_t moved = write ? write_cost(bytes) : read_cost(bytes);
    const double sec = double(moved) / (write ? r_.write_at(bytes) : r_.read_at(bytes));
    if (counted_step()) (write ? write_bytes : read_bytes) += moved, io_s += sec;
    return t_.add(write ? lane::io_write : lane::io_read, sec, std::move(after), what, holds_disk);
  }
  id collective(double bytes, std::vector<id> after, const std::string& what) {
    // The gathered bytes' rate; one rank's collective is a copy (a memcpy in a host build).
    const double sec = s_.world > 1 ? bytes / r_.gather : s_.gpu ? 0.0 : bytes / r_.copy_in;
    return on_cpu(lane::collectives, sec, std::move(after), what);
  }

  // Layer i's parameters on the compute tier, after `after`; npos when they are there already.
  // `from_update`: a forward's fetch under a deferred update with an NVMe home, which copies
  // the update's output instead of reading it back (zero_executor: fetch_from_update).
  id fetch(std::size_t i, std::vector<id> after, bool from_update) {
    if (s_.home == state_home::compute && s_.stage == 0) return after.empty() ? npos : join(after);
    const std::size_t wb = s_.working_bytes;
    const std::string n = "L" + std::to_string(i);
    if (s_.home == state_home::nvme && !from_update)
      after = {nvme(false, shard(i) * wb, after, "read " + n)};
    if (s_.home != state_home::compute)
      after = {copy(lane::h2d, double((s_.stage == 3 ? shard(i) : padded(i)) * wb), after, "h2d " + n)};
    if (s_.stage == 3) return collective(double(padded(i) * wb), after, "all-gather " + n);
    return after.front();
  }
  id join(const std::vector<id>& after) { return t_.add(lane::h2d, 0, after, "ready"); }

  void walk(bool backward, int micro) {
    const std::size_t n = L_.size(), d = std::size_t(s_.depth);
    std::vector<id> fetched(n, npos), computed(n, npos), grad_out(n, npos);
    const id walk_start = last_compute_;  // the call: after the previous walk's compute
    for (std::size_t p = 0; p < n; ++p) {
      const std::size_t i = backward ? n - 1 - p : p;
      std::vector<id> wait;
      if (p >= d + 1) wait.push_back(computed[backward ? i + d + 1 : i - d - 1]);
      else if (walk_start != npos) wait.push_back(walk_start);
      const bool after_update = !backward && updated_[i] != npos;  // a deferred update
      if (after_update) wait.push_back(updated_[i]);
      fetched[i] = fetch(i, wait, after_update && s_.home == state_home::nvme && s_.stage == 3);
      std::vector<id> go{};
      if (fetched[i] != npos) go.push_back(fetched[i]);
      if (last_compute_ != npos) go.push_back(last_compute_);
      if (backward && p >= 2) go.push_back(grad_out[backward ? i + 2 : i - 2]);  // grad buffers
      const double sec = backward ? L_[i].backward_s : L_[i].forward_s;
      computed[i] = last_compute_ =
          on_cpu(lane::compute, sec, go, (backward ? "backward L" : "forward L") + std::to_string(i));
      if (backward) grad_out[i] = gradient_home(i, micro > 0);
    }
    if (!backward) std::fill(updated_.begin(), updated_.end(), npos);  // consumed
  }

  // Layer i's gradient: reduced over the ranks, copied home, written (or added) there.
  id gradient_home(std::size_t i, bool accumulate) {
    const std::string n = "L" + std::to_string(i);
    const std::size_t g = (s_.stage == 3 ? shard(i) : padded(i)) * 4;
    id r = collective((s_.stage == 3 ? 1.0 : 2.0) * padded(i) * 4.0, {last_compute_},
                      (s_.stage == 3 ? "reduce-scatter " : "all-reduce ") + n);
    // Home on the compute tier: a copy there (a memcpy in a host build's emulated device).
    if (s_.home == state_home::compute) return s_.gpu ? r : copy(lane::d2h, double(g), {r}, "write grad " + n);
    r = copy(lane::d2h, double(g), {r}, "d2h grad " + n);
    if (s_.home == state_home::nvme) {
      if (accumulate) r = nvme(false, g, {r}, "read grad " + n);
      return nvme(true, g, {r}, "write grad " + n);
    }
    return r;
  }

  // An NVMe update of a part of e elements: it reads the fp32 shard and the gradient whole,
  // m and v sub-group by sub-group; it writes the shard, new versions of m and v (and the
  // bf16 copy) whole.
  std::pair<std::size_t, std::size_t> update_bytes(std::size_t e) const {
    if (s_.home != state_home::nvme || e == 0) return {0, 0};
    const std::size_t f = 4, piece = std::max<std::size_t>(s_.sub_group, 1) * f, whole = e * f;
    std::size_t in = 2 * read_cost(whole);
    for (std::size_t at = 0; at < whole; at += piece)
      in += 2 * io::nvme_store::read_cost(whole, at, std::min(piece, whole - at), s_.nvme_align,
                                          s_.checksum_block);
    std::size_t out = 3 * write_cost(whole);
    if (s_.working_bytes == 2) out += write_cost(e * 2);
    return {in, out};
  }

  void read_grads_for_norm() {
    if (s_.home != state_home::nvme) return;  // a pass over memory: small beside the step
    for (std::size_t i = 0; i < L_.size(); ++i)
      last_norm_ = nvme(false, part(i) * 4, {last_compute_}, "norm: read grad L" + std::to_string(i));
  }

  // Every layer's update in layer order: on the optimizer queue (deferred) or in step().
  void updates() {
    const lane on = s_.deferred ? lane::optimizer : lane::compute;
    id prev = last_norm_ != npos ? last_norm_ : last_compute_;
    const bool nvme = s_.home == state_home::nvme, narrow = s_.working_bytes == 2;
    for (std::size_t i = 0; i < L_.size(); ++i) {
      const std::size_t total = part(i);
      const auto [in, out] = update_bytes(total);
      if (nvme && counted_step()) read_bytes += in, write_bytes += out;
      // An NVMe update streams sub-group by sub-group (its IO in proportion); a memory home's
      // is one pass.
      const std::size_t piece = nvme ? std::max<std::size_t>(s_.sub_group, 1) : std::max<std::size_t>(total, 1);
      for (std::size_t done = 0; done < std::max<std::size_t>(total, 1); done += piece) {
        const double e = double(std::min(piece, total - std::min(done, total)));
        const double share = total ? e / double(total) : 1.0;
        const double adam = e * (narrow ? 34.0 : 28.0) / r_.triad;  // p g m v in, p m v out
        const std::string what = "update L" + std::to_string(i);
        if (nvme) {  // the sub-group's reads and writes, then its Adam pass
          const std::size_t at = std::min(piece, total) * 4;  // a sub-group's tensors
          const double sec = share * (double(in) / r_.read_at(at) + double(out) / r_.write_at(at));
          if (counted_step()) io_s += sec;
          prev = t_.add(on, sec, {prev}, what + " IO", holds_disk);
        }
        prev = cpu_ ? on_cpu(on, adam, {prev}, what) : t_.add(on, adam, {prev}, what);
      }
      if (s_.deferred) updated_[i] = prev;
    }
    last_update_ = prev;
    last_norm_ = npos;
  }

  const std::vector<layer_cost>& L_;
  const train_schedule& s_;
  step_rates r_;
  timeline t_;
  std::vector<id> updated_;
  std::vector<id> step_end_;
  id last_compute_ = npos, last_update_ = npos, last_norm_ = npos;
  // A host build's compute, copies and collectives run on the cores Adam's pass uses too.
  unsigned cpu_ = s_.gpu ? holds_nothing : holds_cpu;
  static constexpr double cpu_slice_s = 2e-3;  // the OS's time slices, roughly
};

}  // namespace detail

inline step_prediction predict_step(const std::vector<layer_cost>& layers,
                                    const train_schedule& s, const calibration& c) {
  s.validate();
  if (layers.empty()) throw config_error("plan::predict_step: no layers");
  detail::step_builder b(layers, s, c);
  // Three steps: the first has no deferred update before its forward; the third is steady.
  for (int k = 0; k < 3; ++k) b.add_step();
  timeline& t = b.t();
  t.run();
  const auto& ends = b.step_ends();
  const double from = t.end(ends[1]), to = t.end(ends[2]);
  step_prediction p;
  p.seconds = to - from;
  for (const auto& l : layers) p.compute_bound_s += s.accum * (l.forward_s + l.backward_s);
  p.nvme_read_bytes = b.read_bytes, p.nvme_write_bytes = b.write_bytes;
  if (s.home == state_home::nvme)
    p.io_bound_s = b.io_s;
  p.copy_s = b.copy_s;
  for (std::size_t l = 0; l < lane_count; ++l) p.busy[l] = t.busy(static_cast<lane>(l), from, to);
  char why[128];
  if (p.io_bound_s >= p.compute_bound_s && p.io_bound_s >= p.copy_s)
    std::snprintf(why, sizeof why, "IO-bound: %.2f GB read, %.2f GB written per step",
                  double(b.read_bytes) / 1e9, double(b.write_bytes) / 1e9);
  else if (p.copy_s > p.compute_bound_s)
    std::snprintf(why, sizeof why, "copy-bound at %.2f GB/s",
                  (s.gpu ? c.h2d_bytes_s : c.copy_bytes_s / 2) / 1e9);
  else
    std::snprintf(why, sizeof why, "compute-bound");
  p.bound = why;
  return p;
}

}  // namespace plan
STRATA_NAMESPACE_END
