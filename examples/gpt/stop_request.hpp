// examples/gpt/stop_request.hpp — SIGINT and SIGTERM as a request to stop after the current
// step, agreed by every rank.
//
// What this is: install_stop_handlers(), which makes SIGINT/SIGTERM set a flag instead of
// killing the process (a second signal of either kind kills it as usual, for a user who means
// it), and stop_agreed(), which every rank calls after each step: the ranks sum their flags
// (a one-float all-reduce), so all of them stop after the same step even when the signal
// reached one process (MPI) or was seen by one thread rank a moment before the others.
// gpt_train then writes a checkpoint and exits 0. What it is not: the checkpoint (train.cpp).
#pragma once

#include <strata/comm/communicator.hpp>

#include <atomic>
#include <csignal>

namespace gpt {

inline std::atomic<int>& stop_signal() {
  static std::atomic<int> s{0};
  return s;
}

extern "C" inline void gpt_on_stop_signal(int sig) {
  stop_signal().store(sig);
  // The next one ends the process the default way.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

inline void install_stop_handlers() {
  static_assert(std::atomic<int>::is_always_lock_free, "a signal handler needs a lock-free flag");
  std::signal(SIGINT, gpt_on_stop_signal);
  std::signal(SIGTERM, gpt_on_stop_signal);
}

/// True on every rank when a stop signal reached any of them (a collective).
template <class Comm>
bool stop_agreed(Comm& comm) {
  float mine = stop_signal().load() != 0 ? 1.0f : 0.0f, any = 0;
  comm.all_reduce(&mine, &any, 1, strata::comm::reduce_op::sum).wait();
  return any > 0;
}

}  // namespace gpt
