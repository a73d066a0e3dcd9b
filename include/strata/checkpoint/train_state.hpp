// strata/checkpoint/train_state.hpp — the state of a ZeRO training run as checkpoint tensors:
// what each rank takes out of its executor and optimizer, and how any rank of any later run
// puts it back.
//
// What lives here: train_snapshot, this rank's part of the run's state copied into one host
// buffer (the checkpoint's staging memory); take_snapshot(), which fills it; write_snapshot(),
// which writes it as this rank's shard file; restore_train_state(), which loads a committed
// checkpoint into an executor and its zero_adam, whatever world size and bundle saved it.
// What does not: the directory and its commit (directory.hpp), the files (shard_file.hpp),
// doing it in the background across ranks (saver.hpp).
//
// What is saved, per layer L of the executor, as tensors sharded over the saving world by the
// executor's own shard_layout (layout(i): numel over world ranks):
//   "L/param"    fp32 parameters (the master weights: zero_adam keeps no second copy)
//   "L/adam_m"   Adam's first moment
//   "L/adam_v"   Adam's second moment
// Rank r writes elements [layout.offset(r), + layout.valid_in(r)) of each, whatever its stage:
// a stage-3 rank's own shard; for stages 0-2, whose ranks hold replicas of the parameters (and
// for stage 0 of the moments too), the same slice of the replica — so every element is written
// by exactly one rank, and no state is gathered to rank 0 or written twice. The manifest's
// metadata holds, under "strata", Adam's step count, the loss scaler's state, the layers (names
// and sizes) and the saving bundle; the caller's own keys (data position, RNG, schedule) sit
// beside it. The step is the manifest's `step`.
//
// Loading (restore_train_state): each rank reads only the element ranges it owns under its own
// layout — its stored parameters (stored_offset/stored_numel) and its optimizer part
// (part_offset/part_numel) — from whichever saved shards cover them (checkpoint_reader::
// read_elements, block by block). So 4 ranks load what 2 saved, 3 load what 1 saved, and
// ZeRO-0 on host memory loads what ZeRO-3 on NVMe saved; the loaded state is bitwise the saved
// one, and the next step is bitwise the step the saving run took next.
#pragma once

#include <strata/checkpoint/shard_file.hpp>
#include <strata/memory/buffer.hpp>
#include <strata/optim/loss_scaler.hpp>
#include <strata/optim/zero_adam.hpp>
#include <strata/schedule/executor.hpp>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace checkpoint {

/// The three tensors of a layer, in this order in a snapshot.
inline constexpr const char* train_state_kinds[] = {"param", "adam_m", "adam_v"};
inline std::string train_tensor_name(const std::string& layer, int kind) {
  return layer + "/" + train_state_kinds[kind];
}

/// This rank's part of a run's state, in host memory (one buffer: the checkpoint's staging).
/// Piece (layer i, kind k) holds layout(i).shard_numel() floats: the rank's slice, then zeros.
struct train_snapshot {
  struct piece {
    std::string name;       // "L/param", ...
    shard_spec shard;       // the saving layout and this rank
    std::size_t offset;     // floats into the buffer
  };
  buffer staging;                 // host memory, from the context (budgeted)
  std::vector<piece> pieces;
  std::uint64_t step = 0;
  int zero_stage = 0;
  nlohmann::json metadata = nlohmann::json::object();  // the caller's keys and "strata"

  float* data(const piece& p) const noexcept { return static_cast<float*>(staging.data()) + p.offset; }
  std::size_t bytes() const noexcept { return staging.size(); }
};

/// The staging bytes a snapshot of `ex` takes on this rank: 3 x the layers' shard lengths.
template <class Executor>
std::size_t snapshot_bytes(const Executor& ex) {
  std::size_t floats = 0;
  for (std::size_t i = 0; i < ex.size(); ++i) floats += 3 * ex.layout(i).shard_numel();
  return floats * sizeof(float);
}

/// The memory-plan line of that staging (host memory), for the executor's plan extension.
template <class Executor>
memory_plan snapshot_plan(const Executor& ex, const std::string& name = "checkpoint") {
  memory_plan plan;
  plan.add(tier_id::host, name + ": snapshot staging (params, m, v of this rank's slices)",
           snapshot_bytes(ex));
  return plan;
}

namespace detail {
template <class Executor>
nlohmann::json layers_of(const Executor& ex) {
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t i = 0; i < ex.size(); ++i)
    layers.push_back({{"name", ex.layer(i).name}, {"numel", ex.layer(i).numel}});
  return layers;
}
inline nlohmann::json scaler_json(const optim::loss_scaler_state& s) {
  return {{"dynamic", s.dynamic},         {"scale", s.scale},   {"growth_interval", s.growth_interval},
          {"backoff", s.backoff},         {"growth", s.growth}, {"min_scale", s.min_scale},
          {"clean_streak", s.clean_streak}, {"skipped_steps", s.skipped_steps}};
}
inline optim::loss_scaler_state scaler_from_json(const nlohmann::json& j) {
  optim::loss_scaler_state s;
  s.dynamic = j.at("dynamic").get<bool>();
  s.scale = j.at("scale").get<float>();
  s.growth_interval = j.at("growth_interval").get<std::uint32_t>();
  s.backoff = j.at("backoff").get<float>();
  s.growth = j.at("growth").get<float>();
  s.min_scale = j.at("min_scale").get<float>();
  s.clean_streak = j.at("clean_streak").get<std::uint32_t>();
  s.skipped_steps = j.at("skipped_steps").get<std::uint64_t>();
  return s;
}
}  // namespace detail

/// Lays out a snapshot of `ex` and `opt` in `into` — its pieces, step, stage and metadata
/// (the caller's keys, a JSON object, and "strata": Adam's step count, the scaler, the layers,
/// the bundle) — allocating its staging on the host tier when it is not snapshot_bytes(ex)
/// large. The values are not copied: take_snapshot() does that, or a saver in the background.
template <class Executor>
void describe_snapshot(train_snapshot& into, Executor& ex,
                       const optim::zero_adam<Executor>& opt, std::uint64_t step,
                       const optim::loss_scaler* scaler, nlohmann::json metadata) {
  if (!metadata.is_object())
    throw config_error("checkpoint snapshot: the caller's metadata must be a JSON object");
  if (metadata.contains("strata"))
    throw config_error("checkpoint snapshot: the metadata key 'strata' is the library's own");
  // The state after the last step: one deferred to the next forward (zero_executor::
  // defer_step) is applied first, so the parameters, m, v and Adam's t below agree.
  if (ex.step_deferred()) ex.sync();
  const std::size_t bytes = snapshot_bytes(ex);
  if (into.staging.size() != bytes)
    into.staging = ex.ctx().allocate(tier_id::host, bytes, "checkpoint snapshot staging");
  const int rank = ex.comm().rank();
  into.pieces.clear();
  into.step = step;
  into.zero_stage = Executor::stage;
  std::size_t at = 0;
  for (std::size_t i = 0; i < ex.size(); ++i)
    for (int k = 0; k < 3; ++k) {
      into.pieces.push_back({train_tensor_name(ex.layer(i).name, k), shard_spec{ex.layout(i), rank}, at});
      at += ex.layout(i).shard_numel();
    }
  nlohmann::json lib = {{"adam_t", opt.t()},
                        {"layers", detail::layers_of(ex)},
                        {"bundle", {{"zero_stage", Executor::stage},
                                    {"home", Executor::bundle_type::home_tier::name}}}};
  if (scaler) lib["loss_scaler"] = detail::scaler_json(scaler->save());
  metadata["strata"] = std::move(lib);
  into.metadata = std::move(metadata);
}

/// Where piece k (0 param, 1 m, 2 v) of layer i starts in the global tensor of what this rank
/// holds of it: the values stored_params() / m() / v() give begin there.
template <class Executor>
std::size_t held_offset(const Executor& ex, std::size_t i, int kind) {
  return kind == 0 ? ex.stored_offset(i) : ex.part_offset(i);
}

/// Copies piece (layer i, kind) of a described snapshot from `held` (what this rank holds of
/// it, from held_offset): the rank's slice, then zeros up to the shard length.
template <class Executor>
void fill_piece(const train_snapshot& s, const Executor& ex, std::size_t i, int kind,
                const float* held) {
  const auto& p = s.pieces[3 * i + static_cast<std::size_t>(kind)];
  float* dst = s.data(p);
  const std::size_t n = p.shard.valid();
  std::fill(dst + n, dst + p.shard.layout.shard_numel(), 0.0f);
  if (n) std::memcpy(dst, held + (p.shard.offset() - held_offset(ex, i, kind)), n * sizeof(float));
}

/// describe_snapshot, then this rank's values copied in, through the executor and optimizer
/// (not a collective: each rank reads only what it holds). The executor is synced first, so
/// the snapshot is of the parameters as the last step left them.
template <class Executor>
void take_snapshot(train_snapshot& into, Executor& ex, optim::zero_adam<Executor>& opt,
                   std::uint64_t step, const optim::loss_scaler* scaler = nullptr,
                   nlohmann::json metadata = nlohmann::json::object()) {
  describe_snapshot(into, ex, opt, step, scaler, std::move(metadata));
  for (std::size_t i = 0; i < ex.size(); ++i) {
    fill_piece(into, ex, i, 0, ex.stored_params(i).data());
    fill_piece(into, ex, i, 1, opt.m(i).data());
    fill_piece(into, ex, i, 2, opt.v(i).data());
  }
}

/// The manifest head of rank `rank`'s part of snapshot `s` (its tensors are added by a writer).
inline manifest snapshot_head(const train_snapshot& s, int world, int rank) {
  manifest head;
  head.step = s.step;
  head.world = world;
  head.rank = rank;
  head.zero_stage = s.zero_stage;
  head.metadata = s.metadata;
  return head;
}
inline tensor_desc piece_desc(const train_snapshot::piece& p) {
  return tensor_desc{p.name, dtype::f32, p.shard.layout.numel(), p.shard};
}
/// A piece's bytes in the staging.
inline std::span<const std::byte> piece_bytes(const train_snapshot& s, const train_snapshot::piece& p) {
  return std::as_bytes(std::span<const float>(s.data(p), p.shard.layout.shard_numel()));
}

/// Writes a snapshot as this rank's files (rank-<r>.bin, rank-<r>.json) in `into`, durable.
inline manifest write_snapshot(pending_checkpoint& into, const train_snapshot& s, int world,
                               int rank, shard_writer_options options = {}) {
  shard_writer w(into, snapshot_head(s, world, rank), options);
  for (const auto& p : s.pieces) w.add(piece_desc(p), piece_bytes(s, p));
  return w.finish();
}

/// What a load gives back besides the restored state.
struct loaded_state {
  std::string tag;
  std::uint64_t step = 0;
  int saved_world = 1;
  int saved_stage = 0;
  /// The caller's metadata keys as saved (without "strata").
  nlohmann::json metadata = nlohmann::json::object();
};

/// Loads checkpoint `reader` into `ex` and `opt` (and `scaler`, which must be given exactly
/// when the checkpoint holds a scaler's state), each rank reading only what it owns. Not a
/// collective. config_error naming the layer when the executor's layers are not the saved ones
/// (another model); format_error for damaged data (file, offset, tensor).
template <class Executor>
loaded_state restore_train_state(checkpoint_reader& reader, Executor& ex,
                                 optim::zero_adam<Executor>& opt,
                                 optim::loss_scaler* scaler = nullptr) {
  const manifest& head = reader.of_rank(0);
  const std::string who = "checkpoint '" + reader.path() + "'";
  const nlohmann::json& meta = head.metadata;
  if (!meta.contains("strata") || !meta["strata"].is_object())
    throw format_error(who + ": its metadata has no 'strata' object: not a training checkpoint");
  const nlohmann::json& lib = meta["strata"];
  try {
    const nlohmann::json& layers = lib.at("layers");
    if (layers.size() != ex.size())
      throw config_error(who + " holds " + std::to_string(layers.size()) +
                         " layers, the executor has " + std::to_string(ex.size()));
    for (std::size_t i = 0; i < ex.size(); ++i) {
      const std::string name = layers[i].at("name").get<std::string>();
      const std::size_t numel = layers[i].at("numel").get<std::size_t>();
      if (name != ex.layer(i).name || numel != ex.layer(i).numel)
        throw config_error(who + ": layer " + std::to_string(i) + " is '" + name + "' of " +
                           std::to_string(numel) + " elements there, the executor's is '" +
                           ex.layer(i).name + "' of " + std::to_string(ex.layer(i).numel));
    }
    if (lib.contains("loss_scaler") != (scaler != nullptr))
      throw config_error(who + (scaler ? " holds no loss scaler's state, and one was given"
                                       : " holds a loss scaler's state, and none was given"));
    ex.sync();
    for (std::size_t i = 0; i < ex.size(); ++i) {
      auto read = [&](int kind, std::size_t first, std::size_t n) {
        std::vector<float> out(n);
        reader.read_elements(train_tensor_name(ex.layer(i).name, kind), first, n,
                             std::as_writable_bytes(std::span(out)));
        return out;
      };
      ex.set_stored_params(i, read(0, ex.stored_offset(i), ex.stored_numel(i)));
      const std::vector<float> m = read(1, ex.part_offset(i), ex.part_numel(i));
      const std::vector<float> v = read(2, ex.part_offset(i), ex.part_numel(i));
      opt.set_moments(i, m, v);
    }
    opt.set_t(lib.at("adam_t").get<std::uint64_t>());
    if (scaler) scaler->restore(detail::scaler_from_json(lib.at("loss_scaler")));
  } catch (const nlohmann::json::exception& e) {
    throw format_error(who + ": its 'strata' metadata is malformed: " + e.what());
  }
  loaded_state out;
  out.tag = head.tag;
  out.step = head.step;
  out.saved_world = reader.world();
  out.saved_stage = head.zero_stage;
  out.metadata = meta;
  out.metadata.erase("strata");
  return out;
}

}  // namespace checkpoint
STRATA_NAMESPACE_END
