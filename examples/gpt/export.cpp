// examples/gpt/export.cpp — gpt_export: a gpt_train checkpoint as one safetensors file.
//
// What this is: opens a committed checkpoint of gpt_train (--checkpoint-dir, the tag or its
// `latest`), and writes its fp32 master weights as the file save_gpt writes (GPT-2's names and
// layout, the config in the metadata), which gpt_generate reads and `gpt_train --init-from`
// starts from. Reads one layer at a time (checkpoint_export.hpp), so it needs about one
// layer's memory, not the model's. Prints what it read and wrote.
// What it is not: an export of the optimizer's state, or a converter of other checkpoints.
//
//   gpt_export --checkpoint-dir ckpt --out gpt.safetensors --dtype bf16
//
// Exit codes: 0 written, 1 the checkpoint could not be exported (the message says why),
// 2 bad arguments.
#include "checkpoint_export.hpp"

#include "example_support.hpp"  // examples/common/: option_reader, bad_argument

#include <cstdio>
#include <exception>
#include <string>

namespace {

constexpr const char* usage = R"(usage: gpt_export --checkpoint-dir DIR [options]

Writes the weights of a gpt_train checkpoint as one safetensors file (GPT-2's names and
layout), for gpt_generate or gpt_train --init-from. One layer is in memory at a time.

  --checkpoint-dir DIR  the checkpoint root gpt_train wrote (its --checkpoint-dir)
  --tag TAG             the checkpoint to export (default latest: the one 'latest' names)
  --out FILE            the file to write (default gpt.safetensors); replaced atomically
  --dtype f32|bf16      how the weights are stored (default f32: the master weights exactly)
  --help                this text
)";

struct options {
  std::string checkpoint_dir;
  std::string tag = gpt::latest_checkpoint;
  std::string out = "gpt.safetensors";
  gpt::st_dtype dtype = gpt::st_dtype::f32;
};

using example::bad_argument;

/// Reads the command line (`--flag value` or `--flag=value`). Returns false for --help.
bool parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  while (r.next()) {
    if (r.flag("--help") || r.flag("-h")) return false;
    if (r.is("--checkpoint-dir")) o.checkpoint_dir = r.path();
    else if (r.is("--tag")) {
      o.tag = r.value();
      if (o.tag.empty()) throw bad_argument("--tag expects a checkpoint tag, got ''");
    } else if (r.is("--out")) o.out = r.path();
    else if (r.is("--dtype")) {
      const std::string d = r.value();
      if (d == "f32") o.dtype = gpt::st_dtype::f32;
      else if (d == "bf16") o.dtype = gpt::st_dtype::bf16;
      else throw bad_argument("--dtype expects f32 or bf16, got '" + d + "'");
    } else r.unknown();
  }
  if (o.checkpoint_dir.empty()) throw bad_argument("--checkpoint-dir is required");
  return true;
}

int run(options& opt) {
  const gpt::export_report r =
      gpt::export_checkpoint(opt.checkpoint_dir, opt.tag, opt.out, opt.dtype);
  const gpt::gpt_config& c = r.cfg;
  std::printf("gpt_export: checkpoint %s (tag %s, step %llu, saved by %d rank(s))\n",
              r.checkpoint.c_str(), r.tag.c_str(), static_cast<unsigned long long>(r.step),
              r.saved_world);
  std::printf("model: %d layers, width %d, %d heads, context %d, vocab %d (%.2fM parameters)\n",
              c.layers, c.width, c.heads, c.context, c.vocab,
              double(gpt::parameter_count(c)) / 1e6);
  std::printf("wrote %s: %zu tensors, %llu bytes, %s\n", r.out_path.c_str(), r.tensors,
              static_cast<unsigned long long>(r.file_bytes), gpt::st_dtype_name(r.dtype));
  std::printf("memory: one layer at a time (%zu layers read, a %.2f MiB layer buffer; "
              "%.2f MiB read from the checkpoint's data files)\n",
              r.layers_read, example::mib(double(r.layer_buffer_floats) * sizeof(float)),
              example::mib(double(r.read.bytes)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::program_main<options>("gpt_export", usage, argc, argv, parse, run);
}
