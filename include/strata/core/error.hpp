// strata/core/error.hpp — the exceptions strata throws, and the helpers that word them.
//
// Every failure a caller can act on is a child of strata::error, and its message names what
// was involved: the tensor, the tier, the byte counts, the file and offset. Library code never
// calls exit() or abort(); errors that happen on a background queue are carried to the thread
// that waits for the work (an event, a lease) and rethrown there.
#pragma once

#include <strata/core/config.hpp>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

STRATA_NAMESPACE_BEGIN

/// Base of everything strata throws.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A configuration or policy that cannot work (bad sizes, unknown tier, zero-sized ring).
class config_error : public error {
public:
  using error::error;
};

/// A tier's budget (set in the context) cannot hold a requested allocation.
class out_of_budget : public error {
public:
  out_of_budget(std::string_view tier, std::size_t requested, std::size_t available,
                std::size_t limit, std::string_view what);
  /// The same facts with a message worded by the caller (a memory plan's table, say).
  out_of_budget(std::string message, std::string_view tier, std::size_t requested,
                std::size_t available, std::size_t limit)
      : error(std::move(message)), tier_(tier), requested_(requested), available_(available),
        limit_(limit) {}
  std::size_t requested() const noexcept { return requested_; }
  std::size_t available() const noexcept { return available_; }
  std::size_t limit() const noexcept { return limit_; }
  const std::string& tier() const noexcept { return tier_; }

private:
  std::string tier_;
  std::size_t requested_, available_, limit_;
};

/// Memory touched the wrong way: a lease on a tier the tensor cannot live on, a pointer that
/// does not belong to the tier it claims, a write lease that conflicts with another lease.
class access_error : public error {
public:
  using error::error;
};

/// A read or write on a file failed (the NVMe tier, checkpoints).
class io_error : public error {
public:
  using error::error;
};

/// A collective failed or a peer did not arrive in time.
class comm_error : public error {
public:
  using error::error;
};

/// Bytes on disk that are not what they claim to be (bad header, checksum mismatch).
class format_error : public error {
public:
  using error::error;
};

/// The CUDA runtime reported an error.
class cuda_error : public error {
public:
  cuda_error(int code, const std::string& message) : error(message), code_(code) {}
  int code() const noexcept { return code_; }

private:
  int code_;
};

/// "4.00 MiB (4194304 bytes)": exact count for logs and tests, readable size for people.
inline std::string format_bytes(std::size_t bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%zu bytes", bytes);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s (%zu bytes)", v, units[u], bytes);
  return buf;
}

inline out_of_budget::out_of_budget(std::string_view tier, std::size_t requested,
                                    std::size_t available, std::size_t limit,
                                    std::string_view what)
    : error("out of budget on tier '" + std::string(tier) + "': " +
            (what.empty() ? std::string("allocation") : "'" + std::string(what) + "'") +
            " requested " + format_bytes(requested) + ", " + format_bytes(available) +
            " available of its " + format_bytes(limit) + " budget"),
      tier_(tier), requested_(requested), available_(available), limit_(limit) {}

STRATA_NAMESPACE_END
