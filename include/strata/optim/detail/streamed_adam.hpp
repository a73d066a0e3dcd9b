// strata/optim/detail/streamed_adam.hpp — definitions for optim/streamed_adam.hpp.
#pragma once


#include <algorithm>
#include <cstring>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

STRATA_NAMESPACE_BEGIN
namespace optim {

// The sub-group size in use: a multiple of the checksum block's floats, never larger than the
// groups laid end to end (each starting on a block).
inline std::size_t streamed_adam::sub_group_for(std::size_t block_elems,
                                                const std::vector<group_spec>& groups,
                                                const streamed_adam_config& config,
                                                const std::string& name) {
  if (config.sub_group == 0 || config.sub_group % block_elems != 0)
    throw config_error("streamed adam '" + name + "': sub_group of " +
                       std::to_string(config.sub_group) + " elements (" +
                       format_bytes(config.sub_group * sizeof(float)) +
                       " per tensor) is not a positive multiple of the NVMe checksum block (" +
                       format_bytes(block_elems * sizeof(float)) + " = " +
                       std::to_string(block_elems) +
                       " floats): every sub-group must start on a block of every tensor");
  std::size_t laid = 0;
  for (auto& g : groups) laid += align_up(g.numel, block_elems);
  return std::max(block_elems, std::min(config.sub_group, laid));
}

inline memory_plan streamed_adam::plan_for(context& ctx, const std::vector<group_spec>& groups,
                                           const streamed_adam_config& config,
                                           const std::string& name) {
  const std::size_t block = ctx.nvme().checksum_block();  // config_error without an NVMe tier
  const std::size_t sub = sub_group_for(block / sizeof(float), groups, config, name);
  constexpr std::size_t f = sizeof(float);
  const std::size_t kinds = config.master_on_nvme ? 3 : 2;
  const char* arrays = config.master_on_nvme ? "(master, m, v)" : "(m, v)";
  std::size_t state_floats = 0;
  for (auto& g : groups) state_floats += g.numel;
  memory_plan plan;
  plan.add(tier_id::pinned,
           std::to_string(set_count) + " buffer sets x " + std::to_string(sub) + " elements x " +
               arrays,
           set_count * sub * kinds * f);
  // The store's bounce buffers. In a step, a read and a write per array run at a time, each
  // with at most one bounce buffer for an unaligned tail (one alignment unit: the sets are
  // aligned and every piece starts on a block); the commits, after them, one checksum table at
  // a time; set_master / master() between steps go through one buffer of up to the store's
  // maximum.
  const std::size_t align = ctx.nvme().alignment();
  const std::size_t bounce_max = std::max<std::size_t>(block, std::size_t{1} << 20);
  std::size_t table = 0;
  for (auto& g : groups)
    table = std::max(table, align_up((g.numel * f + block - 1) / block * 4, align));
  plan.add(tier_id::pinned, "NVMe bounce buffers",
           std::max({bounce_max, 2 * kinds * align, std::min(bounce_max, table)}));
  plan.add(tier_id::nvme,
           std::string(arrays) + " of " + std::to_string(groups.size()) +
               " groups: current + the step being written",
           2 * state_floats * kinds * f);
  return plan;
}

inline streamed_adam::streamed_adam(context& ctx, std::vector<group_spec> groups,
                                    const streamed_adam_config& config, std::string name)
    : ctx_(ctx), name_(std::move(name)), groups_(std::move(groups)),
      own_master_(config.master_on_nvme), simd_(config.simd), threads_(config.threads) {
  io::nvme_store& store = ctx_.nvme();  // config_error without an NVMe tier
  if (groups_.empty()) throw config_error("streamed adam '" + name_ + "': no parameter groups");
  block_elems_ = store.checksum_block() / sizeof(float);
  sub_ = sub_group_for(block_elems_, groups_, config, name_);
  constexpr std::size_t f = sizeof(float);

  plan_.add_held_by(ctx_);
  const memory_plan own = plan_for(ctx_, groups_, config, name_);
  for (const auto& l : own.lines()) {
    plan_.add(l.tier, l.what, l.bytes);
    if (l.tier == tier_id::nvme) nvme_reserved_ += l.bytes;
  }
  plan_.check(ctx_, "streamed adam '" + name_ + "'");

  ctx_.budget(tier_id::nvme).reserve(nvme_reserved_, name_ + " (optimizer state)");
  try {
    for (std::size_t s = 0; s < set_count; ++s)
      sets_.push_back(ctx_.allocate(tier_id::pinned, sub_ * kinds() * f,
                                    name_ + " buffer set " + std::to_string(s)));
    for (std::size_t a = 0; a < kinds(); ++a) {
      const std::string what = kind_name(kind_at(a));
      readers_.push_back(std::make_unique<work_queue>(name_ + " io-read " + what, ctx_.trace()));
      writers_.push_back(std::make_unique<work_queue>(name_ + " io-write " + what, ctx_.trace()));
    }
    current_.assign(groups_.size(), {0, 0, 0});
    prepared_.assign(groups_.size(), std::nullopt);
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      if (!groups_[g].numel) continue;
      for (std::size_t a = 0; a < kinds(); ++a)
        current_[g][kind_at(a)] = store.create(groups_[g].numel * f, tensor_name(g, kind_at(a)));
    }
  } catch (...) {
    for (auto& hs : current_)
      for (handle h : hs)
        if (h) store.destroy(h);
    ctx_.budget(tier_id::nvme).release(nvme_reserved_);
    throw;
  }
}

inline streamed_adam::~streamed_adam() {
  drain();
  settle_all();
  if (ctx_.has_nvme()) {
    io::nvme_store& store = ctx_.nvme();
    for (auto& hs : current_)
      for (handle h : hs)
        if (h) store.destroy(h);
  }
  ctx_.budget(tier_id::nvme).release(nvme_reserved_);
}

inline const char* streamed_adam::kind_name(state_kind k) noexcept {
  static constexpr const char* names[] = {"master", "m", "v"};
  return names[k];
}

inline std::string streamed_adam::tensor_name(std::size_t g, state_kind k) const {
  return groups_[g].name + "." + kind_name(k);
}

inline float* streamed_adam::array(std::size_t set, std::size_t a) const noexcept {
  return static_cast<float*>(sets_[set].data()) + a * sub_;
}

inline void streamed_adam::drain() noexcept {
  for (auto* queues : {&readers_, &writers_})
    for (auto& q : *queues) try {
        q->synchronize();
      } catch (...) {  // the step that submitted it has heard of it
      }
}

template <class Err>
[[noreturn]] inline void streamed_adam::rethrow_as(const Err& e, const std::string& where) const {
  throw Err("streamed adam '" + name_ + "': " + where + ": " + e.what());
}

inline std::vector<std::vector<streamed_adam::piece>> streamed_adam::sub_groups(
    std::size_t first, std::size_t last) const {
  std::vector<std::vector<piece>> out;
  std::vector<piece> cur;
  std::size_t used = 0;  // elements of the set taken, always a multiple of block_elems_
  for (std::size_t g = first; g < last; ++g) {
    const std::size_t n = groups_[g].numel;
    for (std::size_t o = 0; o < n;) {
      const std::size_t take = std::min(n - o, sub_ - used);
      cur.push_back({g, o, take, used});
      o += take;
      used += align_up(take, block_elems_);  // the next piece starts on a block
      if (used >= sub_) {
        out.push_back(std::move(cur));
        cur.clear();
        used = 0;
      }
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

inline void streamed_adam::set_master(std::size_t g, std::span<const float> values) {
  if (!own_master_)
    throw config_error("streamed adam '" + name_ +
                       "': set_master, but the master weights are the caller's "
                       "(master_on_nvme is false)");
  const group_spec& gs = group(g);
  if (values.size() != gs.numel)
    throw config_error("streamed adam '" + name_ + "': set_master of group '" + gs.name +
                       "' with " + std::to_string(values.size()) + " values; it has " +
                       std::to_string(gs.numel));
  if (gs.numel) ctx_.nvme().write(current_[g][master_kind], values.data(), values.size_bytes());
}

inline void streamed_adam::set_moments(std::size_t g, std::span<const float> m,
                                       std::span<const float> v) {
  const group_spec& gs = group(g);
  if (m.size() != gs.numel || v.size() != gs.numel)
    throw config_error("streamed adam '" + name_ + "': set_moments of group '" + gs.name +
                       "' with " + std::to_string(m.size()) + " and " + std::to_string(v.size()) +
                       " values; it has " + std::to_string(gs.numel));
  if (!gs.numel) return;
  settle(g);
  ctx_.nvme().write(current_[g][m_kind], m.data(), m.size_bytes());
  ctx_.nvme().write(current_[g][v_kind], v.data(), v.size_bytes());
}

inline std::vector<float> streamed_adam::read_whole(std::size_t g, state_kind k) {
  const group_spec& gs = group(g);
  settle(g);
  std::vector<float> out(gs.numel);
  if (gs.numel) ctx_.nvme().read(current_[g][k], 0, out.data(), gs.numel * sizeof(float));
  return out;
}

inline std::vector<float> streamed_adam::master(std::size_t g) {
  if (!own_master_)
    throw config_error("streamed adam '" + name_ +
                       "': master(), but the master weights are the caller's");
  return read_whole(g, master_kind);
}
inline std::vector<float> streamed_adam::m(std::size_t g) { return read_whole(g, m_kind); }
inline std::vector<float> streamed_adam::v(std::size_t g) { return read_whole(g, v_kind); }

template <class G, class P>
void streamed_adam::step(const adam_step_scalars& k, const std::vector<std::span<const G>>& grads,
                         const std::vector<std::span<P>>& copies) {
  std::vector<adam_step_scalars> all(groups_.size(), k);
  step<G, P>(std::span<const adam_step_scalars>(all), grads, copies);
}

template <class G, class P>
void streamed_adam::step(std::span<const adam_step_scalars> k,
                         const std::vector<std::span<const G>>& grads,
                         const std::vector<std::span<P>>& copies) {
  const std::string who = "streamed adam '" + name_ + "': step: ";
  if (!own_master_)
    throw config_error(who + "the master weights are the caller's (master_on_nvme is false); "
                             "use update_group");
  const std::size_t n = groups_.size();
  if (k.size() != n || grads.size() != n)
    throw config_error(who + std::to_string(k.size()) + " sets of scalars and " +
                       std::to_string(grads.size()) + " gradients for " + std::to_string(n) +
                       " groups");
  constexpr bool with_copy = !std::is_same_v<P, no_copy>;
  if (with_copy && copies.size() != n)
    throw config_error(who + std::to_string(copies.size()) + " parameter copies for " +
                       std::to_string(n) + " groups");
  for (std::size_t g = 0; g < n; ++g) {
    auto bad = [&](const char* what, std::size_t got) {
      throw config_error(who + what + " of group '" + groups_[g].name + "' has " +
                         std::to_string(got) + " elements; the group has " +
                         std::to_string(groups_[g].numel));
    };
    if (grads[g].size() != groups_[g].numel) bad("the gradient", grads[g].size());
    if constexpr (with_copy)
      if (copies[g].size() != groups_[g].numel) bad("the parameter copy", copies[g].size());
  }
  run<G, P>(
      0, n, [&](std::size_t g) -> const adam_step_scalars& { return k[g]; },
      [&](std::size_t g) { return grads[g].data(); },
      [&](std::size_t g) -> P* {
        if constexpr (with_copy) return copies[g].data();
        else return nullptr;
      },
      [](std::size_t) -> float* { return nullptr; });
  ++t_;
}

// update_group's and prepare_group's arguments: the caller's masters, and group g's sizes.
inline void streamed_adam::check_group_update(std::size_t g, std::size_t masters,
                                              std::size_t grads) const {
  const group_spec& gs = group(g);
  const std::string who = "streamed adam '" + name_ + "': update of group '" + gs.name + "': ";
  if (own_master_)
    throw config_error(who + "the master weights live on NVMe here (master_on_nvme); use step");
  if (masters != gs.numel || grads != gs.numel)
    throw config_error(who + std::to_string(masters) + " master weights and " +
                       std::to_string(grads) + " gradients; the group has " +
                       std::to_string(gs.numel));
}

template <class G>
void streamed_adam::update_group(std::size_t g, const adam_step_scalars& k,
                                 std::span<float> master, std::span<const G> grad) {
  check_group_update(g, master.size(), grad.size());
  settle(g);
  run<G, no_copy>(
      g, g + 1, [&](std::size_t) -> const adam_step_scalars& { return k; },
      [&](std::size_t) { return grad.data(); }, [](std::size_t) -> no_copy* { return nullptr; },
      [&](std::size_t) { return master.data(); });
}

template <class G>
void streamed_adam::prepare_group(std::size_t g, const adam_step_scalars& k,
                                  std::span<float> master, std::span<const G> grad) {
  check_group_update(g, master.size(), grad.size());
  settle(g);
  settle_ended();
  auto fresh = run_prepared<G, no_copy>(
      g, g + 1, [&](std::size_t) -> const adam_step_scalars& { return k; },
      [&](std::size_t) { return grad.data(); }, [](std::size_t) -> no_copy* { return nullptr; },
      [&](std::size_t) { return master.data(); });
  prepared_[g] = prepared_versions{fresh[0], event{}};
}

inline void streamed_adam::adopt_group_after(std::size_t g, event written) {
  // Nothing prepared (a group with no element on this rank): nothing waits for the write.
  if (g < prepared_.size() && prepared_[g]) prepared_[g]->after = std::move(written);
}

inline void streamed_adam::adopt(std::size_t g, const std::array<handle, 3>& fresh) noexcept {
  io::nvme_store& store = ctx_.nvme();
  for (std::size_t a = 0; a < kinds(); ++a) {
    const state_kind k = kind_at(a);
    if (current_[g][k]) store.destroy(current_[g][k]);
    current_[g][k] = fresh[k];
  }
}

inline void streamed_adam::settle(std::size_t g) noexcept {
  if (g >= prepared_.size() || !prepared_[g]) return;
  prepared_versions p = std::move(*prepared_[g]);
  prepared_[g].reset();
  bool written = true;
  try {
    p.after.wait();
  } catch (...) {  // the masters' write failed (the caller hears of it): keep the old moments
    written = false;
  }
  if (written) {
    adopt(g, p.fresh);
  } else {
    io::nvme_store& store = ctx_.nvme();
    for (handle h : p.fresh)
      if (h) store.destroy(h);
  }
}

inline void streamed_adam::settle_ended() noexcept {
  for (std::size_t g = 0; g < prepared_.size(); ++g)
    if (prepared_[g] && prepared_[g]->after.ready()) settle(g);
}

inline void streamed_adam::settle_all() noexcept {
  for (std::size_t g = 0; g < prepared_.size(); ++g) settle(g);
}

template <class G, class P, class K, class Grads, class Copies, class Masters>
void streamed_adam::run(std::size_t first, std::size_t last, K&& k_of, Grads&& grad_of,
                        Copies&& copy_of, Masters&& master_of) {
  const auto fresh = run_prepared<G, P>(first, last, k_of, grad_of, copy_of, master_of);
  for (std::size_t g = first; g < last; ++g) adopt(g, fresh[g - first]);
}

template <class G, class P, class K, class Grads, class Copies, class Masters>
std::vector<std::array<streamed_adam::handle, 3>> streamed_adam::run_prepared(
    std::size_t first, std::size_t last, K&& k_of, Grads&& grad_of, Copies&& copy_of,
    Masters&& master_of) {
  run_state r{first, last, "step " + std::to_string(t_ + 1), sub_groups(first, last), {}, {}, {},
              {}};
  const std::size_t count = r.chunks.size(), na = kinds();
  r.fresh.assign(last - first, {0, 0, 0});
  r.txns.resize((last - first) * 3);
  r.read_done.resize(count);
  r.written.resize(count);
  try {
    begin_versions(r);
    // Four sets in flight: sub-group c+4 is read into c's set once c's writes have ended.
    for (std::size_t c = 0; c < std::min<std::size_t>(set_count, count); ++c)
      for (std::size_t a = 0; a < na; ++a) start_read(r, c, a, {});
    for (std::size_t c = 0; c < count; ++c) {
      for (std::size_t a = 0; a < na; ++a) r.read_done[c][a].wait();
      update_sub_group<G, P>(r, c, k_of, grad_of, copy_of, master_of);
      for (std::size_t a = 0; a < na; ++a) {
        start_write(r, c, a);
        if (c + set_count < count) start_read(r, c + set_count, a, {r.written[c][a]});
      }
    }
    for (auto& ws : r.written)
      for (std::size_t a = 0; a < na; ++a) ws[a].wait();
    commit_versions(r);
  } catch (...) {
    abandon_versions(r);
    throw;
  }
  r.txns.clear();  // committed: the new versions hold their data, the current ones still rule
  return r.fresh;
}

template <class F>
void streamed_adam::guarded(F&& io, const std::string& at) const {
  try {
    io();
  } catch (const io_error& e) {
    rethrow_as(e, at);
  } catch (const format_error& e) {
    rethrow_as(e, at);
  }
}

inline std::string streamed_adam::where(const run_state& r, std::size_t c, const piece& p,
                                        state_kind k, const char* doing) const {
  constexpr std::size_t f = sizeof(float);
  return r.step_name + ", sub-group " + std::to_string(c) + ": " + doing + " group '" +
         groups_[p.group].name + "', tensor '" + tensor_name(p.group, k) + "', elements [" +
         std::to_string(p.offset) + ", " + std::to_string(p.offset + p.count) +
         ") (byte offset " + std::to_string(p.offset * f) + ")";
}

inline void streamed_adam::begin_versions(run_state& r) {
  io::nvme_store& store = ctx_.nvme();
  for (std::size_t g = r.first; g < r.last; ++g) {
    if (!groups_[g].numel) continue;
    for (std::size_t a = 0; a < kinds(); ++a) {
      const state_kind k = kind_at(a);
      handle h = store.create(groups_[g].numel * sizeof(float), tensor_name(g, k));
      r.fresh[g - r.first][k] = h;
      guarded([&] { r.txns[(g - r.first) * 3 + k].emplace(store.begin_write(h)); },
              r.step_name + ": starting the new version of '" + tensor_name(g, k) + "'");
    }
  }
}

inline void streamed_adam::start_read(run_state& r, std::size_t c, std::size_t a,
                                      std::vector<event> after) {
  const state_kind k = kind_at(a);
  io::nvme_store& store = ctx_.nvme();
  r.read_done[c][a] = readers_[a]->submit(
      span_kind::io_read, name_ + " read " + kind_name(k) + " sub-group " + std::to_string(c),
      [this, &r, &store, c, a, k] {
        constexpr std::size_t f = sizeof(float);
        for (const piece& p : r.chunks[c])
          guarded([&] {
            store.read(current_[p.group][k], p.offset * f, array(c % set_count, a) + p.pos,
                       p.count * f);
          }, where(r, c, p, k, "reading"));
      },
      std::move(after));
}

inline void streamed_adam::start_write(run_state& r, std::size_t c, std::size_t a) {
  const state_kind k = kind_at(a);
  r.written[c][a] = writers_[a]->submit(
      span_kind::io_write, name_ + " write " + kind_name(k) + " sub-group " + std::to_string(c),
      [this, &r, c, a, k] {
        constexpr std::size_t f = sizeof(float);
        for (const piece& p : r.chunks[c])
          guarded(
              [&] {
                r.txn(p.group, k).write(p.offset * f, array(c % set_count, a) + p.pos,
                                        p.count * f);
              },
              where(r, c, p, k, "writing"));
      });
}

template <class G, class P, class K, class Grads, class Copies, class Masters>
void streamed_adam::update_sub_group(run_state& r, std::size_t c, K& k_of, Grads& grad_of,
                                     Copies& copy_of, Masters& master_of) {
  (void)copy_of;  // unused without a parameter copy
  const std::size_t set = c % set_count;
  trace_recorder::scope span(ctx_.trace(), name_ + " update", span_kind::optimizer,
                             name_ + " update sub-group " + std::to_string(c));
  for (const piece& p : r.chunks[c]) {
    const std::size_t n = p.count;
    float* w = own_master_ ? array(set, 0) + p.pos : master_of(p.group) + p.offset;
    float* m = array(set, own_master_ ? 1 : 0) + p.pos;
    float* v = array(set, own_master_ ? 2 : 1) + p.pos;
    const G* g = grad_of(p.group) + p.offset;
    P* copy = nullptr;
    if constexpr (!std::is_same_v<P, no_copy>) copy = copy_of(p.group) + p.offset;
    adam_update<G, P>(k_of(p.group), std::span<float>(w, n), std::span<float>(m, n),
                      std::span<float>(v, n), std::span<const G>(g, n), copy, simd_, threads_);
  }
}

inline void streamed_adam::commit_versions(run_state& r) {
  for (std::size_t g = r.first; g < r.last; ++g)
    for (std::size_t a = 0; a < kinds() && groups_[g].numel; ++a) {
      const state_kind k = kind_at(a);
      guarded([&] { r.txn(g, k).commit(); },
              r.step_name + ": committing group '" + groups_[g].name + "', tensor '" +
                  tensor_name(g, k) + "'");
    }
}

inline void streamed_adam::abandon_versions(run_state& r) noexcept {
  drain();  // nothing of this step may still touch the sets, the transactions or the chunks
  r.txns.clear();
  io::nvme_store& store = ctx_.nvme();
  for (auto& hs : r.fresh)
    for (handle h : hs)
      if (h) store.destroy(h);
}

}  // namespace optim
STRATA_NAMESPACE_END
