// examples/gpt/tests/gpt_test_support.hpp — what several of the mini-GPT's tests need: a scratch
// directory, the message an error carries, running one of the example's programs with its
// output captured, and a small model with weights whose every tensor matters.
// Not a test; included by test_gpt_*.cpp.
#pragma once

#include "catch.hpp"

#include "host/model.hpp"
#include "random.hpp"
#include "safetensors.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>

#include <sys/wait.h>
#include <unistd.h>

namespace gpt_test {

/// A fresh directory gpt_<tag>_<pid> under STRATA_TEST_TMPDIR (CTest sets it: on the build
/// tree's file system) or the system temp dir; removed at the end.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& tag) {
    const char* base = std::getenv("STRATA_TEST_TMPDIR");
    path = std::filesystem::path(base ? base : std::filesystem::temp_directory_path().string()) /
           ("gpt_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::string operator/(const std::string& name) const { return file(name); }
};

/// The message of the E thrown by f, or "<no exception>" / "<other exception: ...>".
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<other exception: ") + e.what() + ">";
  }
  return "<no exception>";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

struct run_result {
  int code = -1;        // the exit status; -1 when the program did not exit normally
  std::string output;   // stdout and stderr together
};

/// Runs `exe args` through the shell (args as written on a command line) and waits for it.
inline run_result run_program(const std::string& exe, const std::string& args) {
  const std::string cmd = "'" + exe + "' " + args + " 2>&1";
  run_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// A small GPT (2 layers, width 16, 2 heads) with the given context.
inline gpt::gpt_config test_config(int context = 24) {
  gpt::gpt_config cfg;
  cfg.vocab = 256;
  cfg.context = context;
  cfg.layers = 2;
  cfg.heads = 2;
  cfg.width = 16;
  return cfg;
}

/// GPT-2 initialisation plus noise on every parameter (biases and layernorms included), so
/// that each tensor matters and the logits are far from uniform (sampling then has texture).
inline gpt::gpt_weights test_weights(const gpt::gpt_config& cfg, std::uint64_t seed) {
  gpt::host_model m(cfg, 1);
  m.init_weights(seed);
  gpt::rng gen(seed + 100);
  gpt::gpt_weights w;
  w.cfg = cfg;
  w.embed = m.embed_params();
  for (float& x : w.embed) x += static_cast<float>(0.3 * gen.normal());
  for (int l = 0; l < cfg.layers; ++l) {
    w.blocks.push_back(m.block_params(l));
    for (float& x : w.blocks.back()) x += static_cast<float>(0.1 * gen.normal());
  }
  return w;
}

}  // namespace gpt_test
