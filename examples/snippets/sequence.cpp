// README.md, "Sequences and lookahead prefetch": 48 layers walked through a ring of Depth+1
// device buffers.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cstddef>
#include <string>
#include <vector>

// Stand-ins for a model's layers (host loops: the snippets build in host mode, where the
// emulated device is memory of this process).
static void forward_layer(std::size_t i, float* w) { w[0] = static_cast<float>(i) + 0.5f; }
static std::vector<float> seen(48);
static void backward_layer(std::size_t i, const float* w) { seen[i] = w[0]; }

int main() {
  strata::context ctx;
  // snippet-begin
  strata::tensor_sequence<float, strata::offloaded_to_host, strata::prefetch::lookahead<2>> layers(ctx);
  for (int i = 0; i < 48; ++i) layers.emplace_back("layer" + std::to_string(i), {512, 512});

  layers.forward(strata::read_write, [&](std::size_t i, auto w) { forward_layer(i, w.data()); });
  layers.backward([&](std::size_t i, auto w) { backward_layer(i, w.data()); });
  // snippet-end

  const std::size_t layer_bytes = 512 * 512 * sizeof(float);
  snippet::check(layers.ring_bytes() == 3 * layer_bytes, "a ring of Depth+1 = 3 layer buffers");
  snippet::check(ctx.budget(strata::tier_id::device).peak() <= layers.ring_bytes(),
                 "the device never held more than the ring");
  for (std::size_t i = 0; i < 48; ++i) {
    snippet::check(seen[i] == static_cast<float>(i) + 0.5f,
                   "the backward walk saw what the read_write forward walk wrote");
    snippet::check(layers[i].to_vector()[0] == seen[i], "each layer's update is at home");
  }
}
