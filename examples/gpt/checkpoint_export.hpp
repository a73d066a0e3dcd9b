// examples/gpt/checkpoint_export.hpp — a training checkpoint's weights as one safetensors file.
//
// What this is: export_checkpoint(), which opens a committed checkpoint that gpt_train wrote
// (a checkpoint root and a tag, or its `latest`), reads the model's config from the
// checkpoint's metadata, and writes the fp32 master weights of every executor layer as the
// file save_gpt writes for those weights — the same names, layout, metadata and so the same
// bytes (both go through write_gpt) — which gpt_generate and load_gpt read. F32, or BF16 /
// F16 converted on the way. checkpoint_model_config() is its first step on its own: the config,
// checked against the checkpoint's tensors.
// What it is not: an export of the optimizer's state (adam_m, adam_v are never read), nor a
// way back into training (checkpoint::saver::load resumes a run; init_from.hpp starts one from
// an exported file).
//
// What a gpt_train checkpoint holds (checkpoint/train_state.hpp), per executor layer L:
//   "embed/param"   (embed_numel,)  wte, wpe, ln_f.weight, ln_f.bias (gpt_config.hpp's embed_slots)
//   "h.<l>/param"   (block_numel,)  block l (block_slots), for l < layers
//   "L/adam_m", "L/adam_v"          the moments, not exported
// each sharded over the ranks that saved it, and in rank 0's manifest metadata
//   "model": {"vocab", "context", "layers", "heads", "width"}  (ints)
//
// Memory: the weights are read ONE executor layer at a time (checkpoint_reader::read_elements
// over each rank's shard of it, a checksum block at a time, each block checked) into one buffer
// the size of the largest layer, and that layer's tensors are written before the next layer is
// read; the writer holds at most one tensor more (a transpose, stream_safetensors), the reader
// at most one checksum block. So the peak is about one layer plus one tensor — never the whole
// model, let alone twice: a model trained sharded over many machines exports on one of them.
// tests/test_gpt_export.cpp measures the heap's peak.
#pragma once

#include "gpt_config.hpp"
#include "safetensors.hpp"

#include <strata/checkpoint/shard_file.hpp>
#include <strata/core/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace gpt {

/// The tag that means "the checkpoint the root's `latest` names" (no checkpoint can be
/// called that: checkpoint_root::check_tag refuses it).
inline constexpr const char* latest_checkpoint = "latest";

/// What export_checkpoint read and wrote.
struct export_report {
  std::string checkpoint;  // the checkpoint directory read: root/TAG
  std::string tag;
  std::uint64_t step = 0;
  int saved_world = 1;     // ranks that saved it
  gpt_config cfg;
  std::string out_path;
  st_dtype dtype = st_dtype::f32;
  std::size_t tensors = 0;
  std::uint64_t file_bytes = 0;
  // The memory claim, as counted: layers read (each once), the one layer buffer, the largest
  // tensor the writer held, and what was read from the checkpoint's data files.
  std::size_t layers_read = 0;
  std::size_t layer_buffer_floats = 0;
  std::size_t writer_held_floats = 0;
  strata::checkpoint::read_stats read{};
};

/// The executor layer names of a gpt_train run: "embed", then "h.0" .. "h.<layers-1>".
inline std::string executor_layer_name(std::size_t layer) {
  return layer == 0 ? std::string("embed") : "h." + std::to_string(layer - 1);
}

/// The model config in a checkpoint's metadata (rank 0's manifest, key "model"), checked
/// against its tensors: every "<layer>/param" the config implies is there as f32 of the
/// config's size, and there is no other. format_error naming the checkpoint and the key, field
/// or tensor that is missing or wrong.
inline gpt_config checkpoint_model_config(const strata::checkpoint::checkpoint_reader& reader) {
  const std::string who = "checkpoint '" + reader.path() + "'";
  const strata::checkpoint::manifest& head = reader.of_rank(0);
  const nlohmann::json& meta = head.metadata;
  if (!meta.contains("model") || !meta["model"].is_object())
    throw strata::format_error(
        who + ": its metadata has no 'model' object {vocab, context, layers, heads, width}, so "
              "the model it holds is unknown (was it written by gpt_train?)");
  const nlohmann::json& model = meta["model"];
  auto field = [&](const char* key) {
    if (!model.contains(key))
      throw strata::format_error(who + ": its metadata 'model' has no '" + key + "'");
    const nlohmann::json& v = model[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() < std::numeric_limits<int>::min() ||
        v.get<std::int64_t>() > std::numeric_limits<int>::max())
      throw strata::format_error(who + ": metadata 'model." + key + "' is " + v.dump() +
                                 ", not an int");
    return static_cast<int>(v.get<std::int64_t>());
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
    throw strata::format_error(who + ": metadata 'model' " + model.dump() +
                               " is not a valid config: " + e.what());
  }

  // The tensors, before anything is sized from the config.
  std::set<std::string> expected;
  for (std::size_t i = 0; i <= std::size_t(cfg.layers); ++i) {
    const std::string name = executor_layer_name(i) + "/param";
    const std::size_t need = i == 0 ? embed_numel(cfg) : block_numel(cfg);
    const strata::checkpoint::tensor_entry* e = head.find(name);
    if (!e)
      throw strata::format_error(who + ": metadata 'model' says " + std::to_string(cfg.layers) +
                                 " layers, but it holds no tensor '" + name + "'");
    if (e->type != strata::dtype::f32)
      throw strata::format_error(who + ": tensor '" + name + "' is " +
                                 strata::dtype_name(e->type) + ", not the f32 master weights");
    if (e->numel != need)
      throw strata::format_error(who + ": tensor '" + name + "' has " + std::to_string(e->numel) +
                                 " elements, but a model of metadata 'model' " + model.dump() +
                                 " has " + std::to_string(need) + " in that layer");
    expected.insert(name);
  }
  for (const strata::checkpoint::tensor_entry& e : head.tensors) {
    const bool param = e.name.size() > 6 && e.name.ends_with("/param");
    if (param && !expected.count(e.name))
      throw strata::format_error(who + ": it holds tensor '" + e.name + "', which a model of " +
                                 std::to_string(cfg.layers) + " layers (metadata 'model') has not");
  }
  return cfg;
}

/// Reads f32 tensor `name` (dst.size() == its numel) shard by shard and, in each shard, one
/// checksum block at a time. A read_elements of a whole shard whose last block ends in padding
/// would go through the reader's scratch buffer, as large as the shard (on one rank: the whole
/// layer again); block by block that scratch stays within one block, and every byte is still
/// read once. format_error naming the tensor when the ranks' shards do not tile it.
inline void read_layer_blocks(strata::checkpoint::checkpoint_reader& reader, const std::string& name,
                              std::span<float> dst) {
  const strata::checkpoint::tensor_entry& e0 = reader.entry(name);
  auto read = [&](std::uint64_t lo, std::uint64_t hi, std::uint64_t block_bytes) {
    const std::uint64_t step = std::max<std::uint64_t>(1, block_bytes / sizeof(float));
    for (std::uint64_t at = lo; at < hi; at += step) {
      const std::size_t n = static_cast<std::size_t>(std::min(step, hi - at));
      reader.read_elements(name, at, n, std::as_writable_bytes(dst.subspan(std::size_t(at), n)));
    }
  };
  if (e0.numel != dst.size())
    throw strata::format_error("checkpoint '" + reader.path() + "': tensor '" + name + "' has " +
                               std::to_string(e0.numel) + " elements, expected " +
                               std::to_string(dst.size()));
  if (!e0.shard) return read(0, e0.numel, e0.block_bytes);  // replicated: rank 0 holds it
  std::uint64_t covered = 0;  // shards follow each other in rank order
  for (int q = 0; q < reader.world(); ++q) {
    const strata::checkpoint::tensor_entry& e = reader.find(q, name);
    const std::uint64_t n = e.shard ? e.shard->valid() : 0;
    if (n == 0) continue;  // a rank whose shard is padding only
    if (e.shard->offset() != covered)
      throw strata::format_error("checkpoint '" + reader.path() + "': tensor '" + name +
                                 "': rank " + std::to_string(q) + "'s shard starts at element " +
                                 std::to_string(e.shard->offset()) + ", the ranks before it end at " +
                                 std::to_string(covered) + ": the shards do not tile it");
    read(covered, covered + n, e.block_bytes);
    covered += n;
  }
  if (covered != e0.numel)
    throw strata::format_error("checkpoint '" + reader.path() + "': tensor '" + name + "': its " +
                               "shards cover " + std::to_string(covered) + " of its " +
                               std::to_string(e0.numel) + " elements");
}

/// Writes the weights of checkpoint `tag` of the checkpoint root `root_dir` (latest_checkpoint:
/// the one `latest` names) to `out_path` as save_gpt would (see the top), one layer at a time.
/// The root is opened read-only in effect: nothing is created, and a running trainer's
/// TAG.partial/ is left alone (no crash recovery). Errors: io_error naming the root or tag when
/// there is no such checkpoint; format_error from checkpoint_model_config or for damaged data
/// (file, offset, tensor); io_error for a failed write, which leaves `out_path` as it was.
inline export_report export_checkpoint(const std::string& root_dir, const std::string& tag_or_latest,
                                       const std::string& out_path, st_dtype dtype = st_dtype::f32) {
  namespace ck = strata::checkpoint;
  const ck::checkpoint_root root(root_dir, ck::root_options{.create = false, .recover = false});
  std::string tag = tag_or_latest;
  if (tag == latest_checkpoint) {
    const auto latest = root.latest();
    if (!latest)
      throw strata::io_error("checkpoint root '" + root.path() +
                             "' has no committed checkpoint (no 'latest'): nothing to export");
    tag = *latest;
  } else {
    const std::vector<std::string> committed = root.committed();
    if (std::find(committed.begin(), committed.end(), tag) == committed.end()) {
      std::string list;
      for (const std::string& t : committed) list += (list.empty() ? "" : ", ") + t;
      throw strata::io_error("checkpoint root '" + root.path() + "' has no committed checkpoint '" +
                             tag + "' (committed: " + (list.empty() ? "none" : list) + ")");
    }
  }
  ck::checkpoint_reader reader(root, tag);
  export_report rep;
  rep.cfg = checkpoint_model_config(reader);
  rep.checkpoint = reader.path();
  rep.tag = tag;
  rep.step = reader.of_rank(0).step;
  rep.saved_world = reader.world();
  rep.out_path = out_path;
  rep.dtype = dtype;

  // The one layer buffer: (max(embed_numel, block_numel),), refilled for each layer.
  std::vector<float> layer(std::max(embed_numel(rep.cfg), block_numel(rep.cfg)));
  rep.layer_buffer_floats = layer.size();
  const st_write_summary w = write_gpt(out_path, rep.cfg, dtype, [&](std::size_t i) {
    const std::size_t n = i == 0 ? embed_numel(rep.cfg) : block_numel(rep.cfg);
    const std::span<float> dst(layer.data(), n);
    read_layer_blocks(reader, executor_layer_name(i) + "/param", dst);
    ++rep.layers_read;
    return std::span<const float>(dst);
  });
  rep.tensors = w.tensors;
  rep.file_bytes = w.file_bytes;
  rep.writer_held_floats = w.held_floats;
  rep.read = reader.stats();
  return rep;
}

}  // namespace gpt
