// gpt_train's checkpoints, through the program itself:
// - resumed == uninterrupted, bitwise: a run stopped after step 3 (--stop-after, as SIGTERM
//   would) and resumed with --resume ends with the same weights file, byte for byte, and the
//   same loss log (the interrupted run's rows kept), as the run never stopped — for the resident,
//   host and nvme policies on 2 thread ranks, and from a checkpoint saved by another number
//   of ranks;
// - SIGTERM mid-run: the step finishes, a checkpoint is written, the exit status is 0, and the
//   resumed run equals the uninterrupted one;
// - the kill -9 drill: a run with --save-every 1 is held at each of the ten commit phases of
//   its first and second checkpoint that reaches it (STRATA_GPT_HOLD, run_checkpoints.hpp) and
//   killed there with SIGKILL, and killed at four step boundaries too; after each kill,
//   --resume must load (0 failed loads) and the resumed run must end with the uninterrupted
//   run's weights (0 differing bytes);
// - a checkpoint of another model is refused by name; a directory with no checkpoint starts
//   fresh under --resume; --init-from starts from a saved model's weights (its first loss far
//   below a fresh start's) and refuses another model's file.
#include "gpt_test_support.hpp"

#include <csignal>
#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

#if defined(GPT_TRAIN_EXE)
namespace {

using gpt_test::contains;
using gpt_test::run_result;
using gpt_test::temp_dir;
namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The train_loss column of a gpt_loss.csv, by step.
std::vector<std::string> losses(const std::string& csv) {
  std::vector<std::string> out;
  std::istringstream in(slurp(csv));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    const auto a = line.find(','), b = line.find(',', a + 1);
    out.push_back(line.substr(0, a) + ":" + line.substr(a + 1, b - a - 1));
  }
  return out;
}

struct run_setup {
  const temp_dir& dir;
  std::string policy = "host";
  int ranks = 2;
  int steps = 6;
  std::string args() const {
    return "--policy " + policy + " --ranks " + std::to_string(ranks) + " --steps " +
           std::to_string(steps) +
           " --layers 2 --heads 2 --width 32 --context 16 --batch 2 --val-every 1000 "
           "--val-batches 1 --trace-step -1 --threads 1 --data '" + dir / "text.txt" +
           "' --nvme-dir '" + dir / "nvme" + "' ";
  }
  std::string outputs(const std::string& tag) const {
    return "--out '" + dir / (tag + ".safetensors") + "' --log '" + dir / (tag + ".csv") +
           "' --svg '" + dir / (tag + ".svg") + "' ";
  }
};

run_result train(const run_setup& s, const std::string& tag, const std::string& more = "") {
  return gpt_test::run_program(GPT_TRAIN_EXE, s.args() + s.outputs(tag) + more);
}

void write_corpus(const temp_dir& d) {
  std::ofstream out(d / "text.txt");
  for (int i = 0; i < 200; ++i) out << "line " << i << ": the quick brown fox jumps over it\n";
}

// gpt_train started in the background with extra environment; its output goes to a file.
struct child {
  pid_t pid = -1;
  std::string log;
  child(const std::string& args, const std::vector<std::string>& env, const std::string& log_path)
      : log(log_path) {
    const std::string cmd = "exec '" + std::string(GPT_TRAIN_EXE) + "' " + args + " >'" + log + "' 2>&1";
    std::vector<std::string> e;
    for (char** p = environ; *p; ++p) e.emplace_back(*p);
    e.insert(e.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& x : e) envp.push_back(x.data());
    envp.push_back(nullptr);
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    REQUIRE(::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), envp.data()) == 0);
  }
  // Waits (up to a minute: only a broken build takes that long) for `ready` to hold.
  template <class F>
  bool wait_for(F&& ready) const {
    for (int i = 0; i < 6000; ++i) {
      if (ready()) return true;
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) return ready();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  int kill_and_reap(int sig) {
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  }
  int reap() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
};

}  // namespace

TEST_CASE("gpt_train: stopped and resumed == uninterrupted, bitwise, for every policy",
          "[gpt][checkpoint]") {
  for (const char* policy : {"resident", "host", "nvme"}) {
    INFO("policy " << policy);
    temp_dir d(std::string("ckpt_resume_") + policy);
    write_corpus(d);
    const run_setup s{d, policy};
    const run_result whole = train(s, "whole");
    INFO(whole.output);
    REQUIRE(whole.code == 0);
    const std::string ck = "--checkpoint-dir '" + d / "ck" + "' --save-every 2 ";
    const run_result first = train(s, "part", ck + "--stop-after 3");
    INFO(first.output);
    REQUIRE(first.code == 0);
    CHECK(contains(first.output, "stopped after the step above (--stop-after)"));
    CHECK_FALSE(fs::exists(d / "part.safetensors"));  // stopped: the checkpoint is the output
    const run_result second = train(s, "part", ck + "--resume");
    INFO(second.output);
    REQUIRE(second.code == 0);
    CHECK(contains(second.output, "resumed from '" + d / "ck" + "/step-3' (step 3"));
    CHECK(slurp(d / "part.safetensors") == slurp(d / "whole.safetensors"));
    // The resumed run's log keeps the interrupted run's rows: the whole run, as if unbroken.
    CHECK(losses(d / "part.csv") == losses(d / "whole.csv"));
    CHECK(losses(d / "part.csv").size() == 6);
  }
}

TEST_CASE("gpt_train: a checkpoint of 1 rank resumes on 2 (and the global batch decides the data)",
          "[gpt][checkpoint]") {
  temp_dir d("ckpt_reshard");
  write_corpus(d);
  // 1 rank x batch 2 x accum 2 and 2 ranks x batch 2 x accum 1 see the same data in the same
  // sums (trainer.hpp's determinism note), so the runs agree bitwise across the switch.
  run_setup one{d, "host", 1};
  run_setup two{d, "host", 2};
  const run_result whole = train(two, "whole");
  REQUIRE(whole.code == 0);
  const std::string ck = "--checkpoint-dir '" + d / "ck" + "' ";
  REQUIRE(train(one, "part", ck + "--accum 2 --stop-after 2").code == 0);
  const run_result resumed = train(two, "part", ck + "--resume");
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK(contains(resumed.output, "saved by 1 rank(s)"));
  CHECK(slurp(d / "part.safetensors") == slurp(d / "whole.safetensors"));
}

TEST_CASE("gpt_train: SIGTERM finishes the step, checkpoints, exits 0; resuming loses nothing",
          "[gpt][checkpoint]") {
  temp_dir d("ckpt_sigterm");
  write_corpus(d);
  const run_setup s{d, "host", 2, 400};
  REQUIRE(train(s, "whole").code == 0);
  const std::string ck = "--checkpoint-dir '" + d / "ck" + "' ";
  child c(s.args() + s.outputs("part") + ck, {}, d / "child.log");
  REQUIRE(c.wait_for([&] { return contains(slurp(c.log), "step    5/"); }));
  ::kill(c.pid, SIGTERM);
  const int code = c.reap();
  const std::string out = slurp(c.log);
  INFO(out);
  REQUIRE(code == 0);
  CHECK(contains(out, "stopped after the step above (signal)"));
  const run_result resumed = train(s, "part", ck + "--resume");
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK(slurp(d / "part.safetensors") == slurp(d / "whole.safetensors"));
}

TEST_CASE("gpt_train: the kill -9 drill: 0 failed loads, 0 differing bytes", "[gpt][checkpoint]") {
  temp_dir d("ckpt_kill");
  write_corpus(d);
  const run_setup s{d, "host", 2, 8};
  REQUIRE(train(s, "whole").code == 0);
  const std::string whole = slurp(d / "whole.safetensors");
  const char* phases[] = {"partial_created", "file_written",   "file_synced",    "dir_synced",
                          "renamed",         "root_synced",    "latest_written", "latest_renamed",
                          "latest_synced",   "pruned"};
  int kills = 0, failed_loads = 0, differing = 0;
  auto drill = [&](const std::string& name, const std::vector<std::string>& env, auto&& ready) {
    INFO("kill point " << name);
    const std::string ck = "--checkpoint-dir '" + d / ("ck-" + name) + "' --save-every 1 ";
    child c(s.args() + s.outputs("killed") + ck, env, d / "child.log");
    REQUIRE(c.wait_for(ready));
    c.kill_and_reap(SIGKILL);
    ++kills;
    const run_result resumed = train(s, "resumed", ck + "--resume");
    INFO(slurp(c.log) << "\n--- resumed:\n" << resumed.output);
    if (resumed.code != 0) ++failed_loads;
    else if (slurp(d / "resumed.safetensors") != whole) ++differing;
    CHECK(resumed.code == 0);
    fs::remove(d / "resumed.safetensors");
  };
  for (const char* phase : phases)
    for (int nth : {1, 2}) {
      const std::string marker = d / "held";
      fs::remove(marker);
      drill(std::string(phase) + ":" + std::to_string(nth),
            {"STRATA_GPT_HOLD=" + std::string(phase) + ":" + std::to_string(nth),
             "STRATA_GPT_HOLD_MARKER=" + marker},
            [&] { return fs::exists(marker); });
    }
  for (int step : {1, 3, 5, 7})
    drill("after step " + std::to_string(step), {}, [&] {
      return contains(slurp(d / "child.log"), "step    " + std::to_string(step) + "/");
    });
  std::printf("kill -9 drill: %d kills, %d failed loads, %d differing results\n", kills,
              failed_loads, differing);
  CHECK(kills >= 20);
  CHECK(failed_loads == 0);
  CHECK(differing == 0);
}

TEST_CASE("gpt_train --init-from: training starts from a saved model; another model's is refused",
          "[gpt][checkpoint]") {
  temp_dir d("init_from");
  write_corpus(d);
  const run_setup s{d, "host", 2, 30};
  REQUIRE(train(s, "trained").code == 0);  // 30 steps: its loss is well below a fresh model's
  const run_setup one{d, "host", 2, 1};
  const run_result fresh = train(one, "fresh");
  const run_result warm = train(one, "warm", "--init-from '" + d / "trained.safetensors" + "'");
  INFO(fresh.output << "\n---\n" << warm.output);
  REQUIRE(fresh.code == 0);
  REQUIRE(warm.code == 0);
  CHECK(contains(warm.output, "initial weights from " + d / "trained.safetensors"));
  const double fresh_loss = std::stod(losses(d / "fresh.csv").at(0).substr(2));
  const double warm_loss = std::stod(losses(d / "warm.csv").at(0).substr(2));
  CHECK(warm_loss < fresh_loss - 0.3);
  const run_result other =
      train(one, "other", "--width 64 --init-from '" + d / "trained.safetensors" + "'");
  CHECK(other.code == 1);
  CHECK(contains(other.output, "width is 32, the run's is 64"));
}

TEST_CASE("gpt_train --resume: a fresh start without a checkpoint; another model's is refused",
          "[gpt][checkpoint]") {
  temp_dir d("ckpt_refuse");
  write_corpus(d);
  const run_setup s{d, "host", 2, 2};
  const std::string ck = "--checkpoint-dir '" + d / "ck" + "' ";
  const run_result fresh = train(s, "a", ck + "--resume");
  INFO(fresh.output);
  REQUIRE(fresh.code == 0);
  CHECK(contains(fresh.output, "none in '" + d / "ck" + "' yet: a fresh start"));
  const run_result other = train(s, "b", ck + "--resume --width 64");
  INFO(other.output);
  CHECK(other.code == 1);
  CHECK(contains(other.output, "is of a model with width 32, this run's has 64"));
  const run_result needs = gpt_test::run_program(GPT_TRAIN_EXE, "--resume");
  CHECK(needs.code == 2);
  CHECK(contains(needs.output, "--resume needs --checkpoint-dir"));
}
#endif
