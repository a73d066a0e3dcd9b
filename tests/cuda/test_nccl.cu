// Communicators on GPU buffers, on a real GPU: the cases of tests/comm_conformance.hpp (every
// collective against the rank-order reference, roots, requests in flight, abort) with device
// buffers — comm::nccl within a tolerance (NCCL does not add in rank order), and the host-side
// backends that accept device buffers (solo, threads, mpi) bitwise. Plus what is NCCL's own:
// host buffers are refused. Runs as one process: an MPI singleton, so the MPI-bootstrapped
// worlds have one rank (mpiexec may start more). Exits 77 (skipped) without a GPU. The NCCL and
// MPI cases need the target to link strata::nccl and strata::mpi; without them only the solo
// and threads cases run.
#include "comm_conformance.hpp"
#include "cuda_test.hpp"

#include <strata/comm/mpi.hpp>
#include <strata/comm/nccl.hpp>
#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if STRATA_HAVE_MPI
#  include <mpi.h>
#endif

using namespace strata;
using namespace std::chrono_literals;
namespace cc = comm_conformance;

namespace {

/// comm_conformance's buffer policy on the GPU: the members of cc::host_memory::buffer.
struct device_memory {
  class buffer {
  public:
    explicit buffer(std::size_t bytes, unsigned char fill = 0xee) : bytes_(bytes) {
      check_cuda(cudaMalloc(&p_, bytes ? bytes : 1), "cudaMalloc");
      check_cuda(cudaMemset(p_, fill, bytes ? bytes : 1), "cudaMemset");
    }
    template <class T>
    explicit buffer(const std::vector<T>& host) : buffer(host.size() * sizeof(T)) {
      write(0, host.data(), bytes_);
    }
    ~buffer() { cudaFree(p_); }
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;

    void* data() const noexcept { return p_; }
    float* floats() const noexcept { return static_cast<float*>(p_); }
    void write(std::size_t offset, const void* src, std::size_t n) {
      check_cuda(cudaMemcpy(static_cast<unsigned char*>(p_) + offset, src, n,
                            cudaMemcpyHostToDevice),
                 "H2D");
    }
    template <class T>
    std::vector<T> read(std::size_t offset = 0, std::size_t n = 0) const {
      if (n == 0) n = bytes_ - offset;
      std::vector<T> out(n / sizeof(T));
      check_cuda(cudaMemcpy(out.data(), static_cast<const unsigned char*>(p_) + offset,
                            out.size() * sizeof(T), cudaMemcpyDeviceToHost),
                 "D2H");
      return out;
    }

  private:
    void* p_ = nullptr;
    std::size_t bytes_;
  };
};

/// Every conformance case on device buffers, each on a fresh communicator from make(); a failed
/// case prints what it found.
template <class C, class Make>
void conformance(const char* backend, Make make, const cc::profile& p) {
  for (const auto& k : cc::cases<C, device_memory>()) {
    cc::verdict v;
    make([&](C& c) { cc::run_case(k, c, v, p); });
    if (!v.passed()) std::printf("  %s: %s:\n%s", backend, k.name, v.report().c_str());
    GPU_CHECK(v.passed());
  }
}

void solo_on_device() {
  conformance<comm::solo>(
      "solo",
      [](auto&& body) {
        comm::solo c(30s);
        body(c);
      },
      cc::rank_order());
}

void threads_on_device() {
  conformance<comm::threads>(
      "threads",
      [](auto&& body) {
        comm::thread_world world(3, 30s);
        world.run(body);
      },
      cc::rank_order());
}

#if STRATA_HAVE_MPI
void mpi_on_device() {
  conformance<comm::mpi>(
      "mpi",
      [](auto&& body) {
        comm::mpi c(MPI_COMM_WORLD, 30s);
        body(c);
      },
      cc::rank_order());
}
#endif

#if STRATA_HAVE_NCCL && STRATA_HAVE_MPI
void nccl_conformance() {
  static_assert(comm::communicator<comm::nccl>);
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  conformance<comm::nccl>(
      "nccl",
      [](auto&& body) {
        comm::nccl c(MPI_COMM_WORLD, 30s);
        body(c);
      },
      cc::tolerant(ranks));
}

void nccl_refuses_host_buffers() {
  comm::nccl c(MPI_COMM_WORLD, 30s);
  std::vector<float> host(16);
  bool refused = false;
  try {
    (void)c.all_reduce(host.data(), host.data(), host.size(), comm::reduce_op::sum);
  } catch (const config_error&) {
    refused = true;
  }
  GPU_CHECK(refused);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (const int rc = cuda_test::no_gpu_exit_code(); rc >= 0) return rc;
#if STRATA_HAVE_MPI
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
#else
  (void)argc, (void)argv;
  std::printf("built without MPI (link strata::mpi, strata::nccl): no mpi and nccl cases\n");
#endif
  std::vector<cuda_test::test_case> cases = {
      {"solo conformance on device buffers (bitwise)", solo_on_device},
      {"threads (3 ranks) conformance on device buffers (bitwise)", threads_on_device},
  };
#if STRATA_HAVE_MPI
  cases.push_back({"mpi conformance on device buffers, staged (bitwise)", mpi_on_device});
#endif
#if STRATA_HAVE_NCCL && STRATA_HAVE_MPI
  cases.push_back({"nccl conformance on device buffers (within a tolerance)", nccl_conformance});
  cases.push_back({"nccl refuses host buffers", nccl_refuses_host_buffers});
#endif
  const int rc = cuda_test::run_all(cases);
#if STRATA_HAVE_MPI
  MPI_Finalize();
#endif
  return rc;
}
