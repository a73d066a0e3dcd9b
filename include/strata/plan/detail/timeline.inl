// strata/plan/detail/timeline.inl — the bodies of plan::timeline (plan/timeline.hpp).
#pragma once

#include <algorithm>
#include <limits>

STRATA_NAMESPACE_BEGIN
namespace plan {

inline timeline::task_id timeline::add(lane on, double seconds, std::vector<task_id> after,
                                       std::string what, unsigned held) {
  if (!(seconds >= 0))
    throw config_error("plan::timeline: task '" + what + "' lasts " + std::to_string(seconds) +
                       " s; a duration is >= 0");
  for (task_id a : after)
    if (a >= tasks_.size())
      throw config_error("plan::timeline: task '" + what + "' waits for task " +
                         std::to_string(a) + ", which does not exist yet (" +
                         std::to_string(tasks_.size()) + " tasks)");
  tasks_.push_back({on, seconds, std::move(after), std::move(what), held});
  ran_ = false;
  return tasks_.size() - 1;
}

inline void timeline::run() {
  // Each lane's tasks in the order added; heads[l] is the next one to place.
  std::array<std::vector<task_id>, lane_count> order;
  for (task_id t = 0; t < tasks_.size(); ++t) {
    tasks_[t].done = false;
    order[static_cast<std::size_t>(tasks_[t].on)].push_back(t);
  }
  std::array<std::size_t, lane_count> heads{};
  std::array<double, lane_count> lane_free{};
  std::array<task_id, lane_count> lane_last;
  lane_last.fill(npos);
  std::array<double, resource_count> held_free{};
  std::array<task_id, resource_count> held_last;
  held_last.fill(npos);
  for (std::size_t placed_count = 0; placed_count < tasks_.size(); ++placed_count) {
    task_id best = npos;
    double best_start = std::numeric_limits<double>::infinity(), best_ready = best_start;
    for (std::size_t l = 0; l < lane_count; ++l) {
      if (heads[l] == order[l].size()) continue;
      const task_id t = order[l][heads[l]];
      const task& k = tasks_[t];
      double r = lane_free[l];  // when it could start but for the shared resources
      bool ready = true;
      for (task_id a : k.after) {
        if (!tasks_[a].done) {
          ready = false;
          break;
        }
        r = std::max(r, tasks_[a].end);
      }
      if (!ready) continue;
      double s = r;
      for (std::size_t h = 0; h < resource_count; ++h)
        if (k.held & (1u << h)) s = std::max(s, held_free[h]);
      if (s < best_start || (s == best_start && (r < best_ready || (r == best_ready && t < best))))
        best = t, best_start = s, best_ready = r;
    }
    if (best == npos)
      throw config_error("plan::timeline: the tasks wait for each other in a cycle (a task "
                         "waits for one added later on its own lane)");
    task& k = tasks_[best];
    const std::size_t l = static_cast<std::size_t>(k.on);
    k.start = best_start;
    k.end = best_start + k.seconds;
    k.done = true;
    k.lane_prev = lane_last[l];
    lane_last[l] = best;
    lane_free[l] = k.end;
    ++heads[l];
    for (std::size_t h = 0; h < resource_count; ++h)
      if (k.held & (1u << h)) {
        k.held_prev[h] = held_last[h];
        held_last[h] = best;
        held_free[h] = k.end;
      }
  }
  ran_ = true;
}

inline const timeline::task& timeline::placed(task_id t) const {
  if (!ran_) throw config_error("plan::timeline: run() before reading the placed tasks");
  return tasks_.at(t);
}

inline double timeline::busy(lane l, double from, double to) const {
  double sum = 0;
  for (task_id t = 0; t < tasks_.size(); ++t)
    if (placed(t).on == l) sum += std::max(0.0, std::min(to, tasks_[t].end) - std::max(from, tasks_[t].start));
  return sum;
}

inline double timeline::held_busy(holds r, double from, double to) const {
  double sum = 0;
  for (task_id t = 0; t < tasks_.size(); ++t)
    if (placed(t).held & r)
      sum += std::max(0.0, std::min(to, tasks_[t].end) - std::max(from, tasks_[t].start));
  return sum;
}

inline double timeline::makespan() const {
  double m = 0;
  for (task_id t = 0; t < tasks_.size(); ++t) m = std::max(m, placed(t).end);
  return m;
}

inline std::vector<timeline::task_id> timeline::critical_path(task_id last) const {
  std::vector<task_id> path;
  for (task_id t = last; t != npos;) {
    path.push_back(t);
    const task& k = placed(t);
    task_id prev = npos;
    double latest = -1;
    auto consider = [&](task_id p) {
      if (p != npos && tasks_[p].end > latest && tasks_[p].end <= k.start) latest = tasks_[p].end, prev = p;
    };
    for (task_id a : k.after) consider(a);
    consider(k.lane_prev);
    for (task_id p : k.held_prev) consider(p);
    t = k.start > 0 ? prev : npos;
  }
  std::reverse(path.begin(), path.end());
  return path;
}

}  // namespace plan
STRATA_NAMESPACE_END
