// strata/memory/tier_list.hpp — the tiers a context has, as a type and as a runtime table.
//
//   tier_list<tier::device, tier::pinned, tier::host, tier::nvme>   the library's four tiers
//   tier_list<tier::device, tier::pinned, my_cxl, tier::host, tier::nvme>   one of your own added
//
// A context is built from a tier list (standard_tiers by default). From the types it makes a
// tier_table: each tier's traits, and the route of every ordered pair read from copy_route<From,
// To> — so a specialisation for a pair is honoured at run time by the type-erased layers (tensor
// slots, the copy engine) exactly as at compile time. The table orders tiers fastest first
// (speed_rank), which is the order of budget reports and memory plans.
// What does not live here: the budgets and resources the context makes per tier (exec/context).
#pragma once

#include <strata/core/error.hpp>
#include <strata/memory/tier.hpp>

#include <algorithm>
#include <array>
#include <span>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN

template <memory_tier... Tiers>
struct tier_list {
  static constexpr std::size_t size = sizeof...(Tiers);

  template <class Tier>
  static constexpr bool contains = (std::is_same_v<Tier, Tiers> || ...);

  static constexpr bool ids_unique() {
    constexpr std::array<int, sizeof...(Tiers)> ids{static_cast<int>(Tiers::id)...};
    for (std::size_t i = 0; i < ids.size(); ++i)
      for (std::size_t j = i + 1; j < ids.size(); ++j)
        if (ids[i] == ids[j]) return false;
    return true;
  }
  static_assert(ids_unique(), "tier_list: two tiers share an id; give each tier its own tier_id "
                              "value (the library's use 0-3)");
};

/// The library's four tiers: what a context has unless it is given a list of its own.
using standard_tiers = tier_list<tier::device, tier::pinned, tier::host, tier::nvme>;

namespace detail {
template <class L>
struct is_tier_list : std::false_type {};
template <class... Ts>
struct is_tier_list<tier_list<Ts...>> : std::true_type {};
}  // namespace detail

template <class L>
concept tier_list_type = detail::is_tier_list<L>::value;

/// The runtime form of a tier list: traits by id, and the route of every pair.
class tier_table {
public:
  /// Number of distinct tier ids (the underlying type's range): the size of id-indexed tables.
  static constexpr std::size_t id_space = 256;

  template <memory_tier... Tiers>
  explicit tier_table(tier_list<Tiers...>) {
    infos_ = {tier_info_of<Tiers>...};
    std::stable_sort(infos_.begin(), infos_.end(),
                     [](const tier_info& a, const tier_info& b) { return a.speed_rank < b.speed_rank; });
    position_.fill(absent);
    for (std::size_t k = 0; k < infos_.size(); ++k)
      position_[static_cast<std::size_t>(infos_[k].id)] = static_cast<std::uint8_t>(k);
    routes_.assign(infos_.size() * infos_.size(), route{route_kind::direct, tier_id::host});
    (add_routes_from<Tiers, Tiers...>(), ...);
  }

  /// The tiers, fastest first.
  std::span<const tier_info> all() const noexcept { return infos_; }
  bool contains(tier_id t) const noexcept {
    return position_[static_cast<std::size_t>(t)] != absent;
  }
  /// A tier's traits; config_error when the context was not given that tier.
  const tier_info& info(tier_id t) const { return infos_[position(t)]; }
  const char* name(tier_id t) const { return info(t).name; }
  /// Position of tier t in all() (0 = fastest).
  std::size_t position(tier_id t) const {
    const std::uint8_t k = position_[static_cast<std::size_t>(t)];
    if (k == absent)
      throw config_error("tier id " + std::to_string(static_cast<int>(t)) +
                         " is not in this context's tier list; construct the context with a "
                         "tier_list that names it");
    return k;
  }
  /// copy_route<From, To> for the tiers with ids `from` and `to`.
  route route_between(tier_id from, tier_id to) const {
    return routes_[position(from) * infos_.size() + position(to)];
  }

private:
  static constexpr std::uint8_t absent = 0xff;

  template <memory_tier From, memory_tier... To>
  void add_routes_from() {
    ((routes_[position(From::id) * infos_.size() + position(To::id)] = copy_route_v<From, To>), ...);
  }

  std::vector<tier_info> infos_;
  std::array<std::uint8_t, id_space> position_{};
  std::vector<route> routes_;  // (from, to) by position
};

STRATA_NAMESPACE_END
