// needs: nlohmann_json
// Checkpoints over 2 MPI ranks (mpirun): each process saves its own shards in the background
// into one checkpoint root, rank 0 commits once both ranks' files are durable, and a run
// resumed from it — ZeRO-3 on host memory and ZeRO-Infinity on NVMe — is bitwise the run that
// was never interrupted; a checkpoint saved by the 2 MPI ranks loads onto 1 rank (each MPI
// process alone, comm::solo) bitwise as well.
// mpi-ranks: 2
// ctest-timeout: 300
#include "catch.hpp"

#if __has_include(<nlohmann/json.hpp>)

#include "io/io_test_support.hpp"
#include "zero_adam_model.hpp"

#include <strata/checkpoint/saver.hpp>
#include <strata/comm/mpi.hpp>
#include <strata/comm/solo.hpp>

#include <mpi.h>

#include <cstring>
#include <filesystem>

using namespace strata;
using namespace zero_adam_model;

namespace {

// A directory both processes name: rank 0 makes it and sends its path.
std::string shared_dir(comm::mpi& c) {
  char path[512] = {};
  if (c.rank() == 0) {
    std::string t = io_test::test_tmpdir() + "/ckpt-mpi-XXXXXX";
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    std::strncpy(path, t.c_str(), sizeof path - 1);
  }
  c.broadcast(path, sizeof path, 0).wait();
  return path;
}

// The full parameters, m and v after steps [first, last] (loading `latest` of `dir` first when
// `resume`; saving after step `save_after` when > 0), on communicator `c`.
template <class Bundle, class Comm>
std::vector<std::vector<float>> run(Comm& c, int first, int last, const std::string& dir,
                                    int save_after, bool resume) {
  context ctx(io_test::toy_nvme_config(c.rank()));
  std::vector<layer_spec> specs;
  for (std::size_t i = 0; i < sizes.size(); ++i) specs.push_back({"L" + std::to_string(i), sizes[i]});
  using Ex = zero_executor<Comm, Bundle, prefetch::lookahead<1>>;
  Ex ex(ctx, c, specs);
  for (std::size_t i = 0; i < sizes.size(); ++i) ex.set_params(i, initial(i));
  optim::zero_adam opt(ex, std::function<optim::adam_params(std::size_t)>(params_of),
                       {.sub_group = 16 << 10});
  std::optional<checkpoint::saver<Ex>> ck;
  if (!dir.empty()) ck.emplace(ex, opt, checkpoint::saver_options{.directory = dir});
  if (resume) REQUIRE(int(ck->resume()->step) == first - 1);
  for (int step = first; step <= last; ++step) {
    float act = 0;
    ex.forward([&](std::size_t i, const float* w, std::size_t n) { forward_layer(c.rank(), 0, i, w, n, act); });
    ex.backward([&](std::size_t i, const float* w, float* dw, std::size_t n) {
      backward_layer(c.rank(), 0, i, w, dw, n, act, 1.0f);
    });
    (void)opt.step(ex, {.max_grad_norm = 5.0});
    if (ck) {
      if (auto r = ck->poll()) CHECK(r->error.empty());
      if (step == save_after) ck->save("step-" + std::to_string(step), std::uint64_t(step));
    }
  }
  if (ck)
    if (auto r = ck->finish()) CHECK((r->committed && r->error.empty()));
  std::vector<std::vector<float>> state;
  for (std::size_t i = 0; i < sizes.size(); ++i) state.push_back(ex.params(i));  // a collective
  // m and v: every rank's part, gathered here in rank order by a sum of zero-padded copies
  // (sums with zeros are exact).
  for (std::size_t i = 0; i < sizes.size(); ++i)
    for (int which = 0; which < 2; ++which) {
      std::vector<float> mine(sizes[i], 0.0f), all(sizes[i], 0.0f);
      const auto part = which == 0 ? opt.m(i) : opt.v(i);
      std::copy(part.begin(), part.end(), mine.begin() + std::ptrdiff_t(ex.part_offset(i)));
      if constexpr (Bundle::stage == 0) all = mine;
      else c.all_reduce(mine.data(), all.data(), all.size(), comm::reduce_op::sum).wait();
      state.push_back(all);
    }
  return state;
}

template <class Bundle>
void resume_over_mpi() {
  comm::mpi c(MPI_COMM_WORLD, std::chrono::seconds(60));
  INFO("rank " << c.rank() << ", home " << Bundle::home_tier::name);
  const std::string dir = shared_dir(c);
  const auto whole = run<Bundle>(c, 1, 4, "", 0, false);
  (void)run<Bundle>(c, 1, 3, dir, 2, false);  // saves after step 2, trains on, "dies"
  const auto resumed = run<Bundle>(c, 3, 4, dir, 0, true);
  REQUIRE(resumed.size() == whole.size());
  for (std::size_t k = 0; k < whole.size(); ++k) {
    INFO("array " << k);
    CHECK(std::memcmp(resumed[k].data(), whole[k].data(), whole[k].size() * 4) == 0);
  }
  // The 2-rank checkpoint loads onto 1 rank: the state after step 2, bitwise.
  const auto at2 = run<Bundle>(c, 1, 2, "", 0, false);
  comm::solo alone;
  const auto one = run<Bundle>(alone, 3, 2, dir, 0, true);  // loaded, no step
  for (std::size_t k = 0; k < at2.size(); ++k) {
    INFO("array " << k << " on 1 rank");
    CHECK(std::memcmp(one[k].data(), at2[k].data(), at2[k].size() * 4) == 0);
  }
  c.barrier().wait();
  if (c.rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace

TEST_CASE("checkpoints over MPI: resumed == uninterrupted, bitwise", "[checkpoint][mpi]") {
  resume_over_mpi<zero3_offload>();
  resume_over_mpi<zero3_infinity>();
}

#else
TEST_CASE("checkpoints over MPI (needs nlohmann/json)", "[checkpoint][mpi]") { SUCCEED("skipped: no nlohmann/json"); }
#endif
