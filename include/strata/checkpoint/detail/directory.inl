// strata/checkpoint/detail/directory.inl — bodies of directory.hpp: opening a root and
// recovering from a crash, the commit's phases, keeping the last N.
#pragma once

#include <algorithm>
#include <filesystem>
#include <sstream>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {
namespace detail {

inline constexpr std::string_view partial_suffix = ".partial";
inline constexpr std::string_view pruning_suffix = ".pruning";
inline constexpr const char* latest_name = "latest";
inline constexpr const char* latest_tmp_name = "latest.tmp";
// Inside a committed TAG/: its commit order, so "keep the last N" never relies on names or times.
inline constexpr const char* commit_name = "commit";

inline bool ends_with(std::string_view s, std::string_view suffix) noexcept {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace detail

// ---- checkpoint_dir -----------------------------------------------------------------------------

inline std::string checkpoint_dir::read_file(const std::string& name) const {
  const std::string p = path_ + "/" + name;
  unique_fd f = ops_->open_read(fd(), name, p);
  const std::uint64_t size = file_ops::size_of(f.get(), p);
  std::string text(static_cast<std::size_t>(size), '\0');
  if (ops_->read_at(f.get(), text.data(), text.size(), 0, p) != text.size())
    throw io_error("checkpoint: '" + p + "' shrank while being read");
  return text;
}

// ---- checkpoint_root ----------------------------------------------------------------------------

inline bool checkpoint_root::valid_tag(std::string_view tag) noexcept {
  if (tag.empty() || tag.size() > 128 || tag.front() == '.' || tag == detail::latest_name ||
      tag == detail::latest_tmp_name || detail::ends_with(tag, detail::partial_suffix) ||
      detail::ends_with(tag, detail::pruning_suffix))
    return false;
  return std::all_of(tag.begin(), tag.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
}

inline void checkpoint_root::check_tag(const std::string& tag) {
  if (!valid_tag(tag))
    throw config_error("checkpoint tag '" + tag + "': a tag is 1-128 characters of [A-Za-z0-9._-], "
                       "not starting with '.', not 'latest', not ending in .partial or .pruning");
}

inline checkpoint_root::checkpoint_root(std::string path, root_options options)
    : path_(std::move(path)), options_(std::move(options)), ops_(options_.fault) {
  if (path_.empty()) throw config_error("checkpoint root: the path is empty");
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw io_error("checkpoint root '" + path_ + "' is a symbolic link; name the real directory "
                   "(a link could be pointed elsewhere between checks and writes)");
  if (options_.create) {
    std::error_code ec;
    std::filesystem::create_directories(path_, ec);
    if (ec) throw io_error("checkpoint root '" + path_ + "': cannot create it: " + ec.message());
  }
  fd_ = ops_.open_dir(AT_FDCWD, path_, path_);
  if (options_.recover) recover();
}

inline void checkpoint_root::remove_leftover(const std::string& name, const char* why) {
  ops_.remove_tree(fd_.get(), name, child(name));
  recovered_.push_back("checkpoint root '" + path_ + "': removed '" + name + "', " + why);
  if (options_.on_recovery) options_.on_recovery(recovered_.back());
}

// What a crash leaves: a checkpoint being written, one being pruned, a latest being replaced.
// None of them is what `latest` names, so removing them loses nothing committed.
inline void checkpoint_root::recover() {
  for (const std::string& name : ops_.list(fd_.get(), path_)) {
    if (name == detail::latest_tmp_name)
      remove_leftover(name, "a 'latest' update that never completed (the old 'latest' stands)");
    else if (detail::ends_with(name, detail::partial_suffix) && file_ops::is_dir(fd_.get(), name))
      remove_leftover(name, "a checkpoint that was never committed");
    else if (detail::ends_with(name, detail::pruning_suffix) && file_ops::is_dir(fd_.get(), name))
      remove_leftover(name, "an old checkpoint whose removal was interrupted");
  }
  remove_unpublished();
  if (!recovered_.empty()) ops_.sync(fd_.get(), path_);
}

// A checkpoint renamed into place whose `latest` update never happened (a crash between the two
// renames) was never the one loaded; a restarted run would write the same tag again, so it goes.
// Only checkpoints committed after the one `latest` names are touched; a bad `latest` is left
// for latest() to report.
inline void checkpoint_root::remove_unpublished() {
  std::uint64_t published = 0;
  try {
    if (const auto tag = latest()) published = sequence_of(*tag).value_or(0);
  } catch (const format_error&) {
    return;
  }
  for (auto& [seq, name] : committed_by_sequence()) {
    if (seq <= published) continue;
    const std::string doomed = name + std::string(detail::pruning_suffix);
    ops_.rename(fd_.get(), name, doomed, child(name), child(doomed), false);
    remove_leftover(doomed, ("checkpoint '" + name + "', committed but never made 'latest'").c_str());
  }
}

inline std::optional<std::uint64_t> checkpoint_root::sequence_of(const std::string& tag) const {
  if (!valid_tag(tag) || !file_ops::is_dir(fd_.get(), tag)) return std::nullopt;
  const std::string p = child(tag) + "/" + detail::commit_name;
  unique_fd dir = ops_.open_dir(fd_.get(), tag, child(tag));
  if (!file_ops::exists(dir.get(), detail::commit_name)) return std::nullopt;  // not ours
  checkpoint_dir d(std::move(dir), child(tag), tag, &ops_);
  std::istringstream in(d.read_file(detail::commit_name));
  std::string word, written_tag;
  std::uint64_t seq = 0;
  if (!(in >> word >> seq >> word >> written_tag) || written_tag != tag)
    throw format_error("checkpoint '" + p + "' is not a commit record of '" + tag + "'");
  return seq;
}

inline std::vector<std::pair<std::uint64_t, std::string>> checkpoint_root::committed_by_sequence() const {
  std::vector<std::pair<std::uint64_t, std::string>> out;
  for (const std::string& name : ops_.list(fd_.get(), path_))
    if (const auto seq = sequence_of(name)) out.emplace_back(*seq, name);
  std::sort(out.begin(), out.end());
  return out;
}

inline std::vector<std::string> checkpoint_root::committed() const {
  std::vector<std::string> tags;
  for (auto& [seq, tag] : committed_by_sequence()) tags.push_back(tag);
  return tags;
}

inline std::optional<std::string> checkpoint_root::latest() const {
  if (!file_ops::exists(fd_.get(), detail::latest_name)) return std::nullopt;
  checkpoint_dir root(ops_.open_dir(fd_.get(), ".", path_), path_, "", &ops_);
  std::string tag = root.read_file(detail::latest_name);
  if (!tag.empty() && tag.back() == '\n') tag.pop_back();
  if (!valid_tag(tag))
    throw format_error("checkpoint root '" + path_ + "': 'latest' holds '" + tag +
                       "', which is not a checkpoint tag");
  if (!file_ops::is_dir(fd_.get(), tag) ||
      !file_ops::exists(ops_.open_dir(fd_.get(), tag, child(tag)).get(), detail::commit_name))
    throw format_error("checkpoint root '" + path_ + "': 'latest' names checkpoint '" + tag +
                       "', but '" + child(tag) + "' is not there (or holds no commit record)");
  return tag;
}

inline checkpoint_dir checkpoint_root::open(const std::string& tag) const {
  check_tag(tag);
  if (!file_ops::is_dir(fd_.get(), tag))
    throw io_error("checkpoint '" + child(tag) + "' does not exist (or is not a directory)");
  return checkpoint_dir(ops_.open_dir(fd_.get(), tag, child(tag)), child(tag), tag, &ops_);
}

inline pending_checkpoint checkpoint_root::begin(const std::string& tag) {
  check_tag(tag);
  return pending_checkpoint(this, tag, next_sequence(tag), false);
}

inline pending_checkpoint checkpoint_root::join(const std::string& tag) {
  check_tag(tag);
  return pending_checkpoint(this, tag, 0, true);
}

inline std::unique_ptr<pending_checkpoint> checkpoint_root::make_pending(const std::string& tag,
                                                                         bool join) {
  check_tag(tag);
  const std::uint64_t sequence = join ? 0 : next_sequence(tag);
  return std::unique_ptr<pending_checkpoint>(new pending_checkpoint(this, tag, sequence, join));
}

// The commit sequence number of a new checkpoint `tag` (io_error, EEXIST, when it exists).
inline std::uint64_t checkpoint_root::next_sequence(const std::string& tag) const {
  if (file_ops::exists(fd_.get(), tag))
    file_ops::fail("checkpoint already exists:", child(tag), EEXIST);
  std::uint64_t next = 1;
  for (auto& [seq, name] : committed_by_sequence()) next = std::max(next, seq + 1);
  return next;
}

// Keeps `latest` and the keep-1 committed before it; removes the rest (also a checkpoint
// renamed into place whose `latest` update failed: it was never the one loaded).
inline void checkpoint_root::prune(const std::string& tag, const std::string& latest_tag) {
  if (options_.keep == 0) return;
  auto all = committed_by_sequence();
  std::vector<std::string> keep{latest_tag};
  for (auto it = all.rbegin(); it != all.rend() && keep.size() < options_.keep; ++it)
    if (it->second != latest_tag) keep.push_back(it->second);
  for (auto& [seq, name] : all) {
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    const std::string doomed = name + std::string(detail::pruning_suffix);
    ops_.rename(fd_.get(), name, doomed, child(name), child(doomed), false);
    ops_.remove_tree(fd_.get(), doomed, child(doomed));
    notify(commit_phase::pruned, tag, child(name));
  }
}

// ---- output_file ----------------------------------------------------------------------------------

inline void output_file::write_at(const void* src, std::size_t n, std::uint64_t offset) {
  if (!fd_) throw config_error("checkpoint file '" + path_ + "' is already finished");
  owner_->root_->ops_.write_at(fd_.get(), src, n, offset, path_);
}

inline std::size_t output_file::copy_from(int src, std::uint64_t src_offset,
                                          const std::string& src_path, std::size_t n,
                                          std::uint64_t offset) {
  if (!fd_) throw config_error("checkpoint file '" + path_ + "' is already finished");
  return owner_->root_->ops_.copy_range(src, src_offset, src_path, fd_.get(), offset, n, path_);
}

inline void output_file::finish() {
  if (!fd_) return;
  const checkpoint_root& root = *owner_->root_;
  root.notify(commit_phase::file_written, owner_->tag_, path_);
  root.ops_.sync(fd_.get(), path_);
  fd_.reset();
  --owner_->unfinished_;
  root.notify(commit_phase::file_synced, owner_->tag_, path_);
}

// ---- pending_checkpoint ---------------------------------------------------------------------------

inline pending_checkpoint::pending_checkpoint(checkpoint_root* root, std::string tag,
                                              std::uint64_t sequence, bool joined)
    : root_(root), tag_(std::move(tag)), sequence_(sequence), joined_(joined) {
  const std::string name = tag_ + std::string(detail::partial_suffix);
  path_ = root_->child(name);
  if (joined_) {
    dir_ = root_->ops_.open_dir(root_->fd_.get(), name, path_);
    return;
  }
  root_->ops_.make_dir(root_->fd_.get(), name, path_);
  try {
    dir_ = root_->ops_.open_dir(root_->fd_.get(), name, path_);
  } catch (...) {
    abandon();
    throw;
  }
  root_->notify(commit_phase::partial_created, tag_, path_);
}

inline output_file pending_checkpoint::create(const std::string& name) {
  if (committed_ || renamed_) throw config_error("checkpoint '" + tag_ + "' is already committed");
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
      name == detail::commit_name)
    throw config_error("checkpoint '" + tag_ + "': '" + name + "' is not a plain file name of its own");
  const std::string p = path_ + "/" + name;
  output_file f(this, root_->ops_.create_file(dir_.get(), name, p), p);
  ++unfinished_;
  return f;
}

inline void pending_checkpoint::write_file(const std::string& name, std::span<const std::byte> bytes) {
  output_file f = create(name);
  f.write_at(bytes.data(), bytes.size(), 0);
  f.finish();
}

inline void pending_checkpoint::commit() {
  if (committed_) return;
  if (joined_)
    throw config_error("checkpoint '" + tag_ + "': joined by another rank; only the rank that "
                       "began it commits");
  if (unfinished_ != 0)
    throw config_error("checkpoint '" + tag_ + "': " + std::to_string(unfinished_) +
                       " file(s) were created but never finished; nothing was committed");
  const checkpoint_root& root = *root_;
  const std::string record = "sequence " + std::to_string(sequence_) + "\ntag " + tag_ + "\n";
  {
    const std::string p = path_ + "/" + detail::commit_name;
    output_file f(this, root.ops_.create_file(dir_.get(), detail::commit_name, p), p);
    ++unfinished_;
    f.write_at(record.data(), record.size(), 0);
    f.finish();
  }
  root.ops_.sync(dir_.get(), path_);
  root.notify(commit_phase::dir_synced, tag_, path_);
  const std::string partial = tag_ + std::string(detail::partial_suffix);
  root.ops_.rename(root.fd_.get(), partial, tag_, path_, root.child(tag_), false);
  renamed_ = true;
  root.notify(commit_phase::renamed, tag_, root.child(tag_));
  root.ops_.sync(root.fd_.get(), root.path_);
  root.notify(commit_phase::root_synced, tag_, root.path_);
  publish_latest();
  root_->prune(tag_, tag_);
}

// latest.tmp (exclusive: a second writer, or a leftover, is an error, not a shared file), then
// the one rename that switches which checkpoint is loaded.
inline void pending_checkpoint::publish_latest() {
  const checkpoint_root& root = *root_;
  const int fd = root.fd_.get();
  const std::string tmp = root.child(detail::latest_tmp_name);
  const std::string line = tag_ + "\n";
  unique_fd f = root.ops_.create_file(fd, detail::latest_tmp_name, tmp);  // ours from here on
  try {
    root.ops_.write_at(f.get(), line.data(), line.size(), 0, tmp);
    root.ops_.sync(f.get(), tmp);
    f.reset();
    root.notify(commit_phase::latest_written, tag_, tmp);
    root.ops_.rename(fd, detail::latest_tmp_name, detail::latest_name, tmp,
                     root.child(detail::latest_name), true);
  } catch (...) {
    ::unlinkat(fd, detail::latest_tmp_name, 0);  // ours; best effort: a leftover goes at open
    throw;
  }
  // From here on `latest` names this checkpoint: a failure below is reported, but the
  // checkpoint is committed and must not be removed.
  committed_ = true;
  root.notify(commit_phase::latest_renamed, tag_, root.child(detail::latest_name));
  root.ops_.sync(fd, root.path_);
  root.notify(commit_phase::latest_synced, tag_, root.path_);
}

inline void pending_checkpoint::abandon() noexcept {
  if (committed_ || !root_) return;
  dir_.reset();
  if (joined_) {  // the rank that began it removes it
    root_ = nullptr;
    return;
  }
  try {
    if (renamed_) {
      // Renamed but `latest` never switched to it: it was never the loaded checkpoint. Taken
      // out of view first (a crash mid-removal leaves a .pruning that the next open removes).
      const std::string doomed = tag_ + std::string(detail::pruning_suffix);
      root_->ops_.rename(root_->fd_.get(), tag_, doomed, root_->child(tag_), root_->child(doomed), false);
      root_->ops_.remove_tree(root_->fd_.get(), doomed, root_->child(doomed));
    } else {
      const std::string name = tag_ + std::string(detail::partial_suffix);
      root_->ops_.remove_tree(root_->fd_.get(), name, path_);
    }
  } catch (...) {
    // Left for the next open's recovery; a destructor must not throw.
  }
  root_ = nullptr;
}

}  // namespace checkpoint
STRATA_NAMESPACE_END
