// strata/io/detail/nvme_store.inl — the definitions of nvme_store (declared and documented in
// <strata/io/nvme_store.hpp>, which includes this file at its end; never include it alone).
//
// The long operations read as a few named steps: the constructor (check the config, open the
// directory, create the file), read() (snapshot, direct pieces overlapped with their CRCs, the
// bounced rest) and commit() (the checksum table, then the switch to the new extent).
#pragma once

STRATA_NAMESPACE_BEGIN
namespace io {

inline nvme_store::nvme_store(const nvme_config& config, memory_resource& bounce,
                              std::unique_ptr<engine> e, std::string engine_notice)
    : config_(config), bounce_(bounce) {
  if (config_.directory.empty())
    throw config_error("nvme store: no directory given (nvme_config::directory)");
  while (config_.directory.size() > 1 && config_.directory.back() == '/')
    config_.directory.pop_back();
  if (!is_pow2(config_.checksum_block))
    throw config_error("nvme store in '" + config_.directory + "': checksum_block " +
                       std::to_string(config_.checksum_block) + " is not a power of two");
  // Checked even for a caller-made engine: the read size below comes from it.
  validate(config_.engine, "nvme_config.engine");

  open_directory();
  try {
    const std::string stale_notice = config_.remove_stale_files ? remove_stale_arenas() : "";
    engine_ = e ? std::move(e) : make_engine(config_.engine, engine_notice);
    std::string file_notice;
    create_arena_file(file_notice);
    notice_ = engine_notice;
    for (const std::string& n : {std::cref(file_notice), std::cref(stale_notice)})
      if (!n.empty()) notice_ += (notice_.empty() ? "" : "; ") + n;

    block_ = config_.checksum_block;
    extent_align_ = std::max<std::size_t>(file_.alignment(), 4096);
    if (block_ < file_.alignment())
      throw config_error("nvme store '" + file_.path() + "': checksum_block " +
                         std::to_string(block_) + " is below the file's O_DIRECT alignment " +
                         std::to_string(file_.alignment()));
    bounce_max_ = std::max<std::size_t>(block_, std::size_t{1} << 20);
    // A read overlapped with its checksums goes to the engine in pieces of whole checksum
    // blocks, each twice the requests the engine keeps in flight, so its queue stays full for
    // most of every piece (it drains only at the piece's end); at least 8 blocks, so the CRC
    // thread's hand-off is worth it.
    read_piece_ = std::max(8 * block_, align_up(2 * std::size_t{config_.engine.queue_depth} *
                                                    request_bytes(config_.engine),
                                                block_));
  } catch (...) {
    if (file_) {
      file_.close();
      ::unlinkat(dir_fd_, file_name_.c_str(), 0);
    }
    ::close(dir_fd_);
    throw;
  }
}

// Opens the directory once, refusing a symbolic link: the file is then created inside this
// very directory (openat), whatever its path names by then.
inline void nvme_store::open_directory() {
  const std::string& dir = config_.directory;
  dir_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir_fd_ >= 0) return;
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

// Arena files named as create_arena_file names them, of a pid that no longer runs on this
// machine (kill(pid, 0) says ESRCH), are left over from a crash: nobody will ever remove them
// otherwise, and they pile up across restarts. Files of live processes (this one included) and
// anything not named like an arena stay.
inline std::string nvme_store::remove_stale_arenas() {
  const int fd = ::dup(dir_fd_);
  if (fd < 0) return "";
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return "";
  }
  std::vector<std::string> removed;
  while (const dirent* e = ::readdir(d)) {
    int rank = 0;
    long pid = 0;
    unsigned long long n = 0;
    char tail[8] = {};
    if (std::sscanf(e->d_name, "strata-rank%d-%ld-%llu%7s", &rank, &pid, &n, tail) != 4) continue;
    const std::string name = e->d_name;
    if (name != "strata-rank" + std::to_string(rank) + "-" + std::to_string(pid) + "-" +
                    std::to_string(n) + ".nvme")
      continue;
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or unknown
    if (::unlinkat(dir_fd_, name.c_str(), 0) == 0) removed.push_back(name);
  }
  ::closedir(d);
  if (removed.empty()) return "";
  std::string s = "removed " + std::to_string(removed.size()) +
                  " stale arena file(s) of dead processes from '" + config_.directory + "':";
  for (auto& r : removed) s += " " + r;
  return s;
}

// pid + a per-process counter: two stores of one process, or of two processes, never share a
// name; a stale file of a dead process with the same pid is skipped, not reused.
inline void nvme_store::create_arena_file(std::string& notice) {
  static std::atomic<std::uint64_t> counter{0};
  for (int attempt = 0;; ++attempt) {
    file_name_ = "strata-rank" + std::to_string(config_.rank) + "-" +
                 std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".nvme";
    if (::faccessat(dir_fd_, file_name_.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0 && attempt < 1000)
      continue;
    file_ = file::open_for_arena_at(dir_fd_, file_name_, config_.directory + "/" + file_name_,
                                    notice);
    return;
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

// A copy of the tensor's entry, taken under the lock, so the IO runs without it (other
// tensors' reads and writes go on meanwhile); the checksum table is shared, not copied.
inline nvme_store::tensor nvme_store::snapshot(handle h, const char* what) const {
  std::lock_guard lock(mutex_);
  return find(h, what);
}

// Reads and transaction writes take the same ranges: starting on a checksum block, inside the
// tensor.
inline void nvme_store::check_range(const std::string& name, const char* what, std::size_t offset,
                                    std::size_t bytes, std::size_t size) const {
  if (offset % block_ != 0 || offset > size || bytes > size - offset)
    throw config_error(where(name) + what + " of " + std::to_string(bytes) + " bytes at offset " +
                       std::to_string(offset) + " of a " + std::to_string(size) +
                       "-byte tensor in '" + path() + "' (the offset must be a multiple of the " +
                       std::to_string(block_) + "-byte checksum block, the range inside the tensor)");
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

// Feeds the bytes read, in order, into the CRC of the block they belong to, and checks each
// block as it completes (a block is checked whole even when the read wants only its head), so
// a read never hands out a byte of a block whose checksum has not matched.
class nvme_store::block_verifier {
public:
  block_verifier(const nvme_store& s, const tensor& t, std::size_t offset)
      : s_(s), t_(t), pos_(offset), blocks_(s.block_count(t.bytes)) {}

  void feed(const char* p, std::size_t n) {
    const std::size_t block = s_.block_;
    while (n) {
      const std::size_t block_start = align_down(pos_, block);
      const std::size_t block_end = std::min(block_start + block, t_.bytes);
      const std::size_t take = std::min(n, block_end - pos_);
      crc_ = crc32c(p, take, crc_);
      pos_ += take;
      p += take;
      n -= take;
      if (pos_ == block_end) {
        const std::size_t k = block_start / block;
        if (crc_ != (*t_.crcs)[k])
          s_.verify_failed(t_.name, t_.current.offset + block_start, k, blocks_,
                           block_end - block_start, (*t_.crcs)[k], crc_);
        crc_ = 0;
      }
    }
  }

private:
  const nvme_store& s_;
  const tensor& t_;
  std::size_t pos_;
  std::size_t blocks_;
  std::uint32_t crc_ = 0;
};

inline void nvme_store::read(handle h, std::size_t offset, void* dst, std::size_t bytes) {
  const tensor t = snapshot(h, "read");
  check_range(t.name, "read", offset, bytes, t.bytes);
  if (bytes == 0) return;
  auto* out = static_cast<char*>(dst);
  if (!t.has_data) {
    std::memset(out, 0, bytes);
    return;
  }
  const std::size_t end = offset + bytes;
  const std::size_t last_end = std::min(align_up(end, block_), t.bytes);  // end of the last block touched
  block_verifier verify(*this, t, offset);
  try {
    const std::size_t direct_end = read_direct(t, offset, end, last_end, out, verify);
    if (direct_end < last_end) read_bounced(t, direct_end, offset, end, last_end, out, verify);
  } catch (const io_error& e) {
    throw io_error(where(t.name) + e.what());
  }
}

// Reads straight into `out` what can go there: an aligned destination, whole blocks (or up to
// the tensor's end), aligned lengths. Returns where it stopped (`offset` when nothing could).
// In pieces of read_piece_: piece k+1 is read while a second thread checks piece k, so a
// large read costs max(IO, CRC), not their sum.
inline std::size_t nvme_store::read_direct(const tensor& t, std::size_t offset, std::size_t end,
                                           std::size_t last_end, char* out,
                                           block_verifier& verify) {
  const std::size_t a = io_align();
  if (!is_aligned(out, a)) return offset;
  const std::size_t full_end = end == last_end ? end : align_down(end, block_);
  const std::size_t direct_end = offset + align_down(full_end - offset, a);
  char* checked = out;
  for (std::size_t at = offset; at < direct_end;) {
    const std::size_t n = std::min(read_piece_, direct_end - at);
    char* next = out + (at - offset);
    const std::size_t pending = static_cast<std::size_t>(next - checked);
    overlapped(pending > 0, [&] { verify.feed(checked, pending); },
               [&] { engine_->read(file_, next, n, t.current.offset + at); });
    checked = next;
    at += n;
  }
  verify.feed(checked, static_cast<std::size_t>(out + (direct_end - offset) - checked));
  return direct_end;
}

// Reads [from, last_end) through a bounce buffer: the unaligned tail, the last block when the
// read stops inside it, or everything for an unaligned destination (one bounded buffer,
// reused), and copies out the part of it before `end`.
inline void nvme_store::read_bounced(const tensor& t, std::size_t from, std::size_t offset,
                                     std::size_t end, std::size_t last_end, char* out,
                                     block_verifier& verify) {
  const std::size_t a = io_align();
  const std::size_t cap = std::min(bounce_max_, align_up(last_end - from, a));
  buffer b = bounce(cap, t.name);
  auto* p = static_cast<char*>(b.data());
  for (std::size_t at = from; at < last_end; at += cap) {
    const std::size_t n = std::min(cap, last_end - at);
    engine_->read(file_, p, align_up(n, a), t.current.offset + at);
    verify.feed(p, n);
    if (at < end) std::memcpy(out + (at - offset), p, std::min(n, end - at));
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
  s.check_range(name_, "transaction write", offset, bytes, size_);
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
  if (size_) write_table();
  s.install(h_, name_, ext_, std::move(crcs_));
  committed_ = true;
}

// Writes the checksum table beside the data, little-endian, through bounded bounce buffers
// (it grows with the tensor: 4 bytes per block).
inline void nvme_store::write_txn::write_table() {
  nvme_store& s = *store_;
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

}  // namespace io
STRATA_NAMESPACE_END
