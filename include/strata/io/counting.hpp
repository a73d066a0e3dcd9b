// strata/io/counting.hpp — an engine wrapper that counts the bytes it moves.
//
// What lives here: io::counting, which passes every call to the engine it wraps and adds the
// bytes of each successful read and write to two counters (readable from any thread). Put
// around the context's engine (context_config::wrap_io_engine), it tells what a step really
// read from and wrote to the NVMe tier — the numbers the planner's IO model must match and the
// capacity benchmark's IO bound divides. What does not: failing on purpose (io/faulty.hpp).
#pragma once

#include <strata/io/engine.hpp>

#include <atomic>
#include <cstdint>
#include <memory>

STRATA_NAMESPACE_BEGIN
namespace io {

class counting : public engine {
public:
  explicit counting(std::unique_ptr<engine> inner) : inner_(std::move(inner)) {}
  const char* name() const noexcept override { return inner_->name(); }
  void read(const file& f, void* dst, std::size_t bytes, std::uint64_t offset) override {
    inner_->read(f, dst, bytes, offset);
    read_ += bytes;
  }
  void write(const file& f, const void* src, std::size_t bytes, std::uint64_t offset) override {
    inner_->write(f, src, bytes, offset);
    written_ += bytes;
  }
  bool register_buffers(std::span<const iovec> buffers) override {
    return inner_->register_buffers(buffers);
  }
  void unregister_buffers() noexcept override { inner_->unregister_buffers(); }

  std::uint64_t read_bytes() const noexcept { return read_.load(); }
  std::uint64_t written_bytes() const noexcept { return written_.load(); }

private:
  std::unique_ptr<engine> inner_;
  std::atomic<std::uint64_t> read_{0}, written_{0};
};

}  // namespace io
STRATA_NAMESPACE_END
