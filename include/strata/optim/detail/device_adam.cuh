// strata/optim/detail/device_adam.cuh — kernels and launchers for optim/device_adam.cuh.
#pragma once


#include <cub/block/block_reduce.cuh>

#include <climits>
#include <cstring>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace optim {
namespace detail {

inline constexpr int device_threads = 256;  // per block, for every kernel here

/// One entry of the chunk table: block b works on elements [begin, begin + chunk) of tensor.
struct device_chunk {
  std::uint64_t begin;
  std::uint32_t tensor;
  std::uint32_t reserved;
};
static_assert(sizeof(device_chunk) == 16);

// ---- device code ------------------------------------------------------------------------------

template <class G>
__device__ __forceinline__ float device_grad_value(G g) {
  if constexpr (std::is_same_v<G, float>) return g;
  else return static_cast<float>(g);  // core/dtype.hpp's exact widening
}

// The documented formula (optim/adam.hpp), one correctly rounded intrinsic per operation, in
// the same order as adam_scalar: nothing here can be contracted or approximated.
__device__ __forceinline__ void adam_element(const adam_step_scalars& k, float& p, float& m,
                                             float& v, float grad) {
  float g = __fmul_rn(k.s, grad);
  float w = p;
  if (!k.decoupled) g = __fmaf_rn(k.wd_l2, w, g);
  const float mi = __fmaf_rn(k.b1, m, __fmul_rn(k.c1, g));
  const float vi = __fmaf_rn(k.b2, v, __fmul_rn(k.c2, __fmul_rn(g, g)));
  if (k.decoupled) w = __fmul_rn(w, k.decay);
  const float d = __fadd_rn(__fsqrt_rn(__fmul_rn(vi, k.k2)), k.eps);
  w = __fmaf_rn(-k.step, __fdiv_rn(mi, d), w);
  p = w;
  m = mi;
  v = vi;
}

template <class P>
__device__ __forceinline__ P device_copy_value(float w) {
  if constexpr (std::is_same_v<P, float>) return w;
  else return P(w);  // round to nearest even, core/dtype.hpp
}

__device__ __forceinline__ bool aligned_to(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// Four consecutive gradients from an address aligned to 4 * sizeof(G): one 16- or 8-byte load.
template <class G>
__device__ __forceinline__ void load4(const G* src, float (&out)[4]) {
  if constexpr (std::is_same_v<G, float>) {
    const float4 x = *reinterpret_cast<const float4*>(src);
    out[0] = x.x, out[1] = x.y, out[2] = x.z, out[3] = x.w;
  } else {
    const uint2 x = *reinterpret_cast<const uint2*>(src);  // little-endian: element 0 is low
    out[0] = device_grad_value(G::from_bits(static_cast<std::uint16_t>(x.x & 0xffffu)));
    out[1] = device_grad_value(G::from_bits(static_cast<std::uint16_t>(x.x >> 16)));
    out[2] = device_grad_value(G::from_bits(static_cast<std::uint16_t>(x.y & 0xffffu)));
    out[3] = device_grad_value(G::from_bits(static_cast<std::uint16_t>(x.y >> 16)));
  }
}

template <class P>
__device__ __forceinline__ void store4(P* dst, const float4& w) {
  if constexpr (std::is_same_v<P, float>) {
    *reinterpret_cast<float4*>(dst) = w;
  } else {
    uint2 x;
    x.x = static_cast<std::uint32_t>(P(w.x).bits) | (static_cast<std::uint32_t>(P(w.y).bits) << 16);
    x.y = static_cast<std::uint32_t>(P(w.z).bits) | (static_cast<std::uint32_t>(P(w.w).bits) << 16);
    *reinterpret_cast<uint2*>(dst) = x;
  }
}

/// One block per chunk-table entry. A tensor whose arrays are all aligned for vector access
/// goes four elements per thread and load (chunks start at multiples of 4 elements, so every
/// chunk of it is aligned too); others, and the last n % 4 elements, one at a time.
template <class G, class P>
__global__ void __launch_bounds__(device_threads)
    adam_chunks_kernel(const adam_step_scalars k,
                       const device_adam_tensor<G, P>* __restrict__ tensors,
                       const device_chunk* __restrict__ chunks) {
  constexpr bool has_copy = !std::is_same_v<P, no_copy>;
  const device_chunk c = chunks[blockIdx.x];
  const device_adam_tensor<G, P> t = tensors[c.tensor];
  const std::size_t begin = c.begin;
  const std::size_t end =
      t.n - begin < device_adam_chunk_elements ? t.n : begin + device_adam_chunk_elements;

  bool vector = aligned_to(t.master, 16) && aligned_to(t.m, 16) && aligned_to(t.v, 16) &&
                aligned_to(t.grad, 4 * sizeof(G));
  if constexpr (has_copy) vector = vector && aligned_to(t.copy, 4 * sizeof(P));

  std::size_t scalar_from = begin;
  if (vector) {
    const std::size_t groups = (end - begin) / 4;
    for (std::size_t q = threadIdx.x; q < groups; q += device_threads) {
      const std::size_t e = begin + 4 * q;
      float4 p = *reinterpret_cast<const float4*>(t.master + e);
      float4 m = *reinterpret_cast<const float4*>(t.m + e);
      float4 v = *reinterpret_cast<const float4*>(t.v + e);
      float g[4];
      load4(t.grad + e, g);
      adam_element(k, p.x, m.x, v.x, g[0]);
      adam_element(k, p.y, m.y, v.y, g[1]);
      adam_element(k, p.z, m.z, v.z, g[2]);
      adam_element(k, p.w, m.w, v.w, g[3]);
      *reinterpret_cast<float4*>(t.master + e) = p;
      *reinterpret_cast<float4*>(t.m + e) = m;
      *reinterpret_cast<float4*>(t.v + e) = v;
      if constexpr (has_copy) store4(t.copy + e, p);
    }
    scalar_from = begin + 4 * groups;
  }
  for (std::size_t e = scalar_from + threadIdx.x; e < end; e += device_threads) {
    float p = t.master[e], m = t.m[e], v = t.v[e];
    adam_element(k, p, m, v, device_grad_value(t.grad[e]));
    t.master[e] = p;
    t.m[e] = m;
    t.v[e] = v;
    if constexpr (has_copy) t.copy[e] = device_copy_value<P>(p);
  }
}

/// One block per chunk: its sum of squares and non-finite count into partial[blockIdx.x].
template <class G>
__global__ void __launch_bounds__(device_threads)
    grad_stats_chunks_kernel(const double multiplier,
                             const device_grad_tensor<G>* __restrict__ tensors,
                             const device_chunk* __restrict__ chunks, grad_stats* partial) {
  using sum_reduce = cub::BlockReduce<double, device_threads>;
  using count_reduce = cub::BlockReduce<unsigned long long, device_threads>;
  __shared__ typename sum_reduce::TempStorage sum_storage;
  __shared__ typename count_reduce::TempStorage count_storage;

  const device_chunk c = chunks[blockIdx.x];
  const device_grad_tensor<G> t = tensors[c.tensor];
  const std::size_t begin = c.begin;
  const std::size_t end =
      t.n - begin < device_adam_chunk_elements ? t.n : begin + device_adam_chunk_elements;
  double acc = 0;
  unsigned long long bad = 0;
  for (std::size_t e = begin + threadIdx.x; e < end; e += device_threads) {
    const magnitude x = magnitude_of(t.grad[e]);  // the host's masking (grad_stats.hpp)
    const double d = multiplier * static_cast<double>(x.value);
    acc += d * d;
    bad += 1u - x.finite;
  }
  const double sum = sum_reduce(sum_storage).Sum(acc);
  const unsigned long long count = count_reduce(count_storage).Sum(bad);
  if (threadIdx.x == 0) {
    partial[blockIdx.x].sum_squares = sum;
    partial[blockIdx.x].nonfinite = count;
  }
}

/// One block adds the partials: thread j takes partials j, j + 256, ... in order, then the
/// block reduces. Fixed shape, so the same partials always give the same bits.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    grad_stats_final_kernel(const grad_stats* __restrict__ partial, std::size_t count,
                            grad_stats* out) {
  using sum_reduce = cub::BlockReduce<double, Threads>;
  using count_reduce = cub::BlockReduce<unsigned long long, Threads>;
  __shared__ typename sum_reduce::TempStorage sum_storage;
  __shared__ typename count_reduce::TempStorage count_storage;
  double acc = 0;
  unsigned long long bad = 0;
  for (std::size_t j = threadIdx.x; j < count; j += Threads) {
    acc += partial[j].sum_squares;
    bad += partial[j].nonfinite;
  }
  const double sum = sum_reduce(sum_storage).Sum(acc);
  const unsigned long long total = count_reduce(count_storage).Sum(bad);
  if (threadIdx.x == 0) {
    out->sum_squares = sum;
    out->nonfinite = total;
  }
}

// ---- host side: the tables ----------------------------------------------------------------------

template <class G, class P>
void check_device_tensor(const device_adam_tensor<G, P>& t, std::size_t i, const char* who) {
  if (t.n == 0) return;
  auto missing = [&](const char* field) {
    throw config_error(std::string(who) + ": tensor " + std::to_string(i) + " (" +
                       std::to_string(t.n) + " elements) has a null " + field + " pointer");
  };
  if (!t.master) missing("master");
  if (!t.m) missing("m");
  if (!t.v) missing("v");
  if (!t.grad) missing("grad");
  if constexpr (!std::is_same_v<P, no_copy>)
    if (!t.copy) missing("copy (P is not no_copy)");
}

template <class G>
void check_device_tensor(const device_grad_tensor<G>& t, std::size_t i, const char* who) {
  if (t.n != 0 && !t.grad)
    throw config_error(std::string(who) + ": tensor " + std::to_string(i) + " (" +
                       std::to_string(t.n) + " elements) has a null grad pointer");
}

inline constexpr std::size_t round_up_16(std::size_t x) { return (x + 15) / 16 * 16; }

/// The bytes uploaded to the device: the tensor list, then (16-aligned) the chunk table.
struct device_table {
  std::vector<unsigned char> bytes;
  std::size_t chunk_offset = 0, chunks = 0, elements = 0;
};

template <class T>
device_table make_device_table(std::span<const T> tensors, const char* who) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (tensors.size() > UINT32_MAX)
    throw config_error(std::string(who) + ": " + std::to_string(tensors.size()) +
                       " tensors in one list; at most 2^32 - 1");
  device_table table;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    check_device_tensor(tensors[i], i, who);
    table.chunks += (tensors[i].n + device_adam_chunk_elements - 1) / device_adam_chunk_elements;
    table.elements += tensors[i].n;
  }
  if (table.chunks > static_cast<std::size_t>(INT_MAX))
    throw config_error(std::string(who) + ": " + std::to_string(table.elements) +
                       " elements make " + std::to_string(table.chunks) +
                       " chunks, more than one launch's grid holds (2^31 - 1)");
  table.chunk_offset = round_up_16(tensors.size() * sizeof(T));
  table.bytes.resize(table.chunk_offset + table.chunks * sizeof(device_chunk));
  if (!tensors.empty())
    std::memcpy(table.bytes.data(), tensors.data(), tensors.size() * sizeof(T));
  auto* chunk = reinterpret_cast<device_chunk*>(table.bytes.data() + table.chunk_offset);
  for (std::size_t i = 0; i < tensors.size(); ++i)
    for (std::size_t b = 0; b < tensors[i].n; b += device_adam_chunk_elements)
      *chunk++ = device_chunk{b, static_cast<std::uint32_t>(i), 0};
  return table;
}

template <class G, class P>
cudaError_t launch_adam(const adam_step_scalars& k, const void* table, std::size_t chunk_offset,
                        std::size_t chunks, cudaStream_t stream) {
  const auto* base = static_cast<const unsigned char*>(table);
  adam_chunks_kernel<G, P><<<static_cast<unsigned>(chunks), device_threads, 0, stream>>>(
      k, reinterpret_cast<const device_adam_tensor<G, P>*>(base),
      reinterpret_cast<const device_chunk*>(base + chunk_offset));
  return cudaGetLastError();
}

template <class G>
cudaError_t launch_grad_stats(float multiplier, const void* table, std::size_t chunk_offset,
                              std::size_t chunks, grad_stats* partial, grad_stats* out,
                              cudaStream_t stream) {
  const auto* base = static_cast<const unsigned char*>(table);
  grad_stats_chunks_kernel<G><<<static_cast<unsigned>(chunks), device_threads, 0, stream>>>(
      multiplier, reinterpret_cast<const device_grad_tensor<G>*>(base),
      reinterpret_cast<const device_chunk*>(base + chunk_offset), partial);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  grad_stats_final_kernel<device_threads><<<1, device_threads, 0, stream>>>(partial, chunks, out);
  return cudaGetLastError();
}

inline void check_multiplier(float multiplier, grad_stats* out, const char* who) {
  if (!std::isfinite(multiplier))
    throw config_error(std::string(who) + ": multiplier = " + std::to_string(multiplier) +
                       " (must be finite; it is usually 1 / loss_scale)");
  if (!out) throw config_error(std::string(who) + ": out is null (it must point to a grad_stats)");
}

}  // namespace detail

// ---- adam ---------------------------------------------------------------------------------------

template <class G, class P>
void adam_update_device(const adam_step_scalars& k,
                        std::span<const device_adam_tensor<G, P>> tensors, cudaStream_t stream) {
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, bf16> || std::is_same_v<G, f16>,
                "adam_update_device: gradients are float, bf16 or f16");
  static_assert(std::is_same_v<P, no_copy> || std::is_same_v<P, float> ||
                    std::is_same_v<P, bf16> || std::is_same_v<P, f16>,
                "adam_update_device: the parameter copy is no_copy, float, bf16 or f16");
  const char* who = "adam_update_device";
  const detail::device_table table = detail::make_device_table(tensors, who);
  if (table.chunks == 0) return;
  void* device = nullptr;
  check_cuda(cudaMallocAsync(&device, table.bytes.size(), stream),
             std::string(who) + ": cudaMallocAsync of " + format_bytes(table.bytes.size()) +
                 " for the chunk table");
  // From pageable memory, cudaMemcpyAsync has copied the source by the time it returns, so
  // `table` may go when this function does.
  cudaError_t status = cudaMemcpyAsync(device, table.bytes.data(), table.bytes.size(),
                                       cudaMemcpyHostToDevice, stream);
  if (status == cudaSuccess)
    status = detail::launch_adam<G, P>(k, device, table.chunk_offset, table.chunks, stream);
  cudaFreeAsync(device, stream);  // after the kernel, in stream order
  check_cuda(status, std::string(who) + ": " + std::to_string(tensors.size()) + " tensors, " +
                         std::to_string(table.chunks) + " chunks");
}

template <class G, class P>
device_adam_batch<G, P>::device_adam_batch(std::span<const device_adam_tensor<G, P>> tensors) {
  const char* who = "device_adam_batch";
  const detail::device_table table = detail::make_device_table(tensors, who);
  tensors_ = tensors.size();
  elements_ = table.elements;
  chunks_ = table.chunks;
  chunk_offset_ = table.chunk_offset;
  if (chunks_ == 0) return;
  check_cuda(cudaMalloc(&table_, table.bytes.size()),
             std::string(who) + ": cudaMalloc of " + format_bytes(table.bytes.size()) +
                 " for the chunk table");
  const cudaError_t status =
      cudaMemcpy(table_, table.bytes.data(), table.bytes.size(), cudaMemcpyHostToDevice);
  if (status != cudaSuccess) {
    cudaFree(table_);
    table_ = nullptr;
    check_cuda(status, std::string(who) + ": upload of the chunk table");
  }
}

template <class G, class P>
device_adam_batch<G, P>::~device_adam_batch() {
  if (table_) cudaFree(table_);
}

template <class G, class P>
device_adam_batch<G, P>::device_adam_batch(device_adam_batch&& o) noexcept
    : table_(std::exchange(o.table_, nullptr)), tensors_(o.tensors_), elements_(o.elements_),
      chunks_(std::exchange(o.chunks_, 0)), chunk_offset_(o.chunk_offset_) {}

template <class G, class P>
device_adam_batch<G, P>& device_adam_batch<G, P>::operator=(device_adam_batch&& o) noexcept {
  if (this != &o) {
    if (table_) cudaFree(table_);
    table_ = std::exchange(o.table_, nullptr);
    tensors_ = o.tensors_;
    elements_ = o.elements_;
    chunks_ = std::exchange(o.chunks_, 0);
    chunk_offset_ = o.chunk_offset_;
  }
  return *this;
}

template <class G, class P>
void device_adam_batch<G, P>::step(const adam_step_scalars& k, cudaStream_t stream) const {
  if (chunks_ == 0) return;
  check_cuda(detail::launch_adam<G, P>(k, table_, chunk_offset_, chunks_, stream),
             "device_adam_batch::step: " + std::to_string(tensors_) + " tensors, " +
                 std::to_string(chunks_) + " chunks");
}

// ---- gradient statistics -----------------------------------------------------------------------

template <class G>
void measure_gradients_device(std::span<const device_grad_tensor<G>> tensors, float multiplier,
                              grad_stats* out, cudaStream_t stream) {
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, bf16> || std::is_same_v<G, f16>,
                "measure_gradients_device: gradients are float, bf16 or f16");
  const char* who = "measure_gradients_device";
  detail::check_multiplier(multiplier, out, who);
  const detail::device_table table = detail::make_device_table(tensors, who);
  if (table.chunks == 0) {
    check_cuda(cudaMemsetAsync(out, 0, sizeof(grad_stats), stream),
               std::string(who) + ": zeroing the result of an empty list");
    return;
  }
  const std::size_t partial_offset = detail::round_up_16(table.bytes.size());
  const std::size_t bytes = partial_offset + table.chunks * sizeof(grad_stats);
  void* device = nullptr;
  check_cuda(cudaMallocAsync(&device, bytes, stream),
             std::string(who) + ": cudaMallocAsync of " + format_bytes(bytes) +
                 " for the chunk table and partial sums");
  cudaError_t status = cudaMemcpyAsync(device, table.bytes.data(), table.bytes.size(),
                                       cudaMemcpyHostToDevice, stream);
  if (status == cudaSuccess)
    status = detail::launch_grad_stats<G>(
        multiplier, device, table.chunk_offset, table.chunks,
        reinterpret_cast<grad_stats*>(static_cast<unsigned char*>(device) + partial_offset), out,
        stream);
  cudaFreeAsync(device, stream);
  check_cuda(status, std::string(who) + ": " + std::to_string(tensors.size()) + " tensors, " +
                         std::to_string(table.chunks) + " chunks");
}

template <class G>
device_grad_batch<G>::device_grad_batch(std::span<const device_grad_tensor<G>> tensors) {
  const char* who = "device_grad_batch";
  const detail::device_table table = detail::make_device_table(tensors, who);
  tensors_ = tensors.size();
  chunks_ = table.chunks;
  chunk_offset_ = table.chunk_offset;
  if (chunks_ == 0) return;
  partial_offset_ = detail::round_up_16(table.bytes.size());
  const std::size_t bytes = partial_offset_ + chunks_ * sizeof(grad_stats);
  check_cuda(cudaMalloc(&table_, bytes),
             std::string(who) + ": cudaMalloc of " + format_bytes(bytes) +
                 " for the chunk table and partial sums");
  const cudaError_t status =
      cudaMemcpy(table_, table.bytes.data(), table.bytes.size(), cudaMemcpyHostToDevice);
  if (status != cudaSuccess) {
    cudaFree(table_);
    table_ = nullptr;
    check_cuda(status, std::string(who) + ": upload of the chunk table");
  }
}

template <class G>
device_grad_batch<G>::~device_grad_batch() {
  if (table_) cudaFree(table_);
}

template <class G>
device_grad_batch<G>::device_grad_batch(device_grad_batch&& o) noexcept
    : table_(std::exchange(o.table_, nullptr)), tensors_(o.tensors_),
      chunks_(std::exchange(o.chunks_, 0)), chunk_offset_(o.chunk_offset_),
      partial_offset_(o.partial_offset_) {}

template <class G>
device_grad_batch<G>& device_grad_batch<G>::operator=(device_grad_batch&& o) noexcept {
  if (this != &o) {
    if (table_) cudaFree(table_);
    table_ = std::exchange(o.table_, nullptr);
    tensors_ = o.tensors_;
    chunks_ = std::exchange(o.chunks_, 0);
    chunk_offset_ = o.chunk_offset_;
    partial_offset_ = o.partial_offset_;
  }
  return *this;
}

template <class G>
void device_grad_batch<G>::measure(float multiplier, grad_stats* out, cudaStream_t stream) const {
  const char* who = "device_grad_batch::measure";
  detail::check_multiplier(multiplier, out, who);
  if (chunks_ == 0) {
    check_cuda(cudaMemsetAsync(out, 0, sizeof(grad_stats), stream),
               std::string(who) + ": zeroing the result of an empty list");
    return;
  }
  auto* partial =
      reinterpret_cast<grad_stats*>(static_cast<unsigned char*>(table_) + partial_offset_);
  check_cuda(detail::launch_grad_stats<G>(multiplier, table_, chunk_offset_, chunks_, partial,
                                          out, stream),
             std::string(who) + ": " + std::to_string(tensors_) + " tensors, " +
                 std::to_string(chunks_) + " chunks");
}

}  // namespace optim
STRATA_NAMESPACE_END
