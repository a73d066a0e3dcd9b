// Communicators on GPU buffers, on a real GPU: all_gather, reduce_scatter, all_reduce,
// broadcast and barrier against host references — comm::nccl (with a tolerance: NCCL does not
// add in rank order), and the host-side backends that accept device buffers (solo, threads,
// mpi: bitwise, since they add in rank order). Host buffers are refused by nccl; an abort fails
// the later collectives. Runs as one process: an MPI singleton, so the MPI-bootstrapped worlds
// have one rank (mpiexec may start more). Exits 77 (skipped) without a GPU. The NCCL and MPI
// cases need the target to link strata::nccl and strata::mpi; without them only the solo and
// threads cases run.
#include "cuda_test.hpp"

#include <strata/comm/mpi.hpp>
#include <strata/comm/nccl.hpp>
#include <strata/comm/solo.hpp>
#include <strata/comm/threads.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if STRATA_HAVE_MPI
#  include <mpi.h>
#endif

using namespace strata;
using namespace std::chrono_literals;

namespace {

std::vector<unsigned char> bytes_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(1000u * salt + static_cast<unsigned>(rank));
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

// In [-1, 1], so the tolerance used for NCCL means something.
std::vector<float> floats_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(7919u * salt + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// acc = b0; acc += b1; ...; then / float(n) for mean: the rank-order definition.
std::vector<float> reference(int n, std::size_t count, std::size_t offset, std::size_t stride,
                             unsigned salt, comm::reduce_op op) {
  std::vector<std::vector<float>> in;
  for (int r = 0; r < n; ++r) in.push_back(floats_of_rank(r, stride, salt));
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    float acc = in[0][offset + i];
    for (int r = 1; r < n; ++r) acc += in[static_cast<std::size_t>(r)][offset + i];
    if (op == comm::reduce_op::mean) acc = acc / static_cast<float>(n);
    out[i] = acc;
  }
  return out;
}

/// A device buffer, freed at scope end.
struct device_buffer {
  void* p = nullptr;
  std::size_t bytes = 0;
  explicit device_buffer(std::size_t n) : bytes(n) {
    check_cuda(cudaMalloc(&p, n ? n : 1), "cudaMalloc");
    check_cuda(cudaMemset(p, 0, n ? n : 1), "cudaMemset");
  }
  device_buffer(const void* host, std::size_t n) : device_buffer(n) {
    check_cuda(cudaMemcpy(p, host, n, cudaMemcpyHostToDevice), "H2D");
  }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  template <class T>
  std::vector<T> read() const {
    std::vector<T> out(bytes / sizeof(T));
    check_cuda(cudaMemcpy(out.data(), p, bytes, cudaMemcpyDeviceToHost), "D2H");
    return out;
  }
  float* f() const { return static_cast<float*>(p); }
};

/// Bitwise when tol == 0 (rank-order backends), else within tol.
bool matches(const std::vector<float>& got, const std::vector<float>& want, float tol) {
  if (got.size() != want.size()) return false;
  if (tol == 0.0f) return std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= tol)) return false;
  return true;
}

/// Every collective on device buffers, on rank c.rank() of c.size(); false (with a line saying
/// what) on the first mismatch. Called concurrently by thread-ranks, so it only prints.
template <comm::communicator C>
bool device_collectives(C& c, float tol) {
  const int n = c.size();
  const auto me = static_cast<std::size_t>(c.rank());
  bool ok = true;
  const auto expect = [&](bool cond, const std::string& what) {
    if (!cond) std::printf("  rank %d: mismatch in %s\n", c.rank(), what.c_str());
    ok = ok && cond;
  };

  for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, (std::size_t{1} << 20) + 3}) {
    const auto mine = bytes_of_rank(c.rank(), bytes, 1);
    device_buffer send(mine.data(), bytes), recv(bytes * static_cast<std::size_t>(n));
    c.all_gather(send.p, recv.p, bytes).wait();
    const auto got = recv.read<unsigned char>();
    for (int r = 0; r < n; ++r)
      expect(std::memcmp(got.data() + static_cast<std::size_t>(r) * bytes,
                         bytes_of_rank(r, bytes, 1).data(), bytes) == 0,
             "all_gather of " + std::to_string(bytes) + " bytes, block " + std::to_string(r));
  }

  for (std::size_t count : {std::size_t{1}, std::size_t{1000}, (std::size_t{1} << 18) + 5})
    for (auto op : {comm::reduce_op::sum, comm::reduce_op::mean}) {
      const std::string what = std::to_string(count) + " floats, " + comm::reduce_op_name(op);
      const std::size_t total = static_cast<std::size_t>(n) * count;
      const auto rs_in = floats_of_rank(c.rank(), total, 2);
      device_buffer rs_send(rs_in.data(), total * sizeof(float)), rs_recv(count * sizeof(float));
      c.reduce_scatter(rs_send.f(), rs_recv.f(), count, op).wait();
      expect(matches(rs_recv.read<float>(), reference(n, count, me * count, total, 2, op), tol),
             "reduce_scatter of " + what);

      const auto ar_in = floats_of_rank(c.rank(), count, 3);
      device_buffer ar(ar_in.data(), count * sizeof(float));
      c.all_reduce(ar.f(), ar.f(), count, op).wait();  // in place
      expect(matches(ar.read<float>(), reference(n, count, 0, count, 3, op), tol),
             "all_reduce of " + what);
    }

  for (int root = 0; root < n; ++root) {
    const auto data = bytes_of_rank(root, 4097, 4);
    device_buffer buf(4097);
    if (c.rank() == root)
      check_cuda(cudaMemcpy(buf.p, data.data(), 4097, cudaMemcpyHostToDevice), "H2D");
    c.broadcast(buf.p, 4097, root).wait();
    expect(buf.read<unsigned char>() == data, "broadcast from " + std::to_string(root));
  }
  c.barrier().wait();
  return ok;
}

void solo_on_device() {
  comm::solo c;
  GPU_CHECK(device_collectives(c, 0.0f));
}

void threads_on_device() {
  comm::thread_world world(3, 30s);
  std::atomic<int> bad{0};
  world.run([&](comm::threads& c) {
    if (!device_collectives(c, 0.0f)) ++bad;
  });
  GPU_CHECK(bad.load() == 0);
}

#if STRATA_HAVE_MPI
void mpi_on_device() {
  comm::mpi c(MPI_COMM_WORLD, 30s);
  GPU_CHECK(device_collectives(c, 0.0f));
}
#endif

#if STRATA_HAVE_NCCL && STRATA_HAVE_MPI
void nccl_collectives() {
  comm::nccl c(MPI_COMM_WORLD, 30s);
  static_assert(comm::communicator<comm::nccl>);
  GPU_CHECK(device_collectives(c, 1e-5f * static_cast<float>(c.size())));

  std::vector<float> host(16);
  bool refused = false;
  try {
    c.all_reduce(host.data(), host.data(), host.size(), comm::reduce_op::sum);
  } catch (const config_error&) {
    refused = true;
  }
  GPU_CHECK(refused);
}

void nccl_abort_fails_later_collectives() {
  comm::nccl c(MPI_COMM_WORLD, 30s);
  c.barrier().wait();
  MPI_Barrier(MPI_COMM_WORLD);  // every rank is here before anyone aborts
  if (c.rank() == 0) c.abort("stopping on purpose");
  bool named = false;
  try {
    c.barrier().wait();  // rank 0 throws at the call; the others on rank 0's notice
  } catch (const comm_error& e) {
    named = std::string(e.what()).find("rank 0 failed: stopping on purpose") != std::string::npos;
    if (!named) std::printf("  unexpected message: %s\n", e.what());
  }
  GPU_CHECK(named);
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
      {"solo on device buffers == rank-order reference", solo_on_device},
      {"threads (3 ranks) on device buffers == rank-order reference", threads_on_device},
  };
#if STRATA_HAVE_MPI
  cases.push_back({"mpi on device buffers (staged) == rank-order reference", mpi_on_device});
#endif
#if STRATA_HAVE_NCCL && STRATA_HAVE_MPI
  cases.push_back({"nccl collectives on device buffers == host reference", nccl_collectives});
  cases.push_back({"nccl abort fails the later collectives, naming the rank",
                   nccl_abort_fails_later_collectives});
#endif
  const int rc = cuda_test::run_all(cases);
#if STRATA_HAVE_MPI
  MPI_Finalize();
#endif
  return rc;
}
