// examples/gpt/quantize.cpp — gpt_quantize: a trained mini-GPT packed for streamed inference,
// and what the packing costs in accuracy.
//
// What this is: reads a gpt_train weights file a block at a time and writes it as a stored
// model (stored_file.hpp): every block's matrices in bf16, f16 or 4-bit groups (64 per group,
// f16 scale and minimum), exactly the bytes gpt_generate streams. Then it measures the cost:
// the validation loss of the original weights and of the packed ones (dequantised), on the same
// batches of the same text (the last 10% of the corpus, as gpt_train splits it), and the delta.
// What it is not: a calibration-based quantiser (GPTQ, AWQ): the groups' minimum and scale are
// the group's own, as FlexGen and ZeRO-Inference compute them.
//
//   gpt_quantize --weights gpt.safetensors --out gpt.4bit.safetensors --quant 4bit
//
// Exit codes: 0 written, 1 the weights could not be used (the message says why), 2 bad
// arguments.
#include "data.hpp"
#include "host/model.hpp"
#include "safetensors.hpp"
#include "stored_file.hpp"

#include "example_support.hpp"  // examples/common/: option_reader, bad_argument

#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(usage: gpt_quantize --weights FILE --out FILE [options]

Packs a mini-GPT trained by gpt_train for streamed inference (gpt_generate reads the result
as it is) and reports the validation loss before and after.

  --weights FILE      safetensors file written by gpt_train (default gpt.safetensors)
  --out FILE          the stored model to write (replaced atomically)
  --quant Q           bf16, f16, 4bit or none (f32) (default 4bit)
  --data PATH         text file or directory for the validation loss (default: gpt_train's
                      default corpus); its last 10% is the validation text
  --eval-batches N    batches of the validation loss, 0 = none (default 8)
  --batch B           sequences per batch (default 8)
  --help              this text
)";

struct options {
  std::string weights = "gpt.safetensors", out, data;
  gpt::weight_format format = gpt::weight_format::q4;
  int eval_batches = 8, batch = 8;
};

using example::bad_argument;

bool parse(int argc, char** argv, options& o) {
  example::option_reader r(argc, argv);
  while (r.next()) {
    if (r.flag("--help") || r.flag("-h")) return false;
    if (r.is("--weights")) o.weights = r.path();
    else if (r.is("--out")) o.out = r.path();
    else if (r.is("--quant")) {
      try {
        o.format = gpt::parse_weight_format(r.value());
      } catch (const std::invalid_argument& e) {
        throw bad_argument(std::string("--quant: ") + e.what());
      }
    } else if (r.is("--data")) o.data = r.path();
    else if (r.is("--eval-batches")) o.eval_batches = r.integer(0, 1 << 20);
    else if (r.is("--batch")) o.batch = r.integer(1, 1 << 12);
    else r.unknown();
  }
  if (o.out.empty()) throw bad_argument("--out is required");
  return true;
}

/// Mean loss over `batches` validation batches of B x context bytes (the same batches for every
/// model: eval_batch(b) is a pure function of b).
double validation_loss(gpt::host_model& m, const gpt::batch_sampler& val, int batches, int B, int T) {
  std::vector<int> tokens(std::size_t(B) * T), targets(std::size_t(B) * T);
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    val.eval_batch(std::uint64_t(b), B, tokens.data(), targets.data());
    sum += m.forward(tokens.data(), targets.data(), B, T);
  }
  return sum / batches;
}

int run(options& opt) {
  const gpt::safetensors_reader r(opt.weights);
  const gpt::gpt_config cfg = gpt::read_gpt_config(r);
  std::vector<float> embed(gpt::embed_numel(cfg)), block;
  gpt::read_gpt_embed(r, cfg, embed.data());
  // Measuring the loss needs the model in memory anyway: then it is read once, before the
  // write. Without it, the write reads one block at a time.
  std::optional<gpt::host_model> original;
  if (opt.eval_batches > 0) {
    original.emplace(cfg, opt.batch);
    original->embed_params() = embed;
    for (int l = 0; l < cfg.layers; ++l) gpt::read_gpt_block(r, cfg, l, original->block_params(l).data());
  } else {
    block.resize(gpt::block_numel(cfg));
  }
  const gpt::st_write_summary w = gpt::write_stored_gpt(opt.out, cfg, opt.format, embed, [&](int l) {
    if (original) return std::span<const float>(original->block_params(l));
    gpt::read_gpt_block(r, cfg, l, block.data());
    return std::span<const float>(block);
  });
  const gpt::block_layout layout = gpt::make_block_layout(cfg, opt.format);
  std::printf("gpt_quantize: %s (%d layers, width %d; %.2fM parameters) -> %s: %s blocks of "
              "%.2f MiB (f32: %.2f MiB), %llu bytes in all\n",
              opt.weights.c_str(), cfg.layers, cfg.width, double(gpt::parameter_count(cfg)) / 1e6,
              opt.out.c_str(), gpt::format_name(opt.format), example::mib(double(layout.bytes)),
              example::mib(double(gpt::block_numel(cfg) * 4)),
              static_cast<unsigned long long>(w.file_bytes));
  if (opt.eval_batches == 0) return 0;

  // Accuracy: the original model and the packed one (each block unpacked to the values it
  // computes with), resident, on the same validation batches.
  const gpt::corpus text = gpt::load_corpus(opt.data.empty() ? gpt::default_corpus_path() : opt.data);
  const gpt::text_split split = gpt::split_corpus(text);
  const int T = cfg.context;
  const std::vector<std::uint8_t>& val_text = split.val.size() > std::size_t(T) ? split.val : split.train;
  const gpt::batch_sampler val(val_text, T, 1, "validation");
  gpt::host_model packed(cfg, opt.batch);
  packed.embed_params() = embed;
  std::vector<std::byte> bytes(layout.bytes);
  for (int l = 0; l < cfg.layers; ++l) {
    gpt::pack_block(layout, original->block_params(l), bytes);
    gpt::unpack_block(layout, bytes.data(), packed.block_params(l));
  }
  const double f32 = validation_loss(*original, val, opt.eval_batches, opt.batch, T);
  const double q = validation_loss(packed, val, opt.eval_batches, opt.batch, T);
  std::printf("validation loss (%d batches of %d x %d bytes of %s): f32 %.4f, %s %.4f, "
              "delta %+.4f\n",
              opt.eval_batches, opt.batch, T, text.source.c_str(), f32,
              gpt::format_name(opt.format), q, q - f32);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::program_main<options>("gpt_quantize", usage, argc, argv, parse, run);
}
