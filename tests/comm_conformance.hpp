// tests/comm_conformance.hpp — the contract of comm/communicator.hpp as one test body, templated
// on the communicator, run over every backend: solo and threads (tests/unit/
// test_comm_conformance.cpp), mpi (tests/mpi/comm_mpi_cases.hpp, 2 and 4 ranks) and, on device
// buffers, solo, threads, mpi and nccl (tests/cuda/test_nccl.cu).
//
// What lives here: the cases (each runs on every rank of a fresh communicator and records what
// it found in a verdict), the rank-seeded inputs, the plain rank-order reference, and the
// buffer policy host_memory (test_nccl.cu adds a device one with the same members). No test
// framework: the Catch2 programs and the GPU harness each drive cases() and check the verdict.
// What does not: cases only one backend can have — mismatches that only threads can see, what a
// dropped request does (threads fails the world, mpi finishes it), timeouts (the ranks that stay
// away must be parked differently per backend), host buffers refused by nccl.
//
// Every rank computes the reference for itself from the rank-seeded inputs, so ranks in other
// processes need not exchange anything but the collective under test. With profile
// rank_order() results must equal the reference bitwise (solo, threads, mpi); profile
// tolerant() (nccl, which does not add in rank order) uses inputs in [-1, 1] and a tolerance.
#pragma once

#include <strata/comm/communicator.hpp>
#include <strata/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace comm_conformance {

using strata::comm::reduce_op;

/// What the cases found, from any number of threads (the ranks of a thread_world share one).
class verdict {
public:
  void expect(bool ok, const std::string& what) {
    if (ok) return;
    std::lock_guard lock(mutex_);
    failures_.push_back(what);
  }
  bool passed() const {
    std::lock_guard lock(mutex_);
    return failures_.empty();
  }
  /// One failure per line, for the test's message.
  std::string report() const {
    std::lock_guard lock(mutex_);
    std::string s;
    for (const auto& f : failures_) s += f + "\n";
    return s;
  }

private:
  mutable std::mutex mutex_;
  std::vector<std::string> failures_;
};

/// How results are compared: bitwise (tolerance 0, inputs whose order of addition shows in the
/// bits) or within a tolerance (inputs in [-1, 1], where an absolute tolerance means something).
struct profile {
  float tolerance = 0.0f;
  bool order_sensitive_inputs = true;
};
inline profile rank_order() { return {}; }
inline profile tolerant(int ranks) { return {1e-5f * static_cast<float>(ranks), false}; }

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

inline std::vector<unsigned char> bytes_of_rank(int rank, std::size_t n, unsigned salt) {
  std::mt19937 rng(1000u * salt + static_cast<unsigned>(rank));
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

/// Order-sensitive: magnitudes from 1e-8 to 1e8 with both signs, so a + b + c != a + (b + c)
/// for many elements. Otherwise uniform in [-1, 1].
inline std::vector<float> floats_of_rank(int rank, std::size_t n, unsigned salt,
                                         const profile& p) {
  std::mt19937 rng(7919u * salt + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-8, 8);
  std::vector<float> v(n);
  for (auto& x : v)
    x = p.order_sensitive_inputs
            ? mantissa(rng) * std::pow(10.0f, static_cast<float>(exponent(rng)))
            : mantissa(rng);
  return v;
}

/// The definition, for elements [offset, offset + count) of every rank's floats_of_rank(r,
/// stride, salt): acc = x_0; acc += x_1; ...; acc += x_{ranks-1}; then acc / float(ranks) for mean.
inline std::vector<float> reference(int ranks, std::size_t count, std::size_t offset,
                                    std::size_t stride, unsigned salt, reduce_op op,
                                    const profile& p) {
  std::vector<std::vector<float>> in;
  for (int r = 0; r < ranks; ++r) in.push_back(floats_of_rank(r, stride, salt, p));
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    float acc = in[0][offset + i];
    for (int r = 1; r < ranks; ++r) acc += in[static_cast<std::size_t>(r)][offset + i];
    if (op == reduce_op::mean) acc = acc / static_cast<float>(ranks);
    out[i] = acc;
  }
  return out;
}

/// Bitwise when p.tolerance == 0, else every element within it.
inline bool matches(const std::vector<float>& got, const std::vector<float>& want,
                    const profile& p) {
  if (got.size() != want.size()) return false;
  if (p.tolerance == 0.0f)
    return std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= p.tolerance)) return false;
  return true;
}

/// Buffers in ordinary host memory. A buffer policy has a nested `buffer` with these members;
/// tests/cuda/test_nccl.cu has one whose buffers are GPU memory.
struct host_memory {
  class buffer {
  public:
    /// `bytes` bytes, each `fill` (so a result that was never written shows).
    explicit buffer(std::size_t bytes, unsigned char fill = 0xee)
        : bytes_(bytes), data_(new unsigned char[bytes ? bytes : 1]) {
      std::memset(data_.get(), fill, bytes ? bytes : 1);
    }
    template <class T>
    explicit buffer(const std::vector<T>& host) : buffer(host.size() * sizeof(T)) {
      write(0, host.data(), bytes_);
    }
    void* data() const noexcept { return data_.get(); }
    float* floats() const noexcept { return reinterpret_cast<float*>(data_.get()); }
    void write(std::size_t offset, const void* src, std::size_t n) {
      std::memcpy(data_.get() + offset, src, n);
    }
    template <class T>
    std::vector<T> read(std::size_t offset = 0, std::size_t n = 0) const {
      if (n == 0) n = bytes_ - offset;
      std::vector<T> out(n / sizeof(T));
      std::memcpy(out.data(), data_.get() + offset, out.size() * sizeof(T));
      return out;
    }

  private:
    std::size_t bytes_;
    std::unique_ptr<unsigned char[]> data_;
  };
};

inline const std::size_t byte_sizes[] = {1, 7, 4097, (std::size_t{1} << 20) + 3};
inline const std::size_t float_counts[] = {1, 3, 7, 1000, (std::size_t{1} << 18) + 5};
inline constexpr reduce_op both_ops[] = {reduce_op::sum, reduce_op::mean};

inline std::string on(int rank, const std::string& what) {
  return "rank " + std::to_string(rank) + ": " + what;
}

// ---- the cases: each rank of a fresh communicator calls each one once ------------------------

/// all_gather: rank r's bytes land at r * bytes, for sizes that divide nothing.
template <class Memory, strata::comm::communicator C>
void all_gather_is_exact(C& c, verdict& v, const profile&) {
  const auto n = static_cast<std::size_t>(c.size());
  for (std::size_t bytes : byte_sizes) {
    typename Memory::buffer send(bytes_of_rank(c.rank(), bytes, 1)), recv(n * bytes);
    c.all_gather(send.data(), recv.data(), bytes).wait();
    const auto got = recv.template read<unsigned char>();
    for (int r = 0; r < c.size(); ++r)
      v.expect(std::memcmp(got.data() + static_cast<std::size_t>(r) * bytes,
                           bytes_of_rank(r, bytes, 1).data(), bytes) == 0,
               on(c.rank(), "all_gather of " + std::to_string(bytes) + " bytes per rank: block " +
                                std::to_string(r)));
  }
}

/// reduce_scatter and all_reduce (apart and in place), sum and mean, against the reference.
template <class Memory, strata::comm::communicator C>
void reductions_equal_the_reference(C& c, verdict& v, const profile& p) {
  const int n = c.size();
  const auto me = static_cast<std::size_t>(c.rank());
  for (std::size_t count : float_counts)
    for (reduce_op op : both_ops) {
      const std::string what =
          std::to_string(count) + " floats, " + strata::comm::reduce_op_name(op);
      const std::size_t total = static_cast<std::size_t>(n) * count;
      typename Memory::buffer rs_in(floats_of_rank(c.rank(), total, 2, p));
      typename Memory::buffer rs_out(count * sizeof(float));
      c.reduce_scatter(rs_in.floats(), rs_out.floats(), count, op).wait();
      v.expect(matches(rs_out.template read<float>(),
                       reference(n, count, me * count, total, 2, op, p), p),
               on(c.rank(), "reduce_scatter of " + what + " per rank"));

      const auto ar_host = floats_of_rank(c.rank(), count, 3, p);
      const auto expect = reference(n, count, 0, count, 3, op, p);
      typename Memory::buffer ar_in(ar_host), ar_out(count * sizeof(float));
      c.all_reduce(ar_in.floats(), ar_out.floats(), count, op).wait();
      v.expect(matches(ar_out.template read<float>(), expect, p),
               on(c.rank(), "all_reduce of " + what));
      typename Memory::buffer in_place(ar_host);
      c.all_reduce(in_place.floats(), in_place.floats(), count, op).wait();
      v.expect(matches(in_place.template read<float>(), expect, p),
               on(c.rank(), "all_reduce in place of " + what));
    }
}

/// all_gather with the shard already in its place in the full buffer, and reduce_scatter whose
/// result lands on the rank's own block of its send buffer: the two overlaps the concept allows.
template <class Memory, strata::comm::communicator C>
void in_place_all_gather_and_reduce_scatter(C& c, verdict& v, const profile& p) {
  const std::size_t count = 4099;
  const auto n = static_cast<std::size_t>(c.size());
  const auto me = static_cast<std::size_t>(c.rank());
  const std::size_t block = count * sizeof(float);

  typename Memory::buffer full(n * block, 0);
  full.write(me * block, floats_of_rank(c.rank(), count, 5, p).data(), block);
  c.all_gather(static_cast<unsigned char*>(full.data()) + me * block, full.data(), block).wait();
  for (int r = 0; r < c.size(); ++r)
    v.expect(matches(full.template read<float>(static_cast<std::size_t>(r) * block, block),
                     floats_of_rank(r, count, 5, p), rank_order()),
             on(c.rank(), "in-place all_gather: block " + std::to_string(r)));

  typename Memory::buffer buf(floats_of_rank(c.rank(), n * count, 6, p));
  float* out = buf.floats() + me * count;
  c.reduce_scatter(buf.floats(), out, count, reduce_op::sum).wait();
  v.expect(matches(buf.template read<float>(me * block, block),
                   reference(c.size(), count, me * count, n * count, 6, reduce_op::sum, p), p),
           on(c.rank(), "in-place reduce_scatter"));
}

/// broadcast from every root (a non-zero one whenever there are two ranks), and barriers between
/// all_gathers: each round's all_gather sees every rank in that same round.
template <class Memory, strata::comm::communicator C>
void broadcast_from_every_root_and_barrier(C& c, verdict& v, const profile&) {
  for (int root = 0; root < c.size(); ++root)
    for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, (std::size_t{1} << 20) + 3}) {
      const auto data = bytes_of_rank(root, bytes, 7);
      typename Memory::buffer buf(bytes, 0);
      if (c.rank() == root) buf.write(0, data.data(), bytes);
      c.broadcast(buf.data(), bytes, root).wait();
      v.expect(buf.template read<unsigned char>() == data,
               on(c.rank(), "broadcast of " + std::to_string(bytes) + " bytes from rank " +
                                std::to_string(root)));
    }

  const auto n = static_cast<std::size_t>(c.size());
  for (int round = 0; round < 10; ++round) {
    c.barrier().wait();
    const int mine = round * 100 + c.rank();
    typename Memory::buffer send(std::vector<int>{mine}), all(n * sizeof(int));
    c.all_gather(send.data(), all.data(), sizeof(int)).wait();
    const auto got = all.template read<int>();
    for (int r = 0; r < c.size(); ++r)
      v.expect(got[static_cast<std::size_t>(r)] == round * 100 + r,
               on(c.rank(), "round " + std::to_string(round) + " after a barrier: rank " +
                                std::to_string(r) + "'s value"));
  }
}

/// A root that is no rank is a config_error on every rank before anything starts, so the
/// communicator stays usable.
template <class Memory, strata::comm::communicator C>
void bad_root_is_a_config_error(C& c, verdict& v, const profile&) {
  typename Memory::buffer b(1);
  for (int root : {c.size(), -1}) {
    bool refused = false;
    try {
      (void)c.broadcast(b.data(), 1, root);
    } catch (const strata::config_error& e) {
      refused = contains(e.what(), "broadcast root " + std::to_string(root));
    }
    v.expect(refused, on(c.rank(), "broadcast from root " + std::to_string(root) +
                                       " was not a config_error naming the root"));
  }
  c.barrier().wait();  // not failed
}

/// Several collectives in flight, waited in different orders on different ranks, or only
/// polled with ready(): progress never depends on the order in which ranks wait.
template <class Memory, strata::comm::communicator C>
void in_flight_in_any_wait_order(C& c, verdict& v, const profile& p) {
  const int n = c.size();
  const std::size_t count = 50'001, bytes = 1001;
  for (int round = 0; round < 3; ++round) {
    const auto salt = static_cast<unsigned>(round);
    typename Memory::buffer a_in(floats_of_rank(c.rank(), count, 10 + salt, p));
    typename Memory::buffer b_in(floats_of_rank(c.rank(), count, 20 + salt, p));
    typename Memory::buffer g_in(bytes_of_rank(c.rank(), bytes, 30 + salt));
    typename Memory::buffer a_out(count * sizeof(float)), b_out(count * sizeof(float));
    typename Memory::buffer g_out(static_cast<std::size_t>(n) * bytes);
    strata::comm::request a = c.all_reduce(a_in.floats(), a_out.floats(), count, reduce_op::sum);
    strata::comm::request b = c.all_reduce(b_in.floats(), b_out.floats(), count, reduce_op::mean);
    strata::comm::request g = c.all_gather(g_in.data(), g_out.data(), bytes);
    strata::comm::request d = c.barrier();
    if (c.rank() % 3 == 0) {
      d.wait(), g.wait(), b.wait(), a.wait();
    } else if (c.rank() % 3 == 1) {
      a.wait(), b.wait(), g.wait(), d.wait();
    } else {
      while (!(a.ready() && b.ready() && g.ready() && d.ready())) {
      }
      a.wait(), b.wait(), g.wait(), d.wait();  // only rethrows a failure
    }
    const std::string what = "round " + std::to_string(round) + ": ";
    v.expect(matches(a_out.template read<float>(),
                     reference(n, count, 0, count, 10 + salt, reduce_op::sum, p), p),
             on(c.rank(), what + "all_reduce sum"));
    v.expect(matches(b_out.template read<float>(),
                     reference(n, count, 0, count, 20 + salt, reduce_op::mean, p), p),
             on(c.rank(), what + "all_reduce mean"));
    const auto got = g_out.template read<unsigned char>();
    for (int r = 0; r < n; ++r)
      v.expect(std::memcmp(got.data() + static_cast<std::size_t>(r) * bytes,
                           bytes_of_rank(r, bytes, 30 + salt).data(), bytes) == 0,
               on(c.rank(), what + "all_gather block " + std::to_string(r)));
  }
}

/// 1e8 + -1e8 + 1 is 1 in float added in rank order and 0 when the last two go first: the sum
/// really is in rank order, and the test can tell (needs 3 ranks; rank-order backends only).
template <class Memory, strata::comm::communicator C>
void sums_are_in_rank_order(C& c, verdict& v, const profile& p) {
  if (c.size() < 3 || p.tolerance != 0.0f) return;
  volatile float big = 1e8f, minus_big = -1e8f, one = 1.0f;  // computed at run time, in float
  v.expect(big + (minus_big + one) == 0.0f, "the other order gives 0 (the test can tell)");
  const float inputs[] = {1e8f, -1e8f, 1.0f};
  const float mine = c.rank() < 3 ? inputs[c.rank()] : 0.0f;
  typename Memory::buffer in(std::vector<float>{mine}), out(sizeof(float));
  c.all_reduce(in.floats(), out.floats(), 1, reduce_op::sum).wait();
  v.expect(out.template read<float>() == std::vector<float>{1.0f},
           on(c.rank(), "all_reduce of {1e8, -1e8, 1, 0...} is not 1"));
  typename Memory::buffer blocks(std::vector<float>(static_cast<std::size_t>(c.size()), mine));
  c.reduce_scatter(blocks.floats(), out.floats(), 1, reduce_op::sum).wait();
  v.expect(out.template read<float>() == std::vector<float>{1.0f},
           on(c.rank(), "reduce_scatter of {1e8, -1e8, 1, 0...} is not 1"));
}

/// Rank 1 (rank 0 alone) aborts in step 3 of a loop of all_reduces: every other rank's pending
/// or next collective throws comm_error naming rank 1 and its reason — heard of, not timed out —
/// and from then on every collective throws at once, the aborting rank's own included.
template <class Memory, strata::comm::communicator C>
void abort_fails_every_rank_naming_it(C& c, verdict& v, const profile&) {
  const int failing = c.size() > 1 ? 1 : 0;
  const std::string why = "loss is NaN in step 3";
  const std::string named = "rank " + std::to_string(failing) + " failed: " + why;
  const auto stays_failed = [&] {
    try {
      (void)c.barrier();
      v.expect(false, on(c.rank(), "a collective started after the failure"));
    } catch (const strata::comm_error& e) {
      v.expect(contains(e.what(), named), on(c.rank(), std::string("later: ") + e.what()));
    }
  };
  typename Memory::buffer x(std::vector<float>(1000, 1.0f)), y(1000 * sizeof(float));
  for (int step = 0; step < 5; ++step) {
    if (step == 3 && c.rank() == failing) {
      c.abort(why);
      stays_failed();
      return;
    }
    try {
      c.all_reduce(x.floats(), y.floats(), 1000, reduce_op::sum).wait();
      v.expect(step < 3, on(c.rank(), "all_reduce #" + std::to_string(step) +
                                          " completed although rank 1 never called it"));
    } catch (const strata::comm_error& e) {
      const std::string what = e.what();
      // Rank 1 aborts after its step 2 completed, which needs every rank to have joined step 2;
      // a rank still finishing step 2 may hear of the abort there (its pending collective).
      v.expect(step >= 2, on(c.rank(), "failed too early: " + what));
      v.expect(contains(what, named), on(c.rank(), "does not name rank and reason: " + what));
      v.expect(contains(what, "all_reduce #" + std::to_string(step)),
               on(c.rank(), "does not name the collective: " + what));
      v.expect(!contains(what, "waited"), on(c.rank(), "timed out instead of hearing: " + what));
      stays_failed();
      return;
    }
  }
  v.expect(false, on(c.rank(), "every step completed although rank 1 aborted"));
}

/// One case as the drivers see it.
template <class C>
struct named_case {
  const char* name;
  std::function<void(C&, verdict&, const profile&)> body;
};

/// Runs case k on this rank. An exception the case did not expect is a failure, and aborts the
/// communicator so the peers fail fast instead of waiting for their timeout.
template <class C>
void run_case(const named_case<C>& k, C& c, verdict& v, const profile& p) {
  try {
    k.body(c, v, p);
  } catch (const std::exception& e) {
    v.expect(false, on(c.rank(), std::string(k.name) + ": threw " + e.what()));
    c.abort(std::string("the conformance case threw: ") + e.what());
  }
}

/// Every case, in the order every rank runs them. Each wants a fresh communicator (the last
/// leaves it failed, and a case that fails may leave it failed too).
template <strata::comm::communicator C, class Memory = host_memory>
std::vector<named_case<C>> cases() {
  return {
      {"all_gather is bitwise exact for uneven sizes", all_gather_is_exact<Memory, C>},
      {"reduce_scatter and all_reduce equal the rank-order reference",
       reductions_equal_the_reference<Memory, C>},
      {"in-place all_gather and reduce_scatter", in_place_all_gather_and_reduce_scatter<Memory, C>},
      {"broadcast from every root, and barrier", broadcast_from_every_root_and_barrier<Memory, C>},
      {"a broadcast root that is no rank is a config_error", bad_root_is_a_config_error<Memory, C>},
      {"collectives in flight, waited in any order or polled",
       in_flight_in_any_wait_order<Memory, C>},
      {"sums are in rank order (and the test can tell)", sums_are_in_rank_order<Memory, C>},
      {"abort fails every rank, naming the rank and its reason",
       abort_fails_every_rank_naming_it<Memory, C>},
  };
}

}  // namespace comm_conformance
