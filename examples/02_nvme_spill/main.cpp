// examples/02_nvme_spill/main.cpp — 96 MiB of layers through a 32 MiB host and a 16 MiB device.
//
// What this is: a walk, top to bottom, through the NVMe tier: tensors whose home is a file.
//   1. a context with an NVMe tier: the budgets, the IO engine, the arena file
//   2. twenty-four "layers" (96 MiB): too many for host memory, so their home is NVMe
//   3. a walk forward (read_write: every layer written back to NVMe) and backward (read-only),
//      with lookahead prefetch; then every layer checked at home
//   4. what the queues did (the trace summary), the peak of every tier, and the NVMe GB/s
//   5. the picture of that walk: a Chrome trace JSON to open in Perfetto
//   6. integrity: one byte flipped in the file, and the error that reading it gives
//
// What this is not: a model, nor a disk benchmark. The "kernels" do some arithmetic so that
// there is compute to overlap, and add 1 to the weights so that every result can be checked
// exactly. The GB/s printed are what the NVMe tier delivered to this walk (CRC-32C checks and
// the staging copies included), not the drive's own speed: fio measures that. In the host build
// the device is emulated (a bounded host arena with its own budget and copy queues).
//
// Where the file goes: the directory given as the first argument, else ./02_nvme_spill.data
// (created if missing). It should be on a local NVMe drive. On a file system that refuses
// O_DIRECT (tmpfs before Linux 6.6, as /tmp often is) strata falls back to buffered IO with a
// notice, and the numbers then measure the page cache, not a drive.
//
// Build and run (host build, no GPU needed), with CMake (liburing is used when it is found):
//   cmake --preset host && cmake --build --preset host --target 02_nvme_spill
//   ./build/host/examples/02_nvme_spill [directory]
// or by hand (without liburing, leave out -DSTRATA_HAVE_URING=1 and -luring):
//   g++ -std=c++20 -O2 -DSTRATA_HAVE_URING=1 -I include -I examples/common
//       examples/02_nvme_spill/main.cpp -luring -pthread -o ex02 && ./ex02 [directory]
//                                                              (one command line)
//
// Shapes in comments are written // (rows, cols).

#include <strata/strata.hpp>

#include "example_support.hpp"  // examples/common/: mib, section, indented, checks
#include "toy_layers.hpp"       // examples/common/: run_kernel, the synthetic layers

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace {

using strata::tier_id;
using namespace example;

// ---------------------------------------------------------------------------------------------
// "Kernels". On a GPU each of these is a CUDA kernel launched on ctx.compute_stream(), reading
// and writing device memory through the pointer a lease hands out. Here they are plain loops,
// run through run_kernel (toy_layers.hpp: on the memory itself in the host build, on a host
// copy of it in a CUDA build). The forward one is example 01's layer_forward_kernel
// (toy_layers.hpp): y = x W^T for a batch of toy_tokens vectors, then W += 1, with enough work
// that a layer's compute is of the order of its read from NVMe.

// Read-only on W, as a backward pass reads the weights its forward pass used: the sum of every
// weight, in double (exact here: the weights are multiples of 1/8 and there are 2^20 of them).
double layer_checksum_kernel(const float* w, std::size_t n) {
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += w[i];
  return sum;
}

volatile float g_sink = 0;  // where the forward kernel's checksums go, so its work is kept

std::size_t device_in_use(strata::context& ctx) { return ctx.budget(tier_id::device).used(); }

// Bytes moved so far on one of the NVMe queues, read off the trace: every io-read span is one
// layer fetched from the file, every io-write span one layer written back (a span is recorded
// when its IO has finished, so IO still in flight is not counted yet).
std::size_t io_bytes(strata::context& ctx, strata::span_kind kind, std::size_t bytes_per_span) {
  std::size_t n = 0;
  for (const auto& sp : ctx.trace().spans()) n += sp.kind == kind;
  return n * bytes_per_span;
}

// True when `directory` is on tmpfs (memory, not a drive).
bool on_tmpfs(const std::string& directory) {
  struct statfs fs {};
  return ::statfs(directory.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

// ---------------------------------------------------------------------------------------------
// The layers.

constexpr std::size_t layer_count = 24;
constexpr std::size_t layer_rows = 1024, layer_cols = 1024;  // 4 MiB of float per layer
constexpr std::size_t layer_bytes = layer_rows * layer_cols * sizeof(float);

// The weights are initial_weight(l, j) (toy_layers.hpp): exact in float before and after
// "+= 1", so the checks can be bitwise.

// What layer_checksum_kernel must find after the forward pass: every weight is initial + 1.
double expected_checksum(std::size_t layer) {
  const double n = static_cast<double>(layer_rows * layer_cols);
  return n * static_cast<double>(layer + 1) + n / 8.0 * 0.125 * (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7);
}

int run(const std::string& nvme_directory) {
  // Each check prints one aligned line; any failure makes the program exit non-zero.
  checks check;

  // -------------------------------------------------------------------------------------------
  section("1. A context with an NVMe tier");
  // The NVMe tier is one arena file per process (per rank) in nvme_directory, carved into one
  // extent per tensor, each followed by a CRC-32C per checksum block. Reads and writes go
  // through an IO engine on their own queues (io-read, io-write), streaming through slots of
  // the pinned staging ring on their way to and from the device: file -> pinned -> device.
  strata::context_config config;
  config.device_bytes = std::size_t{16} << 20;   // holds 3 layers of 4 MiB, not 24
  config.host_bytes = std::size_t{32} << 20;     // holds 8 layers, not 24
  config.pinned_bytes = std::size_t{24} << 20;   // the staging ring (4 x 4 MiB) + small bounces
  config.nvme_bytes = std::size_t{256} << 20;    // what tensors may take of the file
  config.nvme_directory = nvme_directory;
  config.keep_nvme_files = false;                // the arena file goes when the context does
  config.nvme_checksum_block = std::size_t{1} << 20;  // one CRC-32C per MiB of data
  config.io.kind = "auto";                       // io_uring if it works here, else pread/pwrite
  config.io.block_bytes = std::size_t{1} << 20;  // large transfers split into 1 MiB requests...
  config.io.queue_depth = 16;                    // ...up to 16 of them in flight per transfer
  strata::context ctx(config);
  strata::io::nvme_store& nvme = ctx.nvme();

  std::printf("  budget of each tier (in use, peak, budget):\n%s", ctx.memory_report().c_str());
  const std::string engine = nvme.io().name();
  std::printf("  IO engine:     %s   (STRATA_IO_ENGINE=posix|uring overrides the choice)\n",
              engine == "uring"   ? "io_uring (liburing)"
              : engine == "posix" ? "the pread/pwrite thread pool"
                                  : engine.c_str());
  if (engine == "posix")
    std::printf("                 %s\n",
                strata::io::uring_compiled
                    ? "io_uring is compiled in but was not used: see the 'strata:' notice on "
                      "stderr, or STRATA_IO_ENGINE"
                    : "this build has no io_uring: link strata::uring (Debian: liburing-dev)");
  std::printf("  arena file:    %s\n", nvme.path().c_str());
  if (nvme.direct())
    std::printf("  O_DIRECT:      yes (alignment %zu bytes): the data bypasses the page cache\n",
                nvme.alignment());
  else
    std::printf("  O_DIRECT:      no: buffered IO through the page cache, so the GB/s below "
                "measure memory, not a drive\n");
  std::printf("  notices:       %s\n", nvme.notice().empty() ? "none" : nvme.notice().c_str());
  if (on_tmpfs(nvme_directory))
    std::printf("  this directory is on tmpfs: the \"drive\" is memory, so the GB/s below say "
                "nothing about NVMe\n");
  std::printf("  (the directory should be on a local NVMe drive; a file system that refuses "
              "O_DIRECT, such as /tmp on tmpfs\n   before Linux 6.6, falls back to buffered IO "
              "with a notice)\n");

  // -------------------------------------------------------------------------------------------
  section("2. Twenty-four layers, 96 MiB: more than the host budget, so their home is NVMe");
  {
    // The same layers with their home in host memory do not fit: the ninth is refused.
    strata::tensor_sequence<float, strata::offloaded_to_host> in_host(ctx);
    try {
      for (std::size_t l = 0; l < layer_count; ++l)
        in_host.emplace_back("layer" + std::to_string(l), {layer_rows, layer_cols});
      std::printf("  FAILED: 96 MiB of layers fit in a 32 MiB host budget\n");
      check.fail();
    } catch (const strata::out_of_budget& e) {
      std::printf("  home in host memory (offloaded_to_host), layer %zu made:\n    %s\n",
                  in_host.size(), e.what());
    }
  }
  ctx.budget(tier_id::host).reset_peak();  // from here on the host peak is the NVMe walk's

  // offloaded_to_nvme = placement<tier::device, tier::pinned, tier::nvme>: computed on the
  // device, living in the file. While layer i is computed, layers i+1 and i+2 are being read
  // from the file into a ring of Depth+1 = 3 device buffers.
  using nvme_layers =
      strata::tensor_sequence<float, strata::offloaded_to_nvme, strata::prefetch::lookahead<2>>;
  nvme_layers layers(ctx);
  std::printf("  home in the file (offloaded_to_nvme): %zu layers of (%zu, %zu) float, %.2f MiB "
              "each, %.2f MiB in all\n",
              layer_count, layer_rows, layer_cols, mib(layer_bytes),
              mib(layer_count * layer_bytes));
  std::printf("  assign    ");
  const double assign_begin = ctx.trace().now_us();
  for (std::size_t l = 0; l < layer_count; ++l) {
    auto& w = layers.emplace_back("layer" + std::to_string(l), {layer_rows, layer_cols});
    std::vector<float> init(w.size());
    for (std::size_t j = 0; j < init.size(); ++j) init[j] = initial_weight(l, j);
    w.assign(init);  // host -> the file (a CRC per MiB beside it); nothing reaches the device
    std::printf("#");
    std::fflush(stdout);
  }
  std::printf("  %.2f MiB written in %.0f ms\n", mib(layer_count * layer_bytes),
              (ctx.trace().now_us() - assign_begin) / 1000.0);
  std::printf("  arena file now %.2f MiB: each layer's 4 MiB and its checksum table, "
              "4 KiB-aligned\n",
              mib(nvme.file_bytes()));

  // -------------------------------------------------------------------------------------------
  section("3. The walk: forward (read_write), backward (read-only), with lookahead<2>");
  std::printf("  map: '#' leased for compute, '+' on the device or on its way, '.' in the file "
              "only\n");
  ctx.trace().clear();  // the trace should show this walk only
  auto& device = ctx.budget(tier_id::device);
  auto& host = ctx.budget(tier_id::host);
  const std::size_t before_walk = device.used();
  device.reset_peak();

  // Forward: each layer is read from the file, computed on (W += 1), and written back to the
  // file when its lease ends — as a new extent, made current only once the write has finished.
  layers.forward(strata::read_write, [&](std::size_t i, const auto& w) {
    run_kernel(ctx, w.data(), w.size(), [&](float* p) {
      g_sink = g_sink + layer_forward_kernel(p, w.shape()[0], w.shape()[1]);
    });
    std::printf("  forward  layer %2zu  [%s]  device in use %5.2f MiB  read %5.1f MiB  "
                "written %5.1f MiB\n",
                i, residency_map(layers, i).c_str(), mib(device_in_use(ctx)),
                mib(io_bytes(ctx, strata::span_kind::io_read, layer_bytes)),
                mib(io_bytes(ctx, strata::span_kind::io_write, layer_bytes)));
  });

  // Backward: each layer is read from the file again and dropped after use; nothing is written.
  // Every read checks the CRC of each MiB it brings in.
  std::size_t bad_checksums = 0;
  std::printf("  backward  ");
  layers.backward([&](std::size_t i, const auto& w) {
    double sum = 0;
    run_kernel(ctx, w.data(), w.size(),
               [&](const float* p) { sum = layer_checksum_kernel(p, w.size()); });
    bad_checksums += sum != expected_checksum(i);
    std::printf("%c", sum == expected_checksum(i) ? '#' : 'X');
    std::fflush(stdout);
  });
  ctx.synchronize();  // the last write-backs may still be in flight; the trace should hold them
  const strata::trace_summary walk = ctx.trace().summarize();
  const std::size_t bytes_read = io_bytes(ctx, strata::span_kind::io_read, layer_bytes);
  const std::size_t bytes_written = io_bytes(ctx, strata::span_kind::io_write, layer_bytes);
  std::printf("  read %.1f MiB, written %.1f MiB in all\n", mib(bytes_read), mib(bytes_written));
  check("backward: every layer's checksum is that of its initial weights + 1", bad_checksums == 0);

  // Every weight of every layer must be its initial value + 1 in the file.
  ctx.trace().set_enabled(false);  // reading every layer back is not part of the walk
  const bool correct = layers_are_correct(layers);
  ctx.trace().set_enabled(true);
  check("every weight of every layer in the file is initial + 1 (to_vector)", correct);

  // -------------------------------------------------------------------------------------------
  section("4. What the queues did, the peak of every tier, and the NVMe throughput");
  // io-read and io-write are the NVMe queues; file <-> device goes on them (through the pinned
  // ring), so h2d and d2h have nothing to do in this walk. On a GPU, compute busy near 100%
  // means the walk cost only its compute. On the emulated device, IO threads, CRCs and the
  // "kernels" share the same CPU cores, so they overlap only as far as cores are free.
  std::printf("  trace summary of the walk:\n%s", indented(walk.to_string()).c_str());
  {
    // The busiest queue bounds the walk: with enough lookahead it is compute, else the drive.
    std::string busiest = "compute";
    double busiest_us = 0;
    for (const auto& [queue, us] : walk.busy_us_by_queue)
      if (us > busiest_us) busiest = queue, busiest_us = us;
    std::printf("  the busiest queue, %s (%.0f%% of the wall time), bounds this walk%s\n",
                busiest.c_str(), walk.wall_us > 0 ? 100.0 * busiest_us / walk.wall_us : 0.0,
                busiest == "compute" ? ": the IO is hidden under the compute"
                                     : ": the compute waits for the drive");
  }
  std::printf("  tiers at the end:\n%s", ctx.memory_report().c_str());
  const std::size_t added = device.peak() - before_walk;
  std::printf("  device peak during the walk: %.2f MiB; the ring, Depth+1 = %zu layers: %.2f MiB\n",
              mib(added), nvme_layers::depth + 1, mib(layers.ring_bytes()));
  check("the device never held more than Depth+1 layers", added <= layers.ring_bytes());
  std::printf("  host peak: %.2f MiB of its %.2f MiB budget (file -> pinned -> device does not "
              "use pageable host memory)\n",
              mib(host.peak()), mib(config.host_bytes));
  check("the host peak stayed under its budget", host.peak() <= config.host_bytes);

  auto gbps = [](std::size_t bytes, double us) { return us > 0 ? bytes / us / 1000.0 : 0.0; };
  const double read_busy = walk.busy_us_by_kind.count(strata::span_kind::io_read)
                               ? walk.busy_us_by_kind.at(strata::span_kind::io_read)
                               : 0.0;
  const double write_busy = walk.busy_us_by_kind.count(strata::span_kind::io_write)
                                ? walk.busy_us_by_kind.at(strata::span_kind::io_write)
                                : 0.0;
  std::printf("  NVMe read:  %6.1f MiB, %5.2f GB/s while io-read was busy, %5.2f GB/s over the "
              "walk\n",
              mib(bytes_read), gbps(bytes_read, read_busy), gbps(bytes_read, walk.wall_us));
  std::printf("  NVMe write: %6.1f MiB, %5.2f GB/s while io-write was busy, %5.2f GB/s over the "
              "walk\n",
              mib(bytes_written), gbps(bytes_written, write_busy),
              gbps(bytes_written, walk.wall_us));
  std::printf("  (CRC-32C checks and the copies through the pinned ring included: what the tier "
              "delivered, not the drive's speed)\n");

  // -------------------------------------------------------------------------------------------
  section("5. The picture: a trace of that walk");
  // One row per queue (compute, io-read, io-write): the reads of the next layers run under the
  // compute of this one, the write-back of the last layer under the compute of the next.
  const std::string trace_path = "02_nvme_spill.trace.json";
  ctx.trace().write_chrome_json(trace_path);
  std::printf("  wrote %s (%zu spans): open it in https://ui.perfetto.dev or chrome://tracing\n",
              trace_path.c_str(), ctx.trace().spans().size());

  // -------------------------------------------------------------------------------------------
  section("6. Integrity: one byte flipped in the file");
  // Data read back from NVMe is checked against the CRC-32C written beside it: a mismatch is a
  // strata::format_error naming the file, the offset and the tensor, never silent garbage.
  strata::tiered_tensor<float, strata::offloaded_to_nvme> probe(ctx, "probe", {256, 256});
  std::vector<float> probe_values(probe.size());
  for (std::size_t i = 0; i < probe_values.size(); ++i) probe_values[i] = static_cast<float>(i);
  probe.assign(probe_values);
  const std::uint64_t extent = nvme.file_offset_of(probe.ref().home_file());
  const std::uint64_t flipped_at = extent + 1000 * sizeof(float);  // a byte of element 1000
  {
    // Another writer (a stray process, a bad sector): bitwise NOT of one byte, with plain
    // POSIX calls on the arena file.
    bool flipped = false;
    const int fd = ::open(nvme.path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      unsigned char byte = 0;
      if (::pread(fd, &byte, 1, static_cast<off_t>(flipped_at)) == 1) {
        byte = static_cast<unsigned char>(~byte);
        flipped = ::pwrite(fd, &byte, 1, static_cast<off_t>(flipped_at)) == 1 &&
                  ::fdatasync(fd) == 0;
      }
      ::close(fd);
    }
    std::printf("  tensor 'probe' %s (%.0f KiB) lives at file offset %llu; flipped the byte at "
                "file offset %llu\n",
                probe.shape().to_string().c_str(), probe.size_bytes() / 1024.0,
                static_cast<unsigned long long>(extent),
                static_cast<unsigned long long>(flipped_at));
    check("the byte in the arena file was changed (open, pread, pwrite)", flipped);
  }
  try {
    (void)probe.to_vector();
    check("reading the damaged tensor throws strata::format_error", false);
  } catch (const strata::format_error& e) {
    const std::string what = e.what();
    std::printf("  probe.to_vector() threw strata::format_error:\n%s\n",
                indented(what).c_str());
    check("reading the damaged tensor throws strata::format_error", true);
    check("its message names the file, the offset and the tensor",
          what.find(nvme.path()) != std::string::npos &&
              what.find(std::to_string(extent)) != std::string::npos &&
              what.find("'probe'") != std::string::npos);
  }
  // Writes are copy-on-write: a fresh assign goes to a new extent with new checksums.
  probe.assign(probe_values);
  check("after a fresh assign the tensor reads back as written", probe.to_vector() == probe_values);

  return verdict(check.ok());
}

}  // namespace

int main(int argc, char** argv) {
  // The NVMe tier's directory: the first argument, else ./02_nvme_spill.data. strata creates
  // its file inside but not the directory itself, so make it here.
  const std::string directory = argc > 1 ? argv[1] : "02_nvme_spill.data";
  try {
    std::error_code ec;
    std::filesystem::create_directories(directory, ec);
    std::printf("strata example 02: tensors larger than host memory, at home on NVMe\n");
    std::printf("  nvme directory: %s%s\n",
                std::filesystem::absolute(directory).string().c_str(),
                argc > 1 ? "" : " (the default; pass another directory as the first argument)");
    return run(directory);
  } catch (const std::exception& e) {  // strata::error and its children, or a filesystem_error
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
