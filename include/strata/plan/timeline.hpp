// strata/plan/timeline.hpp — the planner's model of the queues: tasks on in-order lanes.
//
// What lives here: lane (the queues the trace shows: compute, h2d, d2h, io-read, io-write,
// collectives, optimizer), timeline (tasks with a lane, a duration and the tasks they wait
// for; run() places each at its earliest start, as the library's in-order queues do) and its
// answers: each task's start and end, each lane's busy time, the makespan, and the tasks on
// the critical path. Two shared resources may be held beside a lane: the NVMe device (reads
// and writes share its bandwidth: the store's io-read and io-write queues reach the same disk)
// and, in a host build, the CPU (the compute kernels use every core, and so do Adam's pass and
// the memcpy behind host copies and thread collectives): tasks holding the same resource never
// overlap.
// What does not: what the tasks are (plan/train_time.hpp and plan/infer_time.hpp build them
// from a model and a calibration), memory (the executors' own plans).
//
// Scheduling: every lane runs its tasks in the order they were added (the library's queues are
// in order); among the lanes' first unplaced tasks whose waits are placed, the one that can
// start earliest goes next (ties: the one that was ready first — the disk serves its requests
// first come, first served — then the one added first). This is a list schedule of a DAG onto
// serial servers — the same structure as the trace, so a prediction can be laid beside one.
#pragma once

#include <strata/core/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace plan {

enum class lane : std::uint8_t { compute, h2d, d2h, io_read, io_write, collectives, optimizer };
inline constexpr std::size_t lane_count = 7;

constexpr const char* lane_name(lane l) noexcept {
  constexpr std::array<const char*, lane_count> names{
      "compute", "h2d", "d2h", "io-read", "io-write", "collectives", "optimizer"};
  return names[static_cast<std::size_t>(l)];
}

/// The shared resources a task may hold beside its lane (a bit mask).
enum holds : unsigned { holds_nothing = 0, holds_disk = 1, holds_cpu = 2 };
inline constexpr std::size_t resource_count = 2;

class timeline {
public:
  using task_id = std::size_t;

  /// A task of `seconds` on lane `on`, after every task in `after` has ended, holding the
  /// shared resources `held` (holds_disk | holds_cpu) for its whole duration. Returns its id.
  task_id add(lane on, double seconds, std::vector<task_id> after, std::string what,
              unsigned held = holds_nothing);

  /// Places every task (see the top). Adding after run() and running again re-places all.
  void run();

  double start(task_id t) const { return placed(t).start; }
  double end(task_id t) const { return placed(t).end; }
  /// Seconds lane l is busy between `from` and `to` (tasks clipped to that window).
  double busy(lane l, double from = 0, double to = 1e300) const;
  /// Seconds the shared resource `r` (holds_disk or holds_cpu) is busy between `from` and `to`.
  double held_busy(holds r, double from = 0, double to = 1e300) const;
  double makespan() const;
  std::size_t size() const noexcept { return tasks_.size(); }
  /// The task's label ("forward L3", "read L3", ...): the name its span has in the trace.
  const std::string& what(task_id t) const { return tasks_.at(t).what; }
  /// The chain of tasks that decided when `last` ended: each one's predecessor is the task
  /// (a wait, the lane's previous task or a shared resource's) that ended last before it
  /// started.
  std::vector<task_id> critical_path(task_id last) const;

private:
  struct task {
    lane on;
    double seconds;
    std::vector<task_id> after;
    std::string what;
    unsigned held;
    double start = 0, end = 0;
    bool done = false;
    task_id lane_prev = npos;
    std::array<task_id, resource_count> held_prev{npos, npos};
  };
  static constexpr task_id npos = ~task_id{0};
  const task& placed(task_id t) const;
  std::vector<task> tasks_;
  bool ran_ = false;
};

}  // namespace plan
STRATA_NAMESPACE_END

#include <strata/plan/detail/timeline.inl>
