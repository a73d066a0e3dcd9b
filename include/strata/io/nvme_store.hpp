// strata/io/nvme_store.hpp — the NVMe tier's storage: tensors as checksummed extents of a file.
//
// What lives here: nvme_store, one arena file per store (per rank) in a directory the user
// names, carved into extents by a first-fit allocator. A tensor's bytes live in one extent,
// followed by a CRC-32C per checksum_block ("a checksum written beside the data"); reads check
// every block they touch and a mismatch is a format_error, never silent garbage. They check
// against the copy of the table the store keeps in memory (what it wrote; 4 bytes per block),
// so a read costs no extra IO and a damaged table on disk cannot vouch for damaged data.
// Writes are copy-on-write transactions: the new data goes to a new extent and only commit()
// makes it current, so a failed write (EIO, ENOSPC, an exception in the writer) leaves the
// previous data intact and readable. Unaligned heads and tails of O_DIRECT transfers go through small
// bounce buffers from a (pinned, budgeted) memory resource, one or two blocks per call.
// What does not: moving tensors between tiers and scheduling the IO (exec/, the context);
// the engines that do the IO (engine.hpp); durability across crashes (a swap file is scratch:
// nothing is fsync'ed, and the file is removed when the store goes away).
//
// Layout of one extent (every offset a multiple of alignment()):
//   [ data: size bytes, padded to alignment() | CRC-32C table: uint32 LE per block, padded ]
#pragma once

#include <strata/io/crc32c.hpp>
#include <strata/io/engine.hpp>
#include <strata/memory/buffer.hpp>
#include <strata/memory/resource.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

STRATA_NAMESPACE_BEGIN
namespace io {

struct nvme_config {
  std::string directory;                  // must exist; a symlink is refused; files are created inside
  int rank = 0;                           // file name: strata-rank<rank>-<pid>-<counter>.nvme
  bool keep_files = false;                // remove the file on destruction unless true
  std::size_t checksum_block = 1 << 20;   // CRC-32C granularity; power of two, >= file alignment
  engine_config engine;
};

class nvme_store {
public:
  using handle = std::uint64_t;

  /// Opens `config.directory` (refusing a symbolic link or a missing directory with
  /// config_error) and creates the arena file in it (mode 0600, O_EXCL, O_NOFOLLOW, O_DIRECT
  /// where the file system allows). `bounce` gives the small aligned bounce buffers for
  /// unaligned heads and tails; `e` defaults to make_engine(config.engine, ...).
  /// `engine_notice` is how a caller-made `e` came to be (e.g. why io_uring was not used); it
  /// leads notice().
  nvme_store(const nvme_config& config, memory_resource& bounce, std::unique_ptr<engine> e = nullptr,
             std::string engine_notice = {});
  /// Removes the file unless keep_files. Every write_txn must have ended before.
  ~nvme_store();
  nvme_store(const nvme_store&) = delete;
  nvme_store& operator=(const nvme_store&) = delete;

  const std::string& path() const noexcept { return file_.path(); }
  /// Fallbacks taken (posix engine instead of io_uring, buffered IO instead of O_DIRECT), "" if none.
  const std::string& notice() const noexcept { return notice_; }
  engine& io() noexcept { return *engine_; }
  std::size_t checksum_block() const noexcept { return block_; }
  /// True when the file is read and written with O_DIRECT.
  bool direct() const noexcept { return file_.direct(); }
  /// Alignment of every extent (and of the file offsets of reads and writes).
  std::size_t alignment() const noexcept { return extent_align_; }

  /// A tensor's home: `bytes` bytes, named `name` in messages. No file space is taken until
  /// the first write; reads before it give zeros.
  handle create(std::size_t bytes, std::string name);
  /// Frees the tensor's extent. Unknown handles are ignored.
  void destroy(handle h) noexcept;
  std::size_t size(handle h) const;
  std::string name(handle h) const;

  /// Reads `bytes` bytes from `offset` (a multiple of checksum_block(); the read may stop
  /// before the end) into `dst` (any alignment), checking the CRC of every block it touches;
  /// a mismatch throws format_error naming the file, file offset, tensor and both CRCs.
  /// Blocking and thread-safe for different handles; the caller orders ops on one handle.
  void read(handle h, std::size_t offset, void* dst, std::size_t bytes);

  /// Copy-on-write: writes go to a new extent; commit() makes it the tensor's data.
  class write_txn {
  public:
    write_txn(write_txn&& o) noexcept;
    write_txn& operator=(write_txn&&) = delete;
    write_txn(const write_txn&) = delete;
    write_txn& operator=(const write_txn&) = delete;
    /// Not committed (an error, an exception): frees the new extent; the old data stays.
    ~write_txn();

    /// `offset` a multiple of checksum_block(), `bytes` any; ranges in any order, each byte
    /// of [0, size) exactly once. An overlap or a range past the end is a config_error; a
    /// failed write (io_error) may be retried before commit.
    void write(std::size_t offset, const void* src, std::size_t bytes);
    /// Writes the checksum table beside the data, then makes the new extent current and frees
    /// the old one. config_error when some byte of [0, size) was not written.
    void commit();
    std::size_t size() const noexcept { return size_; }
    bool committed() const noexcept { return committed_; }

  private:
    friend class nvme_store;
    struct extent_ref {
      std::uint64_t offset = 0, length = 0;
    };
    write_txn(nvme_store& store, handle h, std::string name, std::size_t size, extent_ref ext);

    nvme_store* store_;
    handle h_;
    std::string name_;
    std::size_t size_;
    extent_ref ext_;
    std::vector<std::uint32_t> crcs_;
    std::map<std::size_t, std::size_t> written_;  // start -> end of each range written
    std::size_t written_bytes_ = 0;
    bool committed_ = false;
  };

  /// Starts a transaction on `h`; it must cover every byte of the tensor before commit().
  write_txn begin_write(handle h);
  /// begin_write + write(0, src, bytes) + commit.
  void write(handle h, const void* src, std::size_t bytes);

  /// Bytes of the file taken by current extents and by the new extents of open transactions.
  std::size_t bytes_reserved() const noexcept { return reserved_.load(std::memory_order_relaxed); }
  /// Size of the arena file.
  std::uint64_t file_bytes() const noexcept { return file_size_.load(std::memory_order_relaxed); }
  /// File offset of the tensor's current data (for tests and tools); config_error before the
  /// first commit.
  std::uint64_t file_offset_of(handle h) const;

private:
  using extent = write_txn::extent_ref;
  struct tensor {
    std::string name;
    std::size_t bytes = 0;
    extent current;
    bool has_data = false;
    std::shared_ptr<const std::vector<std::uint32_t>> crcs;
  };

  std::size_t data_bytes(std::size_t size) const noexcept { return align_up(size, extent_align_); }
  std::size_t block_count(std::size_t size) const noexcept { return (size + block_ - 1) / block_; }
  std::size_t table_bytes(std::size_t size) const noexcept {
    return align_up(block_count(size) * sizeof(std::uint32_t), extent_align_);
  }
  // The alignment transfers need: O_DIRECT's, or none for a buffered file.
  std::size_t io_align() const noexcept { return file_.direct() ? file_.alignment() : 1; }
  std::string where(const std::string& name) const { return "nvme tensor '" + name + "': "; }
  const tensor& find(handle h, const char* what) const;

  extent allocate(std::uint64_t bytes, const std::string& name);  // under mutex_
  void release(extent e) noexcept;                                // under mutex_
  void abandon(extent e) noexcept;
  void install(handle h, const std::string& name, extent e, std::vector<std::uint32_t> crcs);
  buffer bounce(std::size_t bytes, const std::string& name);
  template <class Side, class Io>
  static void overlapped(bool on, Side&& side, Io&& io);
  void put(const std::string& name, std::uint64_t file_offset, const char* src, std::size_t bytes);
  void verify_failed(const std::string& name, std::uint64_t file_offset, std::size_t block,
                     std::size_t blocks, std::size_t bytes, std::uint32_t expected,
                     std::uint32_t actual) const;

  nvme_config config_;
  memory_resource& bounce_;
  std::unique_ptr<engine> engine_;
  std::string notice_;
  int dir_fd_ = -1;
  std::string file_name_;  // inside the directory
  file file_;
  std::size_t block_ = 0;
  std::size_t extent_align_ = 4096;
  std::size_t bounce_max_ = 0;

  mutable std::mutex mutex_;
  std::unordered_map<handle, tensor> tensors_;
  handle next_handle_ = 1;
  std::map<std::uint64_t, std::uint64_t> free_;  // offset -> length, coalesced
  std::atomic<std::uint64_t> file_size_{0};
  std::atomic<std::size_t> reserved_{0};
};

// ---------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------

inline nvme_store::nvme_store(const nvme_config& config, memory_resource& bounce,
                              std::unique_ptr<engine> e, std::string engine_notice)
    : config_(config), bounce_(bounce) {
  if (config_.directory.empty())
    throw config_error("nvme store: no directory given (nvme_config::directory)");
  while (config_.directory.size() > 1 && config_.directory.back() == '/')
    config_.directory.pop_back();
  const std::string& dir = config_.directory;
  if (!is_pow2(config_.checksum_block))
    throw config_error("nvme store in '" + dir + "': checksum_block " +
                       std::to_string(config_.checksum_block) + " is not a power of two");

  dir_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir_fd_ < 0) {
    const int err = errno;
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
      throw config_error("nvme store: directory '" + dir +
                         "' is a symbolic link; name the real directory (a link can be "
                         "redirected to somewhere else)");
    if (err == ENOENT)
      throw config_error("nvme store: directory '" + dir + "' does not exist");
    if (err == ENOTDIR) throw config_error("nvme store: '" + dir + "' is not a directory");
    throw config_error("nvme store: cannot open directory '" + dir + "': " + errno_text(err));
  }

  try {
    engine_ = e ? std::move(e) : make_engine(config_.engine, engine_notice);

    // pid + a per-process counter: two stores of one process, or of two processes, never
    // share a name; a stale file of a dead process with the same pid is skipped, not reused.
    static std::atomic<std::uint64_t> counter{0};
    std::string file_notice;
    for (int attempt = 0;; ++attempt) {
      file_name_ = "strata-rank" + std::to_string(config_.rank) + "-" +
                   std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".nvme";
      if (::faccessat(dir_fd_, file_name_.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0 && attempt < 1000)
        continue;
      file_ = file::open_for_arena_at(dir_fd_, file_name_, dir + "/" + file_name_, file_notice);
      break;
    }
    notice_ = engine_notice;
    if (!file_notice.empty()) notice_ += (notice_.empty() ? "" : "; ") + file_notice;

    block_ = config_.checksum_block;
    extent_align_ = std::max<std::size_t>(file_.alignment(), 4096);
    if (block_ < file_.alignment())
      throw config_error("nvme store '" + file_.path() + "': checksum_block " +
                         std::to_string(block_) + " is below the file's O_DIRECT alignment " +
                         std::to_string(file_.alignment()));
    bounce_max_ = std::max<std::size_t>(block_, std::size_t{1} << 20);
  } catch (...) {
    if (file_) {
      file_.close();
      ::unlinkat(dir_fd_, file_name_.c_str(), 0);
    }
    ::close(dir_fd_);
    throw;
  }
}

inline nvme_store::~nvme_store() {
  file_.close();
  if (!config_.keep_files) ::unlinkat(dir_fd_, file_name_.c_str(), 0);
  ::close(dir_fd_);
}

inline nvme_store::handle nvme_store::create(std::size_t bytes, std::string name) {
  std::lock_guard lock(mutex_);
  const handle h = next_handle_++;
  tensor& t = tensors_[h];
  t.name = std::move(name);
  t.bytes = bytes;
  return h;
}

inline void nvme_store::destroy(handle h) noexcept {
  std::lock_guard lock(mutex_);
  auto it = tensors_.find(h);
  if (it == tensors_.end()) return;
  release(it->second.current);
  tensors_.erase(it);
}

inline const nvme_store::tensor& nvme_store::find(handle h, const char* what) const {
  auto it = tensors_.find(h);
  if (it == tensors_.end())
    throw config_error("nvme store '" + file_.path() + "': " + what + " of unknown handle " +
                       std::to_string(h));
  return it->second;
}

inline std::size_t nvme_store::size(handle h) const {
  std::lock_guard lock(mutex_);
  return find(h, "size").bytes;
}

inline std::string nvme_store::name(handle h) const {
  std::lock_guard lock(mutex_);
  return find(h, "name").name;
}

inline std::uint64_t nvme_store::file_offset_of(handle h) const {
  std::lock_guard lock(mutex_);
  const tensor& t = find(h, "file_offset_of");
  if (!t.has_data || t.current.length == 0)
    throw config_error(where(t.name) + "has no data in '" + file_.path() + "' yet");
  return t.current.offset;
}

// First fit over the free list; the file grows (fallocate, so a full disk shows up here and
// not in the middle of a write; ftruncate where fallocate is not supported) when nothing fits.
inline nvme_store::extent nvme_store::allocate(std::uint64_t bytes, const std::string& name) {
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < bytes) continue;
    const extent e{it->first, bytes};
    const std::uint64_t rest = it->second - bytes;
    free_.erase(it);
    if (rest) free_.emplace(e.offset + bytes, rest);
    reserved_.fetch_add(bytes, std::memory_order_relaxed);
    return e;
  }
  const std::uint64_t old_size = file_size_.load(std::memory_order_relaxed);
  std::uint64_t start = old_size;
  auto last = free_.empty() ? free_.end() : std::prev(free_.end());
  if (last != free_.end() && last->first + last->second == old_size) start = last->first;
  const std::uint64_t new_size = start + bytes;
  int rc;
  do {
    rc = ::fallocate(file_.fd(), 0, static_cast<off_t>(old_size),
                     static_cast<off_t>(new_size - old_size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) {
    do {
      rc = ::ftruncate(file_.fd(), static_cast<off_t>(new_size));
    } while (rc != 0 && errno == EINTR);
  }
  if (rc != 0) {
    const int err = errno;
    throw io_error(where(name) + "cannot grow '" + file_.path() + "' from " +
                   std::to_string(old_size) + " to " + std::to_string(new_size) +
                   " bytes (file offset " + std::to_string(old_size) + ", " +
                   format_bytes(bytes) + " extent): " + errno_text(err));
  }
  if (start < old_size) free_.erase(last);
  file_size_.store(new_size, std::memory_order_relaxed);
  reserved_.fetch_add(bytes, std::memory_order_relaxed);
  return {start, bytes};
}

inline void nvme_store::release(extent e) noexcept {
  if (e.length == 0) return;
  reserved_.fetch_sub(e.length, std::memory_order_relaxed);
  std::uint64_t off = e.offset, len = e.length;
  auto next = free_.lower_bound(off);
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      off = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && off + len == next->first) {
    len += next->second;
    free_.erase(next);
  }
  free_.emplace(off, len);
}

inline void nvme_store::abandon(extent e) noexcept {
  std::lock_guard lock(mutex_);
  release(e);
}

inline buffer nvme_store::bounce(std::size_t bytes, const std::string& name) {
  return buffer(bounce_, bytes, file_.alignment(), "nvme bounce buffer for '" + name + "'");
}

// Writes `bytes` at `file_offset` (aligned), padding an unaligned tail with zeros up to the
// O_DIRECT alignment: the extent always has room for the padding.
inline void nvme_store::put(const std::string& name, std::uint64_t file_offset, const char* src,
                            std::size_t bytes) {
  const std::size_t a = io_align();
  try {
    if (is_aligned(src, a)) {
      const std::size_t body = align_down(bytes, a);
      if (body) engine_->write(file_, src, body, file_offset);
      if (body < bytes) {
        buffer b = bounce(a, name);
        std::memset(b.data(), 0, a);
        std::memcpy(b.data(), src + body, bytes - body);
        engine_->write(file_, b.data(), a, file_offset + body);
      }
      return;
    }
    const std::size_t cap = std::min(bounce_max_, align_up(bytes, a));
    buffer b = bounce(cap, name);
    auto* p = static_cast<char*>(b.data());
    for (std::size_t at = 0; at < bytes; at += cap) {
      const std::size_t n = std::min(cap, bytes - at), io_n = align_up(n, a);
      std::memcpy(p, src + at, n);
      if (io_n > n) std::memset(p + n, 0, io_n - n);
      engine_->write(file_, p, io_n, file_offset + at);
    }
  } catch (const io_error& e) {
    throw io_error(where(name) + e.what());
  }
}

inline void nvme_store::verify_failed(const std::string& name, std::uint64_t file_offset,
                                      std::size_t block, std::size_t blocks, std::size_t bytes,
                                      std::uint32_t expected, std::uint32_t actual) const {
  char crcs[64];
  std::snprintf(crcs, sizeof crcs, "expected crc32c 0x%08x, got 0x%08x", expected, actual);
  throw format_error("checksum mismatch in '" + file_.path() + "' at file offset " +
                     std::to_string(file_offset) + " (nvme tensor '" + name + "', block " +
                     std::to_string(block) + " of " + std::to_string(blocks) + ", " +
                     format_bytes(bytes) + "): " + crcs +
                     "; the file was changed or the device returned bad data");
}

inline void nvme_store::read(handle h, std::size_t offset, void* dst, std::size_t bytes) {
  std::string name;
  std::size_t size;
  bool has_data;
  extent ext;
  std::shared_ptr<const std::vector<std::uint32_t>> crcs;
  {
    std::lock_guard lock(mutex_);
    const tensor& t = find(h, "read");
    name = t.name;
    size = t.bytes;
    has_data = t.has_data;
    ext = t.current;
    crcs = t.crcs;
  }
  if (offset % block_ != 0 || offset > size || bytes > size - offset)
    throw config_error(where(name) + "read of " + std::to_string(bytes) + " bytes at offset " +
                       std::to_string(offset) + " of a " + std::to_string(size) +
                       "-byte tensor in '" + path() + "' (the offset must be a multiple of the " +
                       std::to_string(block_) + "-byte checksum block, the range inside the tensor)");
  if (bytes == 0) return;
  auto* out = static_cast<char*>(dst);
  if (!has_data) {
    std::memset(out, 0, bytes);
    return;
  }

  const std::size_t end = offset + bytes;
  const std::size_t last_end = std::min(align_up(end, block_), size);  // end of the last block touched
  const std::size_t a = io_align();
  const std::size_t blocks = block_count(size);

  // Feeds the bytes read, in order, into the CRC of the block they belong to, and checks each
  // block as it completes (a block is checked whole even when the read wants only its head).
  std::size_t pos = offset;
  std::uint32_t crc = 0;
  auto check = [&](const char* p, std::size_t n) {
    while (n) {
      const std::size_t block_start = align_down(pos, block_);
      const std::size_t block_end = std::min(block_start + block_, size);
      const std::size_t take = std::min(n, block_end - pos);
      crc = crc32c(p, take, crc);
      pos += take;
      p += take;
      n -= take;
      if (pos == block_end) {
        const std::size_t k = block_start / block_;
        if (crc != (*crcs)[k])
          verify_failed(name, ext.offset + block_start, k, blocks, block_end - block_start,
                        (*crcs)[k], crc);
        crc = 0;
      }
    }
  };

  try {
    // Straight into dst where it can be: an aligned destination, whole blocks (or up to the
    // tensor's end), aligned lengths.
    std::size_t direct_end = offset;
    if (is_aligned(out, a)) {
      const std::size_t full_end = end == last_end ? end : align_down(end, block_);
      direct_end = offset + align_down(full_end - offset, a);
      // In pieces of whole checksum blocks: piece k+1 is read while a second thread checks
      // piece k, so a large read costs max(IO, CRC), not their sum. Pieces are large enough
      // that the engine's queue stays deep within each.
      const std::size_t piece = std::max<std::size_t>(8 * block_, std::size_t{32} << 20);
      char* checked = out;
      for (std::size_t at = offset; at < direct_end;) {
        const std::size_t n = std::min(piece, direct_end - at);
        char* next = out + (at - offset);
        const std::size_t pending = static_cast<std::size_t>(next - checked);
        overlapped(pending > 0, [&] { check(checked, pending); },
                   [&] { engine_->read(file_, next, n, ext.offset + at); });
        checked = next;
        at += n;
      }
      check(checked, static_cast<std::size_t>(out + (direct_end - offset) - checked));
    }
    // The rest through a bounce buffer: the unaligned tail, the last block when the read stops
    // inside it, or everything for an unaligned destination (one bounded buffer, reused).
    if (direct_end < last_end) {
      const std::size_t cap = std::min(bounce_max_, align_up(last_end - direct_end, a));
      buffer b = bounce(cap, name);
      auto* p = static_cast<char*>(b.data());
      for (std::size_t at = direct_end; at < last_end; at += cap) {
        const std::size_t n = std::min(cap, last_end - at);
        engine_->read(file_, p, align_up(n, a), ext.offset + at);
        check(p, n);
        if (at < end) std::memcpy(out + (at - offset), p, std::min(n, end - at));
      }
    }
  } catch (const io_error& e) {
    throw io_error(where(name) + e.what());
  }
}

// Runs `side` on a second thread while `io` runs on this one (when `on`), else one after the
// other. Both finish before it returns; an exception from either is rethrown (io's first).
template <class Side, class Io>
inline void nvme_store::overlapped(bool on, Side&& side, Io&& io) {
  if (!on) {
    io();
    side();
    return;
  }
  std::exception_ptr side_failure;
  std::thread helper([&] {
    try {
      side();
    } catch (...) {
      side_failure = std::current_exception();
    }
  });
  try {
    io();
  } catch (...) {
    helper.join();
    throw;
  }
  helper.join();
  if (side_failure) std::rethrow_exception(side_failure);
}

inline nvme_store::write_txn nvme_store::begin_write(handle h) {
  std::lock_guard lock(mutex_);
  const tensor& t = find(h, "begin_write");
  extent e;
  if (t.bytes) e = allocate(data_bytes(t.bytes) + table_bytes(t.bytes), t.name);
  return write_txn(*this, h, t.name, t.bytes, e);
}

inline void nvme_store::write(handle h, const void* src, std::size_t bytes) {
  write_txn txn = begin_write(h);
  txn.write(0, src, bytes);
  txn.commit();
}

inline void nvme_store::install(handle h, const std::string& name, extent e,
                                std::vector<std::uint32_t> crcs) {
  auto table = std::make_shared<const std::vector<std::uint32_t>>(std::move(crcs));
  std::lock_guard lock(mutex_);
  auto it = tensors_.find(h);
  if (it == tensors_.end())
    throw config_error(where(name) + "commit after the tensor was destroyed (handle " +
                       std::to_string(h) + ")");
  tensor& t = it->second;
  release(t.current);
  t.current = e;
  t.crcs = std::move(table);
  t.has_data = true;
}

inline nvme_store::write_txn::write_txn(nvme_store& store, handle h, std::string name,
                                        std::size_t size, extent_ref ext)
    : store_(&store), h_(h), name_(std::move(name)), size_(size), ext_(ext),
      crcs_(store.block_count(size), 0) {}

inline nvme_store::write_txn::write_txn(write_txn&& o) noexcept
    : store_(std::exchange(o.store_, nullptr)), h_(o.h_), name_(std::move(o.name_)),
      size_(o.size_), ext_(o.ext_), crcs_(std::move(o.crcs_)), written_(std::move(o.written_)),
      written_bytes_(o.written_bytes_), committed_(o.committed_) {}

inline nvme_store::write_txn::~write_txn() {
  if (store_ && !committed_) store_->abandon(ext_);
}

inline void nvme_store::write_txn::write(std::size_t offset, const void* src, std::size_t bytes) {
  if (!store_ || committed_)
    throw config_error("nvme tensor '" + name_ + "': write on a finished transaction");
  nvme_store& s = *store_;
  const std::size_t block = s.block_;
  if (offset % block != 0 || offset > size_ || bytes > size_ - offset)
    throw config_error(s.where(name_) + "transaction write of " + std::to_string(bytes) +
                       " bytes at offset " + std::to_string(offset) + " of a " +
                       std::to_string(size_) + "-byte tensor in '" + s.path() +
                       "' (the offset must be a multiple of the " + std::to_string(block) +
                       "-byte checksum block, the range inside the tensor)");
  if (bytes == 0) return;
  const std::size_t end = offset + bytes;
  auto next = written_.upper_bound(offset);
  const bool overlaps = (next != written_.end() && next->first < end) ||
                        (next != written_.begin() && std::prev(next)->second > offset);
  if (overlaps)
    throw config_error(s.where(name_) + "transaction writes [" + std::to_string(offset) + ", " +
                       std::to_string(end) + ") twice; every byte is written exactly once");

  const auto* p = static_cast<const char*>(src);
  // A block's CRC is known once the block is whole: all of it, or up to the tensor's end.
  // A range that stops inside a block leaves a gap that commit() reports.
  auto checksum = [&] {
    for (std::size_t at = 0; at < bytes; at += block) {
      const std::size_t n = std::min(block, bytes - at);
      if (n == block || offset + at + n == size_) crcs_[(offset + at) / block] = crc32c(p + at, n);
    }
  };
  // The checksums only read the source, as the write does: on large writes they run on a
  // second thread while the IO is in flight, so the write costs max(IO, CRC), not their sum.
  overlapped(bytes >= 2 * block, checksum, [&] { s.put(name_, ext_.offset + offset, p, bytes); });
  written_.emplace(offset, end);
  written_bytes_ += bytes;
}

inline void nvme_store::write_txn::commit() {
  if (!store_ || committed_)
    throw config_error("nvme tensor '" + name_ + "': commit of a finished transaction");
  nvme_store& s = *store_;
  if (written_bytes_ != size_) {
    std::size_t gap = 0;
    for (const auto& [start, end] : written_) {
      if (start != gap) break;
      gap = end;
    }
    throw config_error(s.where(name_) + "commit of a transaction that wrote " +
                       std::to_string(written_bytes_) + " of " + std::to_string(size_) +
                       " bytes (first gap at offset " + std::to_string(gap) + " in '" + s.path() +
                       "'); every byte of the tensor must be written exactly once");
  }
  if (size_) {
    // The table, little-endian, through bounded bounce buffers (it grows with the tensor).
    const std::uint64_t table_offset = ext_.offset + s.data_bytes(size_);
    const std::size_t table = crcs_.size() * sizeof(std::uint32_t);
    const std::size_t a = s.io_align();
    const std::size_t cap = std::min(s.bounce_max_, align_up(table, a));
    buffer b = s.bounce(cap, name_);
    auto* p = static_cast<unsigned char*>(b.data());
    for (std::size_t at = 0; at < table; at += cap) {
      const std::size_t n = std::min(cap, table - at), io_n = align_up(n, a);
      for (std::size_t i = 0; i < n; i += 4) {
        const std::uint32_t v = crcs_[(at + i) / 4];
        p[i] = static_cast<unsigned char>(v);
        p[i + 1] = static_cast<unsigned char>(v >> 8);
        p[i + 2] = static_cast<unsigned char>(v >> 16);
        p[i + 3] = static_cast<unsigned char>(v >> 24);
      }
      std::memset(p + n, 0, io_n - n);
      try {
        s.engine_->write(s.file_, p, io_n, table_offset + at);
      } catch (const io_error& e) {
        throw io_error(s.where(name_) + "checksum table: " + e.what());
      }
    }
  }
  s.install(h_, name_, ext_, std::move(crcs_));
  committed_ = true;
}

}  // namespace io
STRATA_NAMESPACE_END
