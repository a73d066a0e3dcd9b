// README.md, first lines: the type that says where a tensor lives and how it moves.
#include "check.hpp"

#include <strata/strata.hpp>

#include <type_traits>
#include <vector>

using layer_weight =
// snippet-begin
strata::tiered_tensor<float, strata::offloaded_to_host, strata::prefetch::lookahead<2>>
// snippet-end
    ;

// Home in host memory, leased for compute on the device, two elements prefetched ahead.
static_assert(std::is_same_v<layer_weight::home_tier, strata::tier::host>);
static_assert(std::is_same_v<layer_weight::compute_tier, strata::tier::device>);
static_assert(layer_weight::prefetch_type::depth == 2);

int main() {
  strata::context ctx;
  layer_weight w(ctx, "w", {2, 2});
  w.assign(std::vector<float>{1, 2, 3, 4});
  snippet::check(w.to_vector() == std::vector<float>{1, 2, 3, 4},
                 "the tensor gives back what was assigned");
}
