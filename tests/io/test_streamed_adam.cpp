// streamed_adam (Adam state on NVMe, streamed through pinned buffer sets) == adam_update on the
// same arrays in memory, bitwise — master, m, v and the parameter copies — over several steps,
// groups of odd sizes, sub-groups smaller than a group and spanning groups, both IO engines.
// A fault injected in the middle of a step (a read, a data write, a commit) leaves the previous
// state bitwise intact and readable, names where it happened, and a retried step then equals
// the reference. The pipeline overlaps IO with the update (trace), the pinned buffers stay
// inside the plan, and a plan that does not fit is refused before anything is allocated.
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/io/faulty.hpp>
#include <strata/optim/streamed_adam.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

using namespace strata;
using namespace io_test;
using optim::adam_params;
using optim::adam_step_scalars;
using optim::group_spec;
using optim::streamed_adam;

namespace {

// Odd sizes; a checksum block of 4 KiB is 1024 floats, so 1024-element sub-groups cut "c" into
// 5 pieces and put the tail of one group and the head of the next in one sub-group.
const std::vector<group_spec> groups = {
    {"a", 3001}, {"b", 17}, {"c", 5000}, {"d", 1}, {"e", 2500}, {"f", 1024}};

context_config nvme_config(const std::string& engine) {
  context_config c;
  c.pinned_bytes = 16 << 20;
  c.staging_slot_bytes = 64 << 10;
  c.staging_slots = 2;
  c.nvme_directory = test_tmpdir();
  c.nvme_checksum_block = 4 << 10;
  c.io.kind = engine;
  c.io.block_bytes = 64 << 10;
  return c;
}

std::vector<float> pattern(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * u(rng);
  return v;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class G>
std::vector<G> convert(const std::vector<float>& v) {
  std::vector<G> out;
  for (float x : v) out.push_back(G(x));
  return out;
}

// Per group: lr and weight decay differ, half the groups are Adam (L2), half AdamW.
adam_params params_of(std::size_t g) {
  adam_params h;
  h.lr = 1e-2f * float(g + 1);
  h.weight_decay = 0.01f * float(g % 3);
  h.mode = g % 2 ? optim::weight_decay_mode::l2 : optim::weight_decay_mode::decoupled;
  return h;
}

// The in-memory reference: the same updates on whole arrays.
template <class G, class P>
struct reference {
  std::vector<std::vector<float>> master, m, v;
  std::vector<std::vector<P>> copy;
  reference() {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      master.push_back(pattern(groups[g].numel, unsigned(10 + g)));
      m.emplace_back(groups[g].numel, 0.0f);
      v.emplace_back(groups[g].numel, 0.0f);
      copy.emplace_back(groups[g].numel);
    }
  }
  void step(std::uint64_t t, float s, const std::vector<std::vector<G>>& grads) {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const auto k = adam_step_scalars::make(params_of(g), t, s);
      P* c = nullptr;
      if constexpr (!std::is_same_v<P, optim::no_copy>) c = copy[g].data();
      optim::adam_update<G, P>(k, master[g], m[g], v[g], std::span<const G>(grads[g]), c);
    }
  }
};

template <class G>
std::vector<std::vector<G>> gradients(int step) {
  std::vector<std::vector<G>> out;
  for (std::size_t g = 0; g < groups.size(); ++g)
    out.push_back(convert<G>(pattern(groups[g].numel, unsigned(1000 * step + g), 0.5f)));
  return out;
}

template <class G>
std::vector<std::span<const G>> spans_of(const std::vector<std::vector<G>>& v) {
  std::vector<std::span<const G>> out;
  for (auto& x : v) out.emplace_back(x);
  return out;
}

template <class G, class P>
void streamed_step(streamed_adam& opt, const std::vector<std::vector<G>>& grads,
                   std::vector<std::vector<P>>& copies, float s) {
  std::vector<adam_step_scalars> k;
  for (std::size_t g = 0; g < groups.size(); ++g)
    k.push_back(adam_step_scalars::make(params_of(g), opt.t() + 1, s));
  std::vector<std::span<P>> c;
  if constexpr (!std::is_same_v<P, optim::no_copy>)
    for (auto& x : copies) c.emplace_back(x);
  opt.step<G, P>(std::span<const adam_step_scalars>(k), spans_of(grads), c);
}

struct state {
  std::vector<std::vector<float>> master, m, v;
};
state read_state(streamed_adam& opt) {
  state s;
  for (std::size_t g = 0; g < opt.size(); ++g) {
    s.master.push_back(opt.master(g));
    s.m.push_back(opt.m(g));
    s.v.push_back(opt.v(g));
  }
  return s;
}
bool same_state(const state& a, const state& b) {
  for (std::size_t g = 0; g < a.master.size(); ++g)
    if (!same_bits(a.master[g], b.master[g]) || !same_bits(a.m[g], b.m[g]) ||
        !same_bits(a.v[g], b.v[g]))
      return false;
  return true;
}

// Runs `steps` steps streamed and in memory; returns whether everything matched bitwise.
template <class G, class P>
void check_against_reference(context& ctx, std::size_t sub_group, int steps) {
  INFO("sub_group " << sub_group);
  streamed_adam opt(ctx, groups, {.sub_group = sub_group}, "opt");
  reference<G, P> ref;
  for (std::size_t g = 0; g < groups.size(); ++g) opt.set_master(g, ref.master[g]);
  std::vector<std::vector<P>> copies;
  for (auto& g : groups) copies.emplace_back(g.numel);
  for (int step = 1; step <= steps; ++step) {
    const auto grads = gradients<G>(step);
    const float s = step == 2 ? 0.25f : 1.0f;  // a gradient multiplier (unscale x clip)
    streamed_step<G, P>(opt, grads, copies, s);
    ref.step(std::uint64_t(step), s, grads);
  }
  CHECK(opt.t() == std::uint64_t(steps));
  for (std::size_t g = 0; g < groups.size(); ++g) {
    INFO("group " << groups[g].name);
    CHECK(same_bits(opt.master(g), ref.master[g]));
    CHECK(same_bits(opt.m(g), ref.m[g]));
    CHECK(same_bits(opt.v(g), ref.v[g]));
    if constexpr (!std::is_same_v<P, optim::no_copy>) CHECK(same_bits(copies[g], ref.copy[g]));
  }
}

}  // namespace

TEST_CASE("streamed Adam == in-memory adam_update, bitwise, both engines", "[nvme][adam]") {
  for (const auto& engine : engine_kinds()) {
    INFO("engine " << engine);
    context ctx(nvme_config(engine));
    check_against_reference<float, bf16>(ctx, 1024, 3);     // sub-groups span groups
    check_against_reference<bf16, f16>(ctx, 2048, 3);
    check_against_reference<f16, float>(ctx, 3072, 2);
    check_against_reference<float, optim::no_copy>(ctx, 1 << 20, 2);  // one sub-group in all
    ctx.synchronize();
    CHECK(ctx.budget(tier_id::nvme).used() == 0);  // every optimizer gave its state back
  }
}

namespace {
// An engine that holds chosen IO calls until other work has reached a given point (for at most
// a minute each). It makes the pipeline's overlap observable without timing:
//  - sub-group 0's reads of all arrays but the first to read wait until the first array's read
//    of sub-group 1 has begun, so the update of sub-group 0 (which needs them) starts only
//    while that read is under way;
//  - every read of a later sub-group waits until the update of sub-group 0 has ended and a
//    write has begun, so that read spans the whole update of 0, and the update of 1 starts
//    only once sub-group 0 is being written;
//  - the writes of sub-group 0 wait until the update of sub-group 1 has ended.
// A pipeline that serialised IO and updates could never meet these conditions: a held call
// would run out of time and the test fail. A fast or loaded machine changes nothing.
class schedule_gate final : public io::engine {
public:
  schedule_gate(std::unique_ptr<io::engine> inner, std::size_t sub_group_bytes)
      : inner_(std::move(inner)), sub_group_bytes_(sub_group_bytes) {}
  const char* name() const noexcept override { return inner_->name(); }

  /// Starts holding calls, counting bytes per thread from zero; `trace` shows the updates.
  void arm(const trace_recorder& trace) {
    std::lock_guard lock(mutex_);
    trace_ = &trace;
    bytes_.clear();
    first_reader_ = {};
    later_read_begun_ = false;
    write_begun_ = false;
  }
  void disarm() {
    std::lock_guard lock(mutex_);
    trace_ = nullptr;
  }
  int timed_out() const { return timed_out_.load(); }

  void read(const io::file& f, void* dst, std::size_t bytes, std::uint64_t offset) override {
    hold(io::io_op::read, bytes);
    inner_->read(f, dst, bytes, offset);
  }
  void write(const io::file& f, const void* src, std::size_t bytes,
             std::uint64_t offset) override {
    hold(io::io_op::write, bytes);
    inner_->write(f, src, bytes, offset);
  }

private:
  void hold(io::io_op op, std::size_t bytes) {
    const trace_recorder* trace = nullptr;
    std::function<bool()> until;
    {
      std::lock_guard lock(mutex_);
      if (!trace_) return;
      trace = trace_;
      const auto self = std::this_thread::get_id();
      auto& done = bytes_[{self, op}];
      // Each array's reads (and writes) run in sub-group order on one queue thread, and
      // sub-group 0 is one full sub-group of the first group: the thread's first
      // sub_group_bytes are it.
      const bool sub_group_0 = done < sub_group_bytes_;
      done += bytes;
      if (op == io::io_op::read) {
        if (first_reader_ == std::thread::id{}) first_reader_ = self;
        if (!sub_group_0) {
          later_read_begun_ = true;
          until = [this, trace] { return updates_in(*trace) >= 1 && flag(write_begun_); };
        } else if (self != first_reader_) {
          until = [this] { return flag(later_read_begun_); };
        }
      } else {
        write_begun_ = true;
        if (sub_group_0) until = [trace] { return updates_in(*trace) >= 2; };
      }
    }
    if (!until) return;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (!until()) {
      if (std::chrono::steady_clock::now() > give_up) {
        ++timed_out_;
        return;
      }
      std::this_thread::yield();
    }
  }
  bool flag(const bool& f) {
    std::lock_guard lock(mutex_);
    return f;
  }
  static std::size_t updates_in(const trace_recorder& trace) {
    std::size_t n = 0;
    for (auto& s : trace.spans()) n += s.kind == span_kind::optimizer;
    return n;
  }

  std::unique_ptr<io::engine> inner_;
  std::size_t sub_group_bytes_;
  std::mutex mutex_;
  const trace_recorder* trace_ = nullptr;
  std::map<std::pair<std::thread::id, io::io_op>, std::size_t> bytes_;
  std::thread::id first_reader_{};
  bool later_read_begun_ = false, write_begun_ = false;
  std::atomic<int> timed_out_{0};
};

const span& span_labelled(const std::vector<span>& spans, const std::string& label) {
  for (auto& s : spans)
    if (s.label == label) return s;
  FAIL("no span '" << label << "'");
  return spans.front();
}
}  // namespace

TEST_CASE("the pipeline overlaps IO with the update, inside its plan", "[nvme][adam]") {
  constexpr std::size_t sub_group = 1024;
  schedule_gate* gate = nullptr;
  auto cfg = nvme_config("posix");
  cfg.wrap_io_engine = [&](std::unique_ptr<io::engine> e) {
    auto g = std::make_unique<schedule_gate>(std::move(e), sub_group * sizeof(float));
    gate = g.get();
    return std::unique_ptr<io::engine>(std::move(g));
  };
  context ctx(cfg);
  REQUIRE(gate != nullptr);
  REQUIRE(groups.front().numel >= sub_group);  // sub-group 0 is one full piece of group "a"
  streamed_adam opt(ctx, groups, {.sub_group = sub_group}, "opt");
  reference<float, bf16> ref;
  for (std::size_t g = 0; g < groups.size(); ++g) opt.set_master(g, ref.master[g]);
  std::vector<std::vector<bf16>> copies;
  for (auto& g : groups) copies.emplace_back(g.numel);
  // Step 1 writes m and v for the first time (before, they read as zeros without IO); step 2,
  // the one watched, reads and writes all three arrays.
  const auto grads1 = gradients<float>(1), grads = gradients<float>(2);
  streamed_step<float, bf16>(opt, grads1, copies, 1.0f);
  ctx.trace().clear();
  gate->arm(ctx.trace());
  streamed_step<float, bf16>(opt, grads, copies, 1.0f);
  gate->disarm();
  CHECK(gate->timed_out() == 0);
  const auto spans = ctx.trace().spans();
  std::size_t reads = 0, writes = 0, updates = 0;
  for (auto& s : spans) {
    reads += s.kind == span_kind::io_read;
    writes += s.kind == span_kind::io_write;
    updates += s.kind == span_kind::optimizer;
  }
  const std::size_t sub_groups = updates;
  CHECK(sub_groups == 14);  // the groups take 14 blocks (each starts on one); 1 per sub-group
  CHECK(reads == 3 * sub_groups);  // master, m and v: one read and one write each
  CHECK(writes == 3 * sub_groups);
  // What the gate made certain, read back from the trace: sub-group 1's reads ran until the
  // update of 0 had ended, one of them from before it began; sub-group 0's writes ran until the
  // update of 1 had ended, one of them from before it began.
  const span& update0 = span_labelled(spans, "opt update sub-group 0");
  const span& update1 = span_labelled(spans, "opt update sub-group 1");
  int read_spans_update = 0, write_spans_update = 0;
  for (const char* kind : {"master", "m", "v"}) {
    INFO(kind);
    const span& read1 = span_labelled(spans, std::string("opt read ") + kind + " sub-group 1");
    const span& write0 = span_labelled(spans, std::string("opt write ") + kind + " sub-group 0");
    CHECK(read1.end_us >= update0.end_us);
    CHECK(write0.end_us >= update1.end_us);
    read_spans_update += read1.begin_us <= update0.begin_us;
    write_spans_update += write0.begin_us <= update1.begin_us;
  }
  CHECK(read_spans_update >= 1);
  CHECK(write_spans_update >= 1);
  // Fixed pinned memory: four sets of one sub-group of (master, m, v), whatever the sizes.
  CHECK(opt.sub_group() == sub_group);
  CHECK(ctx.budget(tier_id::pinned).peak() <= opt.plan().peak(tier_id::pinned));
  ref.step(1, 1.0f, grads1);
  ref.step(2, 1.0f, grads);
  for (std::size_t g = 0; g < groups.size(); ++g) CHECK(same_bits(opt.master(g), ref.master[g]));
}

TEST_CASE("a fault in the middle of a step leaves the previous state; a retry succeeds",
          "[nvme][adam]") {
  io::faulty* faults = nullptr;
  auto cfg = nvme_config("posix");
  cfg.wrap_io_engine = [&](std::unique_ptr<io::engine> e) {
    auto f = std::make_unique<io::faulty>(std::move(e));
    faults = f.get();
    return std::unique_ptr<io::engine>(std::move(f));
  };
  context ctx(cfg);
  REQUIRE(faults != nullptr);

  // How many reads and writes one clean step makes (the same for every step of these sizes).
  std::uint64_t step_reads = 0, step_writes = 0;
  {
    streamed_adam probe(ctx, groups, {.sub_group = 2048}, "probe");
    for (std::size_t g = 0; g < groups.size(); ++g)
      probe.set_master(g, pattern(groups[g].numel, 1));
    std::vector<std::vector<bf16>> copies;
    for (auto& g : groups) copies.emplace_back(g.numel);
    streamed_step<float, bf16>(probe, gradients<float>(1), copies, 1.0f);  // m, v written once
    faults->reset_counters();
    streamed_step<float, bf16>(probe, gradients<float>(2), copies, 1.0f);
    step_reads = faults->reads();
    step_writes = faults->writes();
  }
  REQUIRE(step_reads > 4);
  REQUIRE(step_writes > 4);

  struct fault {
    const char* what;
    io::io_op op;
    std::uint64_t nth;
    io::fault_kind kind;
  };
  // Data writes come first, the checksum tables of the commits last: the final write is a
  // commit, after which most new versions are committed but not yet current.
  const std::vector<fault> faults_to_try = {
      {"a read in the middle", io::io_op::read, step_reads / 2, io::fault_kind::eio},
      {"a data write in the middle", io::io_op::write, step_writes / 3, io::fault_kind::enospc},
      {"a short data write", io::io_op::write, step_writes / 4, io::fault_kind::short_then_fail},
      {"the last commit", io::io_op::write, step_writes - 1, io::fault_kind::eio},
  };
  for (const auto& f : faults_to_try) {
    INFO(f.what);
    streamed_adam opt(ctx, groups, {.sub_group = 2048}, "opt");
    reference<float, bf16> ref;
    for (std::size_t g = 0; g < groups.size(); ++g) opt.set_master(g, ref.master[g]);
    std::vector<std::vector<bf16>> copies;
    for (auto& g : groups) copies.emplace_back(g.numel);
    const auto g1 = gradients<float>(1), g2 = gradients<float>(2);
    streamed_step<float, bf16>(opt, g1, copies, 1.0f);
    ref.step(1, 1.0f, g1);
    const state before = read_state(opt);
    const std::size_t nvme_used = ctx.budget(tier_id::nvme).used();
    const std::size_t reserved = ctx.nvme().bytes_reserved();

    faults->reset_counters();
    faults->add_rule(io::fault_rule::nth(f.op, f.nth, f.kind));
    std::string message = "(no error)";
    try {
      streamed_step<float, bf16>(opt, g2, copies, 1.0f);
    } catch (const io_error& e) {
      message = e.what();
    }
    faults->clear();
    CHECK(faults->injected() == 1);
    INFO(message);
    CHECK(message.find("(injected)") != std::string::npos);
    CHECK(message.find("streamed adam 'opt'") != std::string::npos);
    CHECK(message.find("step 2") != std::string::npos);
    CHECK(message.find("group '") != std::string::npos);
    CHECK(message.find("tensor '") != std::string::npos);
    CHECK(message.find("offset") != std::string::npos);
    CHECK(opt.t() == 1);
    CHECK(same_state(read_state(opt), before));  // bitwise the state after step 1
    CHECK(ctx.budget(tier_id::nvme).used() == nvme_used);
    CHECK(ctx.nvme().bytes_reserved() == reserved);  // the new versions' extents were freed

    // The optimizer works on: the retry equals the reference's step 2.
    streamed_step<float, bf16>(opt, g2, copies, 1.0f);
    ref.step(2, 1.0f, g2);
    CHECK(opt.t() == 2);
    for (std::size_t g = 0; g < groups.size(); ++g) {
      CHECK(same_bits(opt.master(g), ref.master[g]));
      CHECK(same_bits(opt.m(g), ref.m[g]));
      CHECK(same_bits(opt.v(g), ref.v[g]));
      CHECK(same_bits(copies[g], ref.copy[g]));
    }
  }
}

TEST_CASE("bad sizes and a plan that does not fit are refused up front", "[nvme][adam]") {
  auto cfg = nvme_config("posix");
  cfg.pinned_bytes = 2 << 20;  // the staging ring takes 128 KiB of it
  context ctx(cfg);
  const std::size_t pinned_before = ctx.budget(tier_id::pinned).used();
  std::string message = "(accepted)";
  try {
    // 4 sets x 64 Ki elements x (master, m, v) x 4 bytes = 3 MiB of pinned memory.
    streamed_adam opt(ctx, {{"big", 1 << 20}}, {.sub_group = 64 << 10}, "too big");
  } catch (const out_of_budget& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(message.find("too big") != std::string::npos);
  CHECK(message.find("pinned") != std::string::npos);
  CHECK(message.find("4 buffer sets x 65536 elements x (master, m, v)") != std::string::npos);
  CHECK(message.find("3145728 bytes") != std::string::npos);  // the sets
  CHECK(message.find("2097152 bytes") != std::string::npos);  // the budget
  CHECK(ctx.budget(tier_id::pinned).peak() == pinned_before);  // nothing was allocated
  CHECK(ctx.budget(tier_id::nvme).used() == 0);

  // The same model fits with smaller sub-groups: the pinned memory does not grow with it.
  streamed_adam small(ctx, {{"big", 1 << 20}}, {.sub_group = 8 << 10}, "fits");
  CHECK(small.plan().peak(tier_id::pinned) <= (2u << 20));

  CHECK_THROWS_AS(streamed_adam(ctx, groups, {.sub_group = 1000}), config_error);  // not blocks
  CHECK_THROWS_AS(streamed_adam(ctx, {}, {.sub_group = 1024}), config_error);
  streamed_adam opt(ctx, groups, {.sub_group = 1024}, "opt");
  std::vector<std::vector<float>> short_grads;
  for (auto& g : groups) short_grads.emplace_back(g.numel);
  short_grads[2].pop_back();
  try {
    opt.step(adam_step_scalars::make(adam_params{}, 1), spans_of(short_grads));
    FAIL("a short gradient was accepted");
  } catch (const config_error& e) {
    CHECK(std::string(e.what()).find("group 'c'") != std::string::npos);
  }
  CHECK(opt.t() == 0);
  CHECK_THROWS_AS(opt.set_master(0, std::vector<float>(5)), config_error);
  context no_nvme;
  CHECK_THROWS_AS(streamed_adam(no_nvme, groups), config_error);
}
