// needs: nlohmann_json
// ctest-timeout: 600
// A crash at any instant leaves the last committed checkpoint loadable — the kill -9 drill, with
// no timing: a child process commits checkpoints 1, 2, 3, 4 of known content (keep 2); the
// commit's phase hook stops it at its k-th phase of checkpoint c and tells the parent through a
// pipe, and the parent SIGKILLs it there. For every (c, k) the parent opens the root (which
// removes what the crash left) and loads `latest`: it must be the last checkpoint whose `latest`
// rename completed, bitwise; then a new checkpoint must commit on top. And injected write, fsync,
// create and rename failures (ENOSPC, EIO) leave the previous checkpoint intact and loadable,
// with an error naming the file.
#include "catch.hpp"

#if __has_include(<nlohmann/json.hpp>)

#include "checkpoint_test_support.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <set>

#include <sys/wait.h>
#include <unistd.h>

using namespace ckpt_test;

namespace {

constexpr int drill_checkpoints = 4;
constexpr std::size_t drill_keep = 2;

// What the child tells the parent: stopped at a phase, ended without reaching the kill point,
// or failed.
struct child_report {
  char kind = 0;  // 'S' stopped, 'E' ended, 'X' exception
  int phase = -1;
  char text[240] = {};
};

void write_report(int fd, const child_report& r) {
  const char* p = reinterpret_cast<const char*>(&r);
  for (std::size_t done = 0; done < sizeof r;) {
    const ssize_t w = ::write(fd, p + done, sizeof r - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) ::_exit(3);
    done += static_cast<std::size_t>(w);
  }
}

bool read_report(int fd, child_report& r) {
  char* p = reinterpret_cast<char*>(&r);
  for (std::size_t done = 0; done < sizeof r;) {
    const ssize_t n = ::read(fd, p + done, sizeof r - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // the child died without a word
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// The child: commits 1..target_c; in commit target_c it stops at hook call target_k, reports,
// and waits to be killed. Only async-signal-safe exits (_exit): no Catch2, no destructors.
[[noreturn]] void child_main(const std::string& dir, int target_c, int target_k, int fd) {
  int current = 0, calls = 0;
  root_options o;
  o.keep = drill_keep;
  o.on_phase = [&](const phase_event& e) {
    if (current != target_c || calls++ != target_k) return;
    child_report r;
    r.kind = 'S';
    r.phase = static_cast<int>(e.phase);
    std::snprintf(r.text, sizeof r.text, "%s %.*s", commit_phase_name(e.phase),
                  static_cast<int>(e.path.size()), e.path.data());
    write_report(fd, r);
    for (;;) ::pause();
  };
  try {
    checkpoint_root root(dir, o);
    for (int c = 1; c <= target_c; ++c) {
      current = c;
      calls = 0;
      commit_known(root, c, 1024);
    }
    child_report r;
    r.kind = 'E';
    write_report(fd, r);
    ::_exit(0);
  } catch (const std::exception& e) {
    child_report r;
    r.kind = 'X';
    std::snprintf(r.text, sizeof r.text, "%s", e.what());
    write_report(fd, r);
    ::_exit(1);
  }
}

struct drill_totals {
  int kill_points = 0, loads = 0, empty = 0, failed_loads = 0, resumed = 0;
  std::size_t differing = 0;
  std::set<int> phases;
  std::vector<std::string> failures;
};

// After a kill at `phase` of checkpoint c: the root must load checkpoint `expected` (0: none)
// bitwise, hold no leftovers, and take the next checkpoint.
void check_after_kill(const std::string& dir, int c, const child_report& r, drill_totals& t) {
  const int expected = r.phase >= static_cast<int>(commit_phase::latest_renamed) ? c : c - 1;
  const std::string where = "killed at checkpoint " + std::to_string(c) + ", " + r.text + ": ";
  try {
    checkpoint_root root(dir, {.keep = drill_keep});
    const auto latest = root.latest();
    if (expected == 0) {
      if (latest) throw std::runtime_error("latest is '" + *latest + "', expected none");
      ++t.empty;
    } else {
      if (latest != tag_of(expected))
        throw std::runtime_error("latest is '" + latest.value_or("(none)") + "', expected '" +
                                 tag_of(expected) + "'");
      t.differing += differing_bytes(root, *latest, expected);
      ++t.loads;
    }
    for (auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string n = e.path().filename().string();
      if (n == "latest.tmp" || n.ends_with(".partial") || n.ends_with(".pruning"))
        throw std::runtime_error("'" + n + "' is left after opening the root");
    }
    if (expected != 0 && root.committed().back() != tag_of(expected))
      throw std::runtime_error("an unpublished checkpoint is left: " + root.committed().back());
    commit_known(root, expected + 1, 1024);  // a restarted run writes on
    if (root.latest() != tag_of(expected + 1) || differing_bytes(root, tag_of(expected + 1), expected + 1))
      throw std::runtime_error("the checkpoint written after the crash does not load bitwise");
    ++t.resumed;
  } catch (const std::exception& e) {
    ++t.failed_loads;
    t.failures.push_back(where + e.what());
  }
}

// One kill point: returns false when the child committed checkpoint c without reaching hook
// call k (so commit c has k phases, and the drill moves on).
bool kill_at(const std::string& dir, int c, int k, drill_totals& t) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    child_main(dir, c, k, fds[1]);
  }
  ::close(fds[1]);
  child_report r;
  const bool heard = read_report(fds[0], r);
  ::close(fds[0]);
  if (heard && r.kind == 'S') ::kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  if (!heard || r.kind == 'X') {
    t.failures.push_back("checkpoint " + std::to_string(c) + " phase call " + std::to_string(k) +
                         ": the child failed: " + (heard ? r.text : "(no report)"));
    return false;
  }
  if (r.kind == 'E') return false;
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  ++t.kill_points;
  t.phases.insert(r.phase);
  check_after_kill(dir, c, r, t);
  return true;
}

}  // namespace

TEST_CASE("checkpoint kill -9 drill: every phase of every commit leaves latest loadable",
          "[checkpoint][crash]") {
  io_test::scratch_dir scratch;
  drill_totals t;
  int points = 0;
  for (int c = 1; c <= drill_checkpoints; ++c) {
    for (int k = 0;; ++k) {
      const std::string dir = scratch.file("kill-" + std::to_string(c) + "-" + std::to_string(k));
      if (!kill_at(dir, c, k, t)) break;
      std::filesystem::remove_all(dir);
      REQUIRE(++points < 200);  // a commit has a dozen or so phases
    }
  }
  std::printf("checkpoint kill -9 drill: %d kill points (%zu of %d phases), %d loads of latest, "
              "%d with no checkpoint yet, %d failed loads, %zu differing bytes, %d resumed\n",
              t.kill_points, t.phases.size(), commit_phase_count, t.loads, t.empty, t.failed_loads,
              t.differing, t.resumed);
  for (auto& f : t.failures) UNSCOPED_INFO(f);
  CHECK(t.failures.empty());
  CHECK(t.kill_points >= 20);
  CHECK(static_cast<int>(t.phases.size()) == commit_phase_count);  // pruning included
  CHECK(t.failed_loads == 0);
  CHECK(t.differing == 0);
  CHECK(t.loads + t.empty == t.kill_points);
  CHECK(t.resumed == t.kill_points);
}

TEST_CASE("checkpoint: injected failures leave the previous checkpoint intact", "[checkpoint][crash]") {
  struct fault_case {
    fs_op op;
    const char* path_suffix;  // the path the failing call touches ends with this
    int err;
  };
  const std::vector<fault_case> cases = {
      {fs_op::mkdir, "/step-2.partial", ENOSPC},
      {fs_op::create, "/step-2.partial/rank-0.bin", ENOSPC},
      {fs_op::write, "/step-2.partial/rank-0.bin", ENOSPC},
      {fs_op::write, "/step-2.partial/rank-0.bin", EIO},
      {fs_op::fsync, "/step-2.partial/rank-0.bin", EIO},
      {fs_op::write, "/step-2.partial/rank-0.json", ENOSPC},
      {fs_op::fsync, "/step-2.partial/rank-0.json", EIO},
      {fs_op::write, "/step-2.partial/commit", ENOSPC},
      {fs_op::fsync, "/step-2.partial", EIO},  // the directory
      {fs_op::rename, "/step-2", EIO},
      {fs_op::fsync, "/root", EIO},  // the root, after the rename
      {fs_op::create, "/latest.tmp", ENOSPC},
      {fs_op::write, "/latest.tmp", ENOSPC},
      {fs_op::fsync, "/latest.tmp", EIO},
      {fs_op::rename, "/latest", EIO},
  };
  for (const fault_case& fc : cases) {
    io_test::scratch_dir scratch;
    const std::string dir = scratch.file("root");
    bool armed = false;
    int fired = 0;
    root_options o;
    o.fault = [&](fs_op op, const std::string& path) {
      if (!armed || fired || op != fc.op || !path.ends_with(fc.path_suffix)) return 0;
      ++fired;
      return fc.err;
    };
    const std::string what = std::string(fs_op_name(fc.op)) + " of '..." + fc.path_suffix + "' fails";
    INFO(what);
    checkpoint_root root(dir, o);
    commit_known(root, 1);
    armed = true;
    std::string msg;
    try {
      commit_known(root, 2);
    } catch (const io_error& e) {
      msg = e.what();
    }
    armed = false;
    INFO("error: " << msg);
    CHECK(fired == 1);
    CHECK(mentions(msg, std::string(fc.path_suffix) + "'"));
    CHECK(mentions(msg, dir));
    CHECK(mentions(msg, "(injected)"));
    CHECK(mentions(msg, fc.err == EIO ? "EIO" : "ENOSPC"));
    // The previous checkpoint is the latest and loads bitwise, before and after reopening.
    CHECK(root.latest() == "step-1");
    CHECK(differing_bytes(root, "step-1", 1) == 0);
    checkpoint_root again(dir);
    CHECK(again.latest() == "step-1");
    CHECK(again.committed() == std::vector<std::string>{"step-1"});
    CHECK(differing_bytes(again, "step-1", 1) == 0);
    // And the run goes on: the same checkpoint commits once the fault is gone.
    commit_known(again, 2);
    CHECK(again.latest() == "step-2");
    CHECK(differing_bytes(again, "step-2", 2) == 0);
  }
}

#else

#include <cstdio>
TEST_CASE("checkpoint crash drill: skipped") { std::puts("SKIP: nlohmann/json not found"); }

#endif
