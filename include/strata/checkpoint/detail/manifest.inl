// strata/checkpoint/detail/manifest.inl — bodies of manifest.hpp: the JSON reader with its
// field-naming errors, the writer, and validate().
#pragma once

#include <algorithm>
#include <limits>
#include <set>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {
namespace detail {

using json = nlohmann::json;

[[noreturn]] inline void manifest_fail(const std::string& file, const std::string& field,
                                       const std::string& why) {
  throw format_error("checkpoint manifest '" + file + "': " + field + ": " + why);
}

/// "tensors[2] ('w')": how a tensor's fields are named in messages.
inline std::string tensor_field(std::size_t i, const std::string& name) {
  std::string s = "tensors[" + std::to_string(i) + "]";
  if (!name.empty()) s += " ('" + name + "')";
  return s;
}

// Reads typed fields of one JSON object, naming `where.key` in every error.
struct field_reader {
  const json& obj;
  const std::string& file;
  std::string where;  // "" at the top, "tensors[2] ('w')" in a tensor, ... ".layout"

  std::string name(const char* key) const { return where.empty() ? key : where + "." + key; }
  const json& get(const char* key) const {
    const auto it = obj.find(key);
    if (it == obj.end()) manifest_fail(file, name(key), "missing");
    return *it;
  }
  std::uint64_t u64(const char* key) const {
    const json& v = get(key);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
      manifest_fail(file, name(key), "is " + v.dump() + ", not a non-negative integer");
    return v.get<std::uint64_t>();
  }
  int small(const char* key, std::uint64_t limit) const {
    const std::uint64_t v = u64(key);
    if (v > limit)
      manifest_fail(file, name(key), "is " + std::to_string(v) + ", more than " + std::to_string(limit));
    return static_cast<int>(v);
  }
  std::string str(const char* key) const {
    const json& v = get(key);
    if (!v.is_string()) manifest_fail(file, name(key), "is " + v.dump() + ", not a string");
    return v.get<std::string>();
  }
};

inline field_reader object_reader(const json& j, const std::string& file, std::string where) {
  if (!j.is_object())
    manifest_fail(file, where.empty() ? "(top level)" : where, "is " + std::string(j.type_name()) +
                                                                 ", not an object");
  return field_reader{j, file, std::move(where)};
}

// "layout": {"world", "shard_numel", "rank", "offset", "valid", "padding"}: the explicit fields
// must be what shard_layout(numel, world) computes for the rank, so that padding is never guessed.
inline shard_spec read_layout(const json& j, std::uint64_t numel, const std::string& file,
                              const std::string& where) {
  const field_reader f = object_reader(j, file, where + ".layout");
  const int world = f.small("world", 1u << 20);
  if (world < 1) manifest_fail(file, f.name("world"), "is 0; a layout has at least one rank");
  const shard_spec s{shard_layout(numel, world), f.small("rank", 1u << 20)};
  if (s.rank >= world)
    manifest_fail(file, f.name("rank"), "is " + std::to_string(s.rank) + ", outside the layout's " +
                                            std::to_string(world) + " ranks");
  const std::string of = ", but rank " + std::to_string(s.rank) + "'s shard of " +
                         std::to_string(numel) + " elements over " + std::to_string(world) +
                         " ranks has ";
  auto expect = [&](const char* key, std::uint64_t want) {
    const std::uint64_t got = f.u64(key);
    if (got != want)
      manifest_fail(file, f.name(key), "is " + std::to_string(got) + of + std::to_string(want));
  };
  expect("shard_numel", s.layout.shard_numel());
  expect("offset", s.offset());
  expect("valid", s.valid());
  expect("padding", s.layout.shard_numel() - s.valid());
  return s;
}

inline tensor_entry read_tensor(const json& j, std::size_t i, const std::string& file) {
  field_reader f = object_reader(j, file, tensor_field(i, ""));
  tensor_entry t;
  t.name = f.str("name");
  f.where = tensor_field(i, t.name);
  const std::string type = f.str("dtype");
  const auto d = dtype_from_name(type);
  if (!d) manifest_fail(file, f.name("dtype"), "is '" + type + "', not one of f32 f16 bf16 i8 i4");
  t.type = *d;
  t.numel = f.u64("numel");
  if (const json& l = f.get("layout"); !l.is_null()) t.shard = read_layout(l, t.numel, file, f.where);
  t.file = f.str("file");
  t.offset = f.u64("offset");
  t.bytes = f.u64("bytes");
  t.block_bytes = f.u64("block_bytes");
  const json& crc = f.get("crc32c");
  if (!crc.is_array()) manifest_fail(file, f.name("crc32c"), "is not an array");
  for (std::size_t b = 0; b < crc.size(); ++b) {
    if (!crc[b].is_number_unsigned() || crc[b].get<std::uint64_t>() > 0xffffffffu)
      manifest_fail(file, f.name("crc32c") + "[" + std::to_string(b) + "]",
                    "is " + crc[b].dump() + ", not a 32-bit unsigned integer");
    t.crc32c.push_back(crc[b].get<std::uint32_t>());
  }
  return t;
}

inline json layout_json(const shard_spec& s) {
  return {{"world", s.layout.world()},         {"shard_numel", s.layout.shard_numel()},
          {"rank", s.rank},                    {"offset", s.offset()},
          {"valid", s.valid()},                {"padding", s.layout.shard_numel() - s.valid()}};
}

inline bool plain_file_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos &&
         n.find('\0') == std::string::npos;
}

inline void validate_tensor(const tensor_entry& t, std::size_t i, const std::string& file) {
  const std::string w = tensor_field(i, t.name);
  if (t.name.empty()) manifest_fail(file, w + ".name", "is empty");
  if (!plain_file_name(t.file))
    manifest_fail(file, w + ".file", "is '" + t.file + "', not a plain file name in the checkpoint directory");
  if (t.shard) {
    const shard_spec& s = *t.shard;
    if (s.layout.numel() != t.numel)
      manifest_fail(file, w + ".layout", "splits " + std::to_string(s.layout.numel()) +
                                             " elements, the tensor has " + std::to_string(t.numel));
    if (s.rank < 0 || s.rank >= s.layout.world())
      manifest_fail(file, w + ".layout.rank", "is " + std::to_string(s.rank) + ", outside the layout's " +
                                                  std::to_string(s.layout.world()) + " ranks");
  }
  const std::uint64_t want = dtype_bytes_for(t.type, static_cast<std::size_t>(t.stored_numel()));
  if (t.bytes != want)
    manifest_fail(file, w + ".bytes", "is " + std::to_string(t.bytes) + ", but " +
                                          std::to_string(t.stored_numel()) + " " + dtype_name(t.type) +
                                          " elements take " + std::to_string(want));
  if (t.offset > std::numeric_limits<std::uint64_t>::max() - t.bytes)
    manifest_fail(file, w + ".offset", "+ bytes overflows");
  if (t.block_bytes == 0) manifest_fail(file, w + ".block_bytes", "is 0");
  if (t.crc32c.size() != t.block_count())
    manifest_fail(file, w + ".crc32c", "has " + std::to_string(t.crc32c.size()) + " blocks, but " +
                                           std::to_string(t.bytes) + " bytes in blocks of " +
                                           std::to_string(t.block_bytes) + " need " +
                                           std::to_string(t.block_count()));
}

// No two tensors share a byte of one file: a reader could otherwise be handed another
// tensor's bytes under a valid-looking checksum.
inline void validate_no_overlap(const manifest& m, const std::string& file) {
  std::vector<std::size_t> order(m.tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto &x = m.tensors[a], &y = m.tensors[b];
    return x.file != y.file ? x.file < y.file : x.offset < y.offset;
  });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const auto &p = m.tensors[order[k - 1]], &q = m.tensors[order[k]];
    if (p.file == q.file && q.bytes > 0 && p.offset + p.bytes > q.offset)
      manifest_fail(file, tensor_field(order[k], q.name) + ".offset",
                    "is " + std::to_string(q.offset) + ", inside '" + p.name + "' (bytes " +
                        std::to_string(p.offset) + ".." + std::to_string(p.offset + p.bytes) +
                        " of '" + p.file + "')");
  }
}

}  // namespace detail

inline std::optional<dtype> dtype_from_name(std::string_view name) noexcept {
  for (dtype d : {dtype::f32, dtype::f16, dtype::bf16, dtype::i8, dtype::i4})
    if (name == dtype_name(d)) return d;
  return std::nullopt;
}

inline void validate(const manifest& m, const std::string& file) {
  using detail::manifest_fail;
  if (m.version != manifest_version)
    manifest_fail(file, "version", "is " + std::to_string(m.version) + "; this build reads version " +
                                       std::to_string(manifest_version));
  if (m.tag.empty()) manifest_fail(file, "tag", "is empty");
  if (m.world < 1) manifest_fail(file, "world", "is " + std::to_string(m.world) + ", not at least 1");
  if (m.rank < 0 || m.rank >= m.world)
    manifest_fail(file, "rank", "is " + std::to_string(m.rank) + ", outside the world of " +
                                    std::to_string(m.world));
  if (m.zero_stage < 0 || m.zero_stage > 3)
    manifest_fail(file, "zero_stage", "is " + std::to_string(m.zero_stage) + ", not 0..3");
  if (!m.metadata.is_object()) manifest_fail(file, "metadata", "is not an object");
  std::set<std::string> names;
  for (std::size_t i = 0; i < m.tensors.size(); ++i) {
    detail::validate_tensor(m.tensors[i], i, file);
    if (!names.insert(m.tensors[i].name).second)
      manifest_fail(file, detail::tensor_field(i, m.tensors[i].name) + ".name", "appears twice");
  }
  detail::validate_no_overlap(m, file);
}

inline nlohmann::json to_json(const manifest& m, const std::string& file) {
  validate(m, file);
  nlohmann::json tensors = nlohmann::json::array();
  for (const tensor_entry& t : m.tensors)
    tensors.push_back(nlohmann::json{{"name", t.name},
                       {"dtype", dtype_name(t.type)},
                       {"numel", t.numel},
                       {"layout", t.shard ? detail::layout_json(*t.shard) : nlohmann::json(nullptr)},
                       {"file", t.file},
                       {"offset", t.offset},
                       {"bytes", t.bytes},
                       {"block_bytes", t.block_bytes},
                       {"crc32c", t.crc32c}});
  return {{"format", manifest_format}, {"version", m.version},       {"tag", m.tag},
          {"step", m.step},            {"world", m.world},           {"rank", m.rank},
          {"zero_stage", m.zero_stage}, {"metadata", m.metadata},    {"tensors", std::move(tensors)}};
}

inline manifest manifest_from_json(const nlohmann::json& j, const std::string& file) {
  using detail::manifest_fail;
  const detail::field_reader f = detail::object_reader(j, file, "");
  if (const std::string fmt = f.str("format"); fmt != manifest_format)
    manifest_fail(file, "format", "is '" + fmt + "', not '" + manifest_format + "'");
  manifest m;
  // The version first: a newer format may have moved every other field.
  const std::uint64_t version = f.u64("version");
  if (version != static_cast<std::uint64_t>(manifest_version))
    manifest_fail(file, "version", "is " + std::to_string(version) + "; this build reads version " +
                                       std::to_string(manifest_version));
  m.tag = f.str("tag");
  m.step = f.u64("step");
  m.world = f.small("world", 1u << 20);
  m.rank = f.small("rank", 1u << 20);
  m.zero_stage = f.small("zero_stage", 3);
  m.metadata = f.get("metadata");
  const nlohmann::json& tensors = f.get("tensors");
  if (!tensors.is_array()) manifest_fail(file, "tensors", "is not an array");
  for (std::size_t i = 0; i < tensors.size(); ++i) m.tensors.push_back(detail::read_tensor(tensors[i], i, file));
  validate(m, file);
  return m;
}

inline std::string serialize(const manifest& m, const std::string& file) {
  return to_json(m, file).dump(1) + "\n";
}

inline manifest parse_manifest(std::string_view text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw format_error("checkpoint manifest '" + file + "': not valid JSON (byte " +
                       std::to_string(e.byte) + "): " + e.what());
  }
  return manifest_from_json(j, file);
}

}  // namespace checkpoint
STRATA_NAMESPACE_END
