// examples/gpt/stored_block.hpp — one transformer block as the inference path stores it: its
// tensors packed into one run of bytes, the four matrices in a weight format of choice.
//
// What this is: the weight formats (f32, bf16, f16, and 4-bit groups: strata/core/quant.hpp),
// the layout of a stored block (which tensor sits at which byte offset, in which format), the
// packing of a block's flat float array (gpt_config.hpp's block_slots) into those bytes and
// back, and weight_view, through which a matmul reads a stored matrix a few rows at a time.
// A stored block is what infer::layer_stream moves: one layer, one transfer.
// What it is not: the matmul (host/stored_matmul.hpp) or the decoder (decoder.hpp).
//
// Layout: the f32 format is exactly the training layout (block_slots' offsets x 4 bytes), so a
// resident f32 model needs no second copy. The others keep the vectors (layernorms, biases) in
// f32 — they are 13 C of 12 C^2 + 13 C values, and their precision matters more — and store the
// matrices (out, in) in the format, every tensor starting on a 64-byte boundary. 4-bit groups
// run along the input dimension (a matrix's rows), as FlexGen and ZeRO-Inference group them.
#pragma once

#include "gpt_config.hpp"

#include <strata/core/dtype.hpp>
#include <strata/core/quant.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpt {

enum class weight_format : std::uint8_t { f32, bf16, f16, q4 };

/// As the command line and the files write it: "f32", "bf16", "f16", "4bit".
inline const char* format_name(weight_format f) {
  switch (f) {
    case weight_format::f32: return "f32";
    case weight_format::bf16: return "bf16";
    case weight_format::f16: return "f16";
    case weight_format::q4: return "4bit";
  }
  return "?";
}

/// "none" and "f32" mean f32; "4bit" and "q4" the 4-bit groups. std::invalid_argument otherwise.
inline weight_format parse_weight_format(const std::string& s) {
  if (s == "none" || s == "f32") return weight_format::f32;
  if (s == "bf16") return weight_format::bf16;
  if (s == "f16") return weight_format::f16;
  if (s == "4bit" || s == "q4") return weight_format::q4;
  throw std::invalid_argument("weight format '" + s + "': expected none (f32), bf16, f16 or 4bit");
}

/// Bytes of a (rows, cols) matrix in format f.
inline std::size_t matrix_bytes(weight_format f, std::size_t rows, std::size_t cols) {
  switch (f) {
    case weight_format::f32: return rows * cols * 4;
    case weight_format::bf16:
    case weight_format::f16: return rows * cols * 2;
    case weight_format::q4: return strata::q4_bytes_for(rows, cols);
  }
  return 0;
}

/// One tensor of a stored block: where its bytes are and how to read them. Vectors have one
/// row.
struct stored_tensor {
  std::string name;
  weight_format format = weight_format::f32;
  std::size_t offset = 0, bytes = 0;  // in the block's bytes
  int rows = 1, cols = 0;
  std::size_t slot_offset = 0;        // in the flat float array (block_slots)
};

struct block_layout {
  weight_format format = weight_format::f32;
  std::vector<stored_tensor> tensors;  // in block_slots order
  std::size_t bytes = 0;

  const stored_tensor& find(const std::string& name) const {
    for (const stored_tensor& t : tensors)
      if (t.name == name) return t;
    throw std::invalid_argument("stored block: no tensor named '" + name + "'");
  }
};

inline block_layout make_block_layout(const gpt_config& cfg, weight_format f) {
  block_layout b;
  b.format = f;
  for (const tensor_slot& s : block_slots(cfg)) {
    stored_tensor t;
    t.name = s.name;
    t.slot_offset = s.offset;
    const bool matrix = s.shape.size() == 2;
    t.rows = matrix ? s.shape[0] : 1;
    t.cols = matrix ? s.shape[1] : s.shape[0];
    t.format = matrix ? f : weight_format::f32;
    t.bytes = matrix_bytes(t.format, std::size_t(t.rows), std::size_t(t.cols));
    // f32: the training layout itself; otherwise every tensor on a 64-byte boundary.
    t.offset = f == weight_format::f32 ? s.offset * 4 : (b.bytes + 63) / 64 * 64;
    b.bytes = t.offset + t.bytes;
    b.tensors.push_back(std::move(t));
  }
  return b;
}

/// Packs a block's flat array (block_numel floats) into `out` (layout.bytes bytes). Gaps
/// between tensors are zeros, so equal weights pack to equal bytes. 4-bit quantisation refuses
/// a non-finite or out-of-range value with a config_error naming the element.
inline void pack_block(const block_layout& layout, std::span<const float> flat,
                       std::span<std::byte> out) {
  if (out.size() != layout.bytes)
    throw std::invalid_argument("pack_block: " + std::to_string(out.size()) +
                                " bytes for a stored block of " + std::to_string(layout.bytes));
  std::memset(out.data(), 0, out.size());
  for (const stored_tensor& t : layout.tensors) {
    const float* src = flat.data() + t.slot_offset;
    std::byte* dst = out.data() + t.offset;
    const std::size_t n = std::size_t(t.rows) * std::size_t(t.cols);
    switch (t.format) {
      case weight_format::f32: std::memcpy(dst, src, n * 4); break;
      case weight_format::bf16: strata::convert(src, reinterpret_cast<strata::bf16*>(dst), n); break;
      case weight_format::f16: strata::convert(src, reinterpret_cast<strata::f16*>(dst), n); break;
      case weight_format::q4:
        strata::quantize_q4_rows(src, std::size_t(t.rows), std::size_t(t.cols),
                                 reinterpret_cast<strata::q4_group*>(dst));
        break;
    }
  }
}

/// A stored matrix (rows, cols) as a matmul reads it.
struct weight_view {
  weight_format format = weight_format::f32;
  const std::byte* data = nullptr;
  int rows = 0, cols = 0;

  /// Rows [r0, r0 + n) as floats, row-major, into dst (n x cols): exact for f32/bf16/f16, the
  /// 4-bit groups' dequantised values otherwise (strata::dequantize_q4_rows).
  void rows_to_f32(int r0, int n, float* dst) const {
    const std::size_t c = std::size_t(cols), first = std::size_t(r0) * c, count = std::size_t(n) * c;
    switch (format) {
      case weight_format::f32:
        std::memcpy(dst, reinterpret_cast<const float*>(data) + first, count * 4);
        break;
      case weight_format::bf16:
        strata::convert(reinterpret_cast<const strata::bf16*>(data) + first, dst, count);
        break;
      case weight_format::f16:
        strata::convert(reinterpret_cast<const strata::f16*>(data) + first, dst, count);
        break;
      case weight_format::q4:
        strata::dequantize_q4_rows(reinterpret_cast<const strata::q4_group*>(data) +
                                       std::size_t(r0) * strata::q4_groups_for(c),
                                   std::size_t(n), c, dst);
        break;
    }
  }
  /// For f32 only: the rows in place (no copy needed).
  const float* f32_rows(int r0) const {
    return reinterpret_cast<const float*>(data) + std::size_t(r0) * std::size_t(cols);
  }
};

inline weight_view view_of(const stored_tensor& t, const std::byte* block) {
  return {t.format, block + t.offset, t.rows, t.cols};
}

/// The block's flat array back from its stored bytes (4-bit values dequantised): what a model
/// with these weights computes with, for evaluating a format's accuracy.
inline void unpack_block(const block_layout& layout, const std::byte* block,
                         std::span<float> flat) {
  for (const stored_tensor& t : layout.tensors)
    view_of(t, block).rows_to_f32(0, t.rows, flat.data() + t.slot_offset);
}

}  // namespace gpt
