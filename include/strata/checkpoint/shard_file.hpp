// strata/checkpoint/shard_file.hpp — one rank's tensors in a checkpoint: written into its data
// file with a CRC-32C per block, read back checked block by block.
//
// What lives here: shard_writer, which writes a rank's tensors (bytes with a tensor_desc, or a
// tensor_ref read through its public calls) into `rank-<r>.bin` in a pending checkpoint and
// its manifest into `rank-<r>.json`; checkpoint_reader, which opens a committed checkpoint,
// checks that every rank's manifest is there and agrees, and reads a tensor — or any byte range
// of it, touching only the checksum blocks that cover the range (what resharding builds on) —
// verifying each block. A flipped byte is a format_error naming the file, the block's byte
// offset in it and the tensor; a missing or truncated file an error naming the file.
// What does not: the directory and its atomic commit (directory.hpp), the manifest's format
// (manifest.hpp), the state of a training run and its snapshots (train_state.hpp, saver.hpp).
//
//   checkpoint_root root(dir, {.keep = 2});
//   {
//     pending_checkpoint p = root.begin("step-30");
//     shard_writer w(p, {.step = 30, .world = 1, .rank = 0});
//     w.add(weights.ref(), dtype::f32);                 // any tiered tensor, any placement
//     w.add({.name = "rng", .type = dtype::i8, .numel = 8}, as_bytes(std::span(rng_state)));
//     w.finish();                                       // rank-0.bin and rank-0.json, fsynced
//     p.commit();                                       // rename, then `latest`
//   }
//   checkpoint_reader r(root, *root.latest());
//   r.restore(weights.ref(), 0);                        // bitwise, every block checked
#pragma once

#include <strata/checkpoint/directory.hpp>
#include <strata/checkpoint/manifest.hpp>
#include <strata/io/crc32c.hpp>
#include <strata/io/nvme_store.hpp>
#include <strata/tensor/tensor_ref.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {

/// What a tensor is, for bytes that come without a tensor_ref.
struct tensor_desc {
  std::string name;
  dtype type = dtype::f32;
  /// Real elements of the global tensor.
  std::uint64_t numel = 0;
  /// Which shard the bytes are (shard_numel elements, padding included); empty: all of it.
  std::optional<shard_spec> shard = std::nullopt;
};

struct shard_writer_options {
  /// Checksum block: reading a range reads whole blocks, so smaller blocks make range reads
  /// cheaper and manifests longer. At least 1.
  std::uint64_t block_bytes = std::uint64_t{1} << 20;
  /// Each tensor starts at a multiple of this in the data file (4096: where O_DIRECT and
  /// file-to-file copies want it). At least 1.
  std::uint64_t alignment = 4096;
};

class shard_writer {
public:
  /// Writes rank head.rank's part of `into`; head gives step, world, rank, stage and metadata
  /// (its tag and tensors are filled in here).
  shard_writer(pending_checkpoint& into, manifest head, shard_writer_options options = {});

  /// The bytes of one tensor (or shard): dtype_bytes_for(type, stored elements) of them.
  void add(const tensor_desc& desc, std::span<const std::byte> bytes);
  /// A tiered tensor through its handle: name(), bytes(), shard() and read() into a host
  /// buffer. `type` is its element type's dtype (the handle is type-erased).
  void add(tensor_ref t, dtype type);
  template <class T, class Placement, class Prefetch>
  void add(tiered_tensor<T, Placement, Prefetch>& t) {
    add(t.ref(), dtype_of_v<T>);
  }
  /// A tensor whose bytes are the first min(src.bytes, stored bytes) of an NVMe store's
  /// committed extent (the rest, padding, zeros), copied file to file: `src_fd` is the arena
  /// file opened for reading (without O_DIRECT), `src` what committed_extent() says. The
  /// entry's checksum blocks are the store's (src.block), and where a block of the entry is
  /// one of the store's the store's CRC is taken as it is — the data never passes through this
  /// process's memory; only a block the two do not share (the last, where padding follows) is
  /// read to be checked. Returns the bytes the kernel copied itself (copy_file_range).
  std::size_t add_copy(const tensor_desc& desc, int src_fd, const io::nvme_store::extent_view& src);
  /// Makes rank-<r>.bin durable and writes rank-<r>.json; returns the manifest written.
  const manifest& finish();

  const manifest& current() const noexcept { return m_; }

private:
  pending_checkpoint* into_;
  shard_writer_options options_;
  manifest m_;
  output_file data_;
  std::uint64_t end_ = 0;
  tensor_entry begin_entry(const tensor_desc& d, std::uint64_t given_bytes, std::uint64_t block);
  std::vector<std::byte> staging_;  // a tensor_ref's bytes on the way to the file
  bool finished_ = false;
};

/// What a reader has read from data files, to show that range reads stay within their blocks.
struct read_stats {
  std::uint64_t reads = 0;  // pread calls (a contiguous span of blocks is one)
  std::uint64_t bytes = 0;  // bytes read from data files
};

class checkpoint_reader {
public:
  /// Opens committed checkpoint `tag` of `root` and reads every rank's manifest: rank-0.json
  /// gives the world size, and each of rank-1..world-1.json must be there and agree (tag,
  /// world, rank). format_error when one is missing or disagrees, naming it.
  checkpoint_reader(const checkpoint_root& root, const std::string& tag);

  int world() const noexcept { return static_cast<int>(manifests_.size()); }
  const std::string& path() const noexcept { return dir_.path(); }
  const manifest& of_rank(int rank) const;
  /// Rank `rank`'s entry `name`; config_error naming both when there is none.
  const tensor_entry& find(int rank, std::string_view name) const;

  /// All of a tensor's bytes (dst.size() == e.bytes), every block checked.
  void read(const tensor_entry& e, std::span<std::byte> dst);
  /// dst.size() bytes of a tensor from byte `first` of it, reading and checking only the
  /// blocks that cover [first, first + dst.size()).
  void read_range(const tensor_entry& e, std::uint64_t first, std::span<std::byte> dst);
  /// The tensor `name` as the whole checkpoint holds it: rank 0's entry (its dtype, its global
  /// numel); config_error naming it when there is none.
  const tensor_entry& entry(std::string_view name) const { return find(0, name); }
  /// Elements [first, first + count) of tensor `name`, whichever ranks saved them: from a
  /// replicated entry (rank 0's), or from each saved shard that overlaps the range, reading
  /// only the checksum blocks that cover the overlap (read_range). dst.size() must be the
  /// dtype's bytes of `count` elements (a whole-byte dtype). This is what loading onto another
  /// world size or bundle builds on: each rank asks for the range it owns under its own layout.
  /// config_error naming the tensor when the range is outside its numel or the shards of the
  /// ranks do not tile it.
  void read_elements(std::string_view name, std::uint64_t first, std::uint64_t count,
                     std::span<std::byte> dst);
  /// Restores a tensor from rank `rank`'s entry of its name: the same bytes and the same
  /// shard layout (config_error otherwise; read_elements loads onto another layout), written
  /// to its home.
  void restore(tensor_ref t, int rank);
  /// As above, also checking that the entry's dtype is T's.
  template <class T, class Placement, class Prefetch>
  void restore(tiered_tensor<T, Placement, Prefetch>& t, int rank) {
    const tensor_entry& e = find(rank, t.name());
    if (e.type != dtype_of_v<T>)
      throw config_error("checkpoint '" + path() + "': tensor '" + t.name() + "' is " +
                         dtype_name(e.type) + " there, the tensor holds " +
                         dtype_name(dtype_of_v<T>));
    restore(t.ref(), rank);
  }

  const read_stats& stats() const noexcept { return stats_; }

private:
  struct open_file {
    unique_fd fd;
    std::uint64_t size = 0;
  };
  open_file& data_file(const tensor_entry& e);
  void verify_block(const tensor_entry& e, std::uint64_t block, const std::byte* data,
                    std::uint64_t n) const;

  checkpoint_dir dir_;
  std::vector<manifest> manifests_;  // by rank
  std::map<std::string, open_file> files_;
  std::vector<std::byte> scratch_;
  read_stats stats_;
};

}  // namespace checkpoint
STRATA_NAMESPACE_END

#include <strata/checkpoint/detail/shard_file.inl>
