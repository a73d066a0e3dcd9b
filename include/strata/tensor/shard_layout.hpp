// strata/tensor/shard_layout.hpp — how a flat tensor is split across ranks: the layout of a
// sharded placement.
//
// A tensor with a sharded placement (sharded_placement<...>, placement.hpp) is one rank's
// contiguous slice of a flat global tensor. Any size works with any world size: the global
// tensor is padded up to a multiple of the world size, every rank's shard has the same length,
// and the padding (zeros, never read by the model) sits at the end of the last shards. ZeRO
// keeps each layer's parameters this way (the layer's tensors back to back). What does not live
// here: moving shards (schedule/executor.hpp) and which tier they live on (the placement).
#pragma once

#include <strata/core/error.hpp>

#include <cstddef>
#include <string>

STRATA_NAMESPACE_BEGIN

class shard_layout {
public:
  shard_layout(std::size_t numel, int world) : numel_(numel), world_(world) {
    if (world < 1) throw config_error("shard_layout: world size must be at least 1");
    const auto w = static_cast<std::size_t>(world);
    shard_ = (numel + w - 1) / w;
    if (shard_ == 0) shard_ = 1;  // an empty buffer still gives every rank a (padding) element
  }

  std::size_t numel() const noexcept { return numel_; }  // real elements
  int world() const noexcept { return world_; }
  std::size_t shard_numel() const noexcept { return shard_; }  // every rank's shard length
  std::size_t padded_numel() const noexcept { return shard_ * static_cast<std::size_t>(world_); }
  /// First element of rank r's shard in the padded buffer.
  std::size_t offset(int r) const noexcept { return shard_ * static_cast<std::size_t>(r); }
  /// Real (not padding) elements in rank r's shard.
  std::size_t valid_in(int r) const noexcept {
    const std::size_t b = offset(r);
    return b >= numel_ ? 0 : (numel_ - b < shard_ ? numel_ - b : shard_);
  }

private:
  std::size_t numel_;
  int world_;
  std::size_t shard_ = 0;
};

/// Which shard of which layout a tensor holds: what a sharded tensor's handle reports, so that
/// a checkpoint or a reshard knows where its bytes sit in the global tensor.
struct shard_spec {
  shard_layout layout;
  int rank;
  /// First global element of this shard, and its real (not padding) elements.
  std::size_t offset() const noexcept { return layout.offset(rank); }
  std::size_t valid() const noexcept { return layout.valid_in(rank); }
};

STRATA_NAMESPACE_END
