// benchmarks/bench_device_adam.cu — the fused multi-tensor Adam kernel (optim/device_adam.cuh)
// against the GPU's copy bandwidth.
//
// The model is GPT-2 small's parameter list (124 M parameters in 148 tensors of very different
// sizes: embeddings, per-layer weights, biases and norms), so the number includes what the
// multi-tensor launch is for: many small tensors next to a few large ones, in one launch.
//
//   device_adam/f32/N        f32 gradients, no copy: reads p, m, v, g, writes p, m, v
//   device_adam/bf16_bf16/N  bf16 gradients and a bf16 parameter copy (mixed precision)
//   grad_stats/bf16/N        device_grad_batch::measure over the bf16 gradients (reads g)
//   cudaMemcpyAsync/d2d/N    one device-to-device copy of 14 bytes per parameter
// Both Adam variants read 14 and write 14 bytes per parameter; the copy reads and writes 14,
// so all three move the same bytes, and every rate counts bytes read plus bytes written.
// Times are CUDA-event times of the launch alone (UseManualTime), medians of 7 repetitions.
//
// Ratio (last line): device-adam ratio=X f32=A bf16=B memcpy=C GB/s, where
//   ratio = median GB/s of device_adam/bf16_bf16 / median GB/s of cudaMemcpyAsync/d2d.
// Goal: >= 0.85 (a memory-bound kernel that moves each byte once, as a copy does).
// Without a usable GPU it prints `device-adam: no GPU: skipped (<the CUDA error>)` and exits 0 —
// or exits 1 where a GPU is required (STRATA_REQUIRE_GPU=1, or nvidia-smi lists one; see
// strata::gpu_requirement).
#include "bench_support.hpp"

#include <strata/core/cuda_check.hpp>
#include <strata/optim/device_adam.cuh>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

using namespace strata;

namespace {

constexpr int default_repetitions = 7;

// GPT-2 small (d = 768, 12 layers, vocabulary 50257, context 1024): every parameter tensor.
std::vector<std::size_t> gpt2_small_sizes() {
  const std::size_t d = 768, vocab = 50257, context = 1024;
  std::vector<std::size_t> s = {vocab * d, context * d};
  for (int layer = 0; layer < 12; ++layer) {
    const std::size_t block[] = {d,     d,     d * 3 * d, 3 * d, d * d, d,
                                 d,     d,     d * 4 * d, 4 * d, 4 * d * d, d};
    s.insert(s.end(), std::begin(block), std::end(block));
  }
  s.push_back(d);  // final norm
  s.push_back(d);
  return s;
}

__global__ void fill_kernel(float* x, std::size_t n, float scale) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x)
    x[i] = scale * static_cast<float>(static_cast<int>(i * 2654435761u % 2001u) - 1000) / 1000.0f;
}
template <class G>
__global__ void fill_grad_kernel(G* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x) {
    const float v = 1e-3f * static_cast<float>(static_cast<int>(i * 40503u % 2001u) - 1000);
    if constexpr (std::is_same_v<G, float>) x[i] = v;
    else x[i] = G(v);
  }
}

/// One model's optimizer state on the GPU, carved from one allocation per array kind.
template <class G, class P>
struct model_state {
  std::vector<std::size_t> sizes = gpt2_small_sizes();
  std::size_t total = 0;
  void* arena = nullptr;
  std::vector<optim::device_adam_tensor<G, P>> tensors;

  model_state() {
    for (std::size_t n : sizes) total += (n + 63) / 64 * 64;  // each tensor 256-byte aligned
    constexpr std::size_t copy_bytes = std::is_same_v<P, optim::no_copy> ? 0 : sizeof(P);
    const std::size_t bytes = total * (3 * sizeof(float) + sizeof(G) + copy_bytes);
    check_cuda(cudaMalloc(&arena, bytes), "bench: cudaMalloc of " + format_bytes(bytes));
    auto* f = static_cast<float*>(arena);
    float *p = f, *m = f + total, *v = f + 2 * total;
    auto* g = reinterpret_cast<G*>(f + 3 * total);
    P* c = reinterpret_cast<P*>(g + total);
    fill_kernel<<<1024, 256>>>(p, total, 0.1f);
    check_cuda(cudaMemset(m, 0, 2 * total * sizeof(float)), "bench: zero moments");
    fill_grad_kernel<G><<<1024, 256>>>(g, total);
    check_cuda(cudaDeviceSynchronize(), "bench: fill");
    std::size_t at = 0;
    for (std::size_t n : sizes) {
      optim::device_adam_tensor<G, P> t;
      t.master = p + at, t.m = m + at, t.v = v + at, t.grad = g + at, t.n = n;
      if constexpr (!std::is_same_v<P, optim::no_copy>) t.copy = c + at;
      tensors.push_back(t);
      at += (n + 63) / 64 * 64;
    }
  }
  ~model_state() { cudaFree(arena); }
  std::size_t parameters() const {
    std::size_t n = 0;
    for (std::size_t s : sizes) n += s;
    return n;
  }
};

struct event_timer {
  cudaEvent_t start{}, stop{};
  event_timer() {
    check_cuda(cudaEventCreate(&start), "bench: event");
    check_cuda(cudaEventCreate(&stop), "bench: event");
  }
  ~event_timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  double seconds() {
    check_cuda(cudaEventSynchronize(stop), "bench: event sync");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "bench: elapsed");
    return ms / 1e3;
  }
};

template <class G, class P>
void bm_adam(benchmark::State& state) {
  model_state<G, P> model;
  optim::device_adam_batch<G, P> batch(
      std::span<const optim::device_adam_tensor<G, P>>(model.tensors));
  optim::adam_params h;
  h.weight_decay = 0.1f;
  event_timer timer;
  std::uint64_t t = 0;
  batch.step(optim::adam_step_scalars::make(h, ++t), nullptr);  // warm up
  for (auto _ : state) {
    const auto k = optim::adam_step_scalars::make(h, ++t, 1.0f / 1024.0f);
    check_cuda(cudaEventRecord(timer.start, nullptr), "bench: record");
    batch.step(k, nullptr);
    check_cuda(cudaEventRecord(timer.stop, nullptr), "bench: record");
    state.SetIterationTime(timer.seconds());
  }
  const std::size_t read = 3 * sizeof(float) + sizeof(G);  // p, m, v, g
  const std::size_t written =
      3 * sizeof(float) + (std::is_same_v<P, optim::no_copy> ? 0 : sizeof(P));
  const std::size_t per = read + written;
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(per * model.parameters()));
  state.counters["tensors"] = static_cast<double>(model.tensors.size());
}

void bm_grad_stats(benchmark::State& state) {
  model_state<bf16, bf16> model;
  std::vector<optim::device_grad_tensor<bf16>> list;
  for (auto& t : model.tensors) list.push_back({t.grad, t.n});
  optim::device_grad_batch<bf16> batch{std::span<const optim::device_grad_tensor<bf16>>(list)};
  optim::grad_stats* out = nullptr;
  check_cuda(cudaMalloc(&out, sizeof *out), "bench: cudaMalloc");
  event_timer timer;
  batch.measure(1.0f, out, nullptr);
  for (auto _ : state) {
    check_cuda(cudaEventRecord(timer.start, nullptr), "bench: record");
    batch.measure(1.0f / 1024.0f, out, nullptr);
    check_cuda(cudaEventRecord(timer.stop, nullptr), "bench: record");
    state.SetIterationTime(timer.seconds());
  }
  cudaFree(out);
  state.SetBytesProcessed(state.iterations() *
                          static_cast<std::int64_t>(sizeof(bf16) * model.parameters()));
}

void bm_memcpy(benchmark::State& state, std::size_t bytes) {
  void *a = nullptr, *b = nullptr;
  check_cuda(cudaMalloc(&a, bytes), "bench: cudaMalloc");
  check_cuda(cudaMalloc(&b, bytes), "bench: cudaMalloc");
  check_cuda(cudaMemset(a, 1, bytes), "bench: memset");
  event_timer timer;
  check_cuda(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr), "bench: copy");
  for (auto _ : state) {
    check_cuda(cudaEventRecord(timer.start, nullptr), "bench: record");
    check_cuda(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr), "bench: copy");
    check_cuda(cudaEventRecord(timer.stop, nullptr), "bench: record");
    state.SetIterationTime(timer.seconds());
  }
  cudaFree(a);
  cudaFree(b);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(2 * bytes));
}

}  // namespace

int main(int argc, char** argv) {
  const bench_support::started run = bench_support::start({argv, argv + argc});
  if (!run.ok) return 1;
  const int repetitions = run.repetitions_given ? 0 : default_repetitions;
  const auto console = run.console;

  if (const int rc = no_gpu_exit_code("device-adam", 0); rc >= 0) return rc;

  std::size_t params = 0;
  for (std::size_t s : gpt2_small_sizes()) params += s;
  const auto arg = static_cast<std::int64_t>(params);
  auto setup = [&](benchmark::internal::Benchmark* b) {
    b->Arg(arg)->UseManualTime()->Unit(benchmark::kMicrosecond);
    if (repetitions > 0) b->Repetitions(repetitions);
  };
  setup(benchmark::RegisterBenchmark("device_adam/f32", bm_adam<float, optim::no_copy>));
  setup(benchmark::RegisterBenchmark("device_adam/bf16_bf16", bm_adam<bf16, bf16>));
  setup(benchmark::RegisterBenchmark("grad_stats/bf16", bm_grad_stats));
  setup(benchmark::RegisterBenchmark("cudaMemcpyAsync/d2d", bm_memcpy, 14 * params));
  std::printf("device-adam: GPT-2 small's %zu parameters in %zu tensors, one launch per step\n",
              params, gpt2_small_sizes().size());
  std::fflush(stdout);

  bench_support::bandwidth_reporter reporter(console);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  const double f32 = reporter.gbps("device_adam/f32", arg);
  const double mixed = reporter.gbps("device_adam/bf16_bf16", arg);
  const double copy = reporter.gbps("cudaMemcpyAsync/d2d", arg);
  if (mixed <= 0 || copy <= 0) {
    std::printf("device-adam ratio=n/a (needs device_adam/bf16_bf16 and cudaMemcpyAsync/d2d in "
                "this run)\n");
    return 0;
  }
  std::printf("device-adam ratio=%.2f f32=%.1f bf16=%.1f memcpy=%.1f GB/s\n", mixed / copy, f32,
              mixed, copy);
  return 0;
}
