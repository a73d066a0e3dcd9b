// examples/gpt/safetensors.hpp — the mini-GPT's weights in the safetensors format.
//
// What this is: a writer and a checking reader for safetensors files (8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
// then the raw little-endian tensor bytes), and on top of them save_gpt / load_gpt, which
// store a gpt_config in the metadata and every parameter under its GPT-2 name (wte.weight,
// wpe.weight, h.{i}.ln_1.weight, ..., ln_f.bias) in GPT-2's own layout: the four linear
// weights of a block are stored (in, out), as GPT-2's Conv1D holds them, and transposed to
// and from the (out, in) arrays of gpt_config.hpp on the way. So a saved model loads into
// Hugging Face's GPT2LMHeadModel given the same sizes (vocab_size=256, n_positions=context,
// n_embd=width, n_layer=layers, n_head=heads). Files are written F32 (F16 / BF16 on request);
// the reader also reads F16 and BF16 and converts them to float. The writer streams
// (stream_safetensors): the header is made from names, dtypes and shapes, then each tensor's
// values are asked for in turn, so a model can be written one layer at a time (write_gpt; a
// training checkpoint's export, checkpoint_export.hpp, reads one layer, writes it, and goes on).
// What it is not: a loader for OpenAI's GPT-2 checkpoints (their vocabulary is BPE, not bytes);
// a file without the "strata-gpt" metadata is refused rather than guessed at.
//
// Every malformed file is a strata::format_error (a failed read or write a strata::io_error)
// whose message names the file and what is wrong: the tensor, the offsets, the shapes.
#pragma once

#include "gpt_config.hpp"

#include <strata/core/dtype.hpp>
#include <strata/core/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace gpt {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; this reader copies them as they are");

/// The dtypes this file reads and writes. Other safetensors dtypes are recognised (so the
/// offsets of any file can be checked) but reading them as float is refused.
/// U8 holds raw bytes (a packed inference block: stored_file.hpp); the others are floats.
enum class st_dtype { f32, f16, bf16, u8 };

inline const char* st_dtype_name(st_dtype t) {
  switch (t) {
    case st_dtype::f32: return "F32";
    case st_dtype::f16: return "F16";
    case st_dtype::bf16: return "BF16";
    case st_dtype::u8: return "U8";
  }
  return "?";
}

/// One tensor's entry in the header, after checking.
struct st_tensor_info {
  std::string name;
  std::string dtype;                 // as written: "F32", "BF16", ...
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // data_offsets, relative to the start of the data
};

/// A tensor to write: `data` holds numel floats, stored as `dtype`. With `transposed` (2-D
/// only) data holds the transpose, (shape[1], shape[0]) row-major, and is transposed on write.
struct st_tensor_ref {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data = nullptr;
  st_dtype dtype = st_dtype::f32;
  bool transposed = false;
};

namespace st_detail {

/// Bytes per element of every dtype in the safetensors spec; 0 for names it does not list.
inline std::size_t st_dtype_size(const std::string& d) {
  static const std::map<std::string, std::size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},     {"U32", 4},     {"F32", 4},
      {"F64", 8},  {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

inline std::string shape_string(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

/// Bytes of a tensor of shape s with `esize`-byte elements, or nothing when they exceed
/// `limit` (so the product is never formed where it could wrap around).
inline std::optional<std::uint64_t> shape_bytes(const std::vector<std::int64_t>& s,
                                                std::uint64_t esize, std::uint64_t limit) {
  if (std::find(s.begin(), s.end(), 0) != s.end()) return 0;
  std::uint64_t bytes = esize;
  for (std::int64_t d : s) {
    const auto u = static_cast<std::uint64_t>(d);
    if (bytes > limit / u) return std::nullopt;
    bytes *= u;
  }
  if (bytes > limit) return std::nullopt;
  return bytes;
}

inline std::uint64_t numel(const std::vector<std::int64_t>& s) {
  std::uint64_t n = 1;
  for (std::int64_t d : s) n *= static_cast<std::uint64_t>(d);
  return n;
}

/// dst (cols, rows) = src (rows, cols)^T.
inline void transpose(const float* src, float* dst, std::size_t rows, std::size_t cols) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

inline void write_all(int fd, const void* data, std::size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::write(fd, p, bytes);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      throw strata::io_error("safetensors: writing '" + path + "' failed: " +
                             std::strerror(errno));
    p += w;
    bytes -= static_cast<std::size_t>(w);
  }
}

// Makes a rename into path's directory durable: the directory entry is data of the directory.
inline void fsync_directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).has_parent_path()
                              ? std::filesystem::path(path).parent_path().string()
                              : std::string(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw strata::io_error("safetensors: cannot open directory '" + dir + "' to fsync it: " +
                           std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    throw strata::io_error("safetensors: fsync of directory '" + dir + "' failed: " +
                           std::strerror(err));
}

}  // namespace st_detail

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// A tensor's entry in a file about to be written: everything the header says, known before
/// any value is. With `transposed` (2-D only) its values come as the transpose, (shape[1],
/// shape[0]) row-major, and are transposed on the way to the file.
struct st_tensor_spec {
  std::string name;
  std::vector<std::int64_t> shape;
  st_dtype dtype = st_dtype::f32;
  bool transposed = false;
};

/// Gives tensor `index`'s numel floats (in its spec's order: transposed when marked). The
/// writer asks for 0, 1, 2, ... once each, and uses the span only until it asks for the next, so
/// a producer may hand out a view of a buffer it refills (one layer of a checkpoint at a time).
using st_tensor_source = std::function<std::span<const float>(std::size_t index)>;
/// Gives a U8 tensor's bytes, as st_tensor_source gives floats (same order, same lifetime).
using st_bytes_source = std::function<std::span<const std::byte>(std::size_t index)>;

/// What a streamed write wrote.
struct st_write_summary {
  std::size_t tensors = 0;
  std::uint64_t file_bytes = 0;     // the whole file: length, header, data
  std::size_t held_floats = 0;      // the largest tensor the writer itself held (a transpose)
};

namespace st_detail {

/// The header's text: {"__metadata__": ..., name: {dtype, shape, data_offsets}, ...} in the
/// order given, padded with spaces to a multiple of 8 bytes. config_error naming the tensor
/// for a reserved or repeated name or a transposed tensor that is not 2-D.
inline std::string header_text(const std::string& path, const std::vector<st_tensor_spec>& specs,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const st_tensor_spec& t : specs) {
    if (t.name == "__metadata__" || header.contains(t.name))
      throw strata::config_error("safetensors: tensor name '" + t.name + "' for '" + path +
                                 "' is reserved or used twice");
    if (t.transposed && t.shape.size() != 2)
      throw strata::config_error("safetensors: tensor '" + t.name + "' for '" + path +
                                 "' is marked transposed but has shape " + shape_string(t.shape) +
                                 ", not 2-D");
    const std::uint64_t bytes = numel(t.shape) * st_dtype_size(st_dtype_name(t.dtype));
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // The spec lets the header be padded with spaces; 8-byte alignment keeps every F32 tensor
  // aligned when the file is mapped.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

/// Writes `count` floats as `dtype`. Halves are converted a fixed chunk at a time, so the
/// conversion never holds a second copy of the tensor.
inline void write_floats(int fd, const float* data, std::size_t count, st_dtype dtype,
                         const std::string& tmp) {
  if (dtype == st_dtype::f32) {
    write_all(fd, data, count * sizeof(float), tmp);
    return;
  }
  constexpr std::size_t chunk = std::size_t{1} << 16;
  std::vector<std::uint16_t> half(std::min(count, chunk));
  for (std::size_t at = 0; at < count; at += chunk) {
    const std::size_t n = std::min(chunk, count - at);
    if (dtype == st_dtype::f16)
      strata::convert(data + at, reinterpret_cast<strata::f16*>(half.data()), n);
    else
      strata::convert(data + at, reinterpret_cast<strata::bf16*>(half.data()), n);
    write_all(fd, half.data(), n * 2, tmp);
  }
}

/// A temporary file of this process's own beside `path`: path + ".tmp.<pid>.<n>", created with
/// O_EXCL | O_NOFOLLOW, so two writers of one path never share one and a planted link is
/// refused.
inline std::pair<int, std::string> create_temp_beside(const std::string& path) {
  static std::atomic<unsigned> serial{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0)
    throw strata::io_error("safetensors: cannot create '" + tmp + "': " + std::strerror(errno));
  return {fd, std::move(tmp)};
}

/// Closes the (fsync'ed) temporary file and renames it over `path`, then makes the rename
/// durable. The temporary file is removed when either fails.
inline void publish_temp(int fd, const std::string& tmp, const std::string& path) {
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw strata::io_error("safetensors: closing '" + tmp + "' failed: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw strata::io_error("safetensors: renaming '" + tmp + "' to '" + path +
                           "' failed: " + std::strerror(err));
  }
  fsync_directory_of(path);
}

}  // namespace st_detail

/// Writes a safetensors file whose header is known up front, asking `source` for each tensor's
/// values in turn (see st_tensor_source), so that no more than one tensor need be in memory at
/// once: the writer keeps only a transpose (one tensor) and a fixed conversion chunk.
/// The bytes go to a temporary file beside `path` (st_detail::create_temp_beside), are
/// fsync'ed, renamed over `path`, and the directory is fsync'ed: a crash leaves either the old
/// file or the new one, never half of one, and the rename itself is durable. Any failure — a
/// write, the source throwing, a span of the wrong length (config_error naming the tensor) —
/// removes the temporary file and leaves `path` as it was.
/// U8 tensors ask `bytes` for their data instead of `source`.
inline st_write_summary stream_safetensors(const std::string& path,
                                           const std::vector<st_tensor_spec>& specs,
                                           const std::map<std::string, std::string>& metadata,
                                           const st_tensor_source& source,
                                           const st_bytes_source& bytes = {}) {
  const std::string text = st_detail::header_text(path, specs, metadata);
  st_write_summary summary;
  summary.tensors = specs.size();
  summary.file_bytes = 8 + text.size();
  const auto [fd, tmp] = st_detail::create_temp_beside(path);
  try {
    const std::uint64_t n = text.size();
    st_detail::write_all(fd, &n, 8, tmp);
    st_detail::write_all(fd, text.data(), text.size(), tmp);
    std::vector<float> flipped;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const st_tensor_spec& t = specs[i];
      const std::size_t count = st_detail::numel(t.shape);
      if (t.dtype == st_dtype::u8) {
        const std::span<const std::byte> raw =
            bytes ? bytes(i) : std::span<const std::byte>();
        if (raw.size() != count)
          throw strata::config_error("safetensors: U8 tensor '" + t.name + "' for '" + path +
                                     "' has " + std::to_string(count) + " bytes, its source gave " +
                                     std::to_string(raw.size()));
        st_detail::write_all(fd, raw.data(), count, tmp);
        summary.file_bytes += count;
        continue;
      }
      const std::span<const float> values = source(i);
      if (values.size() != count)
        throw strata::config_error("safetensors: tensor '" + t.name + "' for '" + path +
                                   "' has shape " + st_detail::shape_string(t.shape) + " (" +
                                   std::to_string(count) + " floats), its source gave " +
                                   std::to_string(values.size()));
      const float* data = values.data();
      if (t.transposed) {
        flipped.resize(count);
        summary.held_floats = std::max(summary.held_floats, count);
        st_detail::transpose(data, flipped.data(), std::size_t(t.shape[1]), std::size_t(t.shape[0]));
        data = flipped.data();
      }
      st_detail::write_floats(fd, data, count, t.dtype, tmp);
      summary.file_bytes += count * st_detail::st_dtype_size(st_dtype_name(t.dtype));
    }
    if (::fsync(fd) != 0)
      throw strata::io_error("safetensors: fsync of '" + tmp + "' failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  st_detail::publish_temp(fd, tmp, path);
  return summary;
}

/// Writes whole tensors held in memory, in the order given, and the metadata (string -> string,
/// as the format requires) to `path`: stream_safetensors over the callers' arrays, with its
/// durability (temporary file, fsync, rename, directory fsync; the old file kept on failure).
inline void write_safetensors(const std::string& path, const std::vector<st_tensor_ref>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<st_tensor_spec> specs;
  specs.reserve(tensors.size());
  for (const st_tensor_ref& t : tensors) specs.push_back({t.name, t.shape, t.dtype, t.transposed});
  (void)stream_safetensors(path, specs, metadata, [&](std::size_t i) {
    return std::span<const float>(tensors[i].data, st_detail::numel(tensors[i].shape));
  });
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Opens a safetensors file and checks its header against the file: the length, the JSON,
/// every entry's dtype, shape and data_offsets (inside the data, matching the shape, no two
/// tensors sharing a byte). Tensor bytes are read only when asked for.
class safetensors_reader {
public:
  explicit safetensors_reader(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path_, ec);
    if (ec) throw strata::io_error("safetensors: cannot open '" + path_ + "': " + ec.message());
    in_.open(path_, std::ios::binary);
    if (!in_) throw strata::io_error("safetensors: cannot open '" + path_ + "' for reading");
    if (size < 8)
      fail("not a safetensors file: it has " + std::to_string(size) +
           " bytes, fewer than the 8-byte header length (truncated header)");
    std::uint64_t n = 0;
    read_at(0, &n, 8);
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " (the first 8 bytes) is beyond the file: only " +
           std::to_string(size - 8) + " bytes follow; truncated file or not a safetensors file");
    if (n > max_header_bytes)
      fail("header length " + std::to_string(n) + " is over the format's limit of " +
           std::to_string(max_header_bytes) + " bytes; not a safetensors file");
    file_bytes_ = size;
    data_offset_ = 8 + n;
    data_bytes_ = size - data_offset_;
    std::string text(n, '\0');
    read_at(8, text.data(), n);
    parse_header(text);
  }

  const std::string& path() const noexcept { return path_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  const std::vector<st_tensor_info>& tensors() const noexcept { return tensors_; }
  /// The file's size; every tensor's bytes lie inside it (checked when the header was read).
  std::uint64_t file_bytes() const noexcept { return file_bytes_; }

  /// The entry named `name`, or nullptr.
  const st_tensor_info* find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }

  /// Reads tensor `name` as float into out (numel), checking that its shape is `shape`. With
  /// `transpose` (2-D only), out receives the transpose, (shape[1], shape[0]) row-major.
  void read_f32(const std::string& name, const std::vector<std::int64_t>& shape, float* out,
                bool transpose = false) const {
    if (transpose) {
      std::vector<float> file_order(st_detail::numel(shape));
      read_f32(name, shape, file_order.data());
      st_detail::transpose(file_order.data(), out, std::size_t(shape.at(0)), std::size_t(shape.at(1)));
      return;
    }
    const st_tensor_info* t = find(name);
    if (!t) fail("missing tensor '" + name + "' (expected shape " + st_detail::shape_string(shape) + ")");
    if (t->shape != shape)
      fail("shape mismatch for tensor '" + name + "': expected " + st_detail::shape_string(shape) +
           ", found " + st_detail::shape_string(t->shape));
    const std::size_t count = st_detail::numel(shape);
    const std::uint64_t at = data_offset_ + t->begin;
    if (t->dtype == "F32") {
      read_at(at, out, count * sizeof(float));
    } else if (t->dtype == "F16" || t->dtype == "BF16") {
      std::vector<std::uint16_t> half(count);
      read_at(at, half.data(), count * 2);
      if (t->dtype == "F16")
        strata::convert(reinterpret_cast<const strata::f16*>(half.data()), out, count);
      else
        strata::convert(reinterpret_cast<const strata::bf16*>(half.data()), out, count);
    } else {
      fail("tensor '" + name + "' has dtype " + t->dtype +
           "; only F32, F16 and BF16 can be read as float");
    }
  }

  /// Reads U8 tensor `name` (raw bytes) into out, checking its dtype and that its shape is
  /// `shape`.
  void read_u8(const std::string& name, const std::vector<std::int64_t>& shape, std::byte* out) const {
    const st_tensor_info* t = find(name);
    if (!t) fail("missing tensor '" + name + "' (expected U8 of shape " + st_detail::shape_string(shape) + ")");
    if (t->dtype != "U8") fail("tensor '" + name + "' has dtype " + t->dtype + ", expected U8");
    if (t->shape != shape)
      fail("shape mismatch for tensor '" + name + "': expected " + st_detail::shape_string(shape) +
           ", found " + st_detail::shape_string(t->shape));
    read_at(data_offset_ + t->begin, out, st_detail::numel(shape));
  }

  static constexpr std::uint64_t max_header_bytes = 100'000'000;  // the reference implementation's limit

  [[noreturn]] void fail(const std::string& what) const {
    throw strata::format_error("safetensors '" + path_ + "': " + what);
  }

private:
  void read_at(std::uint64_t offset, void* dst, std::size_t bytes) const {
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    if (!in_)
      throw strata::io_error("safetensors: reading " + std::to_string(bytes) + " bytes at offset " +
                             std::to_string(offset) + " of '" + path_ + "' failed");
  }

  void parse_header(const std::string& text) {
    nlohmann::json h;
    try {
      h = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      const bool at_end = e.byte >= text.size();
      fail(std::string(at_end ? "truncated header: the JSON ends early"
                              : "header is not JSON; not a safetensors file?") +
           " (" + std::to_string(text.size()) + " bytes at offset 8): " + e.what());
    }
    if (!h.is_object()) fail("header is JSON but not an object; not a safetensors file");

    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) fail("__metadata__ entry '" + m.key() + "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      st_tensor_info t;
      t.name = name;
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
          !v.contains("data_offsets"))
        fail("tensor '" + name + "' lacks dtype, shape or data_offsets");
      if (!v["dtype"].is_string()) fail("tensor '" + name + "': dtype is not a string");
      t.dtype = v["dtype"].get<std::string>();
      const std::size_t esize = st_detail::st_dtype_size(t.dtype);
      if (esize == 0) fail("tensor '" + name + "' has unknown dtype '" + t.dtype + "'");
      if (!v["shape"].is_array()) fail("tensor '" + name + "': shape is not an array");
      for (const auto& d : v["shape"]) {
        if (!d.is_number_unsigned() ||
            d.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          fail("tensor '" + name + "': shape " + v["shape"].dump() +
               " has an entry that is not a non-negative 64-bit integer");
        t.shape.push_back(d.get<std::int64_t>());
      }
      const auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
          !off[1].is_number_unsigned())
        fail("tensor '" + name + "': data_offsets " + off.dump() + " is not [begin, end]");
      t.begin = off[0].get<std::uint64_t>();
      t.end = off[1].get<std::uint64_t>();
      if (t.begin > t.end || t.end > data_bytes_)
        fail("tensor '" + name + "': data_offsets [" + std::to_string(t.begin) + ", " +
             std::to_string(t.end) + "] out of range: the data holds " +
             std::to_string(data_bytes_) + " bytes");
      // The shape's bytes, computed so that no product wraps around: a shape whose bytes
      // exceed the data cannot match its offsets, however its product would have wrapped.
      const auto need_or_none = st_detail::shape_bytes(t.shape, esize, data_bytes_);
      if (!need_or_none)
        fail("tensor '" + name + "': shape " + st_detail::shape_string(t.shape) + " of " +
             t.dtype + " needs more bytes than the data holds (" + std::to_string(data_bytes_) +
             " bytes; the file has " + std::to_string(file_bytes_) + ")");
      const std::uint64_t need = *need_or_none;
      if (t.end - t.begin != need)
        fail("tensor '" + name + "': data_offsets [" + std::to_string(t.begin) + ", " +
             std::to_string(t.end) + "] span " + std::to_string(t.end - t.begin) +
             " bytes, but shape " + st_detail::shape_string(t.shape) + " of " + t.dtype + " needs " +
             std::to_string(need));
      index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }

    std::vector<const st_tensor_info*> by_offset;
    for (const st_tensor_info& t : tensors_)
      if (t.end > t.begin) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](auto* a, auto* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < by_offset.size(); ++i)
      if (by_offset[i]->begin < by_offset[i - 1]->end)
        fail("tensors '" + by_offset[i - 1]->name + "' [" + std::to_string(by_offset[i - 1]->begin) +
             ", " + std::to_string(by_offset[i - 1]->end) + ") and '" + by_offset[i]->name +
             "' [" + std::to_string(by_offset[i]->begin) + ", " +
             std::to_string(by_offset[i]->end) + ") have overlapping data_offsets");
  }

  std::string path_;
  mutable std::ifstream in_;
  std::uint64_t file_bytes_ = 0, data_offset_ = 0, data_bytes_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<st_tensor_info> tensors_;
  std::map<std::string, std::size_t> index_;  // name -> position in tensors_
};

// ---------------------------------------------------------------------------------------------
// The mini-GPT's weights
// ---------------------------------------------------------------------------------------------

/// A model's parameters as the host holds them: the embedding/head array and one array per
/// block, laid out as gpt_config.hpp's embed_slots / block_slots say.
struct gpt_weights {
  gpt_config cfg;
  std::vector<float> embed;               // (embed_numel,)
  std::vector<std::vector<float>> blocks; // (layers, block_numel)
};

inline constexpr const char* gpt_format_name = "strata-gpt";

namespace st_detail {

/// A block slot's shape in the file: GPT-2's Conv1D stores linear weights (in, out), the
/// transpose of our (out, in); vectors are stored as they are.
inline std::vector<std::int64_t> file_shape(const tensor_slot& s) {
  if (s.shape.size() == 2) return {s.shape[1], s.shape[0]};
  return std::vector<std::int64_t>(s.shape.begin(), s.shape.end());
}
inline std::vector<std::int64_t> to_shape(const std::vector<int>& s) {
  return std::vector<std::int64_t>(s.begin(), s.end());
}

}  // namespace st_detail

namespace st_detail {

/// The metadata that names a model's config, as read_config_fields reads it back.
inline std::map<std::string, std::string> config_metadata(const gpt_config& cfg, const char* format) {
  return {{"format", format},
          {"vocab", std::to_string(cfg.vocab)},
          {"context", std::to_string(cfg.context)},
          {"layers", std::to_string(cfg.layers)},
          {"heads", std::to_string(cfg.heads)},
          {"width", std::to_string(cfg.width)}};
}

}  // namespace st_detail

/// Gives executor layer i's flat array: 0 the embeddings (embed_numel floats), 1 + l block l
/// (block_numel floats). write_gpt asks for 0, 1, ..., cfg.layers once each, and uses a span
/// only until it asks for the next.
using gpt_layer_source = std::function<std::span<const float>(std::size_t layer)>;

/// Writes a model: cfg in the metadata, every parameter under its GPT-2 name and layout, in
/// layer order, so that only one layer's array need exist at a time (stream_safetensors).
/// This is the one place the file's layout is made: save_gpt and a checkpoint's export both
/// come here, so their files are the same bytes for the same weights.
inline st_write_summary write_gpt(const std::string& path, const gpt_config& cfg, st_dtype dtype,
                                  const gpt_layer_source& layer) {
  cfg.validate();
  struct place {
    std::size_t layer, offset;  // executor layer, and floats into its array
  };
  std::vector<st_tensor_spec> specs;
  std::vector<place> where;
  for (const tensor_slot& s : embed_slots(cfg)) {
    specs.push_back({s.name, st_detail::to_shape(s.shape), dtype});
    where.push_back({0, s.offset});
  }
  const std::vector<tensor_slot> block = block_slots(cfg);
  for (int l = 0; l < cfg.layers; ++l)
    for (const tensor_slot& s : block) {
      specs.push_back({block_tensor_name(l, s), st_detail::file_shape(s), dtype, s.shape.size() == 2});
      where.push_back({std::size_t(l) + 1, s.offset});
    }
  std::map<std::string, std::string> meta = st_detail::config_metadata(cfg, gpt_format_name);
  meta["weight_layout"] = "GPT-2 Conv1D (in, out)";

  std::span<const float> current;
  std::size_t current_layer = std::size_t(-1);
  return stream_safetensors(path, specs, meta, [&](std::size_t i) {
    const place& p = where[i];
    if (p.layer != current_layer) {
      current = layer(p.layer);
      current_layer = p.layer;
      const std::size_t need = p.layer == 0 ? embed_numel(cfg) : block_numel(cfg);
      if (current.size() != need)
        throw strata::config_error(
            "write_gpt '" + path + "': layer " + std::to_string(p.layer) + " (" +
            (p.layer == 0 ? std::string("embed") : "h." + std::to_string(p.layer - 1)) + ") has " +
            std::to_string(current.size()) + " floats, the config needs " + std::to_string(need));
    }
    return current.subspan(p.offset, st_detail::numel(specs[i].shape));
  });
}

/// Saves a model held in memory (write_gpt). embed: (embed_numel,); blocks[l]: (block_numel,)
/// for l < cfg.layers.
inline void save_gpt(const std::string& path, const gpt_config& cfg, const float* embed,
                     const std::vector<const float*>& blocks, st_dtype dtype = st_dtype::f32) {
  cfg.validate();
  if (blocks.size() != static_cast<std::size_t>(cfg.layers))
    throw strata::config_error("save_gpt '" + path + "': " + std::to_string(blocks.size()) +
                               " block arrays given for a config with " +
                               std::to_string(cfg.layers) + " layers");
  (void)write_gpt(path, cfg, dtype, [&](std::size_t i) {
    return i == 0 ? std::span<const float>(embed, embed_numel(cfg))
                  : std::span<const float>(blocks[i - 1], block_numel(cfg));
  });
}

inline void save_gpt(const std::string& path, const gpt_config& cfg, const std::vector<float>& embed,
                     const std::vector<std::vector<float>>& blocks, st_dtype dtype = st_dtype::f32) {
  if (embed.size() != embed_numel(cfg))
    throw strata::config_error("save_gpt '" + path + "': embed array has " +
                               std::to_string(embed.size()) + " floats, the config needs " +
                               std::to_string(embed_numel(cfg)));
  std::vector<const float*> ptrs;
  for (std::size_t l = 0; l < blocks.size(); ++l) {
    if (blocks[l].size() != block_numel(cfg))
      throw strata::config_error("save_gpt '" + path + "': block " + std::to_string(l) + " has " +
                                 std::to_string(blocks[l].size()) + " floats, the config needs " +
                                 std::to_string(block_numel(cfg)));
    ptrs.push_back(blocks[l].data());
  }
  save_gpt(path, cfg, embed.data(), ptrs, dtype);
}

namespace st_detail {

/// The layer indices i of the file's block tensors ("h.<i>.<slot>"), each once. A name that
/// looks like none (not "h.", no digits, no dot after them) is left to the unexpected-tensor
/// check.
inline std::set<std::uint64_t> block_layers_in(const safetensors_reader& r) {
  std::set<std::uint64_t> layers;
  for (const st_tensor_info& t : r.tensors()) {
    if (t.name.rfind("h.", 0) != 0) continue;
    std::uint64_t i = 0;
    const char* first = t.name.data() + 2;
    const char* last = t.name.data() + t.name.size();
    const auto [end, ec] = std::from_chars(first, last, i);
    if (ec == std::errc{} && end != first && end != last && *end == '.') layers.insert(i);
  }
  return layers;
}

}  // namespace st_detail

/// Checks that `r` holds exactly the tensors of a model with config `cfg`, each with its shape,
/// without sizing anything from cfg: the claims of __metadata__ are checked against the file
/// before they are believed. The reader has already checked that every tensor's bytes lie in
/// the file, so a config that passes describes no more floats than the file holds (at most
/// half its bytes: F16 is the narrowest dtype read). Throws format_error naming the file, the
/// __metadata__ key whose claim the tensors contradict, the claimed value and the file's size.
inline void check_gpt_tensors(const safetensors_reader& r, const gpt_config& cfg) {
  const std::string file_size = " (the file has " + std::to_string(r.file_bytes()) + " bytes)";
  auto claim = [](const char* key, int value) {
    return std::string("__metadata__ '") + key + "' is " + std::to_string(value);
  };

  // layers first: it multiplies everything else, and the tensor names say how many there are.
  const std::set<std::uint64_t> in_file = st_detail::block_layers_in(r);
  if (in_file.size() < std::size_t(cfg.layers)) {
    const std::string has =
        in_file.empty() ? "has no block tensors (h.<i>.*)"
                        : "has block tensors of " + std::to_string(in_file.size()) + " layers (h." +
                              std::to_string(*in_file.begin()) + ".* .. h." +
                              std::to_string(*in_file.rbegin()) + ".*)";
    r.fail(claim("layers", cfg.layers) + ", but the file " + has + file_size);
  }

  // vocab, context and width: the embeddings' shapes, before any shape is built from width.
  auto embedding = [&](const char* name, const char* rows_key, int rows) {
    const st_tensor_info* t = r.find(name);
    const std::vector<std::int64_t> want{rows, cfg.width};
    if (!t) r.fail("missing tensor '" + std::string(name) + "' (expected shape " +
                   st_detail::shape_string(want) + ")" + file_size);
    if (t->shape == want) return;
    std::string keys;
    if (t->shape.size() != 2 || t->shape[0] != rows) keys = claim(rows_key, rows);
    if (t->shape.size() != 2 || t->shape[1] != cfg.width)
      keys += (keys.empty() ? "" : " and ") + claim("width", cfg.width);
    r.fail(keys + ", but tensor '" + name + "' has shape " + st_detail::shape_string(t->shape) +
           ", not " + st_detail::shape_string(want) + file_size);
  };
  embedding("wte.weight", "vocab", cfg.vocab);
  embedding("wpe.weight", "context", cfg.context);

  // Every parameter, with its shape (GPT-2's Conv1D layout for the block weights).
  auto expect = [&](const std::string& name, const std::vector<std::int64_t>& shape) {
    const st_tensor_info* t = r.find(name);
    if (!t) r.fail("missing tensor '" + name + "' (expected shape " + st_detail::shape_string(shape) + ")");
    if (t->shape != shape)
      r.fail("shape mismatch for tensor '" + name + "': expected " + st_detail::shape_string(shape) +
             ", found " + st_detail::shape_string(t->shape));
  };
  const std::vector<tensor_slot> embed = embed_slots(cfg), block = block_slots(cfg);
  for (const tensor_slot& s : embed) expect(s.name, st_detail::to_shape(s.shape));
  for (int l = 0; l < cfg.layers; ++l)
    for (const tensor_slot& s : block) expect(block_tensor_name(l, s), st_detail::file_shape(s));

  // Nothing else: a layer count that disagrees with the tensors is a broken file, not
  // something to ignore. (Names are unique, so equal counts mean the same set.)
  const std::size_t expected = embed.size() + std::size_t(cfg.layers) * block.size();
  if (r.tensors().size() == expected) return;
  std::set<std::string> known;
  for (const tensor_slot& s : embed) known.insert(s.name);
  for (int l = 0; l < cfg.layers; ++l)
    for (const tensor_slot& s : block) known.insert(block_tensor_name(l, s));
  for (const st_tensor_info& t : r.tensors())
    if (!known.count(t.name))
      r.fail("unexpected tensor '" + t.name + "': a model with " + std::to_string(cfg.layers) +
             " layers and width " + std::to_string(cfg.width) +
             " (__metadata__) has no such parameter" + file_size);
}

namespace st_detail {

/// The gpt_config in a reader's metadata, whose "format" must be `format`, validated (not yet
/// checked against the tensors: that depends on the format).
inline gpt_config read_config_fields(const safetensors_reader& r, const char* format) {
  const auto& meta = r.metadata();
  auto fmt = meta.find("format");
  if (fmt == meta.end())
    r.fail("config missing: __metadata__ has no \"format\": \"" + std::string(format) +
           "\" (not written by save_gpt? Hugging Face GPT-2 files are not read here)");
  if (fmt->second != format)
    r.fail("config missing: __metadata__ format is '" + fmt->second + "', not '" + format + "'");
  auto field = [&](const char* key) {
    auto it = meta.find(key);
    if (it == meta.end()) r.fail(std::string("config missing: __metadata__ has no '") + key + "'");
    int v = 0;
    const std::string& text = it->second;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc::result_out_of_range)
      r.fail(std::string("config field '") + key + "' is '" + text +
             "', out of range for an int (at most " +
             std::to_string(std::numeric_limits<int>::max()) + ")");
    if (ec != std::errc{} || end != text.data() + text.size())
      r.fail(std::string("config field '") + key + "' is '" + text + "', not an integer");
    return v;
  };
  gpt_config cfg;
  cfg.vocab = field("vocab");
  cfg.context = field("context");
  cfg.layers = field("layers");
  cfg.heads = field("heads");
  cfg.width = field("width");
  try {
    cfg.validate();
  } catch (const std::exception& e) {
    r.fail(std::string("config in __metadata__ is not valid: ") + e.what() + " (the file has " +
           std::to_string(r.file_bytes()) + " bytes)");
  }
  return cfg;
}

}  // namespace st_detail

/// The gpt_config stored in a reader's metadata, checked against the file's tensors
/// (check_gpt_tensors): what it returns can size arrays without trusting the header's strings.
inline gpt_config read_gpt_config(const safetensors_reader& r) {
  gpt_config cfg = st_detail::read_config_fields(r, gpt_format_name);
  check_gpt_tensors(r, cfg);
  return cfg;
}

/// The embedding array (embed_numel floats) of a file checked with check_gpt_tensors.
inline void read_gpt_embed(const safetensors_reader& r, const gpt_config& cfg, float* embed) {
  for (const tensor_slot& s : embed_slots(cfg))
    r.read_f32(s.name, st_detail::to_shape(s.shape), embed + s.offset);
}

/// Block l's flat array (block_numel floats) of a file checked with check_gpt_tensors: a
/// model larger than memory is read one block at a time.
inline void read_gpt_block(const safetensors_reader& r, const gpt_config& cfg, int l, float* block) {
  for (const tensor_slot& s : block_slots(cfg))
    r.read_f32(block_tensor_name(l, s), st_detail::file_shape(s), block + s.offset,
               s.shape.size() == 2);
}

/// Reads every parameter of a save_gpt file into caller-owned arrays laid out for `cfg`
/// (embed: embed_numel floats, blocks[l]: block_numel floats), e.g. to start training from
/// saved weights. `cfg` must be the file's config (read_gpt_config): every tensor it implies
/// must be there with its shape, and the file must hold no other (check_gpt_tensors).
inline void read_gpt_params(const safetensors_reader& r, const gpt_config& cfg, float* embed,
                            const std::vector<float*>& blocks) {
  if (blocks.size() != std::size_t(cfg.layers))
    throw strata::config_error("read_gpt_params '" + r.path() + "': " +
                               std::to_string(blocks.size()) + " block arrays for " +
                               std::to_string(cfg.layers) + " layers");
  check_gpt_tensors(r, cfg);
  read_gpt_embed(r, cfg, embed);
  for (int l = 0; l < cfg.layers; ++l) read_gpt_block(r, cfg, l, blocks[l]);
}

/// Loads a file written by save_gpt: its config and every parameter. The arrays are sized
/// only after the config has been checked against the tensors and the file (read_gpt_config),
/// so a header that claims more than the file holds is a format_error, not an allocation.
inline gpt_weights load_gpt(const std::string& path) {
  safetensors_reader r(path);
  gpt_weights w;
  w.cfg = read_gpt_config(r);
  w.embed.resize(embed_numel(w.cfg));
  w.blocks.assign(std::size_t(w.cfg.layers), std::vector<float>(block_numel(w.cfg)));
  std::vector<float*> blocks;
  for (auto& b : w.blocks) blocks.push_back(b.data());
  read_gpt_params(r, w.cfg, w.embed.data(), blocks);
  return w;
}

}  // namespace gpt
