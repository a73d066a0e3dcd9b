// strata/memory/buffer.hpp — an owned block of bytes on one tier, returned on destruction.
//
// The only way tensors hold memory: a buffer remembers the resource it came from (a pooled,
// budgeted resource of the context), so freeing it gives the bytes back to the right pool and
// budget from any thread — a write-back queue may be the one that drops it.
#pragma once

#include <strata/memory/resource.hpp>

#include <utility>

STRATA_NAMESPACE_BEGIN

class buffer {
public:
  buffer() = default;
  buffer(memory_resource& from, std::size_t bytes, std::size_t alignment, std::string_view what)
      : ptr_(from.allocate(bytes, alignment, what)), bytes_(bytes), alignment_(alignment),
        from_(&from) {}
  buffer(buffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)),
        alignment_(o.alignment_), from_(std::exchange(o.from_, nullptr)) {}
  buffer& operator=(buffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
      alignment_ = o.alignment_;
      from_ = std::exchange(o.from_, nullptr);
    }
    return *this;
  }
  ~buffer() { reset(); }

  void reset() noexcept {
    if (ptr_) from_->deallocate(ptr_, bytes_, alignment_);
    ptr_ = nullptr;
    bytes_ = 0;
    from_ = nullptr;
  }

  void* data() const noexcept { return ptr_; }
  std::size_t size() const noexcept { return bytes_; }
  tier_id tier() const noexcept { return from_ ? from_->tier() : tier_id::host; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
  std::size_t alignment_ = 1;
  memory_resource* from_ = nullptr;
};

STRATA_NAMESPACE_END
