// The fused device Adam (optim/device_adam.cuh) on a real GPU: bitwise equal to the host
// scalar adam_update for every gradient type x copy type, over many tensors of odd sizes in one
// launch (aligned ones take the vector path, offset ones the scalar path), 20 steps of AdamW and
// of Adam-L2 without bias correction, through adam_update_device and device_adam_batch alike.
// And the device gradient statistics against the host's measure_gradient: the same Inf/NaN
// count, the sum of squares within the bound grad_stats.hpp states, the same bits run to run.
// Skips (exit 77) without a GPU.
#include "cuda_test.hpp"

#include <strata/optim/adam.hpp>
#include <strata/optim/device_adam.cuh>
#include <strata/optim/grad_stats.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

using namespace strata;

namespace {

/// n elements of T in device memory, `offset` elements past a cudaMalloc'd (256-byte aligned)
/// start, so offset 1 makes every vector access misaligned.
template <class T>
class device_array {
public:
  device_array(std::size_t n, std::size_t offset) : n_(n) {
    check_cuda(cudaMalloc(&base_, (n + offset + 1) * sizeof(T)), "test cudaMalloc");
    data_ = static_cast<T*>(base_) + offset;
  }
  ~device_array() { cudaFree(base_); }
  device_array(const device_array&) = delete;
  device_array(device_array&& o) noexcept : base_(o.base_), data_(o.data_), n_(o.n_) {
    o.base_ = nullptr;
  }
  T* data() const { return data_; }
  void upload(const std::vector<T>& v) {
    check_cuda(cudaMemcpy(data_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    check_cuda(cudaMemcpy(v.data(), data_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
  }

private:
  void* base_ = nullptr;
  T* data_ = nullptr;
  std::size_t n_ = 0;
};

template <class T>
T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return T{x};
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class G>
std::vector<G> random_gradient(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exp10(-5, 2);
  std::vector<G> v(n);
  for (auto& x : v) x = from_float<G>(mant(rng) * std::pow(10.0f, static_cast<float>(exp10(rng))));
  return v;
}

// Sizes around the chunk (32768) and vector (4) boundaries, tiny ones and an empty one.
const std::size_t tensor_sizes[] = {1, 2, 3, 5, 31, 257, 4097, 32767, 32768, 32769,
                                    65541, 100003, 0, 7, 70001};

template <class G, class P>
void adam_matches_host(bool adamw) {
  constexpr bool has_copy = !std::is_same_v<P, optim::no_copy>;
  using copy_t = std::conditional_t<has_copy, P, float>;  // storage type for the test's arrays
  std::mt19937 rng(adamw ? 11 : 12);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);

  struct tensor {
    std::size_t n;
    device_array<float> p, m, v;
    device_array<G> g;
    device_array<copy_t> c;
    std::vector<float> hp, hm, hv;
    std::vector<copy_t> hc;
  };
  std::vector<tensor> ts;
  for (std::size_t i = 0; i < std::size(tensor_sizes); ++i) {
    const std::size_t n = tensor_sizes[i];
    const std::size_t off = i % 3 == 2 ? 1 : 0;  // every third tensor misaligned
    tensor t{n, {n, off}, {n, off}, {n, off}, {n, off}, {n, off}, {}, {}, {}, {}};
    t.hp.resize(n), t.hm.resize(n), t.hv.resize(n), t.hc.assign(n, copy_t{});
    for (std::size_t j = 0; j < n; ++j) {
      t.hp[j] = uni(rng);
      t.hm[j] = 0.01f * uni(rng);
      t.hv[j] = 1e-4f * std::abs(uni(rng));
    }
    t.p.upload(t.hp), t.m.upload(t.hm), t.v.upload(t.hv), t.c.upload(t.hc);
    ts.push_back(std::move(t));
  }
  std::vector<optim::device_adam_tensor<G, P>> list;
  for (auto& t : ts) {
    optim::device_adam_tensor<G, P> d;
    d.master = t.p.data(), d.m = t.m.data(), d.v = t.v.data(), d.grad = t.g.data(), d.n = t.n;
    if constexpr (has_copy) d.copy = t.c.data();
    list.push_back(d);
  }
  const std::span<const optim::device_adam_tensor<G, P>> span(list);
  optim::device_adam_batch<G, P> batch(span);

  optim::adam_params h;
  h.lr = 3e-3f;
  h.weight_decay = 0.05f;
  h.mode = adamw ? optim::weight_decay_mode::decoupled : optim::weight_decay_mode::l2;
  h.bias_correction = adamw;
  const std::vector<float> initial = ts[11].hp;
  int mismatched_steps = 0;
  for (std::uint64_t step = 1; step <= 20; ++step) {
    const float s = (1.0f / 1024.0f) * (step % 3 == 0 ? 0.37f : 1.0f);  // unscale, sometimes clip
    const auto k = optim::adam_step_scalars::make(h, step, s);
    std::vector<std::vector<G>> grads;
    for (auto& t : ts) {
      grads.push_back(random_gradient<G>(t.n, rng));
      t.g.upload(grads.back());
    }
    if (step % 2) optim::adam_update_device(k, span, nullptr);
    else batch.step(k, nullptr);
    check_cuda(cudaDeviceSynchronize(), "adam kernel");
    bool ok = true;
    for (std::size_t i = 0; i < ts.size(); ++i) {
      tensor& t = ts[i];
      P* copy = nullptr;
      if constexpr (has_copy) copy = t.hc.data();
      optim::adam_update<G, P>(k, t.hp, t.hm, t.hv, std::span<const G>(grads[i]), copy,
                               optim::simd_level::scalar, 1);
      ok = ok && same_bits(t.p.download(), t.hp) && same_bits(t.m.download(), t.hm) &&
           same_bits(t.v.download(), t.hv);
      if constexpr (has_copy) ok = ok && same_bits(t.c.download(), t.hc);
    }
    if (!ok) ++mismatched_steps;
  }
  if (mismatched_steps)
    std::printf("  G size %zu, P %s, %s: %d of 20 steps differ\n", sizeof(G),
                has_copy ? (std::is_same_v<P, float> ? "float" : "16-bit") : "none",
                adamw ? "AdamW" : "Adam-L2", mismatched_steps);
  GPU_CHECK(mismatched_steps == 0);
  // The run did move the weights (so equality is not that of two untouched arrays).
  GPU_CHECK(ts[11].hp != initial);
}

template <class G>
void all_copy_types() {
  for (bool adamw : {true, false}) {
    adam_matches_host<G, optim::no_copy>(adamw);
    adam_matches_host<G, float>(adamw);
    adam_matches_host<G, bf16>(adamw);
    adam_matches_host<G, f16>(adamw);
  }
}

template <class G>
G special(int which) {
  const float v[] = {std::numeric_limits<float>::infinity(),
                     -std::numeric_limits<float>::infinity(),
                     std::numeric_limits<float>::quiet_NaN()};
  if constexpr (std::is_same_v<G, float>) return v[which];
  else return G{v[which]};
}

template <class G>
void stats_match_host() {
  std::mt19937 rng(5);
  std::vector<device_array<G>> arrays;
  std::vector<std::vector<G>> host;
  std::vector<optim::device_grad_tensor<G>> list;
  std::uint64_t injected = 0;
  std::size_t total = 0;
  for (std::size_t i = 0; i < std::size(tensor_sizes); ++i) {
    const std::size_t n = tensor_sizes[i];
    auto g = random_gradient<G>(n, rng);
    for (std::size_t j = 3; j < n; j += 20011) g[j] = special<G>(static_cast<int>(injected++ % 3));
    arrays.emplace_back(n, i % 2);
    arrays.back().upload(g);
    host.push_back(std::move(g));
    list.push_back({arrays.back().data(), n});
    total += n;
  }
  const float mult = 1.0f / 512.0f;
  optim::grad_stats want;
  for (auto& g : host) want += optim::measure_gradient(std::span<const G>(g), mult);

  device_array<optim::grad_stats> out(3, 0);
  const std::span<const optim::device_grad_tensor<G>> span(list);
  optim::measure_gradients_device(span, mult, out.data(), nullptr);
  optim::device_grad_batch<G> batch(span);
  batch.measure(mult, out.data() + 1, nullptr);
  batch.measure(mult, out.data() + 2, nullptr);
  const auto got = out.download();
  // Both sums are within (n / 8 + 16) * 2^-53 of the exact one (the device's chains are
  // shorter): twice that bounds their difference.
  const double bound = 2.0 * (static_cast<double>(total) / 8 + 16) * std::ldexp(1.0, -53);
  for (const auto& s : got) {
    GPU_CHECK(s.nonfinite == injected);
    GPU_CHECK(std::abs(s.sum_squares - want.sum_squares) <= bound * want.sum_squares);
  }
  GPU_CHECK(std::memcmp(&got[0], &got[1], sizeof got[0]) == 0);  // deterministic
  GPU_CHECK(std::memcmp(&got[1], &got[2], sizeof got[0]) == 0);
  GPU_CHECK(injected > 3);

  // An empty list measures zero.
  optim::measure_gradients_device(std::span<const optim::device_grad_tensor<G>>(), mult,
                                  out.data(), nullptr);
  const auto zero = out.download();
  GPU_CHECK(zero[0].sum_squares == 0.0 && zero[0].nonfinite == 0);
}

void bad_arguments() {
  optim::device_adam_tensor<float> t;
  t.n = 10;
  std::string message;
  try {
    optim::adam_update_device(optim::adam_step_scalars{},
                              std::span<const optim::device_adam_tensor<float>>(&t, 1), nullptr);
  } catch (const config_error& e) {
    message = e.what();
  }
  GPU_CHECK(message.find("tensor 0") != std::string::npos);
  GPU_CHECK(message.find("master") != std::string::npos);

  bool threw = false;
  try {
    optim::measure_gradients_device(std::span<const optim::device_grad_tensor<float>>(),
                                    std::nanf(""), reinterpret_cast<optim::grad_stats*>(16),
                                    nullptr);
  } catch (const config_error&) {
    threw = true;
  }
  GPU_CHECK(threw);
}

}  // namespace

int main() {
  return cuda_test::run_all({
      {"device adam == host scalar, f32 gradients, every copy type",
       [] { all_copy_types<float>(); }},
      {"device adam == host scalar, bf16 gradients, every copy type",
       [] { all_copy_types<bf16>(); }},
      {"device adam == host scalar, f16 gradients, every copy type", [] { all_copy_types<f16>(); }},
      {"device grad stats == host, f32", [] { stats_match_host<float>(); }},
      {"device grad stats == host, bf16", [] { stats_match_host<bf16>(); }},
      {"device grad stats == host, f16", [] { stats_match_host<f16>(); }},
      {"bad arguments are config_errors", bad_arguments},
  });
}
