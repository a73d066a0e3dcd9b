// tests/checkpoint_test_support.hpp — what the checkpoint tests share: known content for
// checkpoint number n, writing it as one commit, and comparing what a reader loads with it.
// Needs nlohmann/json (the tests that include this guard it with __has_include).
#pragma once

#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/checkpoint/shard_file.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ckpt_test {

using namespace strata;
using namespace strata::checkpoint;

/// Deterministic bytes for (checkpoint n, tensor k): a splitmix64 stream, so two checkpoints
/// never agree by accident.
inline std::vector<std::byte> known_bytes(int n, int k, std::size_t count) {
  std::vector<std::byte> out(count);
  std::uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(n * 131 + k + 1);
  for (std::size_t i = 0; i < count; ++i) {
    if (i % 8 == 0) {
      x += 0x9E3779B97F4A7C15ull;
      std::uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      x = z ^ (z >> 31);
    }
    out[i] = static_cast<std::byte>((x >> (8 * (i % 8))) & 0xFF);
  }
  return out;
}

/// The tensors of checkpoint n: an f32 of 3000 elements (several 4 KiB blocks and a short one),
/// a bf16 of 777 and an i8 of 5.
struct known_tensor {
  const char* name;
  dtype type;
  std::size_t numel;
};
inline const std::vector<known_tensor>& known_tensors() {
  static const std::vector<known_tensor> t{
      {"w.f32", dtype::f32, 3000}, {"m.bf16", dtype::bf16, 777}, {"rng.i8", dtype::i8, 5}};
  return t;
}

inline std::string tag_of(int n) { return "step-" + std::to_string(n); }

/// Writes and commits checkpoint n (world 1) into `root`.
inline void commit_known(checkpoint_root& root, int n, std::uint64_t block_bytes = 4096) {
  pending_checkpoint p = root.begin(tag_of(n));
  manifest head;
  head.step = static_cast<std::uint64_t>(n);
  head.metadata = {{"run", "known"}, {"n", n}};
  shard_writer w(p, head, {.block_bytes = block_bytes});
  int k = 0;
  for (const known_tensor& t : known_tensors()) {
    const auto bytes = known_bytes(n, k++, dtype_bytes_for(t.type, t.numel));
    w.add({.name = t.name, .type = t.type, .numel = t.numel}, bytes);
  }
  w.finish();
  p.commit();
}

/// Loads checkpoint `tag` of `root` and returns the number of bytes that differ from
/// checkpoint n's known content (a missing tensor counts all its bytes).
inline std::size_t differing_bytes(const checkpoint_root& root, const std::string& tag, int n) {
  checkpoint_reader r(root, tag);
  std::size_t differ = 0;
  int k = 0;
  for (const known_tensor& t : known_tensors()) {
    const auto want = known_bytes(n, k++, dtype_bytes_for(t.type, t.numel));
    const tensor_entry* e = r.of_rank(0).find(t.name);
    if (!e || e->bytes != want.size()) {
      differ += want.size();
      continue;
    }
    std::vector<std::byte> got(want.size());
    r.read(*e, got);
    for (std::size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
  }
  if (r.of_rank(0).step != static_cast<std::uint64_t>(n)) ++differ;
  return differ;
}

/// True when `msg` contains `part` (error-message checks: INFO the message at the call site).
inline bool mentions(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

}  // namespace ckpt_test
