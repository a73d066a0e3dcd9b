// The spine on a real GPU (cuda-device build, nvcc): device memory, every copy route, leases
// with kernels on the compute stream, the offloaded sequence walk == the resident walk, and
// the f16/bf16 conversions inside kernels == on the host; memory claimed as device memory is
// checked as on the emulated device; a "not ready" event query leaves no error behind for the
// next launch check; compute spans are timed by events. Skips (exit 77) without a GPU.
#include "cuda_test.hpp"

#include <strata/strata.hpp>

#include <cstring>
#include <random>

using namespace strata;

namespace {

__global__ void scale_add(float* w, std::size_t n, float a, float b) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) w[i] = w[i] * a + b;
}

void launch_scale_add(context& ctx, float* w, std::size_t n, float a, float b) {
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  scale_add<<<blocks, 256, 0, ctx.compute_stream()>>>(w, n, a, b);
  check_cuda(cudaGetLastError(), "scale_add launch");
}

__global__ void convert_patterns(const float* in, std::uint16_t* h, std::uint16_t* b,
                                 float* back_h, float* back_b, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  h[i] = to_f16(in[i]).bits;
  b[i] = to_bf16(in[i]).bits;
  back_h[i] = to_float(f16::from_bits(static_cast<std::uint16_t>(i & 0xffff)));
  back_b[i] = to_float(bf16::from_bits(static_cast<std::uint16_t>(i & 0xffff)));
}

// Spins until the host sets *flag (mapped pinned memory), or for about `max_cycles` clock
// cycles at most, so a test that fails early cannot hang the GPU.
__global__ void wait_for_flag(const volatile int* flag, long long max_cycles) {
  const long long start = clock64();
  while (*flag == 0 && clock64() - start < max_cycles) {
  }
}

// A flag in mapped pinned memory the host sets to release wait_for_flag.
struct host_flag {
  int* host = nullptr;
  int* device = nullptr;
  host_flag() {
    check_cuda(cudaHostAlloc(&host, sizeof(int), cudaHostAllocMapped), "cudaHostAlloc (flag)");
    *host = 0;
    check_cuda(cudaHostGetDevicePointer(&device, host, 0), "cudaHostGetDevicePointer");
  }
  ~host_flag() {  // a test that failed early must not leave a kernel spinning on freed memory
    set();
    cudaDeviceSynchronize();
    cudaFreeHost(host);
  }
  void set() { reinterpret_cast<volatile int*>(host)[0] = 1; }
};
constexpr long long ten_seconds_of_cycles = 20'000'000'000LL;  // ~2 GHz

std::vector<unsigned char> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> v(n);
  for (auto& x : v) x = static_cast<unsigned char>(rng());
  return v;
}

void copy_routes() {
  context ctx({.device_bytes = 256 << 20, .staging_slot_bytes = 1 << 20, .staging_slots = 4});
  const tier_id tiers[] = {tier_id::device, tier_id::pinned, tier_id::host};
  const std::size_t sizes[] = {1, 4097, (1 << 20) - 1, (1 << 20) + 1, 9 << 20};
  unsigned seed = 7;
  for (tier_id from : tiers)
    for (tier_id to : tiers)
      for (std::size_t n : sizes) {
        auto data = random_bytes(n, seed++);
        buffer a = ctx.allocate(from, n, "a"), b = ctx.allocate(to, n, "b");
        ctx.copy(a.data(), from, data.data(), tier_id::host, n, "in").wait();
        ctx.copy(b.data(), to, a.data(), from, n, "across").wait();
        std::vector<unsigned char> out(n);
        ctx.copy(out.data(), tier_id::host, b.data(), to, n, "out").wait();
        GPU_CHECK(std::memcmp(out.data(), data.data(), n) == 0);
      }
}

void lease_with_kernel() {
  context ctx({.device_bytes = 64 << 20});
  const std::size_t n = 3 << 20;  // crosses staging slots
  tiered_tensor<float, offloaded_to_host> t(ctx, "w", {n});
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 1000);
  t.assign(v);
  {
    auto l = t.acquire(read_write);
    ctx.compute("scale_add", [&] { launch_scale_add(ctx, l.data(), n, 2.0f, 1.0f); });
  }
  auto out = t.to_vector();  // waits for the write-back, which waits for the kernel
  bool ok = true;
  for (std::size_t i = 0; i < n; ++i) ok = ok && out[i] == v[i] * 2.0f + 1.0f;
  GPU_CHECK(ok);
  GPU_CHECK(ctx.budget(tier_id::device).used() == 0);
}

template <class Placement, class Prefetch>
std::vector<std::vector<float>> walk(int steps) {
  context ctx({.device_bytes = 64 << 20});
  tensor_sequence<float, Placement, Prefetch> seq(ctx);
  const std::size_t sizes[] = {100000, 3, 250001, 4096, 77777, 1 << 18};
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    std::vector<float> v(sizes[i]);
    for (std::size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>((k * 7 + i) % 101);
    seq.emplace_back("L" + std::to_string(i), {sizes[i]}).assign(v);
  }
  for (int s = 0; s < steps; ++s) {
    seq.forward(read_write, [&](std::size_t i, auto v) {
      launch_scale_add(ctx, v.data(), v.size(), 0.5f, static_cast<float>(i));
    });
    seq.backward(read_write, [&](std::size_t, auto v) {
      launch_scale_add(ctx, v.data(), v.size(), 1.5f, -1.0f);
    });
  }
  std::vector<std::vector<float>> out;
  for (std::size_t i = 0; i < seq.size(); ++i) out.push_back(seq[i].to_vector());
  return out;
}

void sequence_equivalence() {
  auto ref = walk<resident_on_device, prefetch::none>(3);
  GPU_CHECK((walk<offloaded_to_host, prefetch::none>(3) == ref));
  GPU_CHECK((walk<offloaded_to_host, prefetch::lookahead<2>>(3) == ref));
  GPU_CHECK((walk<offloaded_to_pinned, prefetch::lookahead<1>>(3) == ref));
  GPU_CHECK((walk<placement<tier::device, tier::pinned, tier::host>, prefetch::lookahead<3>>(3) ==
             ref));
}

void conversions_on_device_match_host() {
  const std::size_t n = 1 << 20;
  std::vector<float> in(n);
  std::mt19937 rng(3);
  for (auto& x : in) {
    std::uint32_t bits = rng();
    std::memcpy(&x, &bits, 4);
  }
  float* d_in;
  std::uint16_t *d_h, *d_b;
  float *d_bh, *d_bb;
  check_cuda(cudaMalloc(&d_in, n * 4), "malloc");
  check_cuda(cudaMalloc(&d_h, n * 2), "malloc");
  check_cuda(cudaMalloc(&d_b, n * 2), "malloc");
  check_cuda(cudaMalloc(&d_bh, n * 4), "malloc");
  check_cuda(cudaMalloc(&d_bb, n * 4), "malloc");
  check_cuda(cudaMemcpy(d_in, in.data(), n * 4, cudaMemcpyHostToDevice), "copy");
  convert_patterns<<<static_cast<unsigned>(n / 256), 256>>>(d_in, d_h, d_b, d_bh, d_bb, n);
  check_cuda(cudaDeviceSynchronize(), "convert_patterns");
  std::vector<std::uint16_t> h(n), b(n);
  std::vector<float> bh(n), bb(n);
  check_cuda(cudaMemcpy(h.data(), d_h, n * 2, cudaMemcpyDeviceToHost), "copy");
  check_cuda(cudaMemcpy(b.data(), d_b, n * 2, cudaMemcpyDeviceToHost), "copy");
  check_cuda(cudaMemcpy(bh.data(), d_bh, n * 4, cudaMemcpyDeviceToHost), "copy");
  check_cuda(cudaMemcpy(bb.data(), d_bb, n * 4, cudaMemcpyDeviceToHost), "copy");
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bad += h[i] != to_f16(in[i]).bits;
    bad += b[i] != to_bf16(in[i]).bits;
    const float eh = to_float(f16::from_bits(static_cast<std::uint16_t>(i & 0xffff)));
    const float eb = to_float(bf16::from_bits(static_cast<std::uint16_t>(i & 0xffff)));
    bad += std::memcmp(&bh[i], &eh, 4) != 0;
    bad += std::memcmp(&bb[i], &eb, 4) != 0;
  }
  GPU_CHECK(bad == 0);
  cudaFree(d_in), cudaFree(d_h), cudaFree(d_b), cudaFree(d_bh), cudaFree(d_bb);
}

void budget_refuses_on_gpu() {
  context ctx({.device_bytes = 1 << 20});
  bool threw = false;
  try {
    tiered_tensor<float> t(ctx, "too-big", {1 << 20});
  } catch (const out_of_budget& e) {
    threw = std::string(e.what()).find("too-big") != std::string::npos;
  }
  GPU_CHECK(threw);
}

// A host pointer, device memory the context did not allocate, and a range running past a
// context block are all refused as the emulated device refuses them; a range inside a block
// is accepted.
void device_claims_are_checked() {
  context ctx({.device_bytes = 16 << 20});
  std::vector<char> host(8192, 1);
  buffer pinned = ctx.allocate(tier_id::pinned, 8192, "p");
  buffer d = ctx.allocate(tier_id::device, 4096, "d");
  void* foreign = nullptr;
  check_cuda(cudaMalloc(&foreign, 4096), "cudaMalloc");
  auto refused = [&](void* dst, std::size_t n, const char* label) {
    try {
      ctx.copy(dst, tier_id::device, pinned.data(), tier_id::pinned, n, label).wait();
    } catch (const access_error& e) {
      return std::string(e.what()).find(label) != std::string::npos;
    }
    return false;
  };
  GPU_CHECK(refused(host.data(), 100, "host-as-device"));
  GPU_CHECK(refused(foreign, 100, "foreign-device"));
  GPU_CHECK(refused(d.data(), 4097, "overrun"));
  GPU_CHECK(refused(static_cast<char*>(d.data()) + 1, 4096, "shifted-overrun"));
  bool inside = true;
  try {
    ctx.copy(static_cast<char*>(d.data()) + 96, tier_id::device, host.data(), tier_id::host, 4000,
             "inside").wait();
  } catch (const std::exception& e) {
    inside = false;
    std::printf("  unexpected: %s\n", e.what());
  }
  GPU_CHECK(inside);
  cudaFree(foreign);
}

// Querying an event whose work is still running answers "not ready" and leaves the thread's
// last error clean, so the next launch check (cudaGetLastError) does not fail.
void not_ready_leaves_no_error() {
  context ctx({.device_bytes = 16 << 20});
  host_flag flag;
  event e = ctx.compute("wait for the host", [&] {
    wait_for_flag<<<1, 1, 0, ctx.compute_stream()>>>(flag.device, ten_seconds_of_cycles);
    check_cuda(cudaGetLastError(), "wait_for_flag launch");
  });
  GPU_CHECK(!e.ready());  // the kernel waits for the flag, which is not set yet
  GPU_CHECK(cudaGetLastError() == cudaSuccess);
  // The retire path queries too: a buffer retired behind the running kernel stays.
  buffer b = ctx.allocate(tier_id::device, 1 << 20, "behind the kernel");
  ctx.retire(std::move(b), {e});
  GPU_CHECK(ctx.budget(tier_id::device).used() == (1u << 20));
  GPU_CHECK(cudaGetLastError() == cudaSuccess);
  flag.set();
  e.wait();
  GPU_CHECK(ctx.budget(tier_id::device).used() == 0);  // given back at the first touch after
  buffer x = ctx.allocate(tier_id::device, 256 * sizeof(float), "x");
  launch_scale_add(ctx, static_cast<float*>(x.data()), 256, 1.0f, 0.0f);  // its check passes
  ctx.synchronize();
}

// Compute spans are timed on the device by events: after synchronize the trace holds each
// compute with its label, in stream order, with begin <= end. (Where they sit on the host
// clock depends on a calibration whose error grows with the machine's load: not checked.)
void compute_spans_are_timed_by_events() {
  context ctx({.device_bytes = 16 << 20});
  ctx.trace().clear();
  const std::size_t n = 1 << 20;
  buffer d = ctx.allocate(tier_id::device, n * sizeof(float), "x");
  for (int i = 0; i < 3; ++i)
    ctx.compute("scale " + std::to_string(i), [&] {
      launch_scale_add(ctx, static_cast<float*>(d.data()), n, 1.0f, 1.0f);
    });
  ctx.synchronize();
  std::vector<span> compute;
  for (auto& s : ctx.trace().spans())
    if (s.kind == span_kind::compute) compute.push_back(s);
  GPU_CHECK(compute.size() == 3);
  for (std::size_t i = 0; i < compute.size(); ++i) {
    GPU_CHECK(compute[i].label == "scale " + std::to_string(i));
    GPU_CHECK(compute[i].begin_us <= compute[i].end_us);
    // One stream: each starts after the previous ended (1 us: float milliseconds rounding).
    if (i) GPU_CHECK(compute[i].begin_us >= compute[i - 1].end_us - 1.0);
  }
  GPU_CHECK(ctx.trace().summarize().busy_us_by_queue.count("compute") == 1);
}

}  // namespace

int main() {
  return cuda_test::run_all({
      {"copy routes are bitwise exact on the GPU", copy_routes},
      {"a read_write lease with a kernel is written back", lease_with_kernel},
      {"offloaded sequence walks == resident walk with kernels", sequence_equivalence},
      {"f16/bf16 conversions in kernels == host", conversions_on_device_match_host},
      {"the device budget refuses an oversized tensor", budget_refuses_on_gpu},
      {"memory claimed as device memory must be this context's", device_claims_are_checked},
      {"a not-ready event query leaves no error for the next launch check",
       not_ready_leaves_no_error},
      {"compute spans are timed by CUDA events", compute_spans_are_timed_by_events},
  });
}
