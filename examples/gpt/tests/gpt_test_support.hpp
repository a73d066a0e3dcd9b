// examples/gpt/tests/gpt_test_support.hpp — what several of the mini-GPT's tests need: a scratch
// directory, the message an error carries, and running one of the example's programs with its
// output captured.
// Not a test; included by test_gpt_*.cpp.
#pragma once

#include "catch.hpp"

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

}  // namespace gpt_test
