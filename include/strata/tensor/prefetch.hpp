// strata/tensor/prefetch.hpp — when data moves up to the compute tier.
//
// prefetch::none fetches on demand, when a lease is taken. prefetch::lookahead<Depth> is used by
// a tensor sequence: while element i is leased, elements i+1 .. i+Depth are already in flight,
// with at most Depth+1 buffers on the compute tier.
#pragma once

#include <strata/core/config.hpp>

#include <concepts>
#include <cstddef>
#include <type_traits>

STRATA_NAMESPACE_BEGIN

namespace prefetch {
/// Fetch when a lease is taken; one buffer on the compute tier.
struct none {
  static constexpr std::size_t depth = 0;
};

/// Keep the next Depth elements of a sequence in flight; Depth+1 buffers on the compute tier.
template <std::size_t Depth>
struct lookahead {
  static_assert(Depth >= 1,
                "prefetch::lookahead<Depth>: Depth must be at least 1; use prefetch::none to fetch "
                "on demand");
  static constexpr std::size_t depth = Depth;
};
}  // namespace prefetch

template <class P>
concept prefetch_policy = std::is_empty_v<P> && requires {
  { P::depth } -> std::convertible_to<std::size_t>;
};

static_assert(prefetch_policy<prefetch::none> && prefetch_policy<prefetch::lookahead<2>>);

STRATA_NAMESPACE_END
