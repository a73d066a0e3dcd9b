// strata/io/make_engine.hpp — the factory that picks an IO engine for a config.
//
// What lives here: make_engine(), which returns the io_uring engine where it is compiled in
// (STRATA_HAVE_URING) and the kernel lets it set up, and the pread/pwrite engine otherwise,
// with a one-line notice saying why; uring_compiled, whether this build has io_uring at all.
// It lives apart from the interface (engine.hpp) because it needs every engine and every
// engine needs the interface.
// What does not: the interface and the config's rules (engine.hpp), the engines themselves
// (posix_engine.hpp, uring_engine.hpp).
#pragma once

#include <strata/io/engine.hpp>
#include <strata/io/posix_engine.hpp>
#include <strata/io/uring_engine.hpp>

#include <memory>
#include <string>

STRATA_NAMESPACE_BEGIN
namespace io {

/// True when this build has the io_uring engine (linked with strata::uring).
#if STRATA_HAVE_URING
inline constexpr bool uring_compiled = true;
#else
inline constexpr bool uring_compiled = false;
#endif

/// The engine that `config` asks for, with the environment variable STRATA_IO_ENGINE
/// (auto|uring|posix) overriding config.kind (chosen_kind()).
///  - "auto": io_uring if it sets up, else posix; `notice` says why posix was taken
///    (not compiled in, ENOSYS, EPERM from seccomp, disabled by sysctl, ENOMEM from the
///    memlock limit).
///  - "uring": io_uring or config_error saying why not.
///  - "posix": the pread/pwrite engine.
/// A config that validate() refuses is a config_error naming the field. `notice` is set to
/// the fallbacks taken ("" when none).
[[nodiscard]] inline std::unique_ptr<engine> make_engine(const engine_config& config,
                                                         std::string& notice) {
  notice.clear();
  validate(config);
  const engine_kind_choice choice = chosen_kind(config);
  if (choice.kind == "posix") return std::make_unique<posix_engine>(config);
#if STRATA_HAVE_URING
  try {
    auto e = std::make_unique<uring_engine>(config);
    notice = e->notice();
    return e;
  } catch (const io_error& e) {
    if (choice.kind == "uring")
      throw config_error("io engine: " + choice.source +
                         " asks for io_uring, which cannot be used: " + e.what());
    notice = std::string("io engine: posix (") + e.what() + ")";
  }
#else
  if (choice.kind == "uring")
    throw config_error("io engine: " + choice.source +
                       " asks for io_uring, but strata was built without liburing "
                       "(link strata::uring; Debian: apt install liburing-dev)");
  notice = "io engine: posix (strata was built without liburing)";
#endif
  return std::make_unique<posix_engine>(config);
}

}  // namespace io
STRATA_NAMESPACE_END
