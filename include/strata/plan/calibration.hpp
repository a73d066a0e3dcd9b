// strata/plan/calibration.hpp — what this machine can do, measured once: the numbers the
// planner's time model divides by.
//
// What lives here: calibration (host sgemm FLOP/s per GEMM shape and over the mix, STREAM
// triad and memcpy bandwidth, NVMe read / write through io::nvme_store, all-gather bandwidth of
// comm::threads per world size, and on a GPU H2D / D2H bandwidth and bf16 GEMM FLOP/s), with
// the two lookups a prediction makes (gemm_rate, allgather_rate); calibrate(), which measures
// all of it, and the measure_* functions it is made of; hardware_fingerprint() and is_stale(),
// which say whether a calibration on disk still describes this machine.
// What does not: the file format (plan/calibration_json.hpp, which needs nlohmann/json: this
// header builds with a bare C++20 compiler), GEMM kernels (strata has no BLAS: GEMMs are the
// example's business, so the caller passes a gemm_probe), the predictions themselves (the
// planner's other headers), and MPI / NCCL bandwidth (measured by their launchers, not here).
//
//   plan::calibrate_options o;
//   o.nvme_dir = "/mnt/nvme/strata";
//   o.progress = [](const std::string& line) { std::printf("calibrate: %s\n", line.c_str()); };
//   const std::string file = "calibration.json";
//   plan::calibration c;
//   if (std::filesystem::exists(file)) c = plan::load_calibration(file);   // calibration_json.hpp
//   if (c.fingerprint.empty() || plan::is_stale(c, o.nvme_dir)) {
//     c = plan::calibrate(o, model_gemm_shapes, host_sgemm_probe, gpu_bf16_probe);
//     plan::save_calibration(c, file);
//   }
//
// How each number is taken: every measurement runs once untimed first, on buffers that were
// written before (so no page fault or lazy allocation lands in a timed run), then
// `repetitions` timed runs, summarised by their median. Median, not best: the planner predicts
// what a long run gets, and on a shared machine the best of N is a lucky spell (an idle
// neighbour, a turbo burst) that a training run does not keep — the project's benchmarks
// summarise by the median for the same reason (benchmarks/bench_copy.cpp). Bandwidths are
// bytes per second and FLOP rates FLOP per second, 2*m*n*k FLOP per GEMM; nothing is in GB.
#pragma once

#include <strata/core/config.hpp>
#include <strata/core/error.hpp>
#include <strata/io/engine.hpp>

#include <array>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN
namespace plan {

/// One measured GEMM shape: C (m, n) = A (m, k) * B (k, n), 2*m*n*k FLOP.
struct gemm_point {
  int m = 0, n = 0, k = 0;
  double flops_per_s = 0;
};

/// The machine's measured rates. Zero means "not measured" (no NVMe directory, no GPU, no
/// probe); a lookup of something never measured is a config_error, never a silent zero.
struct calibration {
  /// What it was measured on: CPU model ("model name" in /proc/cpuinfo), logical cores, the
  /// SIMD level strata's host kernels use (scalar / avx2 / avx512), and the GPU's name and
  /// memory in a CUDA build that found one.
  std::string machine;
  std::string measured_at;  // UTC, ISO-8601: "2025-01-31T17:04:05Z"
  int threads = 0;          // host threads the triad used (the caller's probe decides its own)

  std::vector<gemm_point> gemm;  // host sgemm per shape, in the order the shapes were given
  double gemm_flops = 0;         // host sgemm over the whole mix: total FLOP / total time

  /// STREAM triad a[i] = b[i] + s * c[i] (doubles) on `threads` threads; the bytes of all three
  /// arrays are counted, as STREAM does (the write-allocate read of `a` is not).
  double triad_bytes_s = 0;
  /// std::memcpy between two host buffers on one thread; source and destination both counted
  /// (2 x the bytes copied), so it compares with triad_bytes_s as memory traffic.
  double copy_bytes_s = 0;

  /// Through io::nvme_store, CRC-32C checksums included: what a tensor on the NVMe tier gets.
  double nvme_read_bytes_s = 0, nvme_write_bytes_s = 0;
  /// The same for smaller tensors (a layer's shard, a streamed block: a request of a few MiB
  /// does not keep the drive's queue full), sorted by size; nvme_read_rate() interpolates.
  struct nvme_point {
    std::size_t bytes = 0;
    double read_bytes_s = 0, write_bytes_s = 0;
  };
  std::vector<nvme_point> nvme_by_size;
  /// The read / write rate of one tensor of `bytes` bytes: interpolated in log(size) between
  /// the measured sizes (nvme_by_size and the large nvme_read_bytes_s), clamped at both ends.
  double nvme_read_rate(std::size_t bytes) const { return nvme_rate(bytes, false); }
  double nvme_write_rate(std::size_t bytes) const { return nvme_rate(bytes, true); }
  std::size_t nvme_block = 0;  // the engine's request size (io::engine_config::block_bytes)
  int nvme_depth = 0;          // and its queue depth
  std::string nvme_engine;     // "uring" or "posix": the engine make_engine() picked
  std::string nvme_dir;        // where it was measured ("" when it was not)

  /// World size -> bytes per second each rank ends up with (world x shard bytes, its own shard
  /// included) over comm::threads, sorted by world size. A tensor of T bytes all-gathered
  /// across `world` ranks takes about T / allgather_rate(world) seconds.
  std::vector<std::pair<int, double>> allgather_bytes_s;

  double h2d_bytes_s = 0, d2h_bytes_s = 0;  // pinned <-> device, cudaMemcpyAsync; 0 without a GPU
  double gpu_gemm_flops = 0;                // bf16 GEMM over the mix (caller's probe); 0 without

  /// Rates of the model's own kernels, by name, measured by the caller's probes
  /// (calibrate_options::kernels): what the library cannot know, such as an inference matmul
  /// that is not a BLAS GEMM. The name says the unit ("gpt.matmul.q4.flops_per_s").
  std::map<std::string, double> kernels;
  /// What identifies the hardware (hardware_fingerprint(nvme_dir) when it was measured): a
  /// file whose fingerprint differs from this machine's is stale (is_stale).
  std::string fingerprint;

  /// FLOP/s of the measured shape nearest to (m, n, k) by the sum over the three dimensions of
  /// |log d - log d'| (the shape, not only its FLOPs, decides a GEMM's rate), or
  /// gemm_flops when no shape was measured. config_error for a dimension < 1 or when there is
  /// nothing to answer with.
  double gemm_rate(int m, int n, int k) const;
  /// allgather_bytes_s for `world`, or for the nearest measured world size (a tie goes to the
  /// larger, the more conservative: bandwidth per rank falls as ranks are added). config_error
  /// when none was measured or world < 1.
  double allgather_rate(int world) const;
  /// kernels[name]; config_error naming it when it was not measured.
  double kernel(const std::string& name) const;

private:
  double nvme_rate(std::size_t bytes, bool write) const;
};

/// This machine, as calibration::machine says it (CPU model, logical cores, SIMD level, GPU).
std::string machine_description();

/// What a calibration of this machine with NVMe directory `nvme_dir` would carry as its
/// fingerprint: machine_description(), the device under `nvme_dir` (mount source, file system
/// and the drive's model where /sys names it; "none" for an empty or missing directory) and the
/// total RAM in GiB. Names, not numbers that change on every boot or container start (device
/// minor numbers, overlay ids), so a restart does not force a new calibration; rounded RAM, so
/// a kernel that reserves a few MiB more does not either.
std::string hardware_fingerprint(const std::string& nvme_dir);

/// True when `c` was not measured on this hardware (its fingerprint differs from
/// hardware_fingerprint(nvme_dir)), or carries no fingerprint at all.
bool is_stale(const calibration& c, const std::string& nvme_dir);

struct calibrate_options {
  int threads = 0;  // triad threads; 0: hardware_concurrency
  /// The three triad arrays together; the copy moves between two arrays of a third of it.
  std::size_t triad_bytes = std::size_t{256} << 20;
  std::string nvme_dir;                           // empty: the NVMe rates are not measured
  std::size_t nvme_bytes = std::size_t{1} << 30;  // one tensor, written and read back
  io::engine_config nvme_engine;                  // the store's engine (defaults: the context's)
  std::vector<int> allgather_worlds = {2};        // one comm::threads world of each size
  std::size_t allgather_bytes = std::size_t{64} << 20;  // the gathered tensor: world shards
  std::size_t h2d_bytes = std::size_t{64} << 20;        // each way, pinned <-> device (CUDA)
  /// Timed runs of each measurement, after one untimed; the median is kept (see the top).
  int repetitions = 5;
  /// The model's own kernels: each probe returns its rate (> 0), kept as kernels[name].
  std::vector<std::pair<std::string, std::function<double()>>> kernels;
  /// One line per measurement as it finishes, e.g. "triad: 12.3 GB/s on 8 threads". The lines,
  /// in order: "gemm MxNxK: ..." per shape, "gemm mix: ...", "triad: ...", "copy: ...",
  /// "nvme: ..." (read and write, or why skipped), "allgather world W: ..." per world,
  /// "h2d/d2h: ..." (or why 0) and "gpu gemm: ..." (or why 0).
  std::function<void(const std::string&)> progress;
};

/// Measures one GEMM shape: called with (m, n, k), returns the measured FLOP/s (> 0; 2*m*n*k
/// FLOP per product). The library has no BLAS, so the caller brings the kernel and its timing.
using gemm_probe = std::function<double(int m, int n, int k)>;

/// Measures everything `options` asks for and fills a calibration, fingerprint and time
/// included. Every shape is passed to `host_gemm` (required) and, when given, to `gpu_gemm`;
/// a probe answer that is not a positive finite number is a config_error naming the shape.
/// The options are checked before anything is measured (config_error naming the field).
/// Runs for roughly repetitions x (the sizes / the bandwidths) plus the probes' time.
calibration calibrate(const calibrate_options& options,
                      const std::vector<std::array<int, 3>>& gemm_shapes,
                      const gemm_probe& host_gemm, const gemm_probe& gpu_gemm = {});

/// STREAM triad bytes/s over three double arrays of bytes / 3 bytes each, on `threads`
/// threads (a pool of its own; each thread first-touches the part it then works on, so on a
/// NUMA machine its pages are local). bytes >= 3 x 4 KiB.
double measure_triad(std::size_t bytes, int threads, int repetitions);

/// memcpy bytes/s between two host buffers of `bytes` bytes each, on the calling thread, both
/// sides counted (2 x bytes per copy).
double measure_copy(std::size_t bytes, int repetitions);

/// How measure_nvme's store was set up, for the calibration record and messages.
struct nvme_measure_info {
  std::string engine;  // io::engine::name() of the engine the store made
  std::size_t block = 0;
  int depth = 0;
  bool direct = false;  // O_DIRECT; false on a file system without it (the page cache is timed)
  std::string notice;   // the store's fallbacks (posix instead of io_uring, buffered IO)
};

/// {read, write} bytes/s of one `bytes`-byte tensor through an io::nvme_store in `dir` with
/// engine config `engine`: write() = begin_write + write + commit, read() of it all back,
/// checksums included. The store's arena file is unique (rank, pid and a counter in its
/// name) and removed before this returns. `dir` must exist (config_error naming it) and have
/// 2 x bytes free — the store's copy-on-write keeps the old extent until the new one commits
/// (config_error naming the directory, the bytes needed and the bytes free). The data moves
/// from and to two host buffers of `bytes` each (so 2 x bytes of RAM as well). Runs the
/// write once more untimed than the other measurements, so both extents exist before timing.
std::pair<double, double> measure_nvme(const std::string& dir, std::size_t bytes, int repetitions,
                                       const io::engine_config& engine = {},
                                       nvme_measure_info* info = nullptr);

/// Bytes/s each rank ends up with (world x shard) for an all-gather of a `bytes`-byte tensor
/// over a comm::threads world of `world` ranks: each rank sends bytes / world (rounded down to
/// whole 64-byte lines, at least one). Each timed run is barrier, all_gather, barrier, timed on
/// rank 0, so it ends only when every rank holds the whole tensor.
double measure_allgather(int world, std::size_t bytes, int repetitions);

/// {H2D, D2H} bytes/s of cudaMemcpyAsync between pinned host memory and the device, `bytes`
/// each way on one stream. {0, 0} in the host build or without a usable GPU; `why` then says
/// which.
std::pair<double, double> measure_h2d_d2h(std::size_t bytes, int repetitions,
                                          std::string* why = nullptr);

}  // namespace plan
STRATA_NAMESPACE_END

#include <strata/plan/detail/calibration.inl>
