// strata/exec/buffer_ring.hpp — a fixed set of same-size buffers on one tier, reused in turn.
//
// Walking layers with lookahead needs a few buffers on the compute tier that are lent to one
// element after another: a fetch into slot k must wait until the copies and compute still using
// k's previous element are done. A buffer_ring holds the buffers (allocated once, so the memory
// plan can count them) and, per slot, the events after which it may be reused. On destruction
// each buffer is retired after its pending uses, never freed under a running copy.
#pragma once

#include <strata/exec/context.hpp>

#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN

class buffer_ring {
public:
  buffer_ring() = default;
  /// `count` buffers of `bytes` on `tier`, named "<what> <k>" in budget errors.
  buffer_ring(context& ctx, tier_id tier, std::size_t count, std::size_t bytes,
              const std::string& what)
      : ctx_(&ctx), uses_(count) {
    for (std::size_t k = 0; k < count; ++k)
      buffers_.push_back(ctx.allocate(tier, bytes, what + " " + std::to_string(k)));
  }
  buffer_ring(buffer_ring&& o) noexcept = default;
  buffer_ring& operator=(buffer_ring&& o) noexcept {
    if (this != &o) {
      release();
      ctx_ = o.ctx_;
      buffers_ = std::move(o.buffers_);
      uses_ = std::move(o.uses_);
    }
    return *this;
  }
  buffer_ring(const buffer_ring&) = delete;
  buffer_ring& operator=(const buffer_ring&) = delete;
  ~buffer_ring() { release(); }

  std::size_t size() const noexcept { return buffers_.size(); }
  bool empty() const noexcept { return buffers_.empty(); }
  std::size_t slot_bytes() const noexcept { return buffers_.empty() ? 0 : buffers_[0].size(); }
  void* data(std::size_t k) const noexcept { return buffers_[k].data(); }

  /// Slot k is in use until `e` completes (a copy reading or writing it, the compute on it).
  void add_use(std::size_t k, event e) { uses_[k].push_back(std::move(e)); }
  void add_uses(std::size_t k, const std::vector<event>& es) {
    uses_[k].insert(uses_[k].end(), es.begin(), es.end());
  }
  /// The events slot k's next user must wait for; the slot's list is emptied (handed over).
  std::vector<event> take_uses(std::size_t k) { return std::exchange(uses_[k], {}); }
  /// Blocks until slot k is free.
  void wait_free(std::size_t k) {
    for (auto& e : take_uses(k)) e.wait();
  }

private:
  void release() noexcept {
    for (std::size_t k = 0; k < buffers_.size(); ++k)
      ctx_->retire(std::move(buffers_[k]), std::move(uses_[k]));
    buffers_.clear();
    uses_.clear();
  }

  context* ctx_ = nullptr;
  std::vector<buffer> buffers_;
  std::vector<std::vector<event>> uses_;
};

STRATA_NAMESPACE_END
