// Tests for strata/optim/loss_scaler.hpp: the dynamic scaler's state machine against a plain
// model of it (skip + back off on Inf/NaN, grow after N clean steps in a row, the min_scale
// floor, no growth into Inf), the fixed scaler that never changes, argument checks naming the
// field, and save/restore: a restored scaler continues exactly like the uninterrupted one.
#include "catch.hpp"

#include <strata/optim/loss_scaler.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace strata;
using optim::loss_scaler;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

template <class F>
std::string config_message(F&& f) {
  try {
    f();
  } catch (const config_error& e) {
    return e.what();
  }
  return "(no config_error)";
}

}  // namespace

TEST_CASE("dynamic scaler: skip and back off on Inf/NaN, grow after growth_interval clean steps") {
  auto s = loss_scaler::dynamic(1024.0f, 3, 0.5f, 2.0f, 1.0f);
  REQUIRE(s.is_dynamic());
  CHECK(s.scale() == 1024.0f);
  CHECK(s.grad_multiplier() == 1.0f / 1024.0f);

  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK(s.clean_streak() == 2);
  CHECK(s.scale() == 1024.0f);  // not yet: growth_interval is 3
  CHECK(s.update(false));
  CHECK(s.scale() == 2048.0f);
  CHECK(s.clean_streak() == 0);

  CHECK_FALSE(s.update(true));  // overflow: skip, halve, restart the streak
  CHECK(s.scale() == 1024.0f);
  CHECK(s.skipped_steps() == 1);
  CHECK(s.clean_streak() == 0);

  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK_FALSE(s.update(true));  // the streak of 2 is lost: growth needs 3 in a row again
  CHECK(s.scale() == 512.0f);
  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK(s.scale() == 512.0f);
  CHECK(s.update(false));
  CHECK(s.scale() == 1024.0f);
  CHECK(s.skipped_steps() == 2);
  CHECK(s.grad_multiplier() * s.scale() == 1.0f);
}

TEST_CASE("dynamic scaler: min_scale is a floor, growth never reaches Inf") {
  auto s = loss_scaler::dynamic(8.0f, 2, 0.25f, 4.0f, 1.5f);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 2.0f);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 1.5f);  // 0.5 would be below the floor
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 1.5f);
  CHECK(s.skipped_steps() == 3);

  auto big = loss_scaler::dynamic(std::numeric_limits<float>::max() / 2, 1, 0.5f, 4.0f);
  const float before = big.scale();
  CHECK(big.update(false));
  CHECK(big.scale() == before);  // max/2 * 4 overflows: stays
  CHECK(std::isfinite(big.scale()));
  CHECK(big.clean_streak() == 0);
}

TEST_CASE("dynamic scaler against a plain model over a random sequence of steps") {
  const float backoff = 0.5f, growth = 2.0f, min_scale = 4.0f;
  const std::uint32_t interval = 7;
  auto s = loss_scaler::dynamic(256.0f, interval, backoff, growth, min_scale);
  double scale = 256.0;
  std::uint32_t streak = 0;
  std::uint64_t skipped = 0;
  std::mt19937 rng(12);
  int mismatches = 0;
  for (int step = 0; step < 5000; ++step) {
    const bool overflow = rng() % 6 == 0;
    const bool took = s.update(overflow);
    if (overflow) {
      ++skipped;
      streak = 0;
      scale = std::max(scale * backoff, double{min_scale});
    } else if (++streak == interval) {
      scale *= growth;
      streak = 0;
    }
    if (took == overflow || s.scale() != static_cast<float>(scale) || s.clean_streak() != streak ||
        s.skipped_steps() != skipped)
      ++mismatches;
  }
  CHECK(mismatches == 0);
  CHECK(skipped > 500);  // the sequence did exercise both branches
}

TEST_CASE("fixed scaler never changes its scale, but still skips non-finite steps") {
  auto s = loss_scaler::fixed(128.0f);
  CHECK_FALSE(s.is_dynamic());
  int changed = 0;
  std::mt19937 rng(3);
  std::uint64_t skipped = 0;
  for (int step = 0; step < 10000; ++step) {
    const bool overflow = rng() % 4 == 0;
    skipped += overflow;
    if (s.update(overflow) == overflow) ++changed;
    if (s.scale() != 128.0f) ++changed;
  }
  CHECK(changed == 0);
  CHECK(s.skipped_steps() == skipped);
  CHECK(s.grad_multiplier() == 1.0f / 128.0f);

  auto none = loss_scaler::fixed(1.0f);
  for (int i = 0; i < 5000; ++i) none.update(false);
  CHECK(none.scale() == 1.0f);
  CHECK(none.grad_multiplier() == 1.0f);
}

TEST_CASE("save/restore: the restored scaler continues exactly like the original") {
  auto a = loss_scaler::dynamic(4096.0f, 5, 0.5f, 2.0f, 1.0f);
  std::mt19937 rng(99);
  std::vector<bool> overflow(400);
  for (std::size_t i = 0; i < overflow.size(); ++i) overflow[i] = rng() % 5 == 0;
  for (std::size_t i = 0; i < 123; ++i) a.update(overflow[i]);

  const optim::loss_scaler_state saved = a.save();
  CHECK(saved.dynamic);
  CHECK(saved.scale == a.scale());
  CHECK(saved.clean_streak == a.clean_streak());
  CHECK(saved.skipped_steps == a.skipped_steps());

  auto b = loss_scaler::fixed(1.0f);  // a different kind: restore replaces everything
  b.restore(saved);
  CHECK(b.is_dynamic());
  int diverged = 0;
  for (std::size_t i = 123; i < overflow.size(); ++i) {
    if (a.update(overflow[i]) != b.update(overflow[i])) ++diverged;
    if (a.scale() != b.scale() || a.clean_streak() != b.clean_streak() ||
        a.skipped_steps() != b.skipped_steps())
      ++diverged;
  }
  CHECK(diverged == 0);
  CHECK(a.skipped_steps() > 0);

  auto f = loss_scaler::fixed(32.0f);
  f.update(true);
  auto g = loss_scaler::dynamic();
  g.restore(f.save());
  CHECK_FALSE(g.is_dynamic());
  CHECK(g.scale() == 32.0f);
  CHECK(g.skipped_steps() == 1);
}

TEST_CASE("bad arguments and bad restored state are config_errors naming the field") {
  CHECK(contains(config_message([] { loss_scaler::dynamic(0.0f); }), "scale"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(std::nanf("")); }), "scale"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(65536.0f, 0); }), "growth_interval"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(65536.0f, 10, 1.0f); }), "backoff"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(65536.0f, 10, 0.0f); }), "backoff"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(65536.0f, 10, 0.5f, 1.0f); }),
                 "growth"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(65536.0f, 10, 0.5f, 2.0f, 0.0f); }),
                 "min_scale"));
  CHECK(contains(config_message([] { loss_scaler::dynamic(1.0f, 10, 0.5f, 2.0f, 2.0f); }),
                 "must be >= min_scale"));
  CHECK(contains(config_message([] { loss_scaler::fixed(-1.0f); }), "loss_scaler::fixed: scale"));
  CHECK(contains(config_message([] {
                   loss_scaler::fixed(std::numeric_limits<float>::infinity());
                 }),
                 "scale"));

  auto s = loss_scaler::dynamic(1024.0f, 4);
  s.update(false);
  auto bad = s.save();
  bad.clean_streak = 4;
  CHECK(contains(config_message([&] { s.restore(bad); }), "loss_scaler::restore: clean_streak"));
  CHECK(s.clean_streak() == 1);  // unchanged by the failed restore
  bad = s.save();
  bad.backoff = 2.0f;
  CHECK(contains(config_message([&] { s.restore(bad); }), "backoff"));
  CHECK(s.scale() == 1024.0f);
}
