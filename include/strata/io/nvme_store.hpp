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
// the engines that do the IO (engine.hpp, make_engine.hpp); durability across crashes (a swap
// file is scratch: nothing is fsync'ed, and the file is removed when the store goes away).
// This header declares and documents; the definitions are in detail/nvme_store.inl.
//
// Layout of one extent (every offset a multiple of alignment()):
//   [ data: size bytes, padded to alignment() | CRC-32C table: uint32 LE per block, padded ]
#pragma once

#include <strata/io/crc32c.hpp>
#include <strata/io/make_engine.hpp>
#include <strata/memory/buffer.hpp>
#include <strata/memory/resource.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

STRATA_NAMESPACE_BEGIN
namespace io {

struct nvme_config {
  std::string directory;                  // must exist; a symlink is refused; files are created inside
  int rank = 0;                           // file name: strata-rank<rank>-<pid>-<counter>.nvme
  bool keep_files = false;                // remove the file on destruction unless true
  /// At open, remove arena files that a dead process of this machine left behind (a crash or
  /// kill -9 skips the destructor): strata-rank<r>-<pid>-<n>.nvme whose pid no longer runs.
  /// Each removal is named in notice(). The directory must be local to this machine (a pid
  /// means nothing on another host's file); turn it off for a directory shared between hosts.
  bool remove_stale_files = true;
  std::size_t checksum_block = 1 << 20;   // CRC-32C granularity; power of two, >= file alignment
  /// The IO engine's config: the store makes its engine from it unless given one, and sizes its
  /// reads from its request size and queue depth either way (so a caller-made engine should
  /// come from this same config, as the context's does). Refused as validate() refuses it,
  /// named `nvme_config.engine.<field>`.
  engine_config engine;
};

class nvme_store {
public:
  using handle = std::uint64_t;

  /// Opens `config.directory` (refusing a symbolic link, a missing directory, a bad
  /// checksum_block or a bad engine config with config_error) and creates the arena file in it (mode 0600, O_EXCL, O_NOFOLLOW, O_DIRECT
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
  /// Fallbacks taken (posix engine instead of io_uring, buffered IO instead of O_DIRECT) and
  /// stale arena files removed at open; "" if none.
  const std::string& notice() const noexcept { return notice_; }
  engine& io() noexcept { return *engine_; }
  std::size_t checksum_block() const noexcept { return block_; }
  /// True when the file is read and written with O_DIRECT.
  bool direct() const noexcept { return file_.direct(); }
  /// Alignment of every extent (and of the file offsets of reads and writes).
  std::size_t alignment() const noexcept { return extent_align_; }
  /// The alignment of this store's transfers: O_DIRECT's (the file's), or 1 for a buffered file.
  std::size_t transfer_alignment() const noexcept { return io_align(); }

  /// The bytes the engine moves, for a planner that predicts a step's NVMe traffic (plan/):
  /// read(h, offset, dst, bytes) of a tensor of `size` bytes reads every checksum block it
  /// touches, up to the tensor's end, in requests aligned to `align`; a whole tensor's write
  /// (a write_txn covering it, then commit) writes its data and its checksum table, each
  /// padded to `align`. `align` = transfer_alignment(), `block` = checksum_block(). A test holds
  /// them to what an io::counting engine sees (examples/gpt/tests/test_gpt_plan.cpp).
  static constexpr std::size_t read_cost(std::size_t size, std::size_t offset, std::size_t bytes,
                                         std::size_t align, std::size_t block) noexcept {
    if (bytes == 0) return 0;
    const std::size_t end = align_up(offset + bytes, block) < size ? align_up(offset + bytes, block) : size;
    return align_up(end - offset, align);
  }
  static constexpr std::size_t write_cost(std::size_t size, std::size_t align,
                                          std::size_t block) noexcept {
    if (size == 0) return 0;
    return align_up(size, align) + align_up((size + block - 1) / block * sizeof(std::uint32_t), align);
  }

  /// A tensor's home: `bytes` bytes, named `name` in messages. No file space is taken until
  /// the first write; reads before it give zeros. The handle is the only way to destroy() it.
  [[nodiscard]] handle create(std::size_t bytes, std::string name);
  /// Frees the tensor's extent. Unknown handles are ignored.
  void destroy(handle h) noexcept;
  std::size_t size(handle h) const;
  std::string name(handle h) const;

  /// Reads `bytes` bytes from `offset` (a multiple of checksum_block(); the read may stop
  /// before the end) into `dst` (any alignment), checking the CRC of every block it touches;
  /// a mismatch throws format_error naming the file, file offset, tensor and both CRCs.
  /// Blocking and thread-safe for different handles; the caller orders ops on one handle.
  void read(handle h, std::size_t offset, void* dst, std::size_t bytes);

  /// Copy-on-write: writes go to a new extent; commit() makes it the tensor's data. Dropped
  /// unused, it would free the extent at once: hence nodiscard.
  class [[nodiscard]] write_txn {
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
    void write_table();

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
  [[nodiscard]] write_txn begin_write(handle h);
  /// begin_write + write(0, src, bytes) + commit.
  void write(handle h, const void* src, std::size_t bytes);

  /// Bytes of the file taken by current extents and by the new extents of open transactions.
  std::size_t bytes_reserved() const noexcept { return reserved_.load(std::memory_order_relaxed); }
  /// Size of the arena file.
  std::uint64_t file_bytes() const noexcept { return file_size_.load(std::memory_order_relaxed); }
  /// File offset of the tensor's current data (for tests and tools); config_error before the
  /// first commit.
  std::uint64_t file_offset_of(handle h) const;

  /// Where a tensor's committed bytes are, for a copy file to file that does not read them
  /// through memory (a checkpoint of an NVMe home): the arena file's path (to be opened
  /// without O_DIRECT by the copier: its offsets and lengths need no alignment), the data's
  /// offset and size, and the CRC-32C of each checksum_block() of it as the store wrote them.
  /// `written` is false for a tensor never written (it reads as zeros; there is no extent).
  /// The extent stays what it is until the tensor's next commit: the caller makes sure none
  /// happens while it copies.
  struct extent_view {
    std::string path;
    std::uint64_t offset = 0;
    std::size_t bytes = 0;
    std::size_t block = 0;
    std::shared_ptr<const std::vector<std::uint32_t>> crcs;
    bool written = false;
  };
  extent_view committed_extent(handle h) const {
    const tensor t = snapshot(h, "committed_extent");
    extent_view v;
    v.path = file_.path();
    v.bytes = t.bytes;
    v.block = block_;
    v.written = t.has_data && t.current.length > 0;
    v.offset = v.written ? t.current.offset : 0;
    v.crcs = t.crcs;
    return v;
  }

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
  tensor snapshot(handle h, const char* what) const;
  void check_range(const std::string& name, const char* what, std::size_t offset,
                   std::size_t bytes, std::size_t size) const;

  void open_directory();
  std::string remove_stale_arenas();
  void create_arena_file(std::string& notice);

  extent allocate(std::uint64_t bytes, const std::string& name);  // under mutex_
  void release(extent e) noexcept;                                // under mutex_
  void abandon(extent e) noexcept;
  void install(handle h, const std::string& name, extent e, std::vector<std::uint32_t> crcs);
  buffer bounce(std::size_t bytes, const std::string& name);
  template <class Side, class Io>
  static void overlapped(bool on, Side&& side, Io&& io);
  void put(const std::string& name, std::uint64_t file_offset, const char* src, std::size_t bytes);
  class block_verifier;
  std::size_t read_direct(const tensor& t, std::size_t offset, std::size_t end,
                          std::size_t last_end, char* out, block_verifier& verify);
  void read_bounced(const tensor& t, std::size_t from, std::size_t offset, std::size_t end,
                    std::size_t last_end, char* out, block_verifier& verify);
  [[noreturn]] void verify_failed(const std::string& name, std::uint64_t file_offset,
                                  std::size_t block, std::size_t blocks, std::size_t bytes,
                                  std::uint32_t expected, std::uint32_t actual) const;

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
  std::size_t read_piece_ = 0;  // bytes per engine call of a read overlapped with its CRCs

  mutable std::mutex mutex_;
  std::unordered_map<handle, tensor> tensors_;
  handle next_handle_ = 1;
  std::map<std::uint64_t, std::uint64_t> free_;  // offset -> length, coalesced
  std::atomic<std::uint64_t> file_size_{0};
  std::atomic<std::size_t> reserved_{0};
};

}  // namespace io
STRATA_NAMESPACE_END

#include <strata/io/detail/nvme_store.inl>
