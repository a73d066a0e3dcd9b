// examples/common/toy_layers.hpp — what examples 01 to 03 compute with instead of a model.
//
// What lives here: run_kernel, which runs a host loop on memory of a tier (on the memory itself
// in the host build, on a host copy of it in a CUDA build); and the synthetic layers that
// examples 01 and 02 walk through a small device: their initial weights, their forward
// "kernel", the check of what came back home, and a map of where each layer is.
// What does not: a real kernel or model (examples/gpt/ has those), or anything about the walk
// itself — the placements, prefetch policies and budgets are what each example teaches, and
// stay in its main.cpp. Console and option helpers are in example_support.hpp.
//
// Shapes in comments are written // (rows, cols).
#pragma once

#include <strata/strata.hpp>

#include <cstddef>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace example {

/// Runs `kernel(q)` on the n elements at `p`, which live on tier Tier, where q is a pointer a
/// host loop may use.
///
/// Host build: the emulated device is memory of this process, so the loop runs on p itself,
/// where a CUDA kernel would run on GPU memory. What host code may NOT do is index a device view:
/// `lease.view()[0]` does not compile, because tier::device is not host-accessible.
///
/// CUDA build: a host loop cannot touch GPU memory, and these examples have no .cu file to hold
/// a real kernel. Rather than pretend, run_kernel downloads the data through the library's own
/// copy path (staged through the pinned ring), runs the loop on the host copy, and uploads the
/// result when the kernel may write (T not const). Slow but correct; a real program launches a
/// kernel on ctx.compute_stream() instead.
template <class Tier = strata::tier::device, class T, class Kernel>
void run_kernel(strata::context& ctx, T* p, std::size_t n, Kernel&& kernel) {
  if constexpr (!strata::cuda_enabled || Tier::host_accessible) {
    kernel(p);
  } else {
    std::vector<std::remove_const_t<T>> mirror(n);
    ctx.copy(mirror.data(), strata::tier_id::host, p, Tier::id, n * sizeof(T),
             "kernel stand-in: download")
        .wait();
    kernel(mirror.data());
    if constexpr (!std::is_const_v<T>)
      ctx.copy(p, Tier::id, mirror.data(), strata::tier_id::host, n * sizeof(T),
               "kernel stand-in: upload")
          .wait();
  }
}

// ---------------------------------------------------------------------------------------------
// The synthetic layers of examples 01 and 02

/// Activation vectors per layer: enough work that a layer's compute is of the order of the copy
/// that brings in the next one (in example 01 about 1.5 ms against a 0.3 ms fetch), so that
/// prefetch has something to hide the copies under.
inline constexpr std::size_t toy_tokens = 4;

/// y = x W^T for the batch (the work a layer's GEMM would do), then W += 1 (the change an
/// optimizer step would make). Returns a checksum of y, for the caller to keep so the work is
/// not optimised away. w: (rows, cols)
inline float layer_forward_kernel(float* w, std::size_t rows, std::size_t cols) {
  std::vector<float> x(toy_tokens * cols), y(toy_tokens * rows);  // (tokens, cols) (tokens, rows)
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 1e-3f * static_cast<float>(i % 97);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t t = 0; t < toy_tokens; ++t) {
      float acc = 0;
      for (std::size_t c = 0; c < cols; ++c) acc += w[r * cols + c] * x[t * cols + c];
      y[t * rows + r] = acc;
    }
  for (std::size_t i = 0; i < rows * cols; ++i) w[i] += 1.0f;
  float sum = 0;
  for (float v : y) sum += v;
  return sum;
}

/// Weights that are exact in float before and after "+= 1", so the checks can be bitwise.
inline float initial_weight(std::size_t layer, std::size_t j) {
  return static_cast<float>(layer) + 0.125f * static_cast<float>(j % 8);
}

/// Whether every weight of every layer at home is its initial value + 1: the forward pass's
/// write-backs arrived and nothing else changed them. Prints the first wrong element of each
/// wrong layer.
template <class Sequence>
bool layers_are_correct(Sequence& seq) {
  bool all = true;
  for (std::size_t l = 0; l < seq.size(); ++l) {
    const std::vector<float> w = seq[l].to_vector();
    for (std::size_t j = 0; j < w.size(); ++j)
      if (w[j] != initial_weight(l, j) + 1.0f) {
        std::printf("  layer %zu element %zu is %g, expected %g\n", l, j, double(w[j]),
                    double(initial_weight(l, j) + 1.0f));
        all = false;
        break;
      }
  }
  return all;
}

/// One character per layer: '#' leased for compute now, '+' on the device already or on its way
/// there (prefetched), '.' only at home.
template <class Sequence>
std::string residency_map(Sequence& seq, std::size_t leased) {
  std::string m;
  for (std::size_t l = 0; l < seq.size(); ++l)
    m += l == leased ? '#' : seq[l].template holds<strata::tier::device>() ? '+' : '.';
  return m;
}

}  // namespace example
