// strata/io/detail/engine_interface.hpp — the IO engine interface, without the factory.
//
// Include <strata/io/engine.hpp>, which adds make_engine(). This part lives apart only because
// the engines (posix_engine.hpp, uring_engine.hpp, faulty.hpp) need the interface and the
// factory needs the engines; one header holding both would include itself.
// What lives here: engine_config, the abstract engine, the wording of IO failures (shared by
// real and injected ones, so a test cannot tell them apart by anything but "(injected)").
#pragma once

#include <strata/io/file.hpp>

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include <sys/uio.h>

STRATA_NAMESPACE_BEGIN
namespace io {

struct engine_config {
  /// "auto" (io_uring when it works, else posix), "uring" or "posix". The environment
  /// variable STRATA_IO_ENGINE (same values) overrides it, so a deployment can switch engines
  /// without rebuilding.
  std::string kind = "auto";
  /// Large transfers are split into requests of this many bytes (a multiple of 4096, so every
  /// piece of an O_DIRECT transfer stays aligned).
  std::size_t block_bytes = 1 << 20;
  /// Requests in flight per call (io_uring: entries per ring).
  unsigned queue_depth = 16;
  /// io_uring rings; concurrent calls each borrow one, so this many calls run at once.
  unsigned rings = 2;
  /// io_uring submission-queue polling by a kernel thread (saves syscalls, costs a core).
  bool sqpoll = false;
  /// Threads of the pread/pwrite engine; 0 does the IO on the calling thread.
  unsigned posix_threads = 4;
};

enum class io_op : std::uint8_t { read, write };

constexpr const char* io_op_name(io_op op) noexcept { return op == io_op::read ? "read" : "write"; }

/// Moves bytes between memory and a file. Calls block until every byte has moved or throw
/// io_error naming the file, the offset, the byte count and the system's reason; they are
/// safe to make from several threads at once (the IO worker threads do). On an O_DIRECT file
/// (file::direct()) the memory address, the offset and the byte count must be multiples of
/// file::alignment(); engines do not bounce — nvme_store does that where it must.
class engine {
public:
  virtual ~engine() = default;
  virtual const char* name() const noexcept = 0;
  virtual void read(const file& f, void* dst, std::size_t bytes, std::uint64_t offset) = 0;
  virtual void write(const file& f, const void* src, std::size_t bytes, std::uint64_t offset) = 0;
  /// Offers long-lived buffers (a pinned pool) for faster IO into them (io_uring's registered
  /// buffers). Returns whether the engine took them; false is never an error (the engine has
  /// no such thing, or the locked-memory limit is too low) and IO works the same either way.
  /// The buffers must outlive the registration (unregister_buffers() or the engine).
  virtual bool register_buffers(std::span<const iovec> buffers) {
    (void)buffers;
    return false;
  }
  virtual void unregister_buffers() noexcept {}
};

/// An IO engine: a concrete class derived from io::engine.
template <class E>
concept io_engine = std::derived_from<E, engine> && !std::is_abstract_v<E>;

namespace detail {

/// "read of 1.00 MiB (1048576 bytes) at offset 4096 of '/nvme/x' failed: <reason><suffix>".
inline std::string io_failure_message(io_op op, const file& f, std::uint64_t offset,
                                      std::size_t bytes, const std::string& reason,
                                      std::string_view suffix = {}) {
  return std::string(io_op_name(op)) + " of " + format_bytes(bytes) + " at offset " +
         std::to_string(offset) + " of '" + f.path() + "' failed: " + reason +
         std::string(suffix);
}

inline io_error io_failure(io_op op, const file& f, std::uint64_t offset, std::size_t bytes,
                           int err, std::string_view suffix = {}) {
  return io_error(io_failure_message(op, f, offset, bytes, errno_text(err), suffix));
}

/// A transfer that stopped moving bytes without an error code (end of file on a read).
inline io_error io_stalled(io_op op, const file& f, std::uint64_t offset, std::size_t bytes,
                           std::size_t done, std::string_view suffix = {}) {
  const std::string reason =
      (op == io_op::read ? std::string("unexpected end of file") : std::string("no progress")) +
      " after " + std::to_string(done) + " bytes";
  return io_error(io_failure_message(op, f, offset, bytes, reason, suffix));
}

}  // namespace detail
}  // namespace io
STRATA_NAMESPACE_END
