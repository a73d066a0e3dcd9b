// strata/io/engine.hpp — the IO engine interface: what every engine is, and how it is configured.
//
// What lives here: engine_config and the one function that validates it (validate()), the one
// function that sizes requests (request_bytes()), the abstract io::engine and the io_engine
// concept. An engine is written against this header alone; callers that want one chosen for
// them include make_engine.hpp, the factory.
// What does not: the engines (posix_engine.hpp, uring_engine.hpp, faulty.hpp for tests), the
// factory (make_engine.hpp), files and their alignment (file.hpp), what is stored in them
// (nvme_store.hpp), how failures are worded (detail/io_failure.hpp).
#pragma once

#include <strata/io/file.hpp>

#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <sys/uio.h>

STRATA_NAMESPACE_BEGIN
namespace io {

struct engine_config {
  /// "auto" (io_uring when it works, else posix), "uring" or "posix". The environment
  /// variable STRATA_IO_ENGINE (same values) overrides it, so a deployment can switch engines
  /// without rebuilding.
  std::string kind = "auto";
  /// Large transfers are split into requests of this many bytes (request_bytes()); a multiple
  /// of 4096, so every piece of an O_DIRECT transfer stays aligned. 4 KiB .. 1 GiB.
  std::size_t block_bytes = 1 << 20;
  /// Requests in flight per call, at most; 1 .. 4096. The same meaning in both engines: one
  /// call keeps up to this many block-sized requests moving at once. io_uring: the entries of
  /// each ring, all kept busy. posix: the pool threads one call occupies at once, so also at
  /// most posix_threads (with posix_threads 0 the calling thread moves one request at a time).
  unsigned queue_depth = 16;
  /// io_uring rings; concurrent calls each borrow one, so this many calls run at once. 1 .. 1024.
  unsigned rings = 2;
  /// io_uring submission-queue polling by a kernel thread (saves syscalls, costs a core).
  bool sqpoll = false;
  /// Threads of the pread/pwrite engine, shared by all calls; 0 does the IO on the calling
  /// thread. 0 .. 1024.
  unsigned posix_threads = 4;
};

/// The limits validate() enforces (io_uring takes at most 4096 entries per ring).
inline constexpr std::size_t max_block_bytes = std::size_t{1} << 30;
inline constexpr unsigned max_queue_depth = 4096;
inline constexpr unsigned max_rings = 1024;
inline constexpr unsigned max_posix_threads = 1024;

/// The engine kind a config asks for and where that came from (for messages):
/// STRATA_IO_ENGINE when it is set and not empty, else `<name>.kind`.
struct engine_kind_choice {
  std::string kind;
  std::string source;
};

[[nodiscard]] inline engine_kind_choice chosen_kind(const engine_config& c,
                                                    std::string_view name = "engine_config") {
  if (const char* env = std::getenv("STRATA_IO_ENGINE"); env && *env)
    return {env, "STRATA_IO_ENGINE"};
  return {c.kind, std::string(name) + ".kind"};
}

/// The one check of an engine_config, made by every engine's constructor, by make_engine() and
/// by nvme_store (which sizes its reads from it): throws config_error naming the field (as
/// `<name>.<field>`, or STRATA_IO_ENGINE for a kind it set), its value and the allowed range.
inline void validate(const engine_config& c, std::string_view name = "engine_config") {
  auto refuse = [&](const std::string& field, const std::string& value, const char* allowed) {
    throw config_error("io engine: " + field + " is " + value + "; allowed: " + allowed);
  };
  const std::string n(name);
  const engine_kind_choice k = chosen_kind(c, name);
  if (k.kind != "auto" && k.kind != "uring" && k.kind != "posix")
    refuse(k.source, "'" + k.kind + "'", "auto, uring or posix");
  if (c.block_bytes < 4096 || c.block_bytes > max_block_bytes || c.block_bytes % 4096 != 0)
    refuse(n + ".block_bytes", std::to_string(c.block_bytes),
           "a multiple of 4096 from 4096 to 1073741824 (1 GiB)");
  if (c.queue_depth == 0 || c.queue_depth > max_queue_depth)
    refuse(n + ".queue_depth", std::to_string(c.queue_depth), "1 .. 4096");
  if (c.rings == 0 || c.rings > max_rings)
    refuse(n + ".rings", std::to_string(c.rings), "1 .. 1024");
  if (c.posix_threads > max_posix_threads)
    refuse(n + ".posix_threads", std::to_string(c.posix_threads),
           "0 (IO on the calling thread) .. 1024");
}

/// The one decision of how big a request is: the next request of a transfer with `remaining`
/// bytes left moves block_bytes, or what remains. request_bytes(c) is a whole request. Both
/// engines cut transfers with it, and nvme_store sizes its reads in whole requests, so a
/// change of request size here reaches every reader and writer at once.
[[nodiscard]] constexpr std::size_t request_bytes(
    const engine_config& c,
    std::size_t remaining = std::numeric_limits<std::size_t>::max()) noexcept {
  return remaining < c.block_bytes ? remaining : c.block_bytes;
}

enum class io_op : std::uint8_t { read, write };

constexpr const char* io_op_name(io_op op) noexcept { return op == io_op::read ? "read" : "write"; }

/// Moves bytes between memory and a file. Calls block until every byte has moved or throw
/// io_error naming the file, the offset, the byte count and the system's reason; they are
/// safe to make from several threads at once (the IO worker threads do). On an O_DIRECT file
/// (file::direct()) the memory address, the offset and the byte count must be multiples of
/// file::alignment(); engines do not bounce — nvme_store does that where it must.
/// A new engine derives from this class, takes an engine_config it passes to validate(), cuts
/// transfers with request_bytes() and keeps at most queue_depth requests of a call in flight.
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

}  // namespace io
STRATA_NAMESPACE_END
