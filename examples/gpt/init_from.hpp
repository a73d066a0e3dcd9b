// examples/gpt/init_from.hpp — a run's initial weights from a save_gpt safetensors file.
//
// What this is: initial_weights_from(), which reads a file written by save_gpt or exported from
// a checkpoint (checkpoint_export.hpp) — F32, or F16 / BF16 widened to float — and returns its
// parameters as the trainer's executor layers hold them, ready for executor.set_params(i, ...):
//   [0]        (embed_numel,)  the embed layer: wte, wpe, ln_f.weight, ln_f.bias
//   [1 + l]    (block_numel,)  block l, gpt_config.hpp's block_slots layout ((out, in) weights)
// It refuses a file whose config is not the run's, naming the field, before sizing anything.
// What it is not: a resume. A file holds weights only: the optimizer's moments, its step count
// and the data position start afresh (checkpoint::saver::resume carries those).
#pragma once

#include "gpt_config.hpp"
#include "safetensors.hpp"

#include <strata/core/error.hpp>

#include <string>
#include <vector>

namespace gpt {

/// The parameters in `path` per executor layer (see the top). `expected` is the config of the
/// run they start: the file's (its __metadata__, checked against its tensors by read_gpt_config)
/// must equal it, else config_error naming the file and the first field that differs with both
/// values. format_error / io_error as load_gpt for a malformed or unreadable file.
inline std::vector<std::vector<float>> initial_weights_from(const std::string& path,
                                                            const gpt_config& expected) {
  const safetensors_reader r(path);
  const gpt_config file = read_gpt_config(r);
  const struct {
    const char* name;
    int in_file, in_run;
  } fields[] = {{"vocab", file.vocab, expected.vocab},
                {"context", file.context, expected.context},
                {"layers", file.layers, expected.layers},
                {"heads", file.heads, expected.heads},
                {"width", file.width, expected.width}};
  for (const auto& f : fields)
    if (f.in_file != f.in_run)
      throw strata::config_error("initial weights '" + path + "': the file's " + f.name + " is " +
                                 std::to_string(f.in_file) + ", the run's is " +
                                 std::to_string(f.in_run) + " (the model must be the one saved)");

  std::vector<std::vector<float>> layers;
  layers.reserve(std::size_t(file.layers) + 1);
  layers.emplace_back(embed_numel(file));
  std::vector<float*> blocks;
  for (int l = 0; l < file.layers; ++l) blocks.push_back(layers.emplace_back(block_numel(file)).data());
  read_gpt_params(r, file, layers[0].data(), blocks);
  return layers;
}

}  // namespace gpt
