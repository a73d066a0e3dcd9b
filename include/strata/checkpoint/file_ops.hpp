// strata/checkpoint/file_ops.hpp — the POSIX calls a checkpoint is made of, in one seam.
//
// What lives here: checkpoint::file_ops, the few file-system calls a checkpoint writer and reader
// make (mkdir, exclusive create, pwrite, pread, fsync, rename, unlink), every one relative to an
// open directory and never through a symbolic link (O_NOFOLLOW), each failure an io_error naming
// the path, the offset and the system's reason; fs_fault, the hook through which a test makes any
// of them fail (EIO, ENOSPC, ...) before it runs; unique_fd, the owner of a descriptor.
// What does not: what the files hold (manifest.hpp, shard_file.hpp) and in which order they are
// made durable (directory.hpp). Checkpoints are written with plain POSIX calls rather than an
// io::engine because a checkpoint is a handful of large sequential files written once: the
// order of fsyncs and renames is what matters, and it is easiest to read and test here.
#pragma once

#include <strata/core/error.hpp>
#include <strata/io/file.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {

/// The calls a fault can be injected into.
enum class fs_op : std::uint8_t { mkdir, create, write, fsync, rename, remove, open, read };

inline const char* fs_op_name(fs_op op) noexcept {
  switch (op) {
  case fs_op::mkdir: return "mkdir";
  case fs_op::create: return "create";
  case fs_op::write: return "write";
  case fs_op::fsync: return "fsync";
  case fs_op::rename: return "rename";
  case fs_op::remove: return "remove";
  case fs_op::open: return "open";
  case fs_op::read: return "read";
  }
  return "?";
}

/// Called before each call with the operation and the path it touches; a non-zero return is the
/// errno the call then fails with (without running), reported with "(injected)". Tests only.
using fs_fault = std::function<int(fs_op op, const std::string& path)>;

/// Owns a file descriptor; closes it on destruction.
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
};

/// The checkpoint floor's file-system calls. `at` is an open directory, `name` an entry in it
/// and `path` the name messages use. Every call that fails throws io_error.
class file_ops {
public:
  explicit file_ops(fs_fault fault = {}) : fault_(std::move(fault)) {}

  /// Opens a directory for *at calls; a symbolic link is refused (ELOOP / ENOTDIR).
  [[nodiscard]] unique_fd open_dir(int at, const std::string& name, const std::string& path) const {
    inject(fs_op::open, path, "cannot open directory");
    const int fd = ::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) fail("cannot open directory", path, errno);
    return unique_fd(fd);
  }
  /// Creates a directory; an existing entry of that name is an error (EEXIST).
  void make_dir(int at, const std::string& name, const std::string& path) const {
    inject(fs_op::mkdir, path, "cannot create directory");
    if (::mkdirat(at, name.c_str(), 0755) != 0) fail("cannot create directory", path, errno);
  }
  /// Creates a new file for writing: never an existing one (O_EXCL), never through a link.
  [[nodiscard]] unique_fd create_file(int at, const std::string& name, const std::string& path) const {
    inject(fs_op::create, path, "cannot create");
    const int fd = retry([&] {
      return ::openat(at, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    });
    if (fd < 0) fail("cannot create", path, errno);
    return unique_fd(fd);
  }
  /// Opens a file for reading, not through a link. ENOENT is reported as "does not exist".
  [[nodiscard]] unique_fd open_read(int at, const std::string& name, const std::string& path) const {
    inject(fs_op::open, path, "cannot open");
    const int fd = retry([&] { return ::openat(at, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC); });
    if (fd < 0) fail(errno == ENOENT ? "missing file" : "cannot open", path, errno);
    return unique_fd(fd);
  }
  /// Writes all n bytes at `offset` (pwrite, retried on short writes and EINTR).
  void write_at(int fd, const void* src, std::size_t n, std::uint64_t offset,
                const std::string& path) const {
    inject(fs_op::write, path, where("cannot write", n, offset).c_str());
    const auto* p = static_cast<const unsigned char*>(src);
    for (std::size_t done = 0; done < n;) {
      const ssize_t w = ::pwrite(fd, p + done, n - done, static_cast<off_t>(offset + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(where("cannot write", n, offset), path, w < 0 ? errno : EIO);
      done += static_cast<std::size_t>(w);
    }
  }
  /// Copies n bytes from `src` at src_offset to `dst` at dst_offset inside the kernel
  /// (copy_file_range: no trip through this process's memory; a reflink or server-side copy
  /// where the file system has one). Where the kernel cannot (EXDEV, EINVAL, ENOSYS,
  /// EOPNOTSUPP: other file systems, an O_DIRECT source on some), through a 1 MiB buffer.
  /// Returns the bytes the kernel copied by itself. A short source is an io_error (EIO).
  std::size_t copy_range(int src, std::uint64_t src_offset, const std::string& src_path, int dst,
                         std::uint64_t dst_offset, std::size_t n, const std::string& path) const {
    inject(fs_op::write, path, where("cannot write", n, dst_offset).c_str());
    std::size_t done = 0, in_kernel = 0;
    while (done < n) {
      loff_t from = static_cast<loff_t>(src_offset + done), to = static_cast<loff_t>(dst_offset + done);
      const ssize_t c = ::copy_file_range(src, &from, dst, &to, n - done, 0);
      if (c < 0 && errno == EINTR) continue;
      if (c < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP))
        break;  // the rest through memory
      if (c < 0) fail(where("cannot copy into", n, dst_offset) + " from '" + src_path + "'", path, errno);
      if (c == 0) fail(where("cannot copy into", n, dst_offset) + ": '" + src_path + "' ends early", path, EIO);
      done += static_cast<std::size_t>(c);
      in_kernel += static_cast<std::size_t>(c);
    }
    std::vector<unsigned char> buf(std::min<std::size_t>(n - done, std::size_t{1} << 20));
    while (done < n) {
      const std::size_t k = std::min(buf.size(), n - done);
      if (read_at(src, buf.data(), k, src_offset + done, src_path) != k)
        fail(where("cannot copy into", n, dst_offset) + ": '" + src_path + "' ends early", path, EIO);
      write_at(dst, buf.data(), k, dst_offset + done, path);
      done += k;
    }
    return in_kernel;
  }
  /// Reads up to n bytes at `offset`; fewer only at the end of the file. Returns the count.
  [[nodiscard]] std::size_t read_at(int fd, void* dst, std::size_t n, std::uint64_t offset,
                                    const std::string& path) const {
    inject(fs_op::read, path, where("cannot read", n, offset).c_str());
    auto* p = static_cast<unsigned char*>(dst);
    std::size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail(where("cannot read", n, offset), path, errno);
      if (r == 0) break;
      done += static_cast<std::size_t>(r);
    }
    return done;
  }
  /// fsync: the file's data (or a directory's entries) reach the disk.
  void sync(int fd, const std::string& path) const {
    inject(fs_op::fsync, path, "cannot fsync");
    if (::fsync(fd) != 0) fail("cannot fsync", path, errno);
  }
  /// Renames an entry; with `replace` false an existing target is an error, never overwritten.
  void rename(int at, const std::string& from, const std::string& to, const std::string& from_path,
              const std::string& to_path, bool replace) const {
    const std::string what = "cannot rename '" + from_path + "' to";
    inject(fs_op::rename, to_path, what.c_str());
    if (!replace) {
#if defined(RENAME_NOREPLACE)
      // Atomic no-replace where the kernel and file system have it; else check, then rename.
      if (::renameat2(at, from.c_str(), at, to.c_str(), RENAME_NOREPLACE) == 0) return;
      if (errno != EINVAL && errno != ENOSYS) fail(what, to_path, errno);
#endif
      if (exists(at, to)) fail(what, to_path, EEXIST);
    }
    if (::renameat(at, from.c_str(), at, to.c_str()) != 0) fail(what, to_path, errno);
  }
  /// Removes a file (or a link: never what it points to).
  void remove_file(int at, const std::string& name, const std::string& path) const {
    inject(fs_op::remove, path, "cannot remove");
    if (::unlinkat(at, name.c_str(), 0) != 0 && errno != ENOENT) fail("cannot remove", path, errno);
  }
  /// Removes a directory and everything in it, following no link.
  void remove_tree(int at, const std::string& name, const std::string& path) const;
  /// The names in an open directory, without "." and "..".
  [[nodiscard]] std::vector<std::string> list(int dir_fd, const std::string& path) const;
  /// True when `name` exists in `at` (as anything, a link included).
  [[nodiscard]] static bool exists(int at, const std::string& name) noexcept {
    struct stat st {};
    return ::fstatat(at, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  }
  /// True when `name` in `at` is a directory (not a link to one).
  [[nodiscard]] static bool is_dir(int at, const std::string& name) noexcept {
    struct stat st {};
    return ::fstatat(at, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
  }
  /// The size of an open file.
  [[nodiscard]] static std::uint64_t size_of(int fd, const std::string& path) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail("cannot stat", path, errno);
    return static_cast<std::uint64_t>(st.st_size);
  }

  [[noreturn]] static void fail(const std::string& what, const std::string& path, int err,
                                bool injected = false) {
    throw io_error("checkpoint: " + what + " '" + path + "': " + io::errno_text(err) +
                   (injected ? " (injected)" : ""));
  }

private:
  void inject(fs_op op, const std::string& path, const char* what) const {
    if (!fault_) return;
    if (const int err = fault_(op, path)) fail(what, path, err, true);
  }
  static std::string where(const char* what, std::size_t n, std::uint64_t offset) {
    return std::string(what) + " " + std::to_string(n) + " bytes at offset " +
           std::to_string(offset) + " of";
  }
  template <class F>
  static int retry(F f) {
    int fd;
    do fd = f();
    while (fd < 0 && errno == EINTR);
    return fd;
  }

  fs_fault fault_;
};

inline std::vector<std::string> file_ops::list(int dir_fd, const std::string& path) const {
  const int copy = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);  // closedir closes it, not dir_fd
  if (copy < 0) fail("cannot list", path, errno);
  DIR* d = ::fdopendir(copy);
  if (!d) {
    const int err = errno;
    ::close(copy);
    fail("cannot list", path, err);
  }
  ::rewinddir(d);
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

inline void file_ops::remove_tree(int at, const std::string& name, const std::string& path) const {
  inject(fs_op::remove, path, "cannot remove");
  if (!is_dir(at, name)) {  // a file or a link: the entry itself goes
    if (::unlinkat(at, name.c_str(), 0) != 0 && errno != ENOENT) fail("cannot remove", path, errno);
    return;
  }
  {
    unique_fd dir = open_dir(at, name, path);
    for (const std::string& e : list(dir.get(), path)) remove_tree(dir.get(), e, path + "/" + e);
  }
  if (::unlinkat(at, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
    fail("cannot remove directory", path, errno);
}

}  // namespace checkpoint
STRATA_NAMESPACE_END
