// strata/checkpoint/manifest.hpp — what one rank's part of a checkpoint holds, as JSON.
//
// What lives here: checkpoint::manifest (format version, tag, step, world size, ZeRO stage, the
// caller's metadata, and one tensor_entry per tensor: name, dtype, global element count, shard
// layout with its padding spelt out, the file, byte offset and length in it, and the CRC-32C of
// each checksum block), its JSON form (nlohmann/json), parse_manifest() / serialize(), and
// validate(), the one check of a manifest's consistency. Every problem in a manifest read from
// disk is a format_error naming the file and the field ("tensors[2] ('w').layout.offset").
// What does not: writing and reading the tensors' bytes (shard_file.hpp), the directory a
// checkpoint lives in and its atomic commit (directory.hpp).
//
// One manifest per rank, `rank-<r>.json`, next to that rank's data file `rank-<r>.bin`; each
// names the world size, so a loader can check that every rank's manifest is there. Needs
// nlohmann/json (Debian: nlohmann-json3-dev); strata.hpp includes this floor only where it is.
//
//   {"format": "strata-checkpoint", "version": 1, "tag": "step-30", "step": 30,
//    "world": 2, "rank": 1, "zero_stage": 3, "metadata": {"lr": 0.001, "run": "demo"},
//    "tensors": [{"name": "h0.w", "dtype": "f32", "numel": 10,
//                 "layout": {"world": 2, "shard_numel": 5, "rank": 1, "offset": 5, "valid": 5,
//                            "padding": 0},
//                 "file": "rank-1.bin", "offset": 0, "bytes": 20,
//                 "block_bytes": 1048576, "crc32c": [3421780262]}]}
//
// A replicated tensor has "layout": null and holds `numel` elements; a sharded one holds
// layout.shard_numel elements, of which `valid` are real and the rest padding (zeros).
#pragma once

#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>
#include <strata/tensor/shard_layout.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {

/// The manifest format this build writes and the only one it reads.
inline constexpr int manifest_version = 1;
/// The value of the "format" field, so that a stray JSON file is not taken for a manifest.
inline constexpr const char* manifest_format = "strata-checkpoint";

/// One tensor (or one rank's shard of it) in a checkpoint.
struct tensor_entry {
  std::string name;
  dtype type = dtype::f32;
  /// Real elements of the whole (global) tensor, padding excluded.
  std::uint64_t numel = 0;
  /// For a sharded tensor: which shard of which layout this entry holds. Empty: replicated.
  std::optional<shard_spec> shard;
  /// Where the bytes are: a file in the checkpoint directory (a plain name, no '/').
  std::string file;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
  /// The bytes are checksummed in blocks of block_bytes (the last may be shorter), one
  /// CRC-32C each, so that reading a byte range reads and checks only the blocks it touches.
  std::uint64_t block_bytes = 0;
  std::vector<std::uint32_t> crc32c;

  /// Elements stored in this entry: the shard's length (padding included) or numel.
  std::uint64_t stored_numel() const noexcept { return shard ? shard->layout.shard_numel() : numel; }
  std::uint64_t block_count() const noexcept {
    return block_bytes == 0 ? 0 : (bytes + block_bytes - 1) / block_bytes;
  }
};

/// One rank's manifest.
struct manifest {
  int version = manifest_version;
  std::string tag;
  std::uint64_t step = 0;
  int world = 1;
  int rank = 0;
  int zero_stage = 0;
  /// The caller's key -> value pairs (a string, a number, or any JSON value). A JSON object.
  nlohmann::json metadata = nlohmann::json::object();
  std::vector<tensor_entry> tensors;

  /// The entry named `name`, or nullptr.
  const tensor_entry* find(std::string_view name) const noexcept {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

/// "rank-<r>.json" and "rank-<r>.bin": the names of rank r's manifest and data file.
inline std::string manifest_file_name(int rank) { return "rank-" + std::to_string(rank) + ".json"; }
inline std::string data_file_name(int rank) { return "rank-" + std::to_string(rank) + ".bin"; }

/// The dtype written as `name` (dtype_name()'s spelling), or nothing.
[[nodiscard]] std::optional<dtype> dtype_from_name(std::string_view name) noexcept;

/// Throws format_error naming `file` and the field when `m` is inconsistent: an unknown
/// version, a rank outside the world, a ZeRO stage outside 0..3, metadata that is not an
/// object, and per tensor an empty or repeated name, a file that is not a plain name, a shard
/// outside its layout, a byte length that is not the dtype's size of the stored elements,
/// checksum blocks that do not cover the bytes, or two tensors overlapping in one file.
void validate(const manifest& m, const std::string& file);

/// The manifest as JSON (validated first: an inconsistent manifest is never written).
[[nodiscard]] nlohmann::json to_json(const manifest& m, const std::string& file = "manifest");
/// A manifest from JSON read from `file` (used in messages); format_error on a missing field, a
/// field of the wrong type or range, or anything validate() refuses.
[[nodiscard]] manifest manifest_from_json(const nlohmann::json& j, const std::string& file);

/// The JSON text of a manifest (indented, newline-terminated), and back.
[[nodiscard]] std::string serialize(const manifest& m, const std::string& file = "manifest");
[[nodiscard]] manifest parse_manifest(std::string_view text, const std::string& file);

}  // namespace checkpoint
STRATA_NAMESPACE_END

#include <strata/checkpoint/detail/manifest.inl>
