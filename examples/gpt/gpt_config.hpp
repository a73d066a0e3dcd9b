// examples/gpt/gpt_config.hpp — the mini-GPT's sizes and where every parameter lives.
//
// What this is: the model's hyper-parameters (gpt_config), and the flat layouts of its two
// kinds of parameter arrays — one array per transformer block, one for the embeddings and the
// final layernorm — as lists of named slots (GPT-2's tensor names, shapes, offsets). Everything
// else (kernels, the training loop, the safetensors writer, the strata executor) finds a
// tensor through these slots, so the layout is written down exactly once.
// What it is not: storage. No parameter memory lives here; see host/model.hpp (resident) and
// train.cpp (streamed through strata).
//
// Layout conventions:
//   C = width, V = vocab, T = context, L = layers, NH = heads, hs = C / NH.
//   Linear weights are (out, in) row-major, PyTorch nn.Linear's layout (the transpose of the
//   Conv1D layout in Hugging Face's GPT-2 checkpoints; safetensors.hpp transposes on the way).
//   The LM head has no weight of its own: logits = ln_f(x) · wte^T (tied to the embedding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpt {

struct gpt_config {
  int vocab = 256;    // V: byte-level tokens by default
  int context = 128;  // T: the longest sequence; wpe has one row per position
  int layers = 4;     // L
  int heads = 4;      // NH: must divide width
  int width = 128;    // C

  int head_size() const noexcept { return heads > 0 ? width / heads : 0; }

  /// Throws std::invalid_argument naming the field that cannot work.
  void validate() const {
    auto positive = [](int value, const char* field) {
      if (value <= 0)
        throw std::invalid_argument(std::string("gpt_config: ") + field + " must be > 0, got " +
                                    std::to_string(value));
    };
    positive(vocab, "vocab");
    positive(context, "context");
    positive(layers, "layers");
    positive(heads, "heads");
    positive(width, "width");
    // The slots' shapes are ints and the widest is the MLP's 4C: a larger width would
    // overflow them before any array could be sized.
    constexpr int max_width = std::numeric_limits<int>::max() / 4;
    if (width > max_width)
      throw std::invalid_argument("gpt_config: width must be at most " +
                                  std::to_string(max_width) + " (4 x width is a tensor's size), got " +
                                  std::to_string(width));
    if (width % heads != 0)
      throw std::invalid_argument("gpt_config: width (" + std::to_string(width) +
                                  ") must be a multiple of heads (" + std::to_string(heads) + ")");
  }
};

/// One named tensor inside a flat parameter array.
struct tensor_slot {
  std::string name;        // GPT-2's ("attn.c_attn.weight"; blocks' without the "h.{i}." prefix)
  std::size_t offset = 0;  // in elements, from the start of the flat array
  std::vector<int> shape;  // row-major; weights are (out, in)
  std::size_t numel = 0;
};

namespace detail {
inline void add_slot(std::vector<tensor_slot>& slots, std::size_t& offset, const char* name,
                     std::vector<int> shape) {
  std::size_t n = 1;
  for (int d : shape) n *= static_cast<std::size_t>(d);
  slots.push_back(tensor_slot{name, offset, std::move(shape), n});
  offset += n;
}
}  // namespace detail

/// The slots of one block's flat array, in storage order (the order of block_params below).
inline std::vector<tensor_slot> block_slots(const gpt_config& cfg) {
  const int C = cfg.width;
  std::vector<tensor_slot> s;
  std::size_t off = 0;
  detail::add_slot(s, off, "ln_1.weight", {C});
  detail::add_slot(s, off, "ln_1.bias", {C});
  detail::add_slot(s, off, "attn.c_attn.weight", {3 * C, C});
  detail::add_slot(s, off, "attn.c_attn.bias", {3 * C});
  detail::add_slot(s, off, "attn.c_proj.weight", {C, C});
  detail::add_slot(s, off, "attn.c_proj.bias", {C});
  detail::add_slot(s, off, "ln_2.weight", {C});
  detail::add_slot(s, off, "ln_2.bias", {C});
  detail::add_slot(s, off, "mlp.c_fc.weight", {4 * C, C});
  detail::add_slot(s, off, "mlp.c_fc.bias", {4 * C});
  detail::add_slot(s, off, "mlp.c_proj.weight", {C, 4 * C});
  detail::add_slot(s, off, "mlp.c_proj.bias", {C});
  return s;
}

/// Elements in one block's flat array: 12 C^2 + 13 C.
inline std::size_t block_numel(const gpt_config& cfg) {
  const std::size_t C = static_cast<std::size_t>(cfg.width);
  return 12 * C * C + 13 * C;
}

/// The slots of the embedding array: wte (V, C), wpe (T, C), ln_f.weight (C), ln_f.bias (C).
inline std::vector<tensor_slot> embed_slots(const gpt_config& cfg) {
  std::vector<tensor_slot> s;
  std::size_t off = 0;
  detail::add_slot(s, off, "wte.weight", {cfg.vocab, cfg.width});
  detail::add_slot(s, off, "wpe.weight", {cfg.context, cfg.width});
  detail::add_slot(s, off, "ln_f.weight", {cfg.width});
  detail::add_slot(s, off, "ln_f.bias", {cfg.width});
  return s;
}

inline std::size_t embed_numel(const gpt_config& cfg) {
  const std::size_t C = static_cast<std::size_t>(cfg.width);
  return (static_cast<std::size_t>(cfg.vocab) + static_cast<std::size_t>(cfg.context) + 2) * C;
}

/// Every parameter, counted once (the tied head adds none).
inline std::size_t parameter_count(const gpt_config& cfg) {
  return embed_numel(cfg) + static_cast<std::size_t>(cfg.layers) * block_numel(cfg);
}

/// Training FLOPs per token: 6N for the matmuls' forward and backward over all N parameters,
/// plus 12·L·C·T for attention's scores and weighted sums (PaLM appendix B, as llm.c counts it),
/// for sequences of T tokens.
inline double flops_per_token(const gpt_config& cfg, int T) {
  return 6.0 * static_cast<double>(parameter_count(cfg)) +
         12.0 * cfg.layers * static_cast<double>(cfg.width) * T;
}

/// flops_per_token at full context, T = cfg.context.
inline double flops_per_token(const gpt_config& cfg) { return flops_per_token(cfg, cfg.context); }

/// The full GPT-2 name of a block tensor: "h.3.attn.c_attn.weight".
inline std::string block_tensor_name(int layer, const tensor_slot& slot) {
  return "h." + std::to_string(layer) + "." + slot.name;
}

/// The slot called `name` ("mlp.c_fc.weight"); throws std::invalid_argument when absent.
/// The result refers into `slots`, so slots must be a list that outlives it.
inline const tensor_slot& find_slot(const std::vector<tensor_slot>& slots,
                                    const std::string& name) {
  for (const auto& s : slots)
    if (s.name == name) return s;
  throw std::invalid_argument("gpt: no parameter tensor named '" + name + "'");
}
/// find_slot(block_slots(cfg), ...) would return a reference into a temporary that dies at
/// the end of the statement: keep the list in a variable first.
const tensor_slot& find_slot(std::vector<tensor_slot>&&, const std::string&) = delete;

}  // namespace gpt
