// examples/gpt/cuda/bench_gpt_cuda.cu — training-step throughput of GPT-2 124M on one GPU.
//
// What this is: the GPT-2 small shape (L 12, NH 12, C 768, V 50257, T 1024) as
// gpt_cuda_model (bf16 activations, fp32 master weights and gradients, cuBLASLt GEMMs, the
// flash attention of attention.cuh on tensor cores, strata's fused device AdamW), a few warm-up
// steps, then timed steps of forward + backward + AdamW on random tokens. Prints tokens/s, the achieved
// TFLOP/s (flops_per_token: 6N + 12·L·C·T per token, the PaLM / llm.c count) and
//   gpt-gpu mfu=X
// the fraction of the device's dense bf16 peak. The device name picks the peak (dense, not 2:4
// sparse, bf16 tensor-core TFLOP/s from NVIDIA's data sheets: H100 SXM 989, H100 PCIe 756,
// H100 NVL 835, H200 SXM 989, H200 NVL 835, A100 312), --peak-tflops X or the environment's
// STRATA_PEAK_TFLOPS=X overrides it, and the line says which peak it used and why.
// The per-step breakdown (forward incl. the loss read-back, backward, AdamW) is timed by CUDA
// events recorded on the model's stream between the phases: the device's time for each phase,
// not the host's time to queue it.
// What it is not: a training run (the tokens are random; the loss only shows the numbers are
// sane: ~ln(50257) = 10.8 at step 0), or a profile (three phases are the only breakdown).
// Exits 77 without a usable GPU (1 where one is required: strata::gpu_requirement).
//
//   bench_gpt_cuda [--batch B] [--steps S] [--warmup W] [--checkpoint] [--peak-tflops X]
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
  double peak_tflops = 0;  // > 0: overrides the device-name table
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
    } else if (a == "--peak-tflops") {
      if (i + 1 >= argc || (o.peak_tflops = std::atof(argv[++i])) <= 0) return false;
    } else {
      return false;
    }
  }
  return true;
}

struct peak {
  double flops;
  std::string what;  // which peak, and why this one
};

// Dense (not 2:4 sparse) bf16 tensor-core peaks from NVIDIA's data sheets, by the name CUDA
// reports ("NVIDIA H100 80GB HBM3" is the SXM board, "NVIDIA H200" the SXM, "NVIDIA H200 NVL"
// the PCIe card). The NVL and PCIe boards run at lower clocks and power: the SXM number would
// understate their MFU.
peak bf16_peak(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H200") && has("NVL")) return {835e12, "H200 NVL dense bf16"};
  if (has("H200")) return {989e12, "H200 SXM dense bf16"};
  if (has("H100") && has("PCIe")) return {756e12, "H100 PCIe dense bf16"};
  if (has("H100") && has("NVL")) return {835e12, "H100 NVL dense bf16"};
  if (has("H800") && has("PCIe")) return {756e12, "H800 PCIe dense bf16"};
  if (has("H100") || has("H800")) return {989e12, "H100 SXM dense bf16"};
  if (has("A100")) return {312e12, "A100 dense bf16"};
  return {989e12, "unknown device, so H100 SXM's dense bf16: pass --peak-tflops for this one"};
}

// The peak the MFU line divides by: --peak-tflops, else STRATA_PEAK_TFLOPS, else the table.
peak chosen_peak(const options& o, const std::string& device_name) {
  if (o.peak_tflops > 0) return {o.peak_tflops * 1e12, "--peak-tflops"};
  if (const char* env = std::getenv("STRATA_PEAK_TFLOPS"); env && *env) {
    const double t = std::atof(env);
    if (t > 0) return {t * 1e12, "STRATA_PEAK_TFLOPS"};
    std::fprintf(stderr, "bench_gpt_cuda: ignoring STRATA_PEAK_TFLOPS=%s (not a positive number)\n",
                 env);
  }
  peak p = bf16_peak(device_name);
  p.what += " (by device name)";
  return p;
}

// CUDA events between the phases of the timed steps, on the model's stream: per step, the
// start, the end of forward, of backward and of AdamW.
class phase_events {
public:
  phase_events(int steps, cudaStream_t stream) : stream_(stream) {
    events_.resize(static_cast<std::size_t>(steps) * marks);
    for (auto& e : events_) strata::check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  }
  ~phase_events() {
    for (cudaEvent_t e : events_)
      if (e) cudaEventDestroy(e);
  }
  phase_events(const phase_events&) = delete;
  phase_events& operator=(const phase_events&) = delete;

  static constexpr int marks = 4;
  void mark(int step, int m) {
    const std::size_t i = static_cast<std::size_t>(step) * marks + static_cast<std::size_t>(m);
    strata::check_cuda(cudaEventRecord(events_[i], stream_), "cudaEventRecord");
  }
  /// Milliseconds from mark m to mark m + 1, summed over the steps (after the stream is done).
  double total_ms(int m) const {
    double total = 0;
    for (std::size_t s = 0; s < events_.size() / marks; ++s) {
      const std::size_t from = s * marks + static_cast<std::size_t>(m);
      float ms = 0;
      strata::check_cuda(cudaEventElapsedTime(&ms, events_[from], events_[from + 1]),
                         "cudaEventElapsedTime");
      total += ms;
    }
    return total;
  }

private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
};

bool out_of_memory(const std::exception& e) {
  const auto* ce = dynamic_cast<const strata::cuda_error*>(&e);
  return ce != nullptr && ce->code() == static_cast<int>(cudaErrorMemoryAllocation);
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  if (!parse(argc, argv, opt)) {
    std::fprintf(stderr, "usage: bench_gpt_cuda [--batch B] [--steps S] [--warmup W] "
                         "[--checkpoint] [--peak-tflops X]\n");
    return 2;
  }
  if (const int rc = strata::no_gpu_exit_code("bench_gpt_cuda", 77); rc >= 0) return rc;
  try {
    cudaDeviceProp prop{};
    strata::check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const peak pk = chosen_peak(opt, prop.name);

    gpt::gpt_config cfg;
    cfg.vocab = 50257, cfg.context = 1024, cfg.layers = 12, cfg.heads = 12, cfg.width = 768;
    const int T = cfg.context;
    std::printf("bench_gpt_cuda: GPT-2 124M (%zu parameters), L %d, NH %d, C %d, V %d, T %d, bf16, "
                "activation checkpointing %s\n",
                gpt::parameter_count(cfg), cfg.layers, cfg.heads, cfg.width, cfg.vocab, T,
                opt.checkpoint ? "on" : "off");
    std::printf("device: %s, %.1f GiB; MFU peak %.0f TFLOP/s: %s\n", prop.name,
                prop.totalGlobalMem / double(1 << 30), pk.flops / 1e12, pk.what.c_str());

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
    // The model runs on the legacy default stream (its constructor's default): the phase
    // events go there too, so each marks the end of the work queued before it.
    phase_events phases(opt.steps, nullptr);
    float loss = 0.0f;
    const auto t0 = clock::now();
    for (int i = 0; i < opt.steps; ++i) {
      phases.mark(i, 0);
      loss = model->forward(tokens.data(), targets.data(), B, T);  // synchronises (the loss)
      phases.mark(i, 1);
      model->backward();
      phases.mark(i, 2);
      model->adam_step(hp, ++step);
      phases.mark(i, 3);
    }
    model->synchronize();
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    const double forward_ms = phases.total_ms(0) / opt.steps;
    const double backward_ms = phases.total_ms(1) / opt.steps;
    const double adam_ms = phases.total_ms(2) / opt.steps;

    const double tokens_per_step = double(B) * T;
    const double tok_s = tokens_per_step * opt.steps / secs;
    const double flops = gpt::flops_per_token(cfg) * tok_s;
    const double mfu = flops / pk.flops;
    std::printf("%d timed steps: %.1f ms/step wall; on the device (CUDA events): forward %.1f ms, "
                "backward %.1f ms, AdamW %.2f ms; last loss %.4f\n",
                opt.steps, 1e3 * secs / opt.steps, forward_ms, backward_ms, adam_ms, loss);
    std::printf("%.0f tokens/s, %.1f TFLOP/s achieved (%.3g GFLOP per token)\n", tok_s, flops / 1e12,
                gpt::flops_per_token(cfg) / 1e9);
    std::printf("gpt-gpu mfu=%.4f (%.1f%% of %.0f TFLOP/s, %s)\n", mfu, 100 * mfu, pk.flops / 1e12,
                pk.what.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpt_cuda: %s\n", e.what());
    return 1;
  }
}
