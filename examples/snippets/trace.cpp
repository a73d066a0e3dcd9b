// docs/api.md, "The trace": spans of the copies and the compute, as a Chrome trace and a summary.
#include "check.hpp"

#include <strata/strata.hpp>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

int main() {
  strata::context ctx;
  strata::tensor_sequence<float, strata::offloaded_to_host, strata::prefetch::lookahead<1>> layers(ctx);
  for (int i = 0; i < 4; ++i) layers.emplace_back("layer" + std::to_string(i), {256, 256});
  layers.forward([](std::size_t, auto) {});

  // snippet-begin
  ctx.trace().write_chrome_json("step.trace.json");      // Perfetto / chrome://tracing
  auto s = ctx.trace().summarize();                       // busy time per queue, compute fraction
  std::cout << s.to_string();
  double both = strata::trace_recorder::overlap_us(ctx.trace().spans(),
                                                   strata::span_kind::h2d, strata::span_kind::compute);
  // snippet-end

  snippet::check(std::filesystem::file_size("step.trace.json") > 0, "the trace file was written");
  snippet::check(both >= 0, "an overlap is a length of time");
  std::size_t computes = 0, fetches = 0;
  for (auto& sp : ctx.trace().spans()) {
    computes += sp.kind == strata::span_kind::compute;
    fetches += sp.kind == strata::span_kind::h2d;
  }
  snippet::check(computes == 4 && fetches >= 4, "a compute span per layer, and their fetches");
  std::filesystem::remove("step.trace.json");
}
