// tests/io/io_test_support.hpp — what the IO tests share: where their files go, which engines
// this build has, scoped environment variables, and the small NVMe-tier context the ZeRO
// tests train their toy models in.
#pragma once

#include "catch.hpp"

#include <strata/exec/context.hpp>
#include <strata/io/make_engine.hpp>

#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <stdlib.h>

namespace io_test {

/// STRATA_TEST_TMPDIR (set by CTest: a real file system in the build tree, unlike a tmpfs
/// /tmp), else the working directory.
inline std::string test_tmpdir() {
  const char* d = std::getenv("STRATA_TEST_TMPDIR");
  return d && *d ? d : ".";
}


/// A fresh directory under `base_override` or test_tmpdir(), removed with everything in it at
/// the end of the test.
struct scratch_dir {
  std::filesystem::path path;
  explicit scratch_dir(const char* base_override = nullptr) {
    std::string tmpl = (base_override ? std::string(base_override) : test_tmpdir()) +
                       "/io-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::size_t files() const {
    return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(path),
                                                  std::filesystem::directory_iterator()));
  }
};

/// Sets (or unsets, for nullptr) an environment variable for one scope.
struct env_guard {
  std::string name;
  std::optional<std::string> old;
  env_guard(const char* n, const char* value) : name(n) {
    if (const char* v = std::getenv(n)) old = v;
    if (value)
      ::setenv(n, value, 1);
    else
      ::unsetenv(n);
  }
  ~env_guard() {
    if (old)
      ::setenv(name.c_str(), old->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
  env_guard(const env_guard&) = delete;
  env_guard& operator=(const env_guard&) = delete;
};

/// The IO engines this build and this kernel can run, to repeat a test over each: io_uring
/// only where it sets up (a container's seccomp profile may refuse it).
inline std::vector<std::string> engine_kinds() {
  std::vector<std::string> kinds{"posix"};
  if (strata::io::uring_compiled) {
    env_guard env("STRATA_IO_ENGINE", nullptr);
    std::string notice;
    auto e = strata::io::make_engine(strata::io::engine_config{}, notice);
    if (std::string(e->name()) == "uring")
      kinds.push_back("uring");
    else
      WARN("io_uring cannot be used here, only the posix engine is tested: " << notice);
  }
  return kinds;
}

/// The context of rank `rank` for the toy ZeRO models (tests/zero_adam_model.hpp,
/// zero_toy_model.hpp) with an NVMe tier in test_tmpdir(): a 4 MiB device, 16 MiB pinned,
/// 64 KiB checksum blocks (16 Ki floats: zero_adam_model's sub-group), the engine `engine`.
inline strata::context_config toy_nvme_config(int rank, const std::string& engine = "auto") {
  strata::context_config cfg;
  cfg.device_bytes = 4 << 20;
  cfg.pinned_bytes = 16 << 20;
  cfg.staging_slot_bytes = 256 << 10;
  cfg.staging_slots = 4;
  cfg.nvme_directory = test_tmpdir();
  cfg.nvme_checksum_block = 64 << 10;
  cfg.rank = rank;
  cfg.io.kind = engine;
  return cfg;
}

}  // namespace io_test
