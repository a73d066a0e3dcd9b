// strata/io/file.hpp — an open file descriptor that knows its path and how it may be read.
//
// What lives here: io::file, the RAII owner of a descriptor, remembering the path (every IO
// error names it), whether O_DIRECT is in effect and the alignment O_DIRECT wants for memory,
// offsets and lengths (statx's STATX_DIOALIGN where kernel and libc have it, else 4096);
// open_for_arena(), the one way strata creates a file to spill into. What does not: reading
// and writing (engine.hpp), and what the bytes in the file mean (nvme_store.hpp).
#pragma once

#include <strata/core/align.hpp>
#include <strata/core/error.hpp>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

STRATA_NAMESPACE_BEGIN
namespace io {

/// "Input/output error (EIO)"-style text for errno values in messages.
inline std::string errno_text(int err) {
  std::string text = std::strerror(err);
  const char* name = nullptr;
  switch (err) {
  case EIO: name = "EIO"; break;
  case ENOSPC: name = "ENOSPC"; break;
  case EINVAL: name = "EINVAL"; break;
  case EPERM: name = "EPERM"; break;
  case EACCES: name = "EACCES"; break;
  case ENOSYS: name = "ENOSYS"; break;
  case ENOMEM: name = "ENOMEM"; break;
  case EEXIST: name = "EEXIST"; break;
  case ENOENT: name = "ENOENT"; break;
  case ELOOP: name = "ELOOP"; break;
  case ENOTDIR: name = "ENOTDIR"; break;
  case EDQUOT: name = "EDQUOT"; break;
  case EFBIG: name = "EFBIG"; break;
  case EBADF: name = "EBADF"; break;
  default: break;
  }
  if (name) text += std::string(" (") + name + ")";
  return text;
}

/// What O_DIRECT needs of `fd`: the larger of the memory and the offset alignment the file
/// system reports, 4096 when it cannot say (no STATX_DIOALIGN, or a file system without
/// direct IO). Always a power of two.
inline std::size_t dio_alignment(int fd) noexcept {
  constexpr std::size_t fallback = 4096;
#if defined(STATX_DIOALIGN) && defined(AT_EMPTY_PATH)
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
    std::size_t a = sx.stx_dio_mem_align > sx.stx_dio_offset_align ? sx.stx_dio_mem_align
                                                                   : sx.stx_dio_offset_align;
    if (a != 0 && is_pow2(a)) return a;
  }
#else
  (void)fd;
#endif
  return fallback;
}

class file {
public:
  file() = default;
  /// Adopts `fd` (closed by the destructor). `direct` says whether it was opened with O_DIRECT.
  file(int fd, std::string path, bool direct)
      : fd_(fd), path_(std::move(path)), direct_(direct), alignment_(dio_alignment(fd)) {}
  file(file&& o) noexcept
      : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)), direct_(o.direct_),
        alignment_(o.alignment_) {}
  file& operator=(file&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      path_ = std::move(o.path_);
      direct_ = o.direct_;
      alignment_ = o.alignment_;
    }
    return *this;
  }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file() { close(); }

  /// Creates a new file to spill into: read-write, mode 0600, never an existing file
  /// (O_EXCL), never through a symbolic link (O_NOFOLLOW), not inherited by exec'd children,
  /// and with O_DIRECT, so spilled tensors do not crowd the page cache. Where the file system
  /// refuses O_DIRECT (EINVAL: e.g. tmpfs before Linux 6.6, ramfs, some FUSE file systems)
  /// the file stays buffered and `notice` says so; otherwise `notice` is left as it is.
  /// Throws io_error naming the path and the system's reason.
  [[nodiscard]] static file open_for_arena(std::string path, std::string& notice) {
    const std::string name = path;
    return open_for_arena_at(AT_FDCWD, name, std::move(path), notice);
  }

  /// As open_for_arena(), creating `name` inside the open directory `dir_fd`, so a caller
  /// that has checked a directory creates the file in that very directory, not in whatever
  /// its path names by then. `path` is the name messages use (the directory's path + name).
  [[nodiscard]] static file open_for_arena_at(int dir_fd, const std::string& name,
                                              std::string path, std::string& notice) {
    constexpr int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    // The exclusive create happens buffered and O_DIRECT is switched on right after (F_SETFL
    // applies the same check as open()): an open() that created the file and then refused
    // O_DIRECT would leave a file behind that a retry with O_EXCL could not tell from another
    // process's.
    int fd;
    do {
      fd = ::openat(dir_fd, name.c_str(), flags, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
      const int err = errno;
      throw io_error("cannot create arena file '" + path + "': " + errno_text(err));
    }
    bool direct = false;
#if defined(O_DIRECT)
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0 && ::fcntl(fd, F_SETFL, fl | O_DIRECT) == 0) {
      direct = true;
    } else {
      const int err = errno;
      if (err != EINVAL) {
        ::close(fd);
        ::unlinkat(dir_fd, name.c_str(), 0);
        throw io_error("cannot switch arena file '" + path + "' to O_DIRECT: " +
                       errno_text(err));
      }
      notice = "arena file '" + path +
               "': the file system refuses O_DIRECT (EINVAL), using buffered IO (page cache)";
    }
#else
    notice = "arena file '" + path + "': no O_DIRECT on this platform, using buffered IO";
#endif
    return file(fd, std::move(path), direct);
  }

  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }
  /// True when O_DIRECT is in effect: buffers, offsets and lengths must be alignment()-aligned.
  bool direct() const noexcept { return direct_; }
  /// Alignment O_DIRECT wants for memory, file offsets and lengths (a power of two).
  std::size_t alignment() const noexcept { return alignment_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
  std::string path_;
  bool direct_ = false;
  std::size_t alignment_ = 4096;
};

}  // namespace io
STRATA_NAMESPACE_END
