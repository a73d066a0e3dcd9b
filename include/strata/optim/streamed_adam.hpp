// strata/optim/streamed_adam.hpp — ZeRO-Infinity's optimizer step: Adam's state on NVMe,
// streamed through a fixed set of pinned buffers.
//
// What lives here: streamed_adam, which keeps, for a list of parameter groups, the fp32 master
// weights and both Adam moments on the NVMe tier (the context's nvme_store) and runs a step by
// streaming them through four pinned buffer sets, a sub-group at a time. What does not: the
// arithmetic (adam.hpp: adam_update, the same bits as the in-memory step), gradient norms and
// loss scaling (grad_stats.hpp, loss_scaler.hpp), Adam for the ZeRO executor (zero_adam.hpp,
// which uses this class for an NVMe home, with the executor's parameters as master weights).
//
//   std::vector<optim::group_spec> groups = {{"embed", 50304 * 768}, {"h0", 7'087'872}, ...};
//   optim::streamed_adam opt(ctx, groups, {.sub_group = 4 << 20});  // 4 sets x 4 Mi x 12 B
//   for (std::size_t g = 0; g < groups.size(); ++g) opt.set_master(g, initial[g]);
//   auto k = optim::adam_step_scalars::make(params, opt.t() + 1, unscale * clip);
//   opt.step(k, grads, bf16_copies);   // grads: one span per group (f32 / bf16 / f16)
//
// The pipeline. The groups are laid end to end and cut into sub-groups of `sub_group`
// elements, across group boundaries (one pipeline per step, however small the groups). While
// sub-group c is updated on the calling thread (adam_update, host SIMD), sub-group c+1 is read
// into the next buffer set (io-read queues, one per array) and sub-group c-1 written from the
// previous one (io-write queues), so a step costs max(IO, compute) rather than their sum. The
// fourth set is the slack: sub-group c+2 is read while c is updated and c-1 still writes, so an
// update that takes as long as a sub-group's IO does not leave the drive idle (with three sets,
// bench adam-nvme --simd=scalar --threads=1 measured 1.25 x max(IO, update); with four, 1.10).
// Four sets are all it ever holds: pinned memory is 4 x sub_group x (master, m, v) x 4 bytes
// whatever the model size. In a sub-group, each group's piece starts on a checksum block of its NVMe tensors
// (the store reads and writes from block boundaries), so a group's piece may leave up to a block of
// a set unused: many groups much smaller than a block waste buffer space, not correctness.
//
// Transactions. A step writes a new version of every tensor (new store handles, each written
// through a copy-on-write write_txn) while it reads the current ones; only when every write
// and every commit succeeded does the new version replace the current one (an in-memory swap
// that cannot fail). So an error anywhere in the step — an IO error, a checksum mismatch, an
// exception from the update — leaves the previous step's master, m and v current and readable,
// and reaches the caller naming the group, the tensor and the offset; the optimizer stays
// usable, and a retried step starts from the same state. During a step the NVMe tier holds
// both versions (planned). The parameter copies are written as the step goes: after a failed
// step they are partly new and should be written again by the retry.
//
// Memory: plan() lists the pinned buffer sets, the store's bounce buffers and the NVMe bytes
// (both versions); a plan that does not fit the context's budgets is refused in the
// constructor, before anything is allocated. Not thread-safe: one thread drives a
// streamed_adam (its own IO runs on its own queues).
#pragma once

#include <strata/exec/context.hpp>
#include <strata/exec/event.hpp>
#include <strata/exec/work_queue.hpp>
#include <strata/optim/adam.hpp>
#include <strata/schedule/memory_plan.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace optim {

/// One parameter group: its name (in messages and NVMe tensor names) and element count.
struct group_spec {
  std::string name;
  std::size_t numel = 0;
};

struct streamed_adam_config {
  /// Elements per sub-group: each of the four buffer sets holds this many of the master
  /// weights, m and v. A multiple of the NVMe checksum block / 4 (context_config::
  /// nvme_checksum_block; 1 MiB = 256 Ki floats by default), so that every sub-group starts on
  /// a block of every tensor. Sets are never larger than all groups together need.
  std::size_t sub_group = std::size_t{1} << 20;
  /// false: the caller owns the master weights and hands them to every update (zero_adam: the
  /// executor's fp32 parameters); only m and v live here, and the sets hold (m, v).
  bool master_on_nvme = true;
  /// The update's code path and threads (adam_update's level and threads).
  simd_level simd = simd_level::automatic;
  unsigned threads = 0;
};

class streamed_adam {
public:
  using handle = io::nvme_store::handle;

  /// Creates the state of `groups` on the context's NVMe tier (config_error without one):
  /// m and v read as zeros, and so do master weights until set_master. Refuses, before
  /// allocating anything, a sub_group that is not a multiple of the checksum block's floats
  /// (config_error) and a plan that exceeds a budget (out_of_budget with the numbers).
  streamed_adam(context& ctx, std::vector<group_spec> groups,
                const streamed_adam_config& config = {}, std::string name = "streamed adam");
  /// Waits for its IO queues; frees the NVMe tensors and buffers.
  ~streamed_adam();
  streamed_adam(const streamed_adam&) = delete;
  streamed_adam& operator=(const streamed_adam&) = delete;

  const std::string& name() const noexcept { return name_; }
  std::size_t size() const noexcept { return groups_.size(); }
  const group_spec& group(std::size_t g) const { return groups_.at(g); }
  /// Steps applied so far (a failed step does not count). The next step is t() + 1.
  std::uint64_t t() const noexcept { return t_; }
  /// Elements per sub-group, as used (the configured size, or less when the groups are small).
  std::size_t sub_group() const noexcept { return sub_; }
  bool master_on_nvme() const noexcept { return own_master_; }
  const memory_plan& plan() const noexcept { return plan_; }
  /// The lines this optimizer would add to a plan for `groups` in `ctx` (pinned buffer sets,
  /// the store's bounce buffers, the NVMe bytes), without what the context already holds: for
  /// callers that plan a larger whole (zero_adam). config_error for a bad sub_group.
  static memory_plan plan_for(context& ctx, const std::vector<group_spec>& groups,
                              const streamed_adam_config& config,
                              const std::string& name = "streamed adam");

  /// Sets group g's master weights (an atomic write of the whole tensor).
  void set_master(std::size_t g, std::span<const float> values);
  /// Group g's current master weights, m and v (read from NVMe, checksums checked).
  std::vector<float> master(std::size_t g);
  std::vector<float> m(std::size_t g);
  std::vector<float> v(std::size_t g);
  /// Sets group g's m and v (a checkpoint's restore): each an atomic write of the whole tensor.
  void set_moments(std::size_t g, std::span<const float> m, std::span<const float> v);
  /// The store handles of group g's current m and v (which = 0, 1): a background reader
  /// (a checkpoint's snapshot) reads them while no update of g runs.
  handle moment_handle(std::size_t g, int which) {
    settle(g);
    return current_.at(g)[which == 0 ? m_kind : v_kind];
  }
  /// Sets the count of applied steps (a checkpoint's restore; the next step is t + 1).
  void set_t(std::uint64_t t) noexcept { t_ = t; }

  /// One step over every group with the same scalars (made for t() + 1); grads[g] and, unless
  /// P is no_copy, copies[g] have group g's numel elements (host memory). Advances t() when it
  /// succeeded; see the top for what a failure leaves. Needs master_on_nvme.
  template <class G, class P = no_copy>
  void step(const adam_step_scalars& k, const std::vector<std::span<const G>>& grads,
            const std::vector<std::span<P>>& copies = {});
  /// The same with scalars per group (learning rate, weight decay per group).
  template <class G, class P = no_copy>
  void step(std::span<const adam_step_scalars> k, const std::vector<std::span<const G>>& grads,
            const std::vector<std::span<P>>& copies = {});

  /// For an executor that hands over one group at a time, with master weights of its own
  /// (master_on_nvme false): updates `master` and group g's m and v in place, streaming only
  /// g's sub-groups, and commits g's new m and v when it is done (or, on failure, leaves them
  /// as they were). t() does not change: the caller counts steps.
  template <class G>
  void update_group(std::size_t g, const adam_step_scalars& k, std::span<float> master,
                    std::span<const G> grad);

  /// update_group's two-phase form, for a caller whose master weights are written elsewhere
  /// after the update (zero_adam with the executor's NVMe-homed parameters): the new m and v
  /// of group g are written and committed as new versions but not made current. Then
  /// adopt_group_after(g, written) with the event of the caller's write of the new masters:
  /// when it has succeeded the new versions become current, and when it failed they are
  /// dropped — so the group's masters and moments move to the new step together or neither
  /// does. Which happens is settled at the next call that touches group g (m(), v(), an update,
  /// ...) or sooner, when a later prepare finds the write ended. Without adopt_group_after the
  /// new versions become current at that next call.
  template <class G>
  void prepare_group(std::size_t g, const adam_step_scalars& k, std::span<float> master,
                     std::span<const G> grad);
  void adopt_group_after(std::size_t g, event written);  // nothing prepared for g: no-op

private:
  struct prepared_versions {
    std::array<handle, 3> fresh{0, 0, 0};
    event after;           // the caller's write of the masters (default: none to wait for)
  };
  void check_group_update(std::size_t g, std::size_t masters, std::size_t grads) const;
  // Group g's prepared versions made current (the write succeeded) or dropped (it failed).
  void settle(std::size_t g) noexcept;
  void settle_ended() noexcept;  // every group whose write has ended
  void settle_all() noexcept;
  void adopt(std::size_t g, const std::array<handle, 3>& fresh) noexcept;
  struct piece {
    std::size_t group, offset, count, pos;  // elements: in the group, how many, in the set
  };
  enum state_kind : std::size_t { master_kind = 0, m_kind = 1, v_kind = 2 };

  static std::size_t sub_group_for(std::size_t block_elems, const std::vector<group_spec>& groups,
                                   const streamed_adam_config& config, const std::string& name);
  std::vector<std::vector<piece>> sub_groups(std::size_t first, std::size_t last) const;
  std::size_t kinds() const noexcept { return own_master_ ? 3 : 2; }
  state_kind kind_at(std::size_t a) const noexcept {
    return static_cast<state_kind>(own_master_ ? a : a + 1);
  }
  float* array(std::size_t set, std::size_t a) const noexcept;
  static const char* kind_name(state_kind k) noexcept;
  std::string tensor_name(std::size_t g, state_kind k) const;
  std::vector<float> read_whole(std::size_t g, state_kind k);
  template <class Err>
  [[noreturn]] void rethrow_as(const Err& e, const std::string& where) const;
  void drain() noexcept;

  // The pipeline over groups [first, last): k_of(g), grad_of(g) -> const G*, copy_of(g) -> P*
  // (nullptr: none), master_of(g) -> float* (external masters only). Its steps follow.
  template <class G, class P, class K, class Grads, class Copies, class Masters>
  void run(std::size_t first, std::size_t last, K&& k_of, Grads&& grad_of, Copies&& copy_of,
           Masters&& master_of);
  // The same up to the commit of the new versions, which it returns (per group from first),
  // without making them current.
  template <class G, class P, class K, class Grads, class Copies, class Masters>
  std::vector<std::array<handle, 3>> run_prepared(std::size_t first, std::size_t last, K&& k_of,
                                                  Grads&& grad_of, Copies&& copy_of,
                                                  Masters&& master_of);

  // One run's state: its sub-groups, the new version of every tensor (a fresh handle and its
  // copy-on-write transaction) and, per sub-group and array, the events of its read and write.
  // It outlives every IO it submits: a run waits for them, or drains the queues on failure.
  struct run_state {
    std::size_t first, last;
    std::string step_name;
    std::vector<std::vector<piece>> chunks;
    std::vector<std::array<handle, 3>> fresh;
    std::vector<std::optional<io::nvme_store::write_txn>> txns;  // (group - first) x 3 kinds
    std::vector<std::array<event, 3>> read_done, written;
    io::nvme_store::write_txn& txn(std::size_t g, state_kind k) {
      return *txns[(g - first) * 3 + k];
    }
  };
  // New handles and open transactions for every tensor of groups [first, last).
  void begin_versions(run_state& r);
  // Sub-group c's array a into its set, on that array's reader, after `after`.
  void start_read(run_state& r, std::size_t c, std::size_t a, std::vector<event> after);
  // Sub-group c's array a from its set into the new version, on that array's writer.
  void start_write(run_state& r, std::size_t c, std::size_t a);
  // Adam on sub-group c, in its set (the reads have arrived).
  template <class G, class P, class K, class Grads, class Copies, class Masters>
  void update_sub_group(run_state& r, std::size_t c, K& k_of, Grads& grad_of, Copies& copy_of,
                        Masters& master_of);
  // Every write has ended: commit each new version (a failure leaves the current ones).
  void commit_versions(run_state& r);
  // After a failure: nothing of the run may still touch the sets; the new versions go.
  void abandon_versions(run_state& r) noexcept;
  // Runs io(), giving an io_error or format_error the place it happened (`at`), its type kept.
  template <class F>
  void guarded(F&& io, const std::string& at) const;
  // "step N, sub-group c: <doing> group 'g', tensor 't', elements [a, b) (byte offset o)".
  std::string where(const run_state& r, std::size_t c, const piece& p, state_kind k,
                    const char* doing) const;

  context& ctx_;
  std::string name_;
  std::vector<group_spec> groups_;
  bool own_master_;
  simd_level simd_;
  unsigned threads_;
  std::size_t block_elems_ = 0;  // floats per checksum block
  std::size_t sub_ = 0;          // elements per sub-group
  std::size_t nvme_reserved_ = 0;
  std::uint64_t t_ = 0;
  memory_plan plan_;
  std::vector<std::array<handle, 3>> current_;  // per group: master, m, v (0: none)
  std::vector<std::optional<prepared_versions>> prepared_;  // per group: prepare_group's
  static constexpr std::size_t set_count = 4;
  std::vector<buffer> sets_;                    // set_count x (kinds x sub_) floats, pinned
  // One reader and one writer per array (master, m, v): the arrays of a sub-group move at
  // once, so one array's checksums (which the store computes on the calling thread) overlap
  // another's IO, and the drive sees several requests at a time. Last: they stop first.
  std::vector<std::unique_ptr<work_queue>> readers_, writers_;
};

}  // namespace optim
STRATA_NAMESPACE_END

#include <strata/optim/detail/streamed_adam.hpp>
