// benchmarks/nvme_fio.hpp — fio as the peer of bench_nvme: run one job, read its bandwidth.
//
// What lives here: run_fio(), which runs one sequential fio job (io_uring, O_DIRECT, the block
// size and queue depth strata uses) through popen and returns fio's own bandwidth figure
// (jobs[0].read.bw_bytes or jobs[0].write.bw_bytes of --output-format=json), and json_number(),
// the few lines of JSON walking that takes (no JSON library: the benchmark links nothing but
// strata and Google Benchmark). What does not: strata's side of the comparison (bench_nvme.cpp).
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/wait.h>

namespace nvme_fio {

// ---------------------------------------------------------------------------------------------
// A tiny JSON walker: enough to pull one number out of fio's report.
// ---------------------------------------------------------------------------------------------

class json_walker {
public:
  explicit json_walker(std::string_view text) : s_(text) {}

  /// The number at `path` (object keys, or decimal indices into arrays), e.g.
  /// {"jobs", "0", "read", "bw_bytes"}; nullopt when the path is missing or not a number.
  std::optional<double> number(const std::vector<std::string_view>& path) {
    i_ = 0;
    for (std::string_view step : path) {
      ws();
      if (i_ >= s_.size()) return std::nullopt;
      if (s_[i_] == '{') {
        if (!enter_member(step)) return std::nullopt;
      } else if (s_[i_] == '[') {
        if (!enter_element(step)) return std::nullopt;
      } else {
        return std::nullopt;
      }
    }
    ws();
    const std::size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                              s_[i_] == '+' || s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))
      ++i_;
    if (i_ == start) return std::nullopt;
    const std::string digits(s_.substr(start, i_ - start));
    char* end = nullptr;
    const double v = std::strtod(digits.c_str(), &end);
    if (end != digits.c_str() + digits.size()) return std::nullopt;
    return v;
  }

private:
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }

  // At '"': reads the string (escapes kept as written: keys fio uses have none).
  bool string(std::string_view& out) {
    if (i_ >= s_.size() || s_[i_] != '"') return false;
    const std::size_t start = ++i_;
    while (i_ < s_.size() && s_[i_] != '"') i_ += s_[i_] == '\\' ? 2 : 1;
    if (i_ >= s_.size()) return false;
    out = s_.substr(start, i_ - start);
    ++i_;
    return true;
  }

  // Skips one value of any kind.
  bool skip() {
    ws();
    if (i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '"') {
      std::string_view ignored;
      return string(ignored);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      ws();
      if (i_ < s_.size() && s_[i_] == close) return ++i_, true;
      for (;;) {
        if (c == '{') {
          std::string_view key;
          ws();
          if (!string(key)) return false;
          ws();
          if (i_ >= s_.size() || s_[i_] != ':') return false;
          ++i_;
        }
        if (!skip()) return false;
        ws();
        if (i_ >= s_.size()) return false;
        if (s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (s_[i_] == close) return ++i_, true;
        return false;
      }
    }
    // A number, true, false or null.
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] != ',' && s_[i_] != '}' && s_[i_] != ']' && s_[i_] != ' ' &&
           s_[i_] != '\n' && s_[i_] != '\r' && s_[i_] != '\t')
      ++i_;
    return i_ > start;
  }

  // At '{': moves to the value of member `key`.
  bool enter_member(std::string_view key) {
    ++i_;
    for (;;) {
      ws();
      std::string_view k;
      if (!string(k)) return false;
      ws();
      if (i_ >= s_.size() || s_[i_] != ':') return false;
      ++i_;
      if (k == key) return true;
      if (!skip()) return false;
      ws();
      if (i_ >= s_.size() || s_[i_] != ',') return false;  // '}' or garbage: not found
      ++i_;
    }
  }

  // At '[': moves to element number `index`.
  bool enter_element(std::string_view index) {
    std::size_t n = 0;
    for (char c : index) {
      if (c < '0' || c > '9') return false;
      n = n * 10 + static_cast<std::size_t>(c - '0');
    }
    ++i_;
    for (std::size_t k = 0; k < n; ++k) {
      if (!skip()) return false;
      ws();
      if (i_ >= s_.size() || s_[i_] != ',') return false;
      ++i_;
    }
    ws();
    return i_ < s_.size() && s_[i_] != ']';
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

inline std::optional<double> json_number(std::string_view json,
                                         const std::vector<std::string_view>& path) {
  return json_walker(json).number(path);
}

// ---------------------------------------------------------------------------------------------
// Running fio.
// ---------------------------------------------------------------------------------------------

/// 'text' quoted for /bin/sh.
inline std::string shell_quote(std::string_view text) {
  std::string q = "'";
  for (char c : text) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

/// Runs `command` through /bin/sh, stdout and stderr together; returns the output, and the
/// exit status in `status` (-1 when it could not run or was killed).
inline std::string capture(const std::string& command, int& status) {
  std::string out;
  status = -1;
  std::FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[8192];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int raw = ::pclose(p);
  if (raw != -1 && WIFEXITED(raw)) status = WEXITSTATUS(raw);
  return out;
}

/// "fio-3.33" or "" when fio cannot be run.
inline std::string fio_version() {
  int status = -1;
  std::string v = capture("fio --version", status);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
  if (status != 0 || v.rfind("fio", 0) != 0) return {};
  return v;
}

struct job {
  std::string directory;       // fio runs here, so the file name needs no escaping of ':'
  std::string file;            // a plain file name inside `directory`
  bool write = false;          // --rw=write, else --rw=read
  std::uint64_t size = 0;      // --size, bytes
  std::size_t block = 0;       // --bs, bytes
  unsigned queue_depth = 1;    // --iodepth
  std::string engine = "io_uring";
  bool direct = true;          // --direct=1 (else through the page cache)
  bool end_fsync = false;      // --end_fsync=1: the job's time includes making it durable
};

struct result {
  bool ok = false;
  double bytes_per_s = 0;  // fio's bw_bytes for the job's direction
  std::string error;       // why not ok: fio's own words where it gave any
  std::string command;
};

/// The fio command line for `j` (one job, sequential, JSON report; O_DIRECT unless !direct).
inline std::string command_for(const job& j) {
  return "cd " + shell_quote(j.directory) + " && fio --name=strata-nvme --filename=" +
         shell_quote(j.file) + " --ioengine=" + j.engine + " --direct=" + (j.direct ? "1" : "0") +
         (j.end_fsync ? " --end_fsync=1" : "") + " --rw=" +
         (j.write ? "write" : "read") + " --bs=" + std::to_string(j.block) +
         " --iodepth=" + std::to_string(j.queue_depth) + " --size=" + std::to_string(j.size) +
         " --numjobs=1 --output-format=json";
}

/// Runs `j`; the result holds fio's bandwidth (bytes/s, fio's own timing of the IO phase).
inline result run(const job& j) {
  result r;
  r.command = command_for(j);
  int status = -1;
  const std::string out = capture(r.command, status);
  // fio may print notes before the report: the JSON starts at the first line that opens with '{'.
  std::size_t at = out.rfind('{', 0) == 0 ? 0 : out.find("\n{");
  if (at != std::string::npos && out[at] == '\n') ++at;
  auto tail = [&] {
    std::string t = out.substr(0, 400);
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    return t;
  };
  if (status != 0 || at == std::string::npos) {
    r.error = "fio exited with status " + std::to_string(status) + ": " + tail();
    return r;
  }
  const std::string_view json = std::string_view(out).substr(at);
  if (auto err = json_number(json, {"jobs", "0", "error"}); err && *err != 0) {
    r.error = "fio job failed with error " + std::to_string(static_cast<int>(*err)) + ": " + tail();
    return r;
  }
  auto bw = json_number(json, {"jobs", "0", j.write ? "write" : "read", "bw_bytes"});
  if (!bw || *bw <= 0) {
    r.error = std::string("no jobs[0].") + (j.write ? "write" : "read") +
              ".bw_bytes in fio's report: " + tail();
    return r;
  }
  r.ok = true;
  r.bytes_per_s = *bw;
  return r;
}

}  // namespace nvme_fio
