// examples/gpt/stored_file.hpp — a mini-GPT whose blocks are already packed for inference: the
// file gpt_quantize writes and gpt_generate streams from without converting.
//
// What this is: a safetensors file (safetensors.hpp's reader and writer) with "format":
// "strata-gpt-stored" and "weight_format" (bf16, f16, 4bit, f32) in its metadata, beside the
// model's config; the embeddings as F32 tensors under their GPT-2 names; and each block as one
// U8 tensor "h.<l>.stored" holding exactly the bytes of stored_block.hpp's layout — what
// infer::layer_stream moves, so a block is loaded with one read and no conversion.
// Written a block at a time (the model is never in memory as a whole) and atomically (the
// writer's temporary file, fsync, rename). The reader checks every tensor's dtype and shape
// against the config and the layout before any array is sized.
// What it is not: an interchange format — other tools read the original gpt_train file.
#pragma once

#include "safetensors.hpp"
#include "stored_block.hpp"

#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace gpt {

inline constexpr const char* stored_format_name = "strata-gpt-stored";

/// The tensor name of block l's packed bytes.
inline std::string stored_block_name(int l) { return "h." + std::to_string(l) + ".stored"; }

/// Writes a stored model: `embed` (embed_numel floats), and block l's f32 array from
/// `block(l)` (block_numel floats; used until the next call), packed into `format`.
inline st_write_summary write_stored_gpt(const std::string& path, const gpt_config& cfg,
                                         weight_format format, std::span<const float> embed,
                                         const std::function<std::span<const float>(int)>& block) {
  cfg.validate();
  if (embed.size() != embed_numel(cfg))
    throw strata::config_error("write_stored_gpt '" + path + "': " + std::to_string(embed.size()) +
                               " embedding floats, the config needs " +
                               std::to_string(embed_numel(cfg)));
  const block_layout layout = make_block_layout(cfg, format);
  std::vector<st_tensor_spec> specs;
  std::vector<std::size_t> embed_offset;
  for (const tensor_slot& s : embed_slots(cfg)) {
    specs.push_back({s.name, st_detail::to_shape(s.shape), st_dtype::f32});
    embed_offset.push_back(s.offset);
  }
  const std::size_t first_block = specs.size();
  for (int l = 0; l < cfg.layers; ++l)
    specs.push_back({stored_block_name(l), {std::int64_t(layout.bytes)}, st_dtype::u8});
  std::map<std::string, std::string> meta = st_detail::config_metadata(cfg, stored_format_name);
  meta["weight_format"] = format_name(format);
  std::vector<std::byte> packed(layout.bytes);
  return stream_safetensors(
      path, specs, meta,
      [&](std::size_t i) {
        return embed.subspan(embed_offset[i], st_detail::numel(specs[i].shape));
      },
      [&](std::size_t i) -> std::span<const std::byte> {
        const int l = int(i - first_block);
        const std::span<const float> b = block(l);
        if (b.size() != block_numel(cfg))
          throw strata::config_error("write_stored_gpt '" + path + "': block " +
                                     std::to_string(l) + " has " + std::to_string(b.size()) +
                                     " floats, the config needs " + std::to_string(block_numel(cfg)));
        pack_block(layout, b, packed);
        return packed;
      });
}

/// Whether the reader's file is a stored model (by its metadata's format).
inline bool is_stored_gpt(const safetensors_reader& r) {
  const auto it = r.metadata().find("format");
  return it != r.metadata().end() && it->second == stored_format_name;
}

struct stored_gpt_info {
  gpt_config cfg;
  weight_format format = weight_format::f32;
  block_layout layout;
};

/// The config and format of a stored model, with every tensor checked: the embeddings F32 in
/// their shapes, h.<l>.stored U8 of the layout's bytes for each layer, nothing else. Throws
/// format_error naming the file and what is wrong.
inline stored_gpt_info read_stored_gpt_info(const safetensors_reader& r) {
  stored_gpt_info info;
  info.cfg = st_detail::read_config_fields(r, stored_format_name);
  const auto wf = r.metadata().find("weight_format");
  if (wf == r.metadata().end()) r.fail("stored model without a 'weight_format' in __metadata__");
  try {
    info.format = parse_weight_format(wf->second);
  } catch (const std::invalid_argument& e) {
    r.fail(std::string("__metadata__ weight_format: ") + e.what());
  }
  info.layout = make_block_layout(info.cfg, info.format);
  std::size_t expected = 0;  // tensors the config implies, each found above
  for (const tensor_slot& s : embed_slots(info.cfg)) {
    const st_tensor_info* t = r.find(s.name);
    if (!t) r.fail("missing tensor '" + s.name + "'");
    if (t->dtype != "F32" || t->shape != st_detail::to_shape(s.shape))
      r.fail("tensor '" + s.name + "' is " + t->dtype + " " + st_detail::shape_string(t->shape) +
             ", expected F32 " + st_detail::shape_string(st_detail::to_shape(s.shape)));
    ++expected;
  }
  for (int l = 0; l < info.cfg.layers; ++l) {
    const std::string name = stored_block_name(l);
    const st_tensor_info* t = r.find(name);
    if (!t)
      r.fail("missing tensor '" + name + "': __metadata__ says " + std::to_string(info.cfg.layers) +
             " layers");
    const std::vector<std::int64_t> shape{std::int64_t(info.layout.bytes)};
    if (t->dtype != "U8" || t->shape != shape)
      r.fail("tensor '" + name + "' is " + t->dtype + " " + st_detail::shape_string(t->shape) +
             ", expected U8 [" + std::to_string(info.layout.bytes) + "] (a " +
             format_name(info.format) + " block of this config)");
    ++expected;
  }
  if (r.tensors().size() != expected) {  // names are unique: equal counts, the same set
    std::set<std::string> known;
    for (const tensor_slot& s : embed_slots(info.cfg)) known.insert(s.name);
    for (int l = 0; l < info.cfg.layers; ++l) known.insert(stored_block_name(l));
    for (const st_tensor_info& t : r.tensors())
      if (!known.count(t.name))
        r.fail("unexpected tensor '" + t.name + "': a stored model of " +
               std::to_string(info.cfg.layers) + " layers has no such tensor");
  }
  return info;
}

/// Block l's stored bytes (info.layout.bytes) into out.
inline void read_stored_block(const safetensors_reader& r, const stored_gpt_info& info, int l,
                              std::byte* out) {
  r.read_u8(stored_block_name(l), {std::int64_t(info.layout.bytes)}, out);
}

}  // namespace gpt
