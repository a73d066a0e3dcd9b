// strata/io/detail/io_failure.hpp — how IO failures are worded, and the first failure of a call.
//
// Shared by the real engines and the fault-injecting one, so a test cannot tell an injected
// failure from a real one by anything but "(injected)"; and by both engines' calls, which move
// many requests at once but report only the first that failed (its offset, size and progress).
// Internal to the io floor: include <strata/io/engine.hpp> and an engine instead.
#pragma once

#include <strata/io/engine.hpp>

#include <cstdint>
#include <string>
#include <string_view>

STRATA_NAMESPACE_BEGIN
namespace io {
namespace detail {

/// "read of 1.00 MiB (1048576 bytes) at offset 4096 of '/nvme/x' failed: <reason><suffix>".
[[nodiscard]] inline std::string io_failure_message(io_op op, const file& f, std::uint64_t offset,
                                                    std::size_t bytes, const std::string& reason,
                                                    std::string_view suffix = {}) {
  return std::string(io_op_name(op)) + " of " + format_bytes(bytes) + " at offset " +
         std::to_string(offset) + " of '" + f.path() + "' failed: " + reason +
         std::string(suffix);
}

/// The io_error for a request that failed with errno `err` (to be thrown: hence nodiscard).
[[nodiscard]] inline io_error io_failure(io_op op, const file& f, std::uint64_t offset,
                                         std::size_t bytes, int err, std::string_view suffix = {}) {
  return io_error(io_failure_message(op, f, offset, bytes, errno_text(err), suffix));
}

/// A transfer that stopped moving bytes without an error code (end of file on a read).
[[nodiscard]] inline io_error io_stalled(io_op op, const file& f, std::uint64_t offset,
                                         std::size_t bytes, std::size_t done,
                                         std::string_view suffix = {}) {
  const std::string reason =
      (op == io_op::read ? std::string("unexpected end of file") : std::string("no progress")) +
      " after " + std::to_string(done) + " bytes";
  return io_error(io_failure_message(op, f, offset, bytes, reason, suffix));
}

/// errno-style code of a request that stopped without an error: end of file (read) or no
/// progress (write). first_failure words it with io_stalled().
inline constexpr int no_progress = -1;

/// The first request of a call that failed. A call keeps its other requests going until they
/// finish (they point into the caller's memory) and then throws this one: the earliest
/// failure is the one a user can act on; later ones are often its consequences.
struct first_failure {
  bool failed = false;
  int err = 0;  // errno, or no_progress
  std::uint64_t offset = 0;
  std::size_t bytes = 0, done = 0;

  /// Keeps the first failure only.
  void record(std::uint64_t at, std::size_t n, std::size_t moved, int e) noexcept {
    if (failed) return;
    failed = true;
    err = e;
    offset = at;
    bytes = n;
    done = moved;
  }
  explicit operator bool() const noexcept { return failed; }
  /// Throws the io_error for the recorded failure (call only when one was recorded).
  [[noreturn]] void raise(io_op op, const file& f) const {
    if (err == no_progress) throw io_stalled(op, f, offset, bytes, done);
    throw io_failure(op, f, offset, bytes, err);
  }
};

}  // namespace detail
}  // namespace io
STRATA_NAMESPACE_END
