// strata/plan/calibration_json.hpp — a calibration as a JSON file, measured once and reused.
//
// What lives here: to_json / from_json of plan::calibration for nlohmann/json,
// calibration_from_json() (the reader, naming the file and the field in every error),
// save_calibration() (atomic: a crash leaves the old file or the new one, never half of one)
// and load_calibration(). What does not: the measurements and the staleness check
// (calibration.hpp, which needs no JSON library). Only for callers that have nlohmann/json
// (Debian: nlohmann-json3-dev); the core builds without it.
//
// The file, one key per calibration field, rates in bytes/s and FLOP/s:
//   {"format": "strata-calibration", "version": 1,
//    "machine": "AMD EPYC 7B13, 16 logical cores, avx2", "measured_at": "2025-01-31T17:04:05Z",
//    "fingerprint": "...", "threads": 16,
//    "gemm": [{"m": 512, "n": 512, "k": 512, "flops_per_s": 2.1e11}], "gemm_flops": 2.1e11,
//    "triad_bytes_s": 3.1e10, "copy_bytes_s": 1.9e10,
//    "nvme_read_bytes_s": 3.2e9, "nvme_write_bytes_s": 2.5e9, "nvme_block": 1048576,
//    "nvme_depth": 16, "nvme_engine": "uring", "nvme_dir": "/mnt/nvme",
//    "allgather_bytes_s": [{"world": 2, "bytes_s": 9.5e9}],
//    "h2d_bytes_s": 0.0, "d2h_bytes_s": 0.0, "gpu_gemm_flops": 0.0,
//    "nvme_by_size": [{"bytes": 4194304, "read_bytes_s": 1.1e9, "write_bytes_s": 1.4e9}],
//    "kernels": {"gpt.matmul.q4.flops_per_s": 1.2e10}}
// Doubles are written in their shortest form that reads back to the same bits, so a round
// trip is exact. Every field must be there; keys this version does not know are ignored.
#pragma once

#include <strata/core/error.hpp>
#include <strata/io/file.hpp>
#include <strata/plan/calibration.hpp>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>

#include <fcntl.h>
#include <unistd.h>

STRATA_NAMESPACE_BEGIN
namespace plan {

/// The calibration format this build writes and the only one it reads.
inline constexpr int calibration_version = 1;
/// The value of the "format" field, so that a stray JSON file is not taken for a calibration.
inline constexpr const char* calibration_format = "strata-calibration";

namespace detail::calib {

using json = nlohmann::json;

/// What is wrong with a calibration's values ("" when nothing): rates finite and >= 0 (0 is
/// "not measured"), GEMM shapes and world sizes >= 1 with positive rates, worlds unique.
/// One check for both sides: save refuses what load would refuse.
inline std::string calibration_problem(const calibration& c) {
  const auto rate = [](const std::string& field, double v) -> std::string {
    if (!std::isfinite(v) || v < 0)
      return field + ": " + std::to_string(v) + " is not a rate (finite, >= 0)";
    return "";
  };
  for (const auto& [field, v] : {std::pair<const char*, double>{"gemm_flops", c.gemm_flops},
                                 {"triad_bytes_s", c.triad_bytes_s},
                                 {"copy_bytes_s", c.copy_bytes_s},
                                 {"nvme_read_bytes_s", c.nvme_read_bytes_s},
                                 {"nvme_write_bytes_s", c.nvme_write_bytes_s},
                                 {"h2d_bytes_s", c.h2d_bytes_s},
                                 {"d2h_bytes_s", c.d2h_bytes_s},
                                 {"gpu_gemm_flops", c.gpu_gemm_flops}})
    if (auto p = rate(field, v); !p.empty()) return p;
  if (c.threads < 0) return "threads: " + std::to_string(c.threads) + " is negative";
  if (c.nvme_depth < 0) return "nvme_depth: " + std::to_string(c.nvme_depth) + " is negative";
  for (std::size_t i = 0; i < c.gemm.size(); ++i) {
    const gemm_point& g = c.gemm[i];
    const std::string f = "gemm[" + std::to_string(i) + "]";
    if (g.m < 1 || g.n < 1 || g.k < 1)
      return f + ": shape " + shape_text(g.m, g.n, g.k) + " has a dimension below 1";
    if (!std::isfinite(g.flops_per_s) || g.flops_per_s <= 0)
      return f + ".flops_per_s: " + std::to_string(g.flops_per_s) + " is not a measured rate (> 0)";
  }
  for (std::size_t i = 0; i < c.nvme_by_size.size(); ++i) {
    const auto& p = c.nvme_by_size[i];
    const std::string f = "nvme_by_size[" + std::to_string(i) + "]";
    if (i > 0 && p.bytes <= c.nvme_by_size[i - 1].bytes) return f + ".bytes: not above the one before";
    for (double v : {p.read_bytes_s, p.write_bytes_s})
      if (!std::isfinite(v) || v <= 0) return f + ": " + std::to_string(v) + " is not a measured rate (> 0)";
  }
  for (const auto& [name, v] : c.kernels)
    if (!std::isfinite(v) || v <= 0)
      return "kernels." + name + ": " + std::to_string(v) + " is not a measured rate (> 0)";
  std::set<int> worlds;
  for (std::size_t i = 0; i < c.allgather_bytes_s.size(); ++i) {
    const auto& [w, r] = c.allgather_bytes_s[i];
    const std::string f = "allgather_bytes_s[" + std::to_string(i) + "]";
    if (w < 1) return f + ".world: " + std::to_string(w) + " is below 1";
    if (!worlds.insert(w).second) return f + ".world: " + std::to_string(w) + " appears twice";
    if (!std::isfinite(r) || r <= 0)
      return f + ".bytes_s: " + std::to_string(r) + " is not a measured rate (> 0)";
  }
  return "";
}

[[noreturn]] inline void calibration_fail(const std::string& file, const std::string& field,
                                          const std::string& why) {
  throw format_error("calibration file '" + file + "': " + field + ": " + why);
}

/// Reads typed fields of one JSON object, naming `where.key` in every error.
struct calibration_reader {
  const json& obj;
  const std::string& file;
  std::string where;

  std::string name(const char* key) const { return where.empty() ? key : where + "." + key; }
  const json& get(const char* key) const {
    const auto it = obj.find(key);
    if (it == obj.end()) calibration_fail(file, name(key), "missing");
    return *it;
  }
  std::string text(const char* key) const {
    const json& v = get(key);
    if (!v.is_string()) calibration_fail(file, name(key), "not a string: " + v.dump());
    return v.get<std::string>();
  }
  double number(const char* key) const {
    const json& v = get(key);
    if (!v.is_number()) calibration_fail(file, name(key), "not a number: " + v.dump());
    return v.get<double>();
  }
  long long integer(const char* key, long long lo, long long hi) const {
    const json& v = get(key);
    if (!v.is_number_integer()) calibration_fail(file, name(key), "not an integer: " + v.dump());
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
      calibration_fail(file, name(key), v.dump() + " is out of range");
    const long long x = v.is_number_unsigned() ? static_cast<long long>(v.get<std::uint64_t>())
                                               : v.get<long long>();
    if (x < lo || x > hi) calibration_fail(file, name(key), v.dump() + " is out of range");
    return x;
  }
  const json& array(const char* key) const {
    const json& v = get(key);
    if (!v.is_array()) calibration_fail(file, name(key), "not an array: " + v.dump());
    return v;
  }
};

inline calibration_reader calibration_object(const json& j, const std::string& file,
                                             std::string where) {
  if (!j.is_object())
    calibration_fail(file, where.empty() ? "(top level)" : where, "not an object: " + j.dump());
  return calibration_reader{j, file, std::move(where)};
}

constexpr long long int_max = std::numeric_limits<int>::max();

}  // namespace detail::calib

/// The calibration in `j`, read from `file` (named in errors only). format_error naming the
/// file and the field for a wrong "format", another "version", a missing field, a field of the
/// wrong type and a value calibrate() could not have written (a negative rate, say).
inline calibration calibration_from_json(const nlohmann::json& j, const std::string& file) {
  const detail::calib::calibration_reader f = detail::calib::calibration_object(j, file, "");
  if (const std::string fmt = f.text("format"); fmt != calibration_format)
    detail::calib::calibration_fail(file, "format",
                                    "'" + fmt + "', expected '" + calibration_format + "'");
  // The version before anything else: a newer format may have moved every other field.
  if (const long long v = f.integer("version", 0, detail::calib::int_max); v != calibration_version)
    detail::calib::calibration_fail(file, "version",
                                    std::to_string(v) + "; this build reads version " +
                                        std::to_string(calibration_version));
  calibration c;
  c.machine = f.text("machine");
  c.measured_at = f.text("measured_at");
  c.fingerprint = f.text("fingerprint");
  c.threads = static_cast<int>(f.integer("threads", 0, detail::calib::int_max));
  const nlohmann::json& gemm = f.array("gemm");
  for (std::size_t i = 0; i < gemm.size(); ++i) {
    const auto g =
        detail::calib::calibration_object(gemm[i], file, "gemm[" + std::to_string(i) + "]");
    c.gemm.push_back({static_cast<int>(g.integer("m", 1, detail::calib::int_max)),
                      static_cast<int>(g.integer("n", 1, detail::calib::int_max)),
                      static_cast<int>(g.integer("k", 1, detail::calib::int_max)),
                      g.number("flops_per_s")});
  }
  c.gemm_flops = f.number("gemm_flops");
  c.triad_bytes_s = f.number("triad_bytes_s");
  c.copy_bytes_s = f.number("copy_bytes_s");
  c.nvme_read_bytes_s = f.number("nvme_read_bytes_s");
  c.nvme_write_bytes_s = f.number("nvme_write_bytes_s");
  c.nvme_block =
      static_cast<std::size_t>(f.integer("nvme_block", 0, std::numeric_limits<long long>::max()));
  c.nvme_depth = static_cast<int>(f.integer("nvme_depth", 0, detail::calib::int_max));
  c.nvme_engine = f.text("nvme_engine");
  c.nvme_dir = f.text("nvme_dir");
  const nlohmann::json& ag = f.array("allgather_bytes_s");
  for (std::size_t i = 0; i < ag.size(); ++i) {
    const auto a = detail::calib::calibration_object(
        ag[i], file, "allgather_bytes_s[" + std::to_string(i) + "]");
    c.allgather_bytes_s.emplace_back(
        static_cast<int>(a.integer("world", 1, detail::calib::int_max)), a.number("bytes_s"));
  }
  c.h2d_bytes_s = f.number("h2d_bytes_s");
  c.d2h_bytes_s = f.number("d2h_bytes_s");
  c.gpu_gemm_flops = f.number("gpu_gemm_flops");
  const nlohmann::json& by_size = f.array("nvme_by_size");
  for (std::size_t i = 0; i < by_size.size(); ++i) {
    const auto a = detail::calib::calibration_object(by_size[i], file,
                                                     "nvme_by_size[" + std::to_string(i) + "]");
    c.nvme_by_size.push_back(
        {static_cast<std::size_t>(a.integer("bytes", 1, std::numeric_limits<long long>::max())),
         a.number("read_bytes_s"), a.number("write_bytes_s")});
  }
  const nlohmann::json& kernels = f.get("kernels");
  if (!kernels.is_object())
    detail::calib::calibration_fail(file, "kernels", "not an object: " + kernels.dump());
  for (const auto& [name, rate] : kernels.items()) {
    if (!rate.is_number())
      detail::calib::calibration_fail(file, "kernels." + name, "not a number: " + rate.dump());
    c.kernels[name] = rate.get<double>();
  }
  if (const std::string p = detail::calib::calibration_problem(c); !p.empty())
    throw format_error("calibration file '" + file + "': " + p);
  return c;
}

inline void to_json(nlohmann::json& j, const calibration& c) {
  nlohmann::json gemm = nlohmann::json::array(), ag = nlohmann::json::array();
  for (const gemm_point& g : c.gemm)
    gemm.push_back(
        nlohmann::json{{"m", g.m}, {"n", g.n}, {"k", g.k}, {"flops_per_s", g.flops_per_s}});
  for (const auto& [w, r] : c.allgather_bytes_s)
    ag.push_back(nlohmann::json{{"world", w}, {"bytes_s", r}});
  nlohmann::json by_size = nlohmann::json::array();
  for (const auto& p : c.nvme_by_size)
    by_size.push_back(nlohmann::json{
        {"bytes", p.bytes}, {"read_bytes_s", p.read_bytes_s}, {"write_bytes_s", p.write_bytes_s}});
  j = nlohmann::json{{"format", calibration_format},
                     {"version", calibration_version},
                     {"machine", c.machine},
                     {"measured_at", c.measured_at},
                     {"fingerprint", c.fingerprint},
                     {"threads", c.threads},
                     {"gemm", std::move(gemm)},
                     {"gemm_flops", c.gemm_flops},
                     {"triad_bytes_s", c.triad_bytes_s},
                     {"copy_bytes_s", c.copy_bytes_s},
                     {"nvme_read_bytes_s", c.nvme_read_bytes_s},
                     {"nvme_write_bytes_s", c.nvme_write_bytes_s},
                     {"nvme_block", c.nvme_block},
                     {"nvme_depth", c.nvme_depth},
                     {"nvme_engine", c.nvme_engine},
                     {"nvme_dir", c.nvme_dir},
                     {"allgather_bytes_s", std::move(ag)},
                     {"h2d_bytes_s", c.h2d_bytes_s},
                     {"d2h_bytes_s", c.d2h_bytes_s},
                     {"gpu_gemm_flops", c.gpu_gemm_flops},
                     {"nvme_by_size", by_size},
                     {"kernels", c.kernels}};
}

/// For nlohmann's j.get<calibration>(): calibration_from_json with no file name ("<json>").
inline void from_json(const nlohmann::json& j, calibration& c) {
  c = calibration_from_json(j, "<json>");
}

namespace detail::calib {

/// Writes `text` to `path` + ".partial", fsyncs it, renames it over `path` and fsyncs the
/// directory: a crash at any point leaves the previous file or the complete new one. Two
/// writers of one path at once share the .partial name: the caller keeps them apart.
inline void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string partial = path + ".partial";
  const auto fail = [&](const std::string& what, int err) {
    ::unlink(partial.c_str());
    throw io_error("save_calibration: " + what + " '" + partial +
                   "' failed: " + io::errno_text(err));
  };
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create", errno);
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      fail("write of " + std::to_string(text.size()) + " bytes to", err);
    }
    done += static_cast<std::size_t>(n);
  }
  // Without the fsync the rename can reach the disk before the data, and a crash then leaves
  // an empty file under the real name.
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail("fsync of", err);
  }
  if (::close(fd) != 0) fail("close of", errno);
  if (::rename(partial.c_str(), path.c_str()) != 0) fail("rename to '" + path + "' of", errno);
  // The rename is durable once the directory is; a failure here (some file systems refuse
  // fsync on a directory) changes nothing about which file is there, so it is not an error.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace detail::calib

/// Writes `c` to `path` atomically (path + ".partial", fsync, rename), replacing what was
/// there. config_error naming the field for a value load_calibration would refuse (so every
/// file written can be read back); io_error naming the file when the system refuses.
inline void save_calibration(const calibration& c, const std::string& path) {
  if (const std::string p = detail::calib::calibration_problem(c); !p.empty())
    throw config_error("save_calibration '" + path + "': " + p);
  nlohmann::json j;
  to_json(j, c);
  detail::calib::write_file_atomically(path, j.dump(2) + "\n");
}

/// Reads the calibration in `path`: io_error when it cannot be opened, format_error naming the
/// file (and the field, or the byte where the JSON breaks) when it is not a calibration this
/// build reads. Whether it still describes this machine is is_stale()'s question.
inline calibration load_calibration(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error("load_calibration: cannot open '" + path + "': " + io::errno_text(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw io_error("load_calibration: cannot read '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw format_error("calibration file '" + path + "': not JSON (at byte " +
                       std::to_string(e.byte) + "): " + e.what());
  }
  return calibration_from_json(j, path);
}

}  // namespace plan
STRATA_NAMESPACE_END
