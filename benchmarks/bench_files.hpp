// benchmarks/bench_files.hpp — where a benchmark that writes files keeps them.
//
// What lives here: exe_dir(), scratch_dir() (--dir, else $STRATA_BENCH_DIR, else nvme-scratch/
// beside the program: the build tree, a real file system) and is_tmpfs() (a directory in
// memory measures no disk). No Google Benchmark here, so that the plain programs (bench_gpt,
// bench_checkpoint) can use it too; bench_support.hpp includes it for the others.
#pragma once

#include <climits>
#include <cstdlib>
#include <string>

#include <sys/statfs.h>
#include <unistd.h>

namespace bench_support {

/// The directory this program's executable is in ("." when /proc cannot say).
inline std::string exe_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<std::size_t>(n));
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

/// Where an NVMe benchmark keeps its files: `given` (--dir), else $STRATA_BENCH_DIR, else
/// nvme-scratch/ beside the executable, i.e. in the build tree: a real file system, not /tmp.
inline std::string scratch_dir(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* d = std::getenv("STRATA_BENCH_DIR"); d && *d) return d;
  return exe_dir() + "/nvme-scratch";
}

/// Whether `dir` is on tmpfs or ramfs: memory, so what is measured there says nothing of a disk.
inline bool is_tmpfs(const std::string& dir) {
  struct statfs sf {};
  if (::statfs(dir.c_str(), &sf) != 0) return false;
  constexpr long tmpfs_magic = 0x01021994, ramfs_magic = static_cast<long>(0x858458f6);
  return static_cast<long>(sf.f_type) == tmpfs_magic || static_cast<long>(sf.f_type) == ramfs_magic;
}

}  // namespace bench_support
