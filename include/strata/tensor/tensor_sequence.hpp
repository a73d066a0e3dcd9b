// strata/tensor/tensor_sequence.hpp — tensors walked in order, forward and backward, with
// lookahead prefetch: a model's layers.
//
// A sequence owns its tensors and a ring of Depth+1 buffers on the compute tier, each as large
// as the largest element. Walking it, element i is leased in one ring buffer while elements
// i+1 .. i+Depth are being fetched into the others; when i's lease ends (written back first if
// the walk is read_write), its buffer takes element i+Depth+1. So the compute tier never holds
// more than Depth+1 elements, whatever the sequence's length, and the fetch of the next
// elements overlaps the compute on this one. Each element's compute is recorded as a span.
// With prefetch::none the ring has one buffer and every fetch happens on demand.
#pragma once

#include <strata/exec/buffer_ring.hpp>
#include <strata/tensor/tiered_tensor.hpp>

#include <algorithm>
#include <deque>
#include <string>

STRATA_NAMESPACE_BEGIN

template <class T, class Placement, class Prefetch = prefetch::lookahead<1>>
class tensor_sequence {
public:
  using tensor_type = tiered_tensor<T, Placement, Prefetch>;
  using compute_tier = typename Placement::compute_tier;
  static constexpr std::size_t depth = Prefetch::depth;
  static constexpr bool staged = Placement::tier_count > 1;

  explicit tensor_sequence(context& ctx) : ctx_(&ctx) {}
  tensor_sequence(tensor_sequence&&) noexcept = default;
  tensor_sequence& operator=(tensor_sequence&&) = delete;

  tensor_type& emplace_back(std::string name, shape s) {
    items_.emplace_back(*ctx_, std::move(name), s);
    return items_.back();
  }
  void push_back(tensor_type&& t) { items_.push_back(std::move(t)); }

  std::size_t size() const noexcept { return items_.size(); }
  tensor_type& operator[](std::size_t i) { return items_[i]; }
  const tensor_type& operator[](std::size_t i) const { return items_[i]; }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }

  /// Bytes the walk keeps on the compute tier: min(Depth+1, size) x the largest element.
  std::size_t ring_bytes() const noexcept {
    if constexpr (!staged) return 0;
    return ring_slots() * largest_bytes();
  }

  /// Calls f(i, view) for i = 0 .. size-1 with element i leased on the compute tier.
  template <class F>
  void forward(F&& f) {
    walk<false, false>(f);
  }
  template <class F>
  void forward(read_write_t, F&& f) {
    walk<false, true>(f);
  }
  /// Calls f(i, view) for i = size-1 .. 0.
  template <class F>
  void backward(F&& f) {
    walk<true, false>(f);
  }
  template <class F>
  void backward(read_write_t, F&& f) {
    walk<true, true>(f);
  }

private:
  template <bool Backward, bool Write, class F>
  void walk(F& f) {
    using elem = std::conditional_t<Write, T, const T>;
    const std::size_t n = items_.size();
    auto index = [&](std::size_t p) { return Backward ? n - 1 - p : p; };
    if constexpr (staged) ensure_ring();
    std::vector<std::size_t> in_flight;  // positions fetched into the ring, not yet leased
    auto issue = [&](std::size_t p) {
      if constexpr (staged) {
        tensor_ref t = items_[index(p)].ref();
        if (t.holds(compute_tier::id)) return;  // already on the compute tier in its own memory
        const std::size_t r = p % ring_.size();
        t.fetch_into(compute_tier::id, ring_.data(r), ring_.take_uses(r));
        in_flight.push_back(p);
      }
    };
    auto give_back = [&](std::size_t p) {
      if constexpr (staged) {
        ring_.add_uses(p % ring_.size(), items_[index(p)].ref().take_last_use(compute_tier::id));
      }
    };
    try {
      for (std::size_t p = 0; p < std::min(n, depth + 1); ++p) issue(p);
      for (std::size_t p = 0; p < n; ++p) {
        if (p > 0 && p + depth < n) issue(p + depth);
        const std::size_t i = index(p);
        {
          auto l = items_[i].ref().template acquire<elem, compute_tier>();
          std::erase(in_flight, p);
          ctx_->compute("compute " + items_[i].name(), [&] { f(i, l.view()); });
        }
        give_back(p);
      }
    } catch (...) {
      // Prefetched elements borrow ring memory: drop them before anyone reuses the ring.
      for (std::size_t p : in_flight) {
        items_[index(p)].ref().evict(compute_tier::id);
        give_back(p);
      }
      throw;
    }
  }

  std::size_t ring_slots() const noexcept { return std::min(depth + 1, items_.size()); }
  std::size_t largest_bytes() const noexcept {
    std::size_t m = 0;
    for (auto& t : items_) m = std::max(m, t.size_bytes());
    return m;
  }

  // (Re)allocates the ring when the sequence has grown past it.
  void ensure_ring() {
    const std::size_t largest = largest_bytes(), slots = ring_slots();
    if (ring_.size() == slots && ring_.slot_bytes() >= largest) return;
    ring_ = buffer_ring();  // the old buffers go back (after their pending uses) first
    ring_ = buffer_ring(*ctx_, compute_tier::id, slots, largest, "sequence ring buffer");
  }

  context* ctx_;
  std::deque<tensor_type> items_;  // deque: references stay valid as the sequence grows
  buffer_ring ring_;  // min(Depth+1, size) buffers on the compute tier
};

STRATA_NAMESPACE_END
