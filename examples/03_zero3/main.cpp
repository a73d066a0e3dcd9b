// examples/03_zero3/main.cpp — a small network trained with ZeRO-3 on 4 ranks, each with a
// device of 2 MiB.
//
// What this is: a training run, top to bottom, through strata's ZeRO executor.
//   1. four ranks, each with its own context (its own budgets: a 2 MiB device) and its own
//      zero_executor; the memory plan of rank 0, checked against the budgets before any step
//   2. training: every step walks the layers forward (each layer's parameters all-gathered from
//      the ranks' shards just before use, Depth = 2 layers ahead), backward (each layer
//      gathered again, its gradient reduce-scattered so that every rank keeps the mean
//      gradient of its own shard), then SGD on each rank's shard; one line per step
//   3. what the queues did on rank 0, and the picture: a Chrome trace JSON for Perfetto
//   4. checks: every rank holds the same parameters, the loss fell, the memory stayed within
//      the plan
//
// The network: 6 layers of (256, 256) float weights, tanh between them, no biases, 1.5 MiB of
// parameters in all. The task: regress y = tanh(A x) for a fixed random (256, 256) matrix A
// ("the teacher") on fresh random inputs every step, so the loss is always measured on data the
// model has not seen. Each rank takes its own slice (micro-batch) of every step's global batch.
//
// Why offload: unsharded, the parameters and gradients alone (3 MiB) do not fit a 2 MiB device.
// ZeRO-3 shards both over the ranks, and with --home=host (the default, zero3_offload) the
// shards live in host memory; the device holds only the Depth+1 layers being gathered (and
// their shards on the way) and two gradient buffers. With --home=device (zero3) the shards stay
// on the device, which on 4 ranks needs 2.1 MiB: refused up front with the plan, unless
// --device-mib=3 or --ranks=8. With --home=nvme (zero3_infinity) the shards live in a file per
// rank under ./03_zero3.data.
//
// What this is not: fast. The "kernels" are plain loops, the forward/backward maths and the
// activations kept for the backward pass are this example's business (std::vectors on the
// host), and in the host build the device is emulated (a bounded host arena with its own budget
// and copy queues). On thread ranks all four ranks share this machine's cores, so the times say
// how the pieces fit together, not how fast a GPU would go.
//
// Build and run (host build, no GPU needed), with CMake:
//   cmake --preset host && cmake --build --preset host -j2 --target 03_zero3
//   ./build/host/examples/03_zero3/03_zero3 [--home=host|device|nvme] [--steps=30] [--ranks=4]
//                                           [--device-mib=2]
// Under MPI (when CMake found MPI: the program links strata::mpi), one process per rank:
//   mpirun --allow-run-as-root --oversubscribe -np 4 ./build/host/examples/03_zero3/03_zero3
// (--allow-run-as-root: as root, e.g. in a container; --oversubscribe: more ranks than cores.
// Where Open MPI's shared-memory transport cannot use CMA (process_vm_readv, blocked in some
// containers), put OMPI_MCA_btl_vader_single_copy_mechanism=none in front.) The program sees
// OMPI_COMM_WORLD_SIZE (or PMI_SIZE) in its environment, calls MPI_Init_thread and trains on
// comm::mpi instead of comm::threads: the same train<Comm>() below. The checksum printed at the
// end is the same for thread ranks and MPI ranks and for every --home: the reductions add in
// rank order, and where the shards live changes nothing in the arithmetic.
//
// Shapes in comments are written // (rows, cols).

#include <strata/strata.hpp>

#include <strata/comm/mpi.hpp>  // empty without STRATA_HAVE_MPI
#include <strata/comm/threads.hpp>
#include <strata/schedule/executor.hpp>

#include "example_support.hpp"  // examples/common/: voice, mib, indented, checks, option_reader
#include "toy_layers.hpp"       // examples/common/: run_kernel

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using strata::tier_id;
using namespace example;

// ---------------------------------------------------------------------------------------------
// Options.

enum class home { host, device, nvme };

struct options {
  home where = home::host;
  int steps = 30;
  int ranks = 4;             // thread ranks; under mpirun the world size comes from mpirun
  bool ranks_given = false;
  double device_mib = 2.0;   // each rank's device budget
};

const char* home_name(home h) {
  return h == home::host     ? "host memory"
         : h == home::device ? "device memory"
                             : "NVMe (a file per rank)";
}

// Reads --home, --steps, --ranks and --device-mib (`--steps=30` or `--steps 30`); a bad value
// is a bad_argument naming the option.
options parse(int argc, char** argv) {
  options o;
  option_reader r(argc, argv);
  while (r.next()) {
    if (r.is("--home")) {
      const std::string h = r.value();
      if (h == "host") o.where = home::host;
      else if (h == "device") o.where = home::device;
      else if (h == "nvme") o.where = home::nvme;
      else throw bad_argument("--home is host, device or nvme, got '" + h + "'");
    } else if (r.is("--steps")) {
      o.steps = r.integer(1);
    } else if (r.is("--ranks")) {
      o.ranks = r.integer(1, 4096);
      o.ranks_given = true;
    } else if (r.is("--device-mib")) {
      o.device_mib = r.number(0, 1 << 20, " MiB");
      if (!(o.device_mib > 0)) throw bad_argument("--device-mib must be > 0");
    } else {
      r.unknown();
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// The network, the task and the "kernels": the example's business, not the library's.

constexpr std::size_t layer_count = 6;
constexpr std::size_t width = 256;          // every layer is (width, width)
constexpr std::size_t micro_batch = 16;     // samples per rank per step
// The loss is a mean over 256 outputs as well as over the samples, so its gradients are 1/256 of
// a per-sample sum's: hence a learning rate far above 1.
constexpr float learning_rate = 16.0f;
constexpr std::size_t layer_numel = width * width;

// A reproducible uniform number in [-1, 1) for (stream, index): every rank, and every process
// under MPI, computes the same initial weights, teacher and data without sending them.
float uniform(std::uint64_t stream, std::uint64_t index) {
  std::uint64_t z = stream * 0x9e3779b97f4a7c15ull + index + 0x632be59bd9b4e019ull;  // splitmix64
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) / static_cast<float>(1ull << 23) - 1.0f;
}

// Layer l's initial weights: uniform with variance 1/width (LeCun), so activations keep their
// scale through the layers. // (width, width)
std::vector<float> initial_weights(std::size_t l) {
  std::vector<float> w(layer_numel);
  const float scale = std::sqrt(3.0f / static_cast<float>(width));
  for (std::size_t j = 0; j < w.size(); ++j) w[j] = scale * uniform(100 + l, j);
  return w;
}

// The teacher: y = tanh(A x). A is (width, width), a little larger than the student's layers
// so the targets are not small.
struct task {
  std::vector<float> a = [] {  // (width, width)
    std::vector<float> m(layer_numel);
    const float scale = 1.5f * std::sqrt(3.0f / static_cast<float>(width));
    for (std::size_t j = 0; j < m.size(); ++j) m[j] = scale * uniform(7, j);
    return m;
  }();

  // Samples [first, first + count) of an endless stream: inputs x (count, width) uniform in
  // [-1, 1), targets y (count, width).
  void samples(std::uint64_t first, std::size_t count, std::vector<float>& x,
               std::vector<float>& y) const {
    x.resize(count * width);
    y.resize(count * width);
    for (std::size_t s = 0; s < count; ++s) {
      float* xs = x.data() + s * width;  // (width)
      float* ys = y.data() + s * width;  // (width)
      for (std::size_t k = 0; k < width; ++k) xs[k] = uniform(1'000 + first + s, k);
      for (std::size_t o = 0; o < width; ++o) {
        float acc = 0;
        for (std::size_t k = 0; k < width; ++k) acc += a[o * width + k] * xs[k];
        ys[o] = std::tanh(acc);
      }
    }
  }
};

// What the backward pass needs from the forward pass, kept on the host by the example:
//   h[l]    the input of layer l, (batch, width); h[0] = x, h[l+1] = tanh(h[l] W_l^T)
//   out     the network's output h[5] W_5^T (no tanh on the last layer), (batch, width)
//   delta   dLoss/d(layer l's output before its tanh), (batch, width), walked backward
// Loss: the mean squared error over the batch and the outputs.
struct activations {
  std::size_t batch = micro_batch;
  std::vector<std::vector<float>> h = std::vector<std::vector<float>>(layer_count);
  std::vector<float> target, out, delta;
  float loss = 0;
};

// Layer l forward: pre = h[l] W^T, then tanh (or, on the last layer, the loss and its
// gradient). w: (width, width), row o holds the weights into output o.
void forward_kernel(std::size_t l, const float* w, activations& a) {
  const std::vector<float>& in = a.h[l];
  std::vector<float> pre(a.batch * width);
  for (std::size_t b = 0; b < a.batch; ++b)
    for (std::size_t o = 0; o < width; ++o) {
      float acc = 0;
      for (std::size_t k = 0; k < width; ++k) acc += in[b * width + k] * w[o * width + k];
      pre[b * width + o] = acc;
    }
  if (l + 1 < layer_count) {
    for (float& v : pre) v = std::tanh(v);
    a.h[l + 1] = std::move(pre);
    return;
  }
  a.out = std::move(pre);
  a.delta.resize(a.out.size());
  double sum = 0;
  const float n = static_cast<float>(a.out.size());
  for (std::size_t j = 0; j < a.out.size(); ++j) {
    const float e = a.out[j] - a.target[j];
    sum += double(e) * e;
    a.delta[j] = 2.0f * e / n;  // d(mean of e^2)/d(out)
  }
  a.loss = static_cast<float>(sum / n);
}

// Layer l backward: dW = delta^T h[l] (summed over the micro-batch), then delta for layer l-1:
// (delta W) * (1 - h[l]^2), tanh's derivative at h[l] = tanh(pre of layer l-1).
// w, dw: (width, width)
void backward_kernel(std::size_t l, const float* w, float* dw, activations& a) {
  const std::vector<float>& in = a.h[l];
  std::fill(dw, dw + layer_numel, 0.0f);
  for (std::size_t o = 0; o < width; ++o)
    for (std::size_t b = 0; b < a.batch; ++b) {
      const float d = a.delta[b * width + o];
      for (std::size_t k = 0; k < width; ++k) dw[o * width + k] += d * in[b * width + k];
    }
  if (l == 0) return;
  std::vector<float> next(a.batch * width, 0.0f);
  for (std::size_t b = 0; b < a.batch; ++b)
    for (std::size_t o = 0; o < width; ++o) {
      const float d = a.delta[b * width + o];
      for (std::size_t k = 0; k < width; ++k) next[b * width + k] += d * w[o * width + k];
    }
  for (std::size_t j = 0; j < next.size(); ++j) next[j] *= 1.0f - in[j] * in[j];
  a.delta = std::move(next);
}

// SGD on this rank's shard: n floats of parameters and of their mean gradient.
void sgd_kernel(float* w, const float* dw, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) w[j] -= learning_rate * dw[j];
}

// The kernels run through run_kernel (toy_layers.hpp) on the tier their data is on: on the
// memory itself in the host build; in a CUDA build, on a host copy of device memory, downloaded
// and uploaded again through the library's copy path.

// FNV-1a over the bytes of a layer's parameters: equal on every rank iff the bytes are.
std::uint64_t checksum(const std::vector<float>& v, std::uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (std::size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// ---------------------------------------------------------------------------------------------
// Training, the same for thread ranks and MPI ranks: Comm is comm::threads or comm::mpi.

// Layers gathered ahead of the one being computed: the same policy a tensor_sequence takes.
using prefetch_policy = strata::prefetch::lookahead<2>;

template <class Bundle, class Comm>
bool train_with(Comm& comm, const options& opt, const char* bundle_name) {
  const int rank = comm.rank(), ranks = comm.size();
  const voice say{rank == 0};  // every rank runs the same code; only rank 0 talks
  checks check(say);

  // -------------------------------------------------------------------------------------------
  say.section("1. Every rank: a context with a small device, a ZeRO-3 executor, its plan");
  strata::context_config config;
  config.device_bytes = static_cast<std::size_t>(opt.device_mib * 1024 * 1024);
  config.pinned_bytes = std::size_t{8} << 20;
  config.staging_slot_bytes = std::size_t{1} << 20;  // a 4 x 1 MiB staging ring in pinned
  config.staging_slots = 4;
  config.trace = rank == 0;  // the picture is rank 0's
  config.rank = rank;        // names this rank's arena file under --home=nvme
  if (opt.where == home::nvme) config.nvme_directory = "03_zero3.data";
  strata::context ctx(config);

  std::vector<strata::layer_spec> layers;
  for (std::size_t l = 0; l < layer_count; ++l)
    layers.push_back({"layer" + std::to_string(l), layer_numel});
  const strata::shard_layout layout(layer_numel, ranks);
  say("  model: %zu layers of (%zu, %zu) float, tanh between: %.2f MiB of parameters, as much "
      "again of gradients\n",
      layer_count, width, width, mib(layer_count * layer_numel * sizeof(float)));
  say("  each rank keeps a 1/%d shard of every layer: %zu floats (%.0f KiB) of parameters and "
      "%.0f KiB of gradients\n",
      ranks, layout.shard_numel(), layout.shard_numel() * sizeof(float) / 1024.0,
      layout.shard_numel() * sizeof(float) / 1024.0);

  // Unsharded and resident (zero0), the same model would need more device than there is. The
  // constructor adds up its plan and refuses it before it allocates anything.
  if (rank == 0) {
    try {
      strata::zero_executor<Comm, strata::zero0, prefetch_policy> replicated(ctx, comm, layers,
                                                                   "unsharded");
      say("  zero0 (nothing sharded, all on the device) would fit this device too\n");
    } catch (const strata::out_of_budget& e) {
      say("  zero0 (nothing sharded, all on the device) would need %.2f MiB of device: refused "
          "(out_of_budget)\n",
          mib(e.requested()));
    }
    ctx.budget(tier_id::device).reset_peak();
  }

  // ZeRO-3 with the shards at home on `Bundle`'s tier. Compute is on the device; the executor
  // holds Depth+1 gathered-layer buffers there (+ Depth+1 shard buffers when the home is not
  // the device) and two gradient buffers, however many layers there are.
  strata::zero_executor<Comm, Bundle, prefetch_policy> ex(ctx, comm, layers, "mlp");
  for (std::size_t l = 0; l < layer_count; ++l) ex.set_params(l, initial_weights(l));
  say("  %s: shards at home in %s, lookahead Depth = %zu; memory plan of rank 0 (every "
      "rank's is the same):\n%s",
      bundle_name, home_name(opt.where), prefetch_policy::depth, ex.plan().to_string(&ctx).c_str());

  // -------------------------------------------------------------------------------------------
  say.section("2. Training: forward (all-gather), backward (reduce-scatter), SGD on each shard");
  say("  %d ranks x micro-batch %zu = %zu fresh samples per step; loss = MSE averaged over the "
      "ranks; lr %.2f\n",
      ranks, micro_batch, micro_batch * static_cast<std::size_t>(ranks), double(learning_rate));
  const task teacher;
  activations act;
  std::vector<float> losses;
  auto& device = ctx.budget(tier_id::device);
  constexpr int bar_width = 30;
  for (int step = 0; step < opt.steps; ++step) {
    const auto begin = std::chrono::steady_clock::now();
    // This rank's slice of the step's global batch. // (micro_batch, width)
    const std::uint64_t first = (static_cast<std::uint64_t>(step) * ranks + rank) * micro_batch;
    teacher.samples(first, micro_batch, act.h[0], act.target);

    ex.forward([&](std::size_t l, const float* w, std::size_t n) {
      run_kernel<strata::tier::device>(ctx, w, n, [&](const float* wh) {
        forward_kernel(l, wh, act);
      });
    });
    ex.backward([&](std::size_t l, const float* w, float* dw, std::size_t n) {
      run_kernel<strata::tier::device>(ctx, w, n, [&](const float* wh) {
        run_kernel<strata::tier::device>(ctx, dw, n, [&](float* dwh) {
          backward_kernel(l, wh, dwh, act);
        });
      });
    });
    // On the tier the bundle's optimizer runs on: this rank's shard only, n = its real elements.
    ex.step([&](std::size_t, float* w, const float* dw, std::size_t n) {
      using opt_tier = typename Bundle::optimizer_tier;
      run_kernel<opt_tier>(ctx, w, n, [&](float* wh) {
        run_kernel<opt_tier>(ctx, dw, n, [&](const float* dwh) { sgd_kernel(wh, dwh, n); });
      });
    });

    // The loss of the global batch: the mean of the ranks' micro-batch losses.
    float loss = 0;
    comm.all_reduce(&act.loss, &loss, 1, strata::comm::reduce_op::mean).wait();
    losses.push_back(loss);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin)
            .count();
    const int bar = std::clamp(static_cast<int>(std::lround(bar_width * loss / losses[0])), 0,
                               bar_width);
    say("  step %3d/%d  loss %.4f  %-*s %7.1f ms   device %.2f MiB, peak %.2f of %.2f\n",
        step + 1, opt.steps, double(loss), bar_width, std::string(bar, '#').c_str(), ms,
        mib(device.used()), mib(device.peak()), mib(device.limit()));
  }
  ex.sync();

  // -------------------------------------------------------------------------------------------
  say.section("3. What the queues did on rank 0, and the picture");
  // compute: forward, backward, optimizer; collectives: the all-gathers and reduce-scatters;
  // h2d / d2h (and io-read / io-write under --home=nvme): shards to and from their home.
  // A collective is busy from its start until every rank has joined it, so the collectives row
  // also counts the waits for slower ranks — here, ranks that share this machine's cores.
  if (rank == 0) {
    say("  trace summary of the %d steps (a collective's span includes waiting for the other "
        "ranks):\n%s",
        opt.steps, indented(ctx.trace().summarize().to_string()).c_str());
    const std::string trace_path = "03_zero3.trace.json";
    ctx.trace().write_chrome_json(trace_path);
    say("  wrote %s (%zu spans): open it in https://ui.perfetto.dev or chrome://tracing\n",
        std::filesystem::absolute(trace_path).string().c_str(), ctx.trace().spans().size());
  }

  // -------------------------------------------------------------------------------------------
  say.section("4. Checks");
  // ex.params(l) is a collective (it all-gathers the shards): every rank calls it.
  std::uint64_t mine = 0xcbf29ce484222325ull;
  for (std::size_t l = 0; l < layer_count; ++l) mine = checksum(ex.params(l), mine);
  std::vector<std::uint64_t> every(static_cast<std::size_t>(ranks));  // (ranks)
  comm.all_gather(&mine, every.data(), sizeof mine).wait();
  say("  checksum of all parameters: %016llx on rank 0\n", static_cast<unsigned long long>(mine));
  check("every rank holds the same parameters (their checksums, all-gathered)",
        std::all_of(every.begin(), every.end(), [&](std::uint64_t c) { return c == mine; }));

  // The batches are fresh, so single steps are noisy: compare the first and last three steps.
  if (losses.size() >= 6) {
    float early = 0, late = 0;
    for (std::size_t i = 0; i < 3; ++i)
      early += losses[i] / 3, late += losses[losses.size() - 1 - i] / 3;
    char fell[128];
    std::snprintf(fell, sizeof fell,
                  "the loss fell: %.4f -> %.4f (means of the first and last 3 steps)",
                  double(early), double(late));
    check(fell, late < early);
  } else {
    say("  (whether the loss fell is checked from 6 steps on)\n");
  }

  // Every tier's measured peak on every rank within the plan made before the first step.
  float over = 0;
  if (!ex.plan().covers_peaks(ctx)) over = 1;
  float ranks_over = 0;
  comm.all_reduce(&over, &ranks_over, 1, strata::comm::reduce_op::sum).wait();
  check("on every rank, the peak of every tier stayed within the plan", ranks_over == 0);
  return check.ok();
}

template <class Comm>
bool train(Comm& comm, const options& opt) {
  switch (opt.where) {
    case home::device: return train_with<strata::zero3>(comm, opt, "zero3");
    case home::nvme: return train_with<strata::zero3_infinity>(comm, opt, "zero3_infinity");
    case home::host: break;
  }
  return train_with<strata::zero3_offload>(comm, opt, "zero3_offload");
}

// Says what went wrong; for a plan that does not fit, also what to change. `more_ranks` is how
// this launch asks for more ranks.
void explain(const std::exception& e, const char* more_ranks) {
  std::string what = e.what();
  while (!what.empty() && what.back() == '\n') what.pop_back();
  std::fprintf(stderr, "error: %s\n", what.c_str());
  if (dynamic_cast<const strata::out_of_budget*>(&e))
    std::fprintf(stderr, "hint: give each rank more device (--device-mib=3), shard over more "
                         "ranks (%s), or keep the shards at home in host memory (--home=host)\n",
                 more_ranks);
}

void say_hello(const options& opt, int ranks, const char* how) {
  std::printf("strata example 03: ZeRO-3 training on %d ranks (%s), shards at home in %s\n",
              ranks, how, home_name(opt.where));
  if (opt.where == home::nvme)
    std::printf("  nvme directory: %s (one arena file per rank)\n",
                std::filesystem::absolute("03_zero3.data").string().c_str());
}

// Default: the ranks are threads of this process, each with its own context and executor.
int run_threads(const options& opt) {
  say_hello(opt, opt.ranks, "threads in this process, comm::threads");
  strata::comm::thread_world world(opt.ranks);
  std::vector<char> ok(static_cast<std::size_t>(opt.ranks), 0);
  try {
    world.run([&](strata::comm::threads& c) {
      ok[static_cast<std::size_t>(c.rank())] = train(c, opt);
    });
  } catch (const std::exception& e) {  // the first rank's failure, not its echoes on the others
    explain(e, "--ranks=8");
    return 1;
  }
  return verdict(std::all_of(ok.begin(), ok.end(), [](char b) { return b != 0; }));
}

#if STRATA_HAVE_MPI
// Under mpirun: one process per rank, comm::mpi over MPI_COMM_WORLD.
int run_mpi(int& argc, char**& argv, const options& opt) {
  // The executor runs its all-gathers and reduce-scatters on a collectives thread of its own,
  // while this thread calls all_reduce / all_gather for the loss and the checks (never at the
  // same time: the executor's step() and params() wait for its queue first). comm::mpi
  // serialises its calls with a mutex, and asks for MPI_THREAD_MULTIPLE whenever several
  // threads use MPI (comm/mpi.hpp), so that is what is requested here, and required.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc = 0;
  if (provided < MPI_THREAD_MULTIPLE) {
    if (rank == 0)
      std::fprintf(stderr, "error: this MPI gives thread level %d, not MPI_THREAD_MULTIPLE (%d), "
                           "which comm::mpi needs when the executor's collectives thread and "
                           "the main thread both use MPI\n",
                   provided, MPI_THREAD_MULTIPLE);
    rc = 1;
  } else {
    if (rank == 0) {
      say_hello(opt, size, "MPI processes, comm::mpi");
      if (opt.ranks_given)
        std::printf("  (--ranks is for thread ranks; under mpirun, -np sets the ranks)\n");
    }
    strata::comm::mpi world;  // a duplicate of MPI_COMM_WORLD; freed before MPI_Finalize
    try {
      rc = verdict(train(world, opt), voice{rank == 0});
    } catch (const std::exception& e) {
      // A refused plan is refused on every rank, and a comm_error echoes another rank's
      // failure: rank 0 speaks for those. Anything else is this rank's own story.
      const bool everywhere = dynamic_cast<const strata::out_of_budget*>(&e) ||
                              dynamic_cast<const strata::comm_error*>(&e);
      if (rank == 0 || !everywhere) {
        if (rank != 0) std::fprintf(stderr, "rank %d: ", rank);
        explain(e, "mpirun -np 8");
      }
      world.abort(e.what());  // the others fail fast instead of waiting for this rank
      rc = 1;
    }
  }
  MPI_Finalize();
  return rc;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  options opt;
  try {
    opt = parse(argc, argv);
  } catch (const bad_argument& e) {
    std::fprintf(stderr, "error: %s\nusage: %s [--home=host|device|nvme] [--steps=N] [--ranks=N] "
                         "[--device-mib=X]\n",
                 e.what(), argv[0]);
    return 2;
  }
  try {
    if (opt.where == home::nvme) {
      // strata creates its arena files inside the NVMe directory, not the directory itself.
      std::error_code ec;
      std::filesystem::create_directories("03_zero3.data", ec);
    }
    if (launched_by_mpirun()) {
#if STRATA_HAVE_MPI
      return run_mpi(argc, argv, opt);
#else
      // Every process would train a thread world of its own: let the first one do it, alone.
      const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
      if (r && std::atoi(r) != 0) return 0;
      std::printf("note: started by mpirun, but this build has no MPI (strata::mpi was not "
                  "linked): training on thread ranks in one process\n");
#endif
    }
    return run_threads(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
