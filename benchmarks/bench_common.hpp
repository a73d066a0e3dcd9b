// benchmarks/bench_common.hpp — what every benchmark program shares, Google Benchmark or not.
//
// What lives here: median() and seconds_since() (how the programs summarise and time their
// rounds), exe_dir(), scratch_dir() (--dir, else $STRATA_BENCH_DIR, else nvme-scratch/ beside
// the program: the build tree, a real file system) and is_tmpfs() (a directory in memory
// measures no disk), disk_free_bytes() (a directory's free space, refusing tmpfs), proc_kib() (a field of /proc/meminfo or /proc/self/status: RAM, peak
// RSS, swap). No Google Benchmark here, so that the plain programs (bench_gpt,
// bench_checkpoint) use it too; bench_support.hpp includes it for the others.
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace bench_support {

/// The median of `v`; negative when it is empty (the "did not run" of the ratio lines).
inline double median(std::vector<double> v) {
  if (v.empty()) return -1.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// Seconds since t0 on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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

/// The free bytes of `dir` (created if missing), for a benchmark `bench` that will keep `what`
/// there; -1, with the reason on stderr, when it is tmpfs (memory: no disk measured) or cannot
/// be read.
inline double disk_free_bytes(const std::string& dir, const char* bench, const char* what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (is_tmpfs(dir)) {
    std::fprintf(stderr, "%s: %s is tmpfs (memory): %s must be on a disk\n", bench, dir.c_str(),
                 what);
    return -1;
  }
  struct statvfs sv {};
  if (::statvfs(dir.c_str(), &sv) != 0) {
    std::fprintf(stderr, "%s: cannot stat %s\n", bench, dir.c_str());
    return -1;
  }
  return double(sv.f_bavail) * double(sv.f_frsize);
}

/// A field of /proc/meminfo or /proc/self/status, in KiB (-1 when absent).
inline long long proc_kib(const char* file, const char* key) {
  std::ifstream in(file);
  std::string k;
  long long v = -1;
  while (in >> k) {
    if (k == key) {
      in >> v;
      return v;
    }
    in.ignore(1 << 12, '\n');
  }
  return -1;
}

}  // namespace bench_support
