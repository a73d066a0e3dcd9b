// examples/gpt/cuda/bench_gpt_cuda.cu — training-step throughput of GPT-2 124M on one GPU.
//
// What this is: the GPT-2 small shape (L 12, NH 12, C 768, V 50257, T 1024) as
// gpt_cuda_model (bf16 activations, fp32 master weights and gradients, cuBLASLt GEMMs, the
// tiled attention of attention.cuh, strata's fused device AdamW), a few warm-up steps, then
// timed steps of forward + backward + AdamW on random tokens. Prints tokens/s, the achieved
// TFLOP/s (flops_per_token: 6N + 12·L·C·T per token, the PaLM / llm.c count) and
//   gpt-gpu mfu=X
// the fraction of the device's dense bf16 peak (989 TFLOP/s for an H100 SXM; the device name
// picks the peak, and the line says which one it used).
// What it is not: a training run (the tokens are random; the loss only shows the numbers are
// sane: ~ln(50257) = 10.8 at step 0), or a profile (the forward / rest split is the only
// breakdown). Exits 77 without a usable GPU.
//
//   bench_gpt_cuda [--batch B] [--steps S] [--warmup W] [--checkpoint]
// --batch is where the search starts (default 16): on an out-of-memory the batch halves.
#include "cuda/model.cuh"

#include <strata/core/cuda_check.hpp>
#include <strata/optim/adam.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

struct options {
  int batch = 16, steps = 10, warmup = 3;
  bool checkpoint = false;
};

bool parse(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](int& dst) {
      if (i + 1 >= argc) return false;
      dst = std::atoi(argv[++i]);
      return dst > 0 || (a == "--warmup" && dst == 0);
    };
    if (a == "--batch") {
      if (!value(o.batch)) return false;
    } else if (a == "--steps") {
      if (!value(o.steps)) return false;
    } else if (a == "--warmup") {
      if (!value(o.warmup)) return false;
    } else if (a == "--checkpoint") {
      o.checkpoint = true;
    } else {
      return false;
    }
  }
  return true;
}

struct peak {
  double flops;
  const char* what;
};

// Dense (not 2:4 sparse) bf16 tensor-core peaks from NVIDIA's data sheets.
peak bf16_peak(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H100") && has("PCIe")) return {756e12, "H100 PCIe dense bf16"};
  if (has("H100") && has("NVL")) return {835e12, "H100 NVL dense bf16"};
  if (has("H100") || has("H800")) return {989e12, "H100 SXM dense bf16"};
  if (has("H200")) return {989e12, "H200 dense bf16"};
  if (has("A100")) return {312e12, "A100 dense bf16"};
  return {989e12, "unknown device: H100 SXM's dense bf16"};
}

bool out_of_memory(const std::exception& e) {
  const auto* ce = dynamic_cast<const strata::cuda_error*>(&e);
  return ce != nullptr && ce->code() == static_cast<int>(cudaErrorMemoryAllocation);
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  if (!parse(argc, argv, opt)) {
    std::fprintf(stderr, "usage: bench_gpt_cuda [--batch B] [--steps S] [--warmup W] [--checkpoint]\n");
    return 2;
  }
  if (strata::cuda_device_count() == 0) {
    std::printf("no CUDA device or driver: bench_gpt_cuda skipped\n");
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    strata::check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const peak pk = bf16_peak(prop.name);

    gpt::gpt_config cfg;
    cfg.vocab = 50257, cfg.context = 1024, cfg.layers = 12, cfg.heads = 12, cfg.width = 768;
    const int T = cfg.context;
    std::printf("bench_gpt_cuda: GPT-2 124M (%zu parameters), L %d, NH %d, C %d, V %d, T %d, bf16, "
                "activation checkpointing %s\n",
                gpt::parameter_count(cfg), cfg.layers, cfg.heads, cfg.width, cfg.vocab, T,
                opt.checkpoint ? "on" : "off");
    std::printf("device: %s, %.1f GiB\n", prop.name, prop.totalGlobalMem / double(1 << 30));

    strata::optim::adam_params hp;
    hp.lr = 6e-4f, hp.weight_decay = 0.1f, hp.beta2 = 0.95f;
    std::unique_ptr<gpt::gpu::gpt_cuda_model> model;
    std::vector<int> tokens, targets;
    int B = opt.batch;
    std::uint64_t step = 0;
    auto make_batch = [&](std::uint64_t seed) {
      gpt::rng gen(seed);
      tokens.resize(static_cast<std::size_t>(B) * T);
      targets.resize(tokens.size());
      for (auto& t : tokens) t = static_cast<int>(gen.uniform() * cfg.vocab);
      for (auto& t : targets) t = static_cast<int>(gen.uniform() * cfg.vocab);
    };
    auto train_step = [&]() {
      const float loss = model->forward(tokens.data(), targets.data(), B, T);
      model->backward();
      model->adam_step(hp, ++step);
      return loss;
    };

    // The largest batch (halving from --batch) whose first step fits.
    float first_loss = 0.0f;
    for (;;) {
      try {
        model = std::make_unique<gpt::gpu::gpt_cuda_model>(cfg, B, opt.checkpoint);
        model->init_weights(1337);
        make_batch(42);
        step = 0;
        first_loss = train_step();
        model->synchronize();
        break;
      } catch (const std::exception& e) {
        if (!out_of_memory(e) || B == 1) throw;
        std::printf("batch %d does not fit (%s); trying %d\n", B, e.what(), B / 2);
        model.reset();
        cudaGetLastError();
        B /= 2;
      }
    }
    std::printf("batch %d x %d tokens, %.2f GiB on the device, step-0 loss %.4f (ln V = %.4f)\n", B,
                T, model->device_bytes() / double(1 << 30), first_loss, std::log(double(cfg.vocab)));

    for (int i = 1; i < opt.warmup; ++i) train_step();  // step 0 above was the first warm-up
    model->synchronize();

    using clock = std::chrono::steady_clock;
    double forward_s = 0;
    float loss = 0.0f;
    const auto t0 = clock::now();
    for (int i = 0; i < opt.steps; ++i) {
      const auto f0 = clock::now();
      loss = model->forward(tokens.data(), targets.data(), B, T);  // synchronises (the loss)
      forward_s += std::chrono::duration<double>(clock::now() - f0).count();
      model->backward();
      model->adam_step(hp, ++step);
    }
    model->synchronize();
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();

    const double tokens_per_step = double(B) * T;
    const double tok_s = tokens_per_step * opt.steps / secs;
    const double flops = gpt::flops_per_token(cfg) * tok_s;
    const double mfu = flops / pk.flops;
    std::printf("%d timed steps: %.1f ms/step (forward %.1f ms, backward + AdamW %.1f ms), "
                "last loss %.4f\n",
                opt.steps, 1e3 * secs / opt.steps, 1e3 * forward_s / opt.steps,
                1e3 * (secs - forward_s) / opt.steps, loss);
    std::printf("%.0f tokens/s, %.1f TFLOP/s achieved (%.3g GFLOP per token)\n", tok_s, flops / 1e12,
                gpt::flops_per_token(cfg) / 1e9);
    std::printf("gpt-gpu mfu=%.4f (%.1f%% of %.0f TFLOP/s, %s)\n", mfu, 100 * mfu, pk.flops / 1e12,
                pk.what);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpt_cuda: %s\n", e.what());
    return 1;
  }
}
