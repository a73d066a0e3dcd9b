// strata/checkpoint/detail/shard_file.inl — bodies of shard_file.hpp: writing tensors with their
// block checksums, reading manifests of every rank, checked block reads.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstring>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {
namespace detail {

inline std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(v));
  return buf;
}

inline std::string describe_shard(const std::optional<shard_spec>& s) {
  if (!s) return "replicated";
  return "rank " + std::to_string(s->rank) + "'s shard of " + std::to_string(s->layout.numel()) +
         " elements over " + std::to_string(s->layout.world()) + " ranks";
}

inline bool same_layout(const std::optional<shard_spec>& a, const std::optional<shard_spec>& b) {
  if (!a || !b) return !a && !b;
  return a->rank == b->rank && a->layout.numel() == b->layout.numel() &&
         a->layout.world() == b->layout.world();
}

// The writer's manifest before its first tensor: the pending checkpoint's tag, this format.
inline manifest writer_head(manifest head, const pending_checkpoint& into) {
  if (!head.tensors.empty())
    throw config_error("shard_writer: the manifest head must not list tensors; add() them");
  head.tag = into.tag();
  head.version = manifest_version;
  validate(head, into.path() + "/" + manifest_file_name(head.rank));
  return head;
}

}  // namespace detail

// ---- shard_writer ---------------------------------------------------------------------------------

inline shard_writer::shard_writer(pending_checkpoint& into, manifest head,
                                  shard_writer_options options)
    : into_(&into), options_(options), m_(detail::writer_head(std::move(head), into)),
      data_(into.create(data_file_name(m_.rank))) {
  if (options_.block_bytes == 0 || options_.alignment == 0)
    throw config_error("shard_writer: block_bytes and alignment must be at least 1");
}

// The entry for `d` (checked: a name of its own, a shard that fits, `given_bytes` the dtype's
// bytes of its stored elements), placed at the next aligned offset of the data file.
inline tensor_entry shard_writer::begin_entry(const tensor_desc& d, std::uint64_t given_bytes,
                                              std::uint64_t block) {
  if (finished_) throw config_error("shard_writer: add('" + d.name + "') after finish()");
  const std::string who = "checkpoint '" + into_->tag() + "': tensor '" + d.name + "'";
  if (d.name.empty() || m_.find(d.name))
    throw config_error(who + (d.name.empty() ? ": a tensor needs a name" : " is added twice"));
  if (d.shard && (d.shard->layout.numel() != d.numel || d.shard->rank < 0 ||
                  d.shard->rank >= d.shard->layout.world()))
    throw config_error(who + ": " + detail::describe_shard(d.shard) + " does not fit its " +
                       std::to_string(d.numel) + " elements");
  if (block == 0) throw config_error(who + ": a checksum block of 0 bytes");
  tensor_entry e{d.name, d.type, d.numel, d.shard, data_file_name(m_.rank), 0, given_bytes, block, {}};
  const std::uint64_t want = dtype_bytes_for(d.type, static_cast<std::size_t>(e.stored_numel()));
  if (want != given_bytes)
    throw config_error(who + ": " + std::to_string(given_bytes) + " bytes given, but " +
                       std::to_string(e.stored_numel()) + " " + dtype_name(d.type) +
                       " elements take " + std::to_string(want) + " (is the dtype right?)");
  e.offset = (end_ + options_.alignment - 1) / options_.alignment * options_.alignment;
  return e;
}

inline void shard_writer::add(const tensor_desc& d, std::span<const std::byte> bytes) {
  tensor_entry e = begin_entry(d, bytes.size(), options_.block_bytes);
  for (std::uint64_t b = 0; b < e.block_count(); ++b) {
    const std::uint64_t at = b * e.block_bytes;
    const std::uint64_t n = std::min(e.block_bytes, e.bytes - at);
    e.crc32c.push_back(io::crc32c(bytes.data() + at, static_cast<std::size_t>(n)));
  }
  data_.write_at(bytes.data(), bytes.size(), e.offset);
  data_.start_writeback(e.offset, bytes.size());
  end_ = e.offset + e.bytes;
  m_.tensors.push_back(std::move(e));
}

inline std::size_t shard_writer::add_copy(const tensor_desc& d, int src_fd,
                                          const io::nvme_store::extent_view& src) {
  const std::uint64_t bytes = dtype_bytes_for(
      d.type, static_cast<std::size_t>(d.shard ? d.shard->layout.shard_numel() : d.numel));
  tensor_entry e = begin_entry(d, bytes, src.block);
  const std::uint64_t B = e.block_bytes;
  const std::uint64_t have = src.written ? std::min<std::uint64_t>(src.bytes, bytes) : 0;
  std::size_t in_kernel = 0;
  if (have) in_kernel = data_.copy_from(src_fd, src.offset, src.path, static_cast<std::size_t>(have), e.offset);
  std::vector<std::byte> block;
  if (have < bytes) {  // padding, or a tensor never written: zeros
    std::vector<std::byte> zeros(static_cast<std::size_t>(std::min<std::uint64_t>(bytes - have, 1 << 20)));
    for (std::uint64_t at = have; at < bytes;) {
      const std::uint64_t k = std::min<std::uint64_t>(zeros.size(), bytes - at);
      data_.write_at(zeros.data(), static_cast<std::size_t>(k), e.offset + at);
      at += k;
    }
  }
  const std::string src_where = "checkpoint '" + into_->tag() + "': tensor '" + d.name +
                                "' from '" + src.path + "'";
  for (std::uint64_t b = 0; b < e.block_count(); ++b) {
    const std::uint64_t lo = b * B, hi = std::min(lo + B, bytes);
    // The store's block b covers [lo, min(lo + B, src.bytes)): the same bytes when both end
    // at the same place and the data is there.
    const bool shared = src.written && src.crcs && b < src.crcs->size() && hi <= have &&
                        std::min<std::uint64_t>(lo + B, src.bytes) == hi;
    if (shared) {
      e.crc32c.push_back((*src.crcs)[b]);
      continue;
    }
    block.assign(static_cast<std::size_t>(hi - lo), std::byte{0});
    if (lo < have) {
      const std::size_t n = static_cast<std::size_t>(std::min(hi, have) - lo);
      if (into_->ops().read_at(src_fd, block.data(), n, src.offset + lo, src.path) != n)
        throw io_error(src_where + ": the arena file ends before the extent does");
    }
    e.crc32c.push_back(io::crc32c(block.data(), block.size()));
  }
  data_.start_writeback(e.offset, static_cast<std::size_t>(e.bytes));
  end_ = e.offset + e.bytes;
  m_.tensors.push_back(std::move(e));
  return in_kernel;
}

inline void shard_writer::add(tensor_ref t, dtype type) {
  if (!t) throw config_error("shard_writer: add() of an empty tensor_ref");
  const auto& shard = t.shard();
  const tensor_desc d{t.name(), type, shard ? shard->layout.numel() : t.shape().numel(), shard};
  staging_.resize(t.bytes());
  t.read(staging_.data());  // waits for the current value, wherever it lives
  add(d, staging_);
}

inline const manifest& shard_writer::finish() {
  if (finished_) return m_;
  data_.finish();
  const std::string name = manifest_file_name(m_.rank);
  const std::string text = serialize(m_, into_->path() + "/" + name);
  into_->write_file(name, std::as_bytes(std::span(text.data(), text.size())));
  finished_ = true;
  staging_ = {};
  return m_;
}

// ---- checkpoint_reader ----------------------------------------------------------------------------

inline checkpoint_reader::checkpoint_reader(const checkpoint_root& root, const std::string& tag)
    : dir_(root.open(tag)) {
  auto load = [&](int rank) {
    const std::string name = manifest_file_name(rank);
    const std::string file = dir_.path() + "/" + name;
    manifest m = parse_manifest(dir_.read_file(name), file);
    if (m.rank != rank || m.tag != tag)
      throw format_error("checkpoint manifest '" + file + "': holds rank " + std::to_string(m.rank) +
                         " of '" + m.tag + "', expected rank " + std::to_string(rank) + " of '" +
                         tag + "'");
    return m;
  };
  manifests_.push_back(load(0));
  const int world = manifests_[0].world;
  for (int r = 1; r < world; ++r) {
    const std::string name = manifest_file_name(r);
    if (!file_ops::exists(dir_.fd(), name))
      throw format_error("checkpoint '" + dir_.path() + "' has world size " + std::to_string(world) +
                         " (" + manifest_file_name(0) + ") but no manifest for rank " +
                         std::to_string(r) + " ('" + dir_.path() + "/" + name + "' is missing)");
    manifests_.push_back(load(r));
    if (manifests_.back().world != world)
      throw format_error("checkpoint manifest '" + dir_.path() + "/" + name + "': world is " +
                         std::to_string(manifests_.back().world) + ", " + manifest_file_name(0) +
                         " says " + std::to_string(world));
  }
}

inline const manifest& checkpoint_reader::of_rank(int rank) const {
  if (rank < 0 || rank >= world())
    throw config_error("checkpoint '" + dir_.path() + "': rank " + std::to_string(rank) +
                       " is outside its world of " + std::to_string(world()));
  return manifests_[static_cast<std::size_t>(rank)];
}

inline const tensor_entry& checkpoint_reader::find(int rank, std::string_view name) const {
  if (const tensor_entry* e = of_rank(rank).find(name)) return *e;
  throw config_error("checkpoint '" + dir_.path() + "': rank " + std::to_string(rank) +
                     " holds no tensor '" + std::string(name) + "'");
}

inline checkpoint_reader::open_file& checkpoint_reader::data_file(const tensor_entry& e) {
  auto it = files_.find(e.file);
  if (it == files_.end()) {
    const std::string p = dir_.path() + "/" + e.file;
    open_file f;
    f.fd = dir_.ops().open_read(dir_.fd(), e.file, p);
    f.size = file_ops::size_of(f.fd.get(), p);
    it = files_.emplace(e.file, std::move(f)).first;
  }
  if (e.offset + e.bytes > it->second.size)
    throw format_error("checkpoint file '" + dir_.path() + "/" + e.file + "' is truncated: tensor '" +
                       e.name + "' needs its bytes " + std::to_string(e.offset) + ".." +
                       std::to_string(e.offset + e.bytes) + ", the file holds " +
                       std::to_string(it->second.size));
  return it->second;
}

inline void checkpoint_reader::verify_block(const tensor_entry& e, std::uint64_t block,
                                            const std::byte* data, std::uint64_t n) const {
  const std::uint32_t got = io::crc32c(data, static_cast<std::size_t>(n));
  if (got == e.crc32c[block]) return;
  const std::uint64_t at = e.offset + block * e.block_bytes;
  throw format_error("checkpoint file '" + dir_.path() + "/" + e.file + "': tensor '" + e.name +
                     "' fails its checksum at byte offset " + std::to_string(at) + " (block " +
                     std::to_string(block) + ", file bytes " + std::to_string(at) + ".." +
                     std::to_string(at + n) + "): CRC-32C " + detail::hex32(got) +
                     ", the manifest says " + detail::hex32(e.crc32c[block]));
}

inline void checkpoint_reader::read_range(const tensor_entry& e, std::uint64_t first,
                                          std::span<std::byte> dst) {
  const std::uint64_t n = dst.size();
  if (first > e.bytes || n > e.bytes - first)
    throw config_error("checkpoint '" + dir_.path() + "': bytes " + std::to_string(first) + ".." +
                       std::to_string(first + n) + " of tensor '" + e.name + "' are outside its " +
                       std::to_string(e.bytes));
  if (n == 0) return;
  open_file& f = data_file(e);
  const std::uint64_t B = e.block_bytes;
  const std::uint64_t b0 = first / B, b1 = (first + n - 1) / B;
  const std::uint64_t begin = b0 * B, end = std::min((b1 + 1) * B, e.bytes);
  // Whole blocks land straight in dst; a range that cuts a block goes through scratch, since
  // the block must be read whole to be checked.
  const bool direct = begin == first && end == first + n;
  if (!direct) scratch_.resize(static_cast<std::size_t>(end - begin));
  std::byte* buf = direct ? dst.data() : scratch_.data();
  const std::string p = dir_.path() + "/" + e.file;
  const std::size_t got = dir_.ops().read_at(f.fd.get(), buf, static_cast<std::size_t>(end - begin),
                                             e.offset + begin, p);
  ++stats_.reads;
  stats_.bytes += got;
  if (got != end - begin)
    throw format_error("checkpoint file '" + p + "' is truncated: tensor '" + e.name +
                       "' ends at byte " + std::to_string(e.offset + e.bytes) + ", reading stopped at " +
                       std::to_string(e.offset + begin + got));
  for (std::uint64_t b = b0; b <= b1; ++b)
    verify_block(e, b, buf + (b * B - begin), std::min(B, e.bytes - b * B));
  if (!direct) std::memcpy(dst.data(), buf + (first - begin), static_cast<std::size_t>(n));
}

inline void checkpoint_reader::read(const tensor_entry& e, std::span<std::byte> dst) {
  if (dst.size() != e.bytes)
    throw config_error("checkpoint '" + dir_.path() + "': tensor '" + e.name + "' has " +
                       std::to_string(e.bytes) + " bytes, the buffer " + std::to_string(dst.size()));
  read_range(e, 0, dst);
}

inline void checkpoint_reader::read_elements(std::string_view name, std::uint64_t first,
                                             std::uint64_t count, std::span<std::byte> dst) {
  const tensor_entry& e0 = entry(name);
  const std::size_t unit = dtype_bytes_for(e0.type, 1);
  const std::string who = "checkpoint '" + dir_.path() + "': tensor '" + std::string(name) + "'";
  if (dtype_bytes_for(e0.type, 2) != 2 * unit)
    throw config_error(who + " is " + dtype_name(e0.type) +
                       ", whose elements are not whole bytes: read it whole");
  if (count == 0 && dst.empty()) return;  // a rank whose shard holds only padding
  if (first > e0.numel || count > e0.numel - first)
    throw config_error(who + ": elements " + std::to_string(first) + ".." +
                       std::to_string(first + count) + " are outside its " +
                       std::to_string(e0.numel));
  if (dst.size() != count * unit)
    throw config_error(who + ": " + std::to_string(count) + " elements need " +
                       std::to_string(count * unit) + " bytes, the buffer has " +
                       std::to_string(dst.size()));
  if (!e0.shard) {  // replicated: rank 0's copy holds all of it
    read_range(e0, first * unit, dst);
    return;
  }
  std::uint64_t covered = 0;
  for (int q = 0; q < world(); ++q) {
    const tensor_entry& e = find(q, name);
    if (!e.shard || e.type != e0.type || e.numel != e0.numel ||
        !detail::same_layout(e.shard, shard_spec{e0.shard->layout, q}))
      throw format_error(who + ": rank " + std::to_string(q) + " holds it as " +
                         detail::describe_shard(e.shard) + ", rank 0 as " +
                         detail::describe_shard(e0.shard) + ": the shards do not tile it");
    const std::uint64_t lo = std::max<std::uint64_t>(first, e.shard->offset());
    const std::uint64_t hi = std::min<std::uint64_t>(first + count, e.shard->offset() + e.shard->valid());
    if (lo >= hi) continue;
    read_range(e, (lo - e.shard->offset()) * unit,
               dst.subspan(static_cast<std::size_t>((lo - first) * unit),
                           static_cast<std::size_t>((hi - lo) * unit)));
    covered += hi - lo;
  }
  if (covered != count)
    throw format_error(who + ": its shards cover " + std::to_string(covered) + " of elements " +
                       std::to_string(first) + ".." + std::to_string(first + count));
}

inline void checkpoint_reader::restore(tensor_ref t, int rank) {
  if (!t) throw config_error("checkpoint_reader: restore() into an empty tensor_ref");
  const tensor_entry& e = find(rank, t.name());
  if (e.bytes != t.bytes() || !detail::same_layout(e.shard, t.shard()))
    throw config_error("checkpoint '" + dir_.path() + "': tensor '" + e.name + "' is " +
                       detail::describe_shard(e.shard) + " in " + std::to_string(e.bytes) +
                       " bytes there, the tensor is " + detail::describe_shard(t.shard()) + " in " +
                       std::to_string(t.bytes()) + " (read_elements loads onto another layout)");
  std::vector<std::byte> host(static_cast<std::size_t>(e.bytes));
  read(e, host);
  t.write_from(host.data(), tier_id::host, {}).wait();
}

}  // namespace checkpoint
STRATA_NAMESPACE_END
