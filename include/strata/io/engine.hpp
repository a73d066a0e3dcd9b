// strata/io/engine.hpp — IO engines: the interface, and the factory that picks one.
//
// What lives here: make_engine(), which returns the io_uring engine where it is compiled in
// (STRATA_HAVE_URING) and the kernel lets it set up, and the pread/pwrite engine otherwise,
// with a one-line notice saying why. The interface itself (engine_config, io::engine) is in
// detail/engine_interface.hpp, which this header includes; the engines are posix_engine.hpp,
// uring_engine.hpp and, for tests, the fault-injecting faulty.hpp.
// What does not: files and their alignment (file.hpp), what is stored in them (nvme_store.hpp).
#pragma once

#include <strata/io/detail/engine_interface.hpp>
#include <strata/io/posix_engine.hpp>
#include <strata/io/uring_engine.hpp>

#include <cstdlib>
#include <memory>

STRATA_NAMESPACE_BEGIN
namespace io {

/// True when this build has the io_uring engine (linked with strata::uring).
#if STRATA_HAVE_URING
inline constexpr bool uring_compiled = true;
#else
inline constexpr bool uring_compiled = false;
#endif

/// The engine that `config` asks for, with the environment variable STRATA_IO_ENGINE
/// (auto|uring|posix) overriding config.kind.
///  - "auto": io_uring if it sets up, else posix; `notice` says why posix was taken
///    (not compiled in, ENOSYS, EPERM from seccomp, disabled by sysctl, ENOMEM from the
///    memlock limit).
///  - "uring": io_uring or config_error saying why not.
///  - "posix": the pread/pwrite engine.
/// `notice` is set to the fallbacks taken ("" when none).
inline std::unique_ptr<engine> make_engine(const engine_config& config, std::string& notice) {
  notice.clear();
  engine_config c = config;
  std::string source = "engine_config.kind";
  if (const char* env = std::getenv("STRATA_IO_ENGINE"); env && *env) {
    c.kind = env;
    source = "STRATA_IO_ENGINE";
  }
  if (c.block_bytes == 0 || !is_aligned(c.block_bytes, 4096) || c.block_bytes > (std::size_t{1} << 30))
    throw config_error("io engine: block_bytes " + std::to_string(c.block_bytes) +
                       " must be a multiple of 4096 and at most 1 GiB");
  if (c.queue_depth == 0 || c.queue_depth > 4096)
    throw config_error("io engine: queue_depth " + std::to_string(c.queue_depth) +
                       " must be 1 .. 4096");
  if (c.rings == 0) throw config_error("io engine: rings must be at least 1");

  if (c.kind == "posix") return std::make_unique<posix_engine>(c);
  if (c.kind != "uring" && c.kind != "auto")
    throw config_error("io engine: " + source + " is '" + c.kind +
                       "'; expected auto, uring or posix");
#if STRATA_HAVE_URING
  try {
    auto e = std::make_unique<uring_engine>(c);
    notice = e->notice();
    return e;
  } catch (const io_error& e) {
    if (c.kind == "uring")
      throw config_error("io engine: " + source + " asks for io_uring, which cannot be used: " +
                         e.what());
    notice = std::string("io engine: posix (") + e.what() + ")";
  }
#else
  if (c.kind == "uring")
    throw config_error("io engine: " + source +
                       " asks for io_uring, but strata was built without liburing "
                       "(link strata::uring; Debian: apt install liburing-dev)");
  notice = "io engine: posix (strata was built without liburing)";
#endif
  return std::make_unique<posix_engine>(c);
}

}  // namespace io
STRATA_NAMESPACE_END
