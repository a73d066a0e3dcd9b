// strata/comm/mpi.hpp — ranks launched by MPI (only with MPI: STRATA_HAVE_MPI).
//
// What lives here: comm::mpi, a communicator over a duplicate of an MPI communicator
// (MPI_COMM_WORLD unless told otherwise), for host buffers and — in the CUDA build — device
// buffers, which are staged through pinned host blocks (Debian's Open MPI is not CUDA-aware,
// and staging works with any MPI). Collectives are MPI's nonblocking ones; the reductions are
// deterministic (rank order, see comm/communicator.hpp) because strata adds, not MPI.
// What does not: GPU-direct collectives (comm/nccl.hpp), launching ranks (mpirun / mpiexec).
// Without STRATA_HAVE_MPI this header is empty: link strata::mpi to get the communicator.
//
// Differences from the concept's minimum worth knowing:
//  - The send buffer is copied into staging during the call, so it may be reused as soon as the
//    call returns (portable code still keeps it until wait(), for the other backends).
//  - Progress happens in wait() and ready() (as with MPI_Test). all_reduce runs in two phases;
//    its second starts inside a wait() or ready() of this communicator.
//  - abort(why) sends `why` to every other rank on a control communicator of its own; their
//    waits look for it while polling, so they throw comm_error naming this rank and `why`
//    within one poll (well inside the timeout). A rank that times out tells the others the same
//    way. Nobody calls MPI_Abort: every rank can still destroy its communicators, call
//    MPI_Finalize and exit 0.
//  - A request dropped before completion lets its collective finish in the background (its
//    staging is owned by the communicator); its result is discarded.
//  - One thread at a time per communicator object (calls are serialised by a mutex, but MPI
//    itself must then be initialised with MPI_THREAD_MULTIPLE when several threads use MPI).
//  - Per-rank counts are limited to INT_MAX bytes (all_gather, broadcast) or floats (the
//    reductions): MPI counts are int. Larger ones are a config_error on every rank.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/comm/communicator_face.hpp>

// strata's own headers are included outside the conditional: each guards itself, and the
// single-header generator then inlines each of them once.
#include <strata/comm/detail/collective.hpp>
#include <strata/comm/detail/mpi_state.hpp>
#include <strata/comm/detail/pending_collective.hpp>

#if STRATA_HAVE_MPI

#  include <chrono>
#  include <memory>
#  include <string>
#  include <utility>

#  include <mpi.h>

STRATA_NAMESPACE_BEGIN
namespace comm {

class mpi : public communicator_face<mpi> {
public:
  /// Duplicates `base` (collective over its ranks, like MPI_Comm_dup). MPI must be initialised.
  explicit mpi(MPI_Comm base = MPI_COMM_WORLD, std::chrono::milliseconds timeout = default_timeout)
      : state_(std::make_shared<detail::mpi_state>(base, timeout)) {}
  /// Frees the duplicates (see detail::mpi_state::close for what a failed one leaves behind).
  ~mpi() {
    if (state_) state_->close();
  }
  mpi(mpi&&) noexcept = default;
  mpi& operator=(mpi&& o) noexcept {
    if (this != &o) {
      if (state_) state_->close();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  mpi(const mpi&) = delete;
  mpi& operator=(const mpi&) = delete;

  int rank() const noexcept { return state_->rank(); }
  int size() const noexcept { return state_->size(); }
  std::chrono::milliseconds timeout() const noexcept { return state_->timeout(); }
  /// The duplicated communicator the collectives run on.
  MPI_Comm native() const noexcept { return state_->data_comm(); }

private:
  friend class communicator_face<mpi>;
  static constexpr const char* backend_name = "mpi";

  detail::pending_op<detail::mpi_state> transport_start(const detail::collective_call& call,
                                                        const void* send, void* recv) {
    return {state_, state_->start(call, send, recv)};
  }

  /// Never blocks, never calls MPI_Abort: the peers hear of it on the control communicator.
  void transport_abort(const std::string& why) noexcept { state_->abort(why); }

  std::shared_ptr<detail::mpi_state> state_;
};

static_assert(communicator<mpi>);

}  // namespace comm
STRATA_NAMESPACE_END

#endif  // STRATA_HAVE_MPI
