// Tests for strata/core/quant.hpp: the q4 group format, quantise / dequantise, the error bound,
// sizes and bad input.
//
// The reference shares nothing with the library's arithmetic: f16 patterns are decoded by
// formula (sign, exponent, mantissa -> std::ldexp in double), codes are read from the nibbles by
// hand, a dequantised element is code * scale + min computed in double (exact there) and
// rounded once to float, and "the largest f16 <= lo" / "the smallest scale that covers hi" are
// checked against a sorted table of every finite f16 value with exact double comparisons.
#include "catch.hpp"

#include <strata/core/quant.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using strata::q4_group;

// ---- the reference ----------------------------------------------------------------------------

double f16_value(std::uint16_t bits) {
  const double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  const int e = (bits >> 10) & 0x1f;
  const double m = bits & 0x3ffu;
  REQUIRE(e != 31);  // the format never stores Inf or NaN
  return e == 0 ? sign * std::ldexp(m, -24) : sign * std::ldexp(1024.0 + m, e - 25);
}

// Every finite f16 value, ascending, each once (+0 and -0 are one value).
const std::vector<double>& f16_table() {
  static const std::vector<double> table = [] {
    std::vector<double> t;
    for (std::uint32_t b = 0; b < 0x10000u; ++b)
      if (((b >> 10) & 0x1f) != 31) t.push_back(f16_value(static_cast<std::uint16_t>(b)));
    std::sort(t.begin(), t.end());
    t.erase(std::unique(t.begin(), t.end()), t.end());
    return t;
  }();
  return table;
}

// The f16 value just above / just below v (v itself an f16 value); above the largest is Inf.
double f16_above(double v) {
  const auto it = std::upper_bound(f16_table().begin(), f16_table().end(), v);
  return it == f16_table().end() ? std::numeric_limits<double>::infinity() : *it;
}
double f16_below(double v) { return *(std::lower_bound(f16_table().begin(), f16_table().end(), v) - 1); }

int code_of(const q4_group& g, std::size_t i) { return (g.packed[i / 2] >> (4 * (i % 2))) & 0x0f; }

float ref_dequant(const q4_group& g, std::size_t i) {
  return static_cast<float>(static_cast<double>(code_of(g, i)) * f16_value(g.scale.bits) +
                            f16_value(g.min.bits));
}

std::uint32_t bits_of(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

std::vector<float> normal_row(std::mt19937& rng, std::size_t n, float sigma, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Quantises `row`, dequantises it, and checks every element against the group's error bound and
// every group's min and scale against their definitions. Returns the groups and the row.
struct round_trip {
  std::vector<q4_group> groups;
  std::vector<float> back;
};
round_trip check_round_trip(const std::vector<float>& row) {
  const std::size_t n = row.size();
  std::vector<q4_group> q(strata::q4_groups_for(n));
  strata::quantize_q4(row.data(), n, q.data());
  std::vector<float> back(n);
  strata::dequantize_q4(q.data(), n, back.data());

  std::size_t bad = 0;
  for (std::size_t gi = 0; gi < q.size(); ++gi) {
    const q4_group& g = q[gi];
    const std::size_t first = gi * strata::q4_group_size;
    const std::size_t last = std::min(n, first + strata::q4_group_size);
    const double lo = *std::min_element(row.begin() + first, row.begin() + last);
    const double hi = *std::max_element(row.begin() + first, row.begin() + last);
    const double min = f16_value(g.min.bits), scale = f16_value(g.scale.bits);
    INFO("group " << gi << ": lo " << lo << " hi " << hi << " min " << min << " scale " << scale);
    // min is the largest f16 <= lo; scale the smallest non-negative f16 with min + 15 scale >= hi
    // (both sides exact in double).
    CHECK(min <= lo);
    CHECK(f16_above(min) > lo);
    CHECK((g.scale.bits & 0x8000u) == 0);
    CHECK(min + 15.0 * scale >= hi);
    if (scale > 0.0) CHECK(min + 15.0 * f16_below(scale) < hi);

    const double bound = strata::q4_error_bound(g);
    for (std::size_t i = first; i < last; ++i) {
      const double err = std::fabs(static_cast<double>(back[i]) - static_cast<double>(row[i]));
      if (!(err <= bound) && ++bad <= 5)
        UNSCOPED_INFO("element " << i << ": " << row[i] << " -> " << back[i] << ", error " << err
                                 << " > bound " << bound);
    }
  }
  CHECK(bad == 0);
  return {std::move(q), std::move(back)};
}

template <class F>
std::string config_error_message(F&& f) {
  try {
    f();
  } catch (const strata::config_error& e) {
    return e.what();
  }
  FAIL("no strata::config_error thrown");
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("q4: dequantize equals code * scale + min rounded once, bit for bit", "[quant]") {
  std::mt19937 rng(20240607);
  SECTION("groups made by quantize_q4") {
    for (const std::size_t n : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{65},
                                std::size_t{100}, std::size_t{4096}}) {
      for (const float sigma : {1e-3f, 1.0f, 300.0f}) {
        INFO("n " << n << ", sigma " << sigma);
        const std::vector<float> row = normal_row(rng, n, sigma);
        std::vector<q4_group> q(strata::q4_groups_for(n));
        strata::quantize_q4(row.data(), n, q.data());
        // Sentinels past the end: dequantize writes exactly n floats.
        std::vector<float> back(n + 8, -12345.0f);
        strata::dequantize_q4(q.data(), n, back.data());
        std::size_t mismatches = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const q4_group& g = q[i / strata::q4_group_size];
          const float want = ref_dequant(g, i % strata::q4_group_size);
          if (bits_of(back[i]) != bits_of(want) && ++mismatches <= 5)
            UNSCOPED_INFO("element " << i << ": " << back[i] << " vs reference " << want);
        }
        CHECK(mismatches == 0);
        for (std::size_t i = n; i < n + 8; ++i) CHECK(back[i] == -12345.0f);
      }
    }
  }
  SECTION("arbitrary groups: random codes, any finite scale and min (negative, subnormal)") {
    std::uniform_int_distribution<unsigned> byte(0, 255);
    std::uniform_int_distribution<unsigned> half(0, 0xffff);
    const auto finite_half = [&] {
      for (;;) {
        const auto b = static_cast<std::uint16_t>(half(rng));
        if (((b >> 10) & 0x1f) != 31) return strata::f16::from_bits(b);
      }
    };
    for (const std::size_t n : {std::size_t{1}, std::size_t{100}, std::size_t{4096}}) {
      std::vector<q4_group> q(strata::q4_groups_for(n));
      for (auto& g : q) {
        for (auto& p : g.packed) p = static_cast<std::uint8_t>(byte(rng));
        g.scale = finite_half();
        g.min = finite_half();
      }
      q[0].scale = strata::f16::from_bits(0x0001);  // 2^-24: code * scale at the bottom of range
      q[0].min = strata::f16::from_bits(0xfbff);    // -65504
      std::vector<float> back(n);
      strata::dequantize_q4(q.data(), n, back.data());
      std::size_t mismatches = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const float want = ref_dequant(q[i / 64], i % 64);
        if (bits_of(back[i]) != bits_of(want) && ++mismatches <= 5)
          UNSCOPED_INFO("n " << n << " element " << i << ": " << back[i] << " vs " << want);
      }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("q4: every element comes back within q4_error_bound", "[quant]") {
  std::mt19937 rng(7);
  SECTION("normal rows of different magnitudes; the bound is about half a step there") {
    for (const float sigma : {1e-3f, 1.0f, 100.0f}) {
      for (const std::size_t n : {std::size_t{100}, std::size_t{4096}}) {
        INFO("sigma " << sigma << ", n " << n);
        const std::vector<float> row = normal_row(rng, n, sigma);
        check_round_trip(row);
        std::vector<q4_group> q(strata::q4_groups_for(n));
        strata::quantize_q4(row.data(), n, q.data());
        for (const auto& g : q) {
          const float s = strata::to_float(g.scale);
          CHECK(s > 0.0f);
          CHECK(strata::q4_error_bound(g) < 0.501f * s);
        }
      }
    }
  }
  SECTION("narrow rows anywhere in f16's range: the magnitude term is needed") {
    // Far from zero a group's step comes near float's ulp, and the dequantiser's one rounding
    // to float can carry an element past half a step (and past the 2^-10 margin): the bound's
    // magnitude term is what covers it, and this data does reach it.
    std::uniform_real_distribution<float> mean(-60000.0f, 60000.0f), log_sigma(-12.0f, 2.0f);
    std::size_t past_half_step = 0;
    for (int t = 0; t < 100; ++t) {
      const std::vector<float> row =
          normal_row(rng, 1024, std::pow(10.0f, log_sigma(rng)), mean(rng));
      const round_trip rt = check_round_trip(row);
      for (std::size_t i = 0; i < row.size(); ++i) {
        const double s = strata::to_float(rt.groups[i / 64].scale);
        if (std::fabs(static_cast<double>(rt.back[i]) - row[i]) > 0.5 * s * (1.0 + 0x1p-10))
          ++past_half_step;
      }
    }
    CHECK(past_half_step > 0);
  }
  SECTION("tiny values: f16 subnormal steps, float subnormal inputs") {
    check_round_trip(normal_row(rng, 300, 1e-6f));
    std::vector<float> sub(130);
    for (std::size_t i = 0; i < sub.size(); ++i)
      sub[i] = static_cast<float>(i % 7) * std::numeric_limits<float>::denorm_min() * 1000.0f;
    check_round_trip(sub);
    check_round_trip({std::numeric_limits<float>::denorm_min()});
    check_round_trip({-std::numeric_limits<float>::denorm_min(), 0.0f, -0.0f});
  }
  SECTION("constant rows") {
    // Not an f16: min rounds down, and a tiny scale reaches the value.
    check_round_trip(std::vector<float>(100, 0.3f));
    check_round_trip(std::vector<float>(100, -1000.1f));
    // An f16: scale 0, every code 0, exact.
    for (const float v : {1.5f, -7.25f, 0.0f, -0.0f, 65504.0f, -65504.0f}) {
      INFO("value " << v);
      const std::vector<float> row(100, v);
      std::vector<q4_group> q(2);
      strata::quantize_q4(row.data(), row.size(), q.data());
      for (const auto& g : q) {
        CHECK(g.scale.bits == 0);
        CHECK(strata::to_float(g.min) == v);
        if (v == 0.0f) CHECK(g.min.bits == 0);  // +0 for either zero: bytes ignore its sign
        for (auto p : g.packed) CHECK(p == 0);
      }
      CHECK(check_round_trip(row).back == row);
    }
  }
  SECTION("one outlier widens only its own group") {
    std::vector<float> row = normal_row(rng, 256, 1.0f);
    row[37] = 60000.0f;
    check_round_trip(row);
    std::vector<q4_group> q(4);
    strata::quantize_q4(row.data(), row.size(), q.data());
    CHECK(strata::to_float(q[0].scale) > 3000.0f);
    for (std::size_t gi = 1; gi < 4; ++gi) CHECK(strata::to_float(q[gi].scale) < 1.0f);
  }
  SECTION("negative-only rows, and rows at the ends of f16's range") {
    std::vector<float> neg = normal_row(rng, 1000, 1.0f);
    for (auto& x : neg) x = -std::fabs(x) - 10.0f;
    check_round_trip(neg);
    std::uniform_real_distribution<float> far(-65504.0f, -60000.0f);
    std::vector<float> edge(200);
    for (auto& x : edge) x = far(rng);
    check_round_trip(edge);
    std::vector<float> span(64);  // the widest group there is: -65504 .. 65504
    for (std::size_t i = 0; i < span.size(); ++i)
      span[i] = -65504.0f + 131008.0f * static_cast<float>(i) / 63.0f;
    check_round_trip(span);
  }
}

TEST_CASE("q4: byte layout of a known group", "[quant]") {
  // 0, 0.5, ..., 31.5: min 0, scale the smallest f16 >= 31.5 / 15 = 2.1, which is
  // 2 * (1 + 52 / 1024) = 2.1015625 (bits 0x4034; the f16 below it, 2.099609375, falls short).
  float row[64];
  for (int i = 0; i < 64; ++i) row[i] = 0.5f * static_cast<float>(i);
  q4_group g;
  strata::quantize_q4(row, 64, &g);
  CHECK(g.min.bits == 0x0000);
  CHECK(g.scale.bits == 0x4034);
  CHECK(strata::to_float(g.scale) == 2.1015625f);
  // code i = round(0.5 i / 2.1015625) = round(64 i / 269): never a tie (269 is an odd prime).
  for (int k = 0; k < 32; ++k) {
    const auto code = [](int i) { return static_cast<int>(std::lround(64.0 * i / 269.0)); };
    INFO("byte " << k);
    CHECK(g.packed[k] == (code(2 * k) | (code(2 * k + 1) << 4)));
  }
  // A few by hand: 0.5/2.1 -> 0, 1.5/2.1 = 0.71 -> 1, 10/2.1 = 4.76 -> 5, 31.5/2.1 = 14.99 -> 15.
  CHECK(g.packed[0] == 0x00);     // elements 0, 1
  CHECK((g.packed[1] & 0x0f) == 0);  // element 2: 0.476
  CHECK((g.packed[1] >> 4) == 1);    // element 3
  CHECK((g.packed[10] & 0x0f) == 5);  // element 20
  CHECK((g.packed[31] >> 4) == 15);   // element 63
  CHECK(code_of(g, 63) == 15);
  // The struct is the bytes: 32 of codes, then scale, then min, little-endian as stored.
  unsigned char raw[36];
  std::memcpy(raw, &g, sizeof raw);
  CHECK(std::memcmp(raw, g.packed, 32) == 0);
  CHECK(std::memcmp(raw + 32, &g.scale, 2) == 0);
  CHECK(std::memcmp(raw + 34, &g.min, 2) == 0);
}

TEST_CASE("q4: sizes, partial groups and the matrix helpers", "[quant]") {
  STATIC_REQUIRE(sizeof(q4_group) == 36);
  STATIC_REQUIRE(strata::q4_group_size == 64);
  STATIC_REQUIRE(strata::q4_groups_for(0) == 0);
  STATIC_REQUIRE(strata::q4_groups_for(1) == 1);
  STATIC_REQUIRE(strata::q4_groups_for(64) == 1);
  STATIC_REQUIRE(strata::q4_groups_for(65) == 2);
  STATIC_REQUIRE(strata::q4_groups_for(100) == 2);
  STATIC_REQUIRE(strata::q4_groups_for(4096) == 64);
  STATIC_REQUIRE(strata::q4_bytes_for(0, 4096) == 0);
  STATIC_REQUIRE(strata::q4_bytes_for(3, 100) == 3 * 2 * 36);
  STATIC_REQUIRE(strata::q4_bytes_for(4096, 4096) == 4096u * 64u * 36u);  // 9 MiB for 16M weights

  std::mt19937 rng(99);
  SECTION("unused codes of a partial group are 0, whatever dst held") {
    for (const std::size_t n : {std::size_t{1}, std::size_t{65}, std::size_t{100}}) {
      INFO("n " << n);
      std::vector<float> row = normal_row(rng, n, 1.0f, 5.0f);  // codes of used elements mostly != 0
      std::vector<q4_group> q(strata::q4_groups_for(n));
      std::memset(q.data(), 0xab, q.size() * sizeof(q4_group));
      strata::quantize_q4(row.data(), n, q.data());
      const q4_group& last = q.back();
      const std::size_t used = n - (q.size() - 1) * 64;
      for (std::size_t i = used; i < 64; ++i) CHECK(code_of(last, i) == 0);
      // And the bytes depend only on the row.
      std::vector<q4_group> again(q.size());
      std::memset(again.data(), 0x00, again.size() * sizeof(q4_group));
      strata::quantize_q4(row.data(), n, again.data());
      CHECK(std::memcmp(q.data(), again.data(), q.size() * sizeof(q4_group)) == 0);
    }
  }
  SECTION("rows helpers are the row functions at r * q4_groups_for(n)") {
    const std::size_t rows = 5, n = 100, groups = strata::q4_groups_for(n);
    const std::vector<float> m = normal_row(rng, rows * n, 2.0f);
    std::vector<q4_group> q(rows * groups);
    strata::quantize_q4_rows(m.data(), rows, n, q.data());
    std::vector<float> back(rows * n);
    strata::dequantize_q4_rows(q.data(), rows, n, back.data());
    for (std::size_t r = 0; r < rows; ++r) {
      std::vector<q4_group> one(groups);
      strata::quantize_q4(m.data() + r * n, n, one.data());
      CHECK(std::memcmp(one.data(), q.data() + r * groups, groups * sizeof(q4_group)) == 0);
      std::vector<float> row_back(n);
      strata::dequantize_q4(one.data(), n, row_back.data());
      CHECK(std::memcmp(row_back.data(), back.data() + r * n, n * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("q4: NaN, Inf and values beyond f16 are config errors naming the element", "[quant]") {
  std::mt19937 rng(3);
  std::vector<float> row = normal_row(rng, 100, 1.0f);
  std::vector<q4_group> q(2);
  std::memset(q.data(), 0x5a, sizeof(q4_group) * 2);
  std::vector<q4_group> before = q;
  const auto unchanged = [&] {
    return std::memcmp(q.data(), before.data(), sizeof(q4_group) * q.size()) == 0;
  };

  SECTION("NaN") {
    row[70] = std::numeric_limits<float>::quiet_NaN();
    const std::string msg =
        config_error_message([&] { strata::quantize_q4(row.data(), row.size(), q.data()); });
    CHECK(contains(msg, "element 70"));
    CHECK(contains(msg, "NaN"));
    CHECK(unchanged());  // checked before anything is written
  }
  SECTION("1e6 and -inf") {
    row[37] = 1e6f;
    std::string msg =
        config_error_message([&] { strata::quantize_q4(row.data(), row.size(), q.data()); });
    CHECK(contains(msg, "element 37"));
    CHECK(contains(msg, "1000000"));
    CHECK(contains(msg, "65504"));
    row[37] = 0.0f;
    row[99] = -std::numeric_limits<float>::infinity();
    msg = config_error_message([&] { strata::quantize_q4(row.data(), row.size(), q.data()); });
    CHECK(contains(msg, "element 99"));
    CHECK(contains(msg, "infinite"));
    CHECK(unchanged());
  }
  SECTION("the edge is f16's largest finite value") {
    row[5] = 65504.0f;
    row[6] = -65504.0f;
    CHECK_NOTHROW(strata::quantize_q4(row.data(), row.size(), q.data()));
    row[6] = std::nextafter(-65504.0f, -1e9f);
    CHECK(contains(
        config_error_message([&] { strata::quantize_q4(row.data(), row.size(), q.data()); }),
        "element 6"));
  }
  SECTION("the matrix helper names the row, and writes no row") {
    const std::size_t rows = 4, n = 100;
    std::vector<float> m = normal_row(rng, rows * n, 1.0f);
    m[2 * n + 5] = std::numeric_limits<float>::quiet_NaN();
    std::vector<q4_group> qm(rows * 2);
    std::memset(qm.data(), 0x5a, qm.size() * sizeof(q4_group));
    const std::vector<q4_group> qm_before = qm;
    const std::string msg =
        config_error_message([&] { strata::quantize_q4_rows(m.data(), rows, n, qm.data()); });
    CHECK(contains(msg, "element 5 of row 2"));
    CHECK(std::memcmp(qm.data(), qm_before.data(), qm.size() * sizeof(q4_group)) == 0);
  }
}
