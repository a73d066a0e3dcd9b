// strata/checkpoint/directory.hpp — where checkpoints live, and the atomic, durable commit.
//
// What lives here: checkpoint_root, a directory of committed checkpoints `TAG/` and a file
// `latest` naming the one to load; pending_checkpoint, a checkpoint being written into
// `TAG.partial/` and committed; output_file, one file being written in it; commit_phase and the
// hook a test uses to stop the writer at each phase (the kill -9 drill). What does not: what the
// files hold (manifest.hpp, shard_file.hpp), writing in the background (to come).
//
// The commit, step by step (each step is a phase the hook sees):
//   mkdir TAG.partial (exclusive)                                  partial_created
//   each file: create (O_EXCL|O_NOFOLLOW), write                   file_written
//              fsync, close                                        file_synced
//   write TAG.partial/commit (sequence number, tag)                file_written, file_synced
//   fsync TAG.partial                                              dir_synced
//   rename TAG.partial -> TAG (never over an existing TAG)          renamed
//   fsync the root                                                 root_synced
//   write latest.tmp (O_EXCL), fsync                               latest_written
//   rename latest.tmp -> latest                                     latest_renamed
//   fsync the root                                                 latest_synced
//   keep N: each older TAG -> TAG.pruning, removed                 pruned
// So a crash at any instant leaves `latest` naming a complete, durable checkpoint (or no
// `latest` before the first commit), and only the rename of latest.tmp switches which one.
// Opening a root removes what a crash leaves (`*.partial/`, `*.pruning/`, `latest.tmp`, and a
// TAG/ renamed into place whose `latest` update never happened) and reports each through
// root_options::on_recovery and recovered(). (Where there is no `latest` at all, every TAG/ with
// a commit record is such an unpublished checkpoint: a crash during the very first commit.)
//
// Links: the root itself must not be a symbolic link, and every call below it is made relative
// to the root's open descriptor with O_NOFOLLOW, so nothing swapped in after the root was opened
// (a link named TAG.partial, latest.tmp, a data file) can redirect a write elsewhere.
// One writer per root at a time (the process that commits); readers may come and go.
#pragma once

#include <strata/checkpoint/file_ops.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {

enum class commit_phase : std::uint8_t {
  partial_created,  // TAG.partial/ exists (empty)
  file_written,     // a file's bytes are written (not yet durable)
  file_synced,      // ... and fsynced
  dir_synced,       // TAG.partial/ fsynced: its entries are durable
  renamed,          // TAG.partial/ is TAG/
  root_synced,      // the rename is durable
  latest_written,   // latest.tmp holds the new tag, fsynced
  latest_renamed,   // latest names the new checkpoint: from here on it is the one loaded
  latest_synced,    // ... durably
  pruned,           // an older checkpoint beyond `keep` is gone
};
inline constexpr int commit_phase_count = 10;

inline const char* commit_phase_name(commit_phase p) noexcept {
  constexpr const char* names[] = {"partial_created", "file_written", "file_synced", "dir_synced",
                                   "renamed",         "root_synced",  "latest_written",
                                   "latest_renamed",  "latest_synced", "pruned"};
  return names[static_cast<int>(p)];
}

/// What the hook is told: the phase just completed, the checkpoint's tag, and the file or
/// directory involved (its path).
struct phase_event {
  commit_phase phase;
  std::string_view tag;
  std::string_view path;
};
using phase_hook = std::function<void(const phase_event&)>;

struct root_options {
  /// Committed checkpoints kept: `latest` and the keep-1 committed before it. 0 keeps all.
  std::size_t keep = 0;
  /// Called after each commit phase (tests stop the writer here; a trace may record spans).
  phase_hook on_phase{};
  /// Told, one line each, what opening the root found left by a crash and removed.
  std::function<void(const std::string&)> on_recovery{};
  /// Test seam: makes chosen file-system calls fail (file_ops.hpp).
  fs_fault fault{};
  /// Create the root directory (and missing parents) when it does not exist.
  bool create = true;
  /// Remove a crash's leftovers at open (see the top). Only the process that commits may: the
  /// other ranks of a run open the root with recover = false, so that they never remove the
  /// TAG.partial/ the writer is filling (they join() it and add their own files).
  bool recover = true;
};

class pending_checkpoint;

/// A checkpoint directory opened for reading (a committed TAG/).
class checkpoint_dir {
public:
  checkpoint_dir(unique_fd fd, std::string path, std::string tag, const file_ops* ops)
      : fd_(std::move(fd)), path_(std::move(path)), tag_(std::move(tag)), ops_(ops) {}
  int fd() const noexcept { return fd_.get(); }
  const std::string& path() const noexcept { return path_; }
  const std::string& tag() const noexcept { return tag_; }
  const file_ops& ops() const noexcept { return *ops_; }
  /// The whole of a (small) file in the directory, e.g. a manifest.
  [[nodiscard]] std::string read_file(const std::string& name) const;

private:
  unique_fd fd_;
  std::string path_, tag_;
  const file_ops* ops_;
};

class checkpoint_root {
public:
  /// Opens (creating, with options.create) the root `path`; a symbolic link is refused. Removes
  /// and reports what a crash left behind. io_error when the directory cannot be opened.
  explicit checkpoint_root(std::string path, root_options options = {});
  checkpoint_root(const checkpoint_root&) = delete;
  checkpoint_root& operator=(const checkpoint_root&) = delete;

  const std::string& path() const noexcept { return path_; }
  /// What opening found left by a crash and removed (also told to options.on_recovery).
  const std::vector<std::string>& recovered() const noexcept { return recovered_; }

  /// The tag `latest` names; nothing when no checkpoint was ever committed here. format_error
  /// when `latest` holds no valid tag or names a checkpoint that is not there (naming both).
  [[nodiscard]] std::optional<std::string> latest() const;
  /// Committed checkpoints' tags, oldest first (by commit order, not by name).
  [[nodiscard]] std::vector<std::string> committed() const;
  /// Opens committed checkpoint `tag` for reading.
  [[nodiscard]] checkpoint_dir open(const std::string& tag) const;
  /// Starts checkpoint `tag` in TAG.partial/ (created exclusively). A tag is 1-128 characters of
  /// [A-Za-z0-9._-], not starting with '.', not "latest" and not ending in ".partial" or
  /// ".pruning" (config_error otherwise); an existing TAG is refused (io_error, EEXIST).
  /// The root must outlive the returned object.
  [[nodiscard]] pending_checkpoint begin(const std::string& tag);
  /// For the other ranks of a multi-rank checkpoint: opens TAG.partial/, which the committing
  /// rank began, to create this rank's files in it. A joined checkpoint is never committed or
  /// removed by its holder (commit() is a config_error; abandoning only closes it): the rank
  /// that began it commits once every rank's files are finished. io_error when there is no
  /// TAG.partial/.
  [[nodiscard]] pending_checkpoint join(const std::string& tag);
  /// begin() or join() (join = true) on the heap, for a holder that keeps the pending
  /// checkpoint across calls (a pending_checkpoint does not move: its files point at it).
  [[nodiscard]] std::unique_ptr<pending_checkpoint> make_pending(const std::string& tag, bool join);

  /// Throws config_error unless `tag` is a valid tag (see begin()).
  static void check_tag(const std::string& tag);
  static bool valid_tag(std::string_view tag) noexcept;

private:
  friend class pending_checkpoint;
  friend class output_file;
  void recover();
  void remove_unpublished();
  void remove_leftover(const std::string& name, const char* why);
  std::optional<std::uint64_t> sequence_of(const std::string& tag) const;
  std::uint64_t next_sequence(const std::string& tag) const;
  std::vector<std::pair<std::uint64_t, std::string>> committed_by_sequence() const;
  void prune(const std::string& tag, const std::string& latest_tag);
  void notify(commit_phase p, std::string_view tag, std::string_view path) const {
    if (options_.on_phase) options_.on_phase(phase_event{p, tag, path});
  }
  std::string child(std::string_view name) const { return path_ + "/" + std::string(name); }

  std::string path_;
  root_options options_;
  file_ops ops_;
  unique_fd fd_;
  std::vector<std::string> recovered_;
};

/// One file being written in a pending checkpoint. finish() makes it durable; a file not
/// finished makes the checkpoint's commit fail.
class output_file {
public:
  output_file(output_file&&) noexcept = default;
  output_file& operator=(output_file&&) noexcept = default;
  const std::string& path() const noexcept { return path_; }
  /// Writes n bytes at `offset` (io_error naming the file, offset and length).
  void write_at(const void* src, std::size_t n, std::uint64_t offset);
  /// Copies n bytes of `src` (from src_offset) to `offset`, file to file (file_ops::
  /// copy_range); returns the bytes the kernel copied without this process's memory.
  std::size_t copy_from(int src, std::uint64_t src_offset, const std::string& src_path,
                        std::size_t n, std::uint64_t offset);
  /// Starts writing bytes [offset, offset + n) back to the device now (sync_file_range,
  /// SYNC_FILE_RANGE_WRITE: it does not wait), so that a large file's data flows to the disk
  /// while the rest is produced and finish()'s fsync has little left to do. Best effort.
  void start_writeback(std::uint64_t offset, std::size_t n) noexcept {
    if (fd_) (void)::sync_file_range(fd_.get(), static_cast<off64_t>(offset),
                                     static_cast<off64_t>(n), SYNC_FILE_RANGE_WRITE);
  }
  /// fsync and close (phases file_written, file_synced).
  void finish();

private:
  friend class pending_checkpoint;
  output_file(pending_checkpoint* owner, unique_fd fd, std::string path)
      : owner_(owner), fd_(std::move(fd)), path_(std::move(path)) {}
  pending_checkpoint* owner_;
  unique_fd fd_;
  std::string path_;
};

class pending_checkpoint {
public:
  pending_checkpoint(pending_checkpoint&&) = delete;  // output_files point at it
  pending_checkpoint& operator=(pending_checkpoint&&) = delete;
  /// Removes TAG.partial/ unless committed or joined (a failed or abandoned checkpoint leaves
  /// nothing).
  ~pending_checkpoint() { abandon(); }

  const std::string& tag() const noexcept { return tag_; }
  /// The path of TAG.partial/.
  const std::string& path() const noexcept { return path_; }
  int dir_fd() const noexcept { return dir_.get(); }
  /// The root's file operations (with its fault seam), for reads a writer makes.
  const file_ops& ops() const noexcept { return root_->ops_; }

  /// Creates `name` (a plain file name) in TAG.partial/; finish it before commit().
  [[nodiscard]] output_file create(const std::string& name);
  /// Writes a whole (small) file and makes it durable.
  void write_file(const std::string& name, std::span<const std::byte> bytes);
  /// The commit (see the top of this header). On a failure before `latest` is renamed the
  /// previous checkpoint stays the latest and this one is removed; the io_error names the file.
  /// A failure after that (the root's fsync, pruning) is thrown too, but committed() is true:
  /// `latest` names this checkpoint.
  void commit();
  /// Removes TAG.partial/ (best effort; a crash's leftovers are removed when a root is opened).
  void abandon() noexcept;
  bool committed() const noexcept { return committed_; }

private:
  friend class checkpoint_root;
  friend class output_file;
  pending_checkpoint(checkpoint_root* root, std::string tag, std::uint64_t sequence, bool joined);
  void publish_latest();

  checkpoint_root* root_;
  std::string tag_, path_;
  std::uint64_t sequence_;
  unique_fd dir_;
  int unfinished_ = 0;
  bool joined_ = false;  // join(): another rank's files only; the beginner commits
  bool renamed_ = false, committed_ = false;
};

}  // namespace checkpoint
STRATA_NAMESPACE_END

#include <strata/checkpoint/detail/directory.inl>
