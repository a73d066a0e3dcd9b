// strata/comm/nccl.hpp — GPU collectives through NCCL, for ranks launched by MPI (only with
// CUDA, NCCL and MPI: STRATA_ENABLE_CUDA, STRATA_HAVE_NCCL, STRATA_HAVE_MPI).
//
// What lives here: comm::nccl, one rank's NCCL communicator on one GPU (the local rank among
// the ranks on its node, modulo the node's GPUs), bootstrapped by broadcasting the
// ncclUniqueId over MPI. Buffers are device memory (a host pointer is a config_error);
// collectives are queued on the communicator's own non-blocking CUDA stream and a request waits
// on a CUDA event recorded after them.
// What does not: host buffers (comm::mpi), launching ranks (mpirun), several GPUs per rank.
// Without all three components this header is empty: link strata::nccl and strata::mpi.
//
// Differences from the contract in comm/communicator.hpp:
//  - reduce_scatter and all_reduce use ncclReduceScatter / ncclAllReduce (mean: ncclAvg).
//    NCCL's summation order is fixed for a given topology, rank count, message size and NCCL
//    version — a rerun on the same machine repeats its bits — but it is not rank order, so the
//    result may differ in the last bits from solo / threads / mpi. The bitwise equivalence
//    tests apply to those backends; compare NCCL results with a tolerance.
//  - Ordering with compute: the collectives run on stream(), not on the caller's stream. Data
//    produced on another stream must be complete (or that stream made to wait: cudaEventRecord
//    there, cudaStreamWaitEvent(stream(), ...)) before the call; the result is complete on the
//    host when wait() returns, and for the GPU once stream() reaches the collective.
//  - Failure: an abort notice from a peer, an NCCL error or the timeout ends in
//    ncclCommAbort here (kernels waiting for a dead peer would otherwise never finish), and the
//    peers hear of it over MPI as with comm::mpi. A peer that never arrives is noticed by
//    the waits, which poll the event against the deadline — not by the GPU, whose kernel keeps
//    waiting until the abort.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/comm/communicator_face.hpp>

// strata's own headers are included outside the conditional: each guards itself, and the
// single-header generator then inlines each of them once.
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/nccl_state.hpp>
#include <strata/comm/detail/pending_collective.hpp>

#if STRATA_ENABLE_CUDA && STRATA_HAVE_NCCL && STRATA_HAVE_MPI

#  include <chrono>
#  include <memory>
#  include <string>
#  include <utility>

#  include <cuda_runtime_api.h>
#  include <mpi.h>
#  include <nccl.h>

STRATA_NAMESPACE_BEGIN
namespace comm {

class nccl : public communicator_face<nccl> {
public:
  /// Collective over the ranks of `base` (MPI must be initialised). Waits at most `timeout` for
  /// the other ranks to join the NCCL setup.
  explicit nccl(MPI_Comm base = MPI_COMM_WORLD, std::chrono::milliseconds timeout = default_timeout)
      : state_(std::make_shared<detail::nccl_state>(base, timeout)) {}
  ~nccl() {
    if (state_) state_->close();
  }
  nccl(nccl&&) noexcept = default;
  nccl& operator=(nccl&& o) noexcept {
    if (this != &o) {
      if (state_) state_->close();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  nccl(const nccl&) = delete;
  nccl& operator=(const nccl&) = delete;

  int rank() const noexcept { return state_->rank(); }
  int size() const noexcept { return state_->size(); }
  std::chrono::milliseconds timeout() const noexcept { return state_->timeout(); }
  /// The GPU this rank uses (cudaSetDevice is called with it before every NCCL call).
  int device() const noexcept { return state_->device(); }
  /// The stream the collectives run on.
  cudaStream_t stream() const noexcept { return state_->stream(); }
  ncclComm_t native() const noexcept { return state_->native(); }

private:
  friend class communicator_face<nccl>;
  static constexpr const char* backend_name = "nccl";

  /// nccl_state checks the buffers and the communicator, then runs the NCCL call on stream().
  detail::pending_op<detail::nccl_state> transport_start(const detail::collective_call& call,
                                                         const void* send, void* recv) {
    return {state_, state_->start(call, send, recv, [&] { return launch(call, send, recv); })};
  }

  /// The one NCCL call of `call`. NCCL has no barrier: an all_reduce of one float that lives
  /// on the device for this.
  ncclResult_t launch(const detail::collective_call& call, const void* send, void* recv) const {
    const auto* fsend = static_cast<const float*>(send);
    auto* frecv = static_cast<float*>(recv);
    switch (call.kind) {
    case detail::collective::all_gather:
      return ncclAllGather(send, recv, call.count, ncclUint8, native(), stream());
    case detail::collective::reduce_scatter:
      return ncclReduceScatter(fsend, frecv, call.count, ncclFloat32, to_nccl(call.op), native(),
                               stream());
    case detail::collective::all_reduce:
      return ncclAllReduce(fsend, frecv, call.count, ncclFloat32, to_nccl(call.op), native(),
                           stream());
    case detail::collective::broadcast:
      return ncclBroadcast(send, recv, call.count, ncclUint8, call.root, native(), stream());
    case detail::collective::barrier: {
      float* b = state_->barrier_buffer();
      return ncclAllReduce(b, b, 1, ncclFloat32, ncclSum, native(), stream());
    }
    }
    return ncclInvalidArgument;
  }

  static ncclRedOp_t to_nccl(reduce_op op) noexcept {
    return op == reduce_op::sum ? ncclSum : ncclAvg;
  }

  /// Its NCCL communicator is aborted too, so no kernel of this rank waits for the peers.
  void transport_abort(const std::string& why) noexcept { state_->abort(why); }

  std::shared_ptr<detail::nccl_state> state_;
};

static_assert(communicator<nccl>);

}  // namespace comm
STRATA_NAMESPACE_END

#endif  // STRATA_ENABLE_CUDA && STRATA_HAVE_NCCL && STRATA_HAVE_MPI
