// Tests for strata/core/dtype.hpp: f16 / bf16 conversions against an independent reference,
// int8 quantisation, int4 packing, dtype tags and the bulk loops.
//
// The reference shares nothing with the library's bit tricks. It decodes a 16-bit pattern by
// formula (sign, exponent, mantissa -> std::ldexp in double) and encodes by search: a table of
// all finite non-negative patterns sorted by decoded value, plus a sentinel 2^(emax+1) standing
// for Inf (IEEE rounds as if the exponent range were unbounded, then overflows). For |x| it
// finds the two neighbouring table entries by binary search and picks the nearer one by
// comparing 2|x| with lo + hi (exact in double, unlike |x| - lo for tiny x: it is the same
// comparison as |x - lo| vs |hi - x|), ties going to the entry whose pattern LSB — the mantissa
// LSB — is 0. Mismatches are counted and the first few printed, so loops stay fast.
#include "catch.hpp"

#include <strata/core/dtype.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using strata::bf16;
using strata::f16;

// ---- the reference ----------------------------------------------------------------------------

struct format {
  const char* name;
  int exp_bits;
  int man_bits;
  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  std::uint32_t exp_mask() const { return ((1u << exp_bits) - 1u) << man_bits; }
  std::uint32_t man_mask() const { return (1u << man_bits) - 1u; }
  std::uint32_t sign_bit() const { return 1u << (exp_bits + man_bits); }
  std::uint32_t inf_pattern() const { return exp_mask(); }
};

constexpr format half_fmt{"f16", 5, 10};
constexpr format bfloat_fmt{"bf16", 8, 7};

bool ref_is_nan(const format& f, std::uint32_t p) {
  return (p & f.exp_mask()) == f.exp_mask() && (p & f.man_mask()) != 0;
}

// Value of a non-NaN pattern, by the textbook formula.
double ref_decode(const format& f, std::uint32_t p) {
  const bool neg = (p & f.sign_bit()) != 0;
  const int e = static_cast<int>((p & f.exp_mask()) >> f.man_bits);
  const double m = static_cast<double>(p & f.man_mask());
  double v;
  if (e == (1 << f.exp_bits) - 1) {
    v = std::numeric_limits<double>::infinity();
  } else if (e == 0) {
    v = std::ldexp(m, 1 - f.bias() - f.man_bits);
  } else {
    v = std::ldexp(m + std::ldexp(1.0, f.man_bits), e - f.bias() - f.man_bits);
  }
  return neg ? -v : v;
}

struct entry {
  double value;
  std::uint32_t pattern;
};

// All finite non-negative patterns sorted by value, then the sentinel for Inf.
std::vector<entry> build_table(const format& f) {
  std::vector<entry> t;
  for (std::uint32_t p = 0; p < f.sign_bit(); ++p)
    if ((p & f.exp_mask()) != f.exp_mask()) t.push_back({ref_decode(f, p), p});
  std::stable_sort(t.begin(), t.end(), [](const entry& a, const entry& b) { return a.value < b.value; });
  const int emax = (1 << f.exp_bits) - 2 - f.bias();
  t.push_back({std::ldexp(1.0, emax + 1), f.inf_pattern()});
  return t;
}

const std::vector<entry>& table(const format& f) {
  static const std::vector<entry> half_table = build_table(half_fmt);
  static const std::vector<entry> bfloat_table = build_table(bfloat_fmt);
  return f.exp_bits == 5 ? half_table : bfloat_table;
}

// Nearest pattern to a non-NaN float, ties to even, overflow per IEEE.
std::uint32_t ref_encode(const format& f, float x) {
  const std::uint32_t sign = std::signbit(x) ? f.sign_bit() : 0u;
  const double a = std::fabs(static_cast<double>(x));
  const auto& t = table(f);
  if (a >= t.back().value) return sign | f.inf_pattern();  // includes Inf
  const auto it = std::lower_bound(t.begin(), t.end(), a,
                                   [](const entry& e, double v) { return e.value < v; });
  if (it->value == a) return sign | it->pattern;
  const entry& hi = *it;
  const entry& lo = *(it - 1);  // it != begin: a > 0 = t.front().value
  const double twice = 2.0 * a, sum = lo.value + hi.value;
  const std::uint32_t pick = twice < sum ? lo.pattern
                           : twice > sum ? hi.pattern
                           : ((lo.pattern & 1u) == 0 ? lo.pattern : hi.pattern);
  return sign | pick;
}

// ---- helpers ----------------------------------------------------------------------------------

std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }
float float_of(std::uint32_t b) { return std::bit_cast<float>(b); }

std::string hex(std::uint32_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

// Library under test, by format.
std::uint32_t lib_encode(const format& f, float x) {
  return f.exp_bits == 5 ? strata::to_f16(x).bits : strata::to_bf16(x).bits;
}
float lib_decode(const format& f, std::uint32_t p) {
  const auto b = static_cast<std::uint16_t>(p);
  return f.exp_bits == 5 ? strata::to_float(f16::from_bits(b)) : strata::to_float(bf16::from_bits(b));
}

// A NaN result must be NaN, keep x's sign, be quiet, and keep the top payload bits that fit.
bool nan_ok(const format& f, float x, std::uint32_t out) {
  if (!ref_is_nan(f, out)) return false;
  if (((out & f.sign_bit()) != 0) != std::signbit(x)) return false;
  const std::uint32_t quiet = 1u << (f.man_bits - 1);
  const std::uint32_t kept = (bits_of(x) >> (23 - f.man_bits)) & (quiet - 1u);
  return (out & quiet) != 0 && (out & (quiet - 1u)) == kept;
}

struct mismatches {
  std::size_t count = 0;
  std::vector<std::string> first;
  void add(const std::string& what) {
    if (count++ < 8) first.push_back(what);
  }
  std::string report() const {
    std::string s;
    for (const auto& w : first) s += w + "\n";
    return s;
  }
};

// Checks library and reference encoders against each other (and the reference against an
// expectation where the caller knows one).
void check_encode(const format& f, float x, mismatches& bad) {
  const std::uint32_t got = lib_encode(f, x);
  if (std::isnan(x)) {
    if (!nan_ok(f, x, got)) bad.add(std::string(f.name) + " NaN " + hex(bits_of(x)) + " -> " + hex(got));
    return;
  }
  const std::uint32_t want = ref_encode(f, x);
  if (got != want)
    bad.add(std::string(f.name) + " x=" + hex(bits_of(x)) + " got " + hex(got) + " want " + hex(want));
}

}  // namespace

// ---- compile-time behaviour ---------------------------------------------------------------------

static_assert(strata::same_bits(strata::to_f16(1.0f), f16::from_bits(0x3c00)));
static_assert(strata::same_bits(strata::to_f16(65520.0f), f16::from_bits(0x7c00)));
static_assert(strata::same_bits(strata::to_bf16(1.0f), bf16::from_bits(0x3f80)));
static_assert(strata::to_float(f16::from_bits(0x0001)) == 0x1p-24f);
static_assert(strata::to_i8_saturate(2.5f, 1.0f) == 2);
static_assert(strata::dtype_of_v<f16> == strata::dtype::f16);

// ---- exhaustive over all patterns ---------------------------------------------------------------

TEST_CASE("dtype: decode of every f16 / bf16 pattern matches the formula", "[unit][dtype]") {
  for (const format* f : {&half_fmt, &bfloat_fmt}) {
    mismatches bad;
    for (std::uint32_t p = 0; p < 0x10000u; ++p) {
      const float got = lib_decode(*f, p);
      if (ref_is_nan(*f, p)) {
        const bool sign_ok = std::signbit(got) == ((p & f->sign_bit()) != 0);
        // Payload: the mantissa lands in the float's top mantissa bits, with the quiet bit set.
        const std::uint32_t payload = (bits_of(got) >> (23 - f->man_bits)) & f->man_mask();
        const std::uint32_t quiet = 1u << (f->man_bits - 1);
        if (!std::isnan(got) || !sign_ok || payload != ((p & f->man_mask()) | quiet))
          bad.add(std::string(f->name) + " NaN " + hex(p) + " -> " + hex(bits_of(got)));
        continue;
      }
      const float want = static_cast<float>(ref_decode(*f, p));
      if (static_cast<double>(want) != ref_decode(*f, p))
        bad.add(std::string(f->name) + " reference value not a float for " + hex(p));
      if (bits_of(got) != bits_of(want))
        bad.add(std::string(f->name) + " " + hex(p) + " -> " + hex(bits_of(got)) + " want " + hex(bits_of(want)));
    }
    INFO(bad.report());
    REQUIRE(bad.count == 0);
  }
}

TEST_CASE("dtype: encode(decode(p)) == p for every pattern, NaN stays NaN", "[unit][dtype]") {
  for (const format* f : {&half_fmt, &bfloat_fmt}) {
    mismatches bad;
    for (std::uint32_t p = 0; p < 0x10000u; ++p) {
      const float x = lib_decode(*f, p);
      const std::uint32_t back = lib_encode(*f, x);
      if (ref_is_nan(*f, p)) {
        // Quiet NaNs survive bit for bit; signalling ones come back quiet, same sign.
        const std::uint32_t quiet = 1u << (f->man_bits - 1);
        if (back != (p | quiet)) bad.add(std::string(f->name) + " NaN " + hex(p) + " -> " + hex(back));
      } else if (back != p) {
        bad.add(std::string(f->name) + " " + hex(p) + " -> " + hex(back));
      }
      // The reference agrees with itself on the round trip too.
      if (!ref_is_nan(*f, p) && ref_encode(*f, static_cast<float>(ref_decode(*f, p))) != p)
        bad.add(std::string(f->name) + " reference round trip " + hex(p));
    }
    INFO(bad.report());
    REQUIRE(bad.count == 0);
  }
}

// ---- every rounding boundary --------------------------------------------------------------------

TEST_CASE("dtype: every midpoint rounds to even, one float ulp either side to the nearer",
          "[unit][dtype]") {
  for (const format* f : {&half_fmt, &bfloat_fmt}) {
    const auto& t = table(*f);
    mismatches bad;
    std::size_t checked = 0;
    for (std::size_t i = 0; i + 1 < t.size(); ++i) {  // includes (max finite, Inf sentinel)
      const entry lo = t[i], hi = t[i + 1];
      const double mid = (lo.value + hi.value) / 2;
      const auto m = static_cast<float>(mid);
      if (static_cast<double>(m) != mid) {
        bad.add(std::string(f->name) + " midpoint not a float after " + hex(lo.pattern));
        continue;
      }
      const std::uint32_t even = (lo.pattern & 1u) == 0 ? lo.pattern : hi.pattern;
      const float below = std::nextafter(m, 0.0f);
      const float above = std::nextafter(m, std::numeric_limits<float>::infinity());
      for (const float sgn : {1.0f, -1.0f}) {
        const std::uint32_t s = sgn < 0 ? f->sign_bit() : 0u;
        const struct {
          float x;
          std::uint32_t want;
        } cases[] = {{sgn * m, s | even}, {sgn * below, s | lo.pattern}, {sgn * above, s | hi.pattern}};
        for (const auto& c : cases) {
          const std::uint32_t got = lib_encode(*f, c.x), ref = ref_encode(*f, c.x);
          if (got != c.want || ref != c.want)
            bad.add(std::string(f->name) + " x=" + hex(bits_of(c.x)) + " got " + hex(got) + " ref " +
                    hex(ref) + " want " + hex(c.want));
          ++checked;
        }
      }
    }
    INFO(bad.report());
    REQUIRE(bad.count == 0);
    REQUIRE(checked == 6 * (t.size() - 1));
  }
}

TEST_CASE("dtype: named boundaries", "[unit][dtype]") {
  const auto h = [](float x) { return strata::to_f16(x).bits; };
  const auto b = [](float x) { return strata::to_bf16(x).bits; };
  const float inf = std::numeric_limits<float>::infinity();

  // f16 overflow: 65504 is the largest half, 65520 the halfway point to 2^16.
  CHECK(h(65504.0f) == 0x7bff);
  CHECK(h(std::nextafter(65520.0f, 0.0f)) == 0x7bff);  // 65519.996
  CHECK(h(65520.0f) == 0x7c00);
  CHECK(h(-65520.0f) == 0xfc00);
  CHECK(h(1e10f) == 0x7c00);
  CHECK(h(std::numeric_limits<float>::max()) == 0x7c00);
  CHECK(h(inf) == 0x7c00);
  CHECK(h(-inf) == 0xfc00);
  // f16 underflow: 2^-24 is the smallest subnormal, 2^-25 ties to 0.
  CHECK(h(0x1p-24f) == 0x0001);
  CHECK(h(0x1p-25f) == 0x0000);
  CHECK(h(-0x1p-25f) == 0x8000);
  CHECK(h(std::nextafter(0x1p-25f, 1.0f)) == 0x0001);
  CHECK(h(0x1.8p-24f) == 0x0002);  // 1.5 ulp ties to even 2
  CHECK(h(0x1p-14f) == 0x0400);    // smallest normal
  CHECK(h(std::nextafter(0x1p-14f, 0.0f)) == 0x0400);  // rounds up across the boundary
  CHECK(h(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(h(-std::numeric_limits<float>::denorm_min()) == 0x8000);
  CHECK(h(0.0f) == 0x0000);
  CHECK(h(-0.0f) == 0x8000);
  CHECK(h(1.0f) == 0x3c00);
  CHECK(h(-2.0f) == 0xc000);

  // bf16: f32's exponent range; max finite 0x7f7f = (2 - 2^-7) * 2^127.
  const float bmax = strata::to_float(bf16::from_bits(0x7f7f));
  CHECK(bmax == 0x1.fep127f);
  CHECK(b(bmax) == 0x7f7f);
  CHECK(b(0x1.ffp127f) == 0x7f80);  // halfway to 2^128: ties to the even Inf
  CHECK(b(std::nextafter(0x1.ffp127f, 0.0f)) == 0x7f7f);
  CHECK(b(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(b(-std::numeric_limits<float>::max()) == 0xff80);
  CHECK(b(inf) == 0x7f80);
  CHECK(b(std::numeric_limits<float>::denorm_min()) == 0x0000);  // 2^-149 < half of 2^-133
  CHECK(b(0x1p-133f) == 0x0001);
  CHECK(b(0x1p-134f) == 0x0000);  // tie to even 0
  CHECK(b(0x1.8p-133f) == 0x0002);
  CHECK(b(-0.0f) == 0x8000);
  CHECK(b(1.0f + 0x1p-8f) == 0x3f80);   // tie, 0x3f80 is even
  CHECK(b(1.0f + 0x3p-8f) == 0x3f82);   // tie, 0x3f82 is even
  CHECK(b(1.0f + 0x1p-23f) == 0x3f80);  // truncation and rounding agree here

  // NaN never becomes Inf, even when the payload is entirely in the dropped bits.
  const float low_payload_nan = float_of(0x7f800001u);
  CHECK((h(low_payload_nan) & 0x7fff) > 0x7c00);
  CHECK((b(low_payload_nan) & 0x7fff) > 0x7f80);
  CHECK(h(float_of(0xff800001u)) >= 0xfc01);
  CHECK(strata::is_nan(strata::to_bf16(float_of(0xff800001u))));
  CHECK(strata::is_nan(f16::from_bits(0x7e00)));
  CHECK_FALSE(strata::is_nan(f16::from_bits(0x7c00)));
  CHECK_FALSE(strata::is_finite(bf16::from_bits(0xff80)));
  CHECK(strata::is_finite(bf16::from_bits(0x7f7f)));
}

// ---- random floats --------------------------------------------------------------------------------

TEST_CASE("dtype: random float patterns match the reference encoder", "[unit][dtype]") {
  std::mt19937 rng(20240531u);
  std::uniform_int_distribution<std::uint32_t> any;
  mismatches bad;
  const auto both = [&](std::uint32_t pattern) {
    const float x = float_of(pattern);
    check_encode(half_fmt, x, bad);
    check_encode(bfloat_fmt, x, bad);
  };

  // Uniform over all 2^32 patterns: every exponent equally, NaNs with random payloads included.
  for (int i = 0; i < 2'000'000; ++i) both(any(rng));
  // f32 subnormals of both signs (bf16 keeps them; f16 flushes them to ±0 by rounding).
  for (int i = 0; i < 200'000; ++i) both((any(rng) & 0x807f'ffffu));
  // Exponents around the f16 range, where most of its rounding happens.
  for (int i = 0; i < 500'000; ++i) {
    const std::uint32_t e = 100u + any(rng) % 45u;  // 2^-27 .. 2^17
    both((any(rng) & 0x807f'ffffu) | (e << 23));
  }
  // NaNs with payloads of every shape, ±0, ±Inf.
  for (int i = 0; i < 100'000; ++i) both(0x7f80'0000u | (any(rng) & 0x807f'ffffu) | (1u << (any(rng) % 23u)));
  for (const std::uint32_t p : {0x0000'0000u, 0x8000'0000u, 0x7f80'0000u, 0xff80'0000u, 0x7fc0'0000u,
                                0xffc0'0000u, 0x7f80'0001u, 0xff80'2000u, 0x7fbf'ffffu})
    both(p);

  INFO(bad.report());
  REQUIRE(bad.count == 0);
}

// ---- int8 -------------------------------------------------------------------------------------------

TEST_CASE("dtype: i8 symmetric quantisation", "[unit][dtype]") {
  using strata::from_i8;
  using strata::to_i8_saturate;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();

  // Ties to even.
  CHECK(to_i8_saturate(0.5f, 1.0f) == 0);
  CHECK(to_i8_saturate(1.5f, 1.0f) == 2);
  CHECK(to_i8_saturate(2.5f, 1.0f) == 2);
  CHECK(to_i8_saturate(-0.5f, 1.0f) == 0);
  CHECK(to_i8_saturate(-2.5f, 1.0f) == -2);
  CHECK(to_i8_saturate(-3.5f, 1.0f) == -4);
  CHECK(to_i8_saturate(1.25f, 0.5f) == 2);  // 2.5 -> 2
  CHECK(to_i8_saturate(0.49999997f, 1.0f) == 0);
  CHECK(to_i8_saturate(126.5f, 1.0f) == 126);
  // Saturation: symmetric, -128 never produced.
  CHECK(to_i8_saturate(127.5f, 1.0f) == 127);
  CHECK(to_i8_saturate(1000.0f, 1.0f) == 127);
  CHECK(to_i8_saturate(-128.0f, 1.0f) == -127);
  CHECK(to_i8_saturate(-1e30f, 1.0f) == -127);
  CHECK(to_i8_saturate(inf, 1.0f) == 127);
  CHECK(to_i8_saturate(-inf, 1.0f) == -127);
  CHECK(to_i8_saturate(1.0f, 0.0f) == 127);
  CHECK(to_i8_saturate(-1.0f, 0.0f) == -127);
  // NaN -> 0, whether it comes from x or from 0/0.
  CHECK(to_i8_saturate(nan, 1.0f) == 0);
  CHECK(to_i8_saturate(-nan, 1.0f) == 0);
  CHECK(to_i8_saturate(0.0f, 0.0f) == 0);
  CHECK(to_i8_saturate(1.0f, nan) == 0);

  // Against nearbyint (default rounding mode is to-nearest-even) on many quotients.
  std::mt19937 rng(7u);
  std::uniform_real_distribution<float> val(-300.0f, 300.0f);
  std::uniform_real_distribution<float> scl(0.01f, 4.0f);
  mismatches bad;
  const auto reference = [](float x, float s) {
    const float q = x / s;
    if (std::isnan(q)) return 0;
    return static_cast<int>(std::nearbyint(std::clamp(q, -127.0f, 127.0f)));
  };
  for (int k = -600; k <= 600; ++k) {  // every half-integer, where ties live
    const float x = static_cast<float>(k) / 2.0f;
    if (to_i8_saturate(x, 1.0f) != reference(x, 1.0f)) bad.add("x=" + std::to_string(x));
  }
  for (int i = 0; i < 200'000; ++i) {
    const float x = val(rng), s = scl(rng);
    if (to_i8_saturate(x, s) != reference(x, s)) bad.add("x=" + std::to_string(x) + " s=" + std::to_string(s));
  }
  INFO(bad.report());
  REQUIRE(bad.count == 0);

  for (int q = -128; q <= 127; ++q) {
    const auto v = static_cast<std::int8_t>(q);
    REQUIRE(bits_of(from_i8(v, 0.375f)) == bits_of(static_cast<float>(q) * 0.375f));
    if (q >= -127) REQUIRE(to_i8_saturate(from_i8(v, 0.375f), 0.375f) == v);
  }
}

// ---- int4 -------------------------------------------------------------------------------------------

TEST_CASE("dtype: int4 pack / unpack", "[unit][dtype]") {
  using strata::int4x2;
  const auto nibble = [](unsigned n) { return n >= 8 ? static_cast<int>(n) - 16 : static_cast<int>(n); };
  for (unsigned byte = 0; byte < 256; ++byte) {
    const int4x2 p{static_cast<std::uint8_t>(byte)};
    const int l = strata::lo(p), h = strata::hi(p);
    REQUIRE(l == nibble(byte & 0xfu));
    REQUIRE(h == nibble(byte >> 4));
    REQUIRE(strata::pack_int4(l, h).bits == byte);
    REQUIRE(strata::same_bits(strata::pack_int4(l, h), p));
  }
  // Out-of-range values clamp, never wrap.
  CHECK(strata::lo(strata::pack_int4(100, -100)) == 7);
  CHECK(strata::hi(strata::pack_int4(100, -100)) == -8);
  CHECK(strata::lo(strata::pack_int4(-9, 8)) == -8);
  CHECK(strata::hi(strata::pack_int4(-9, 8)) == 7);

  // Element helpers over a packed array with an odd count.
  CHECK(strata::int4_units_for(0) == 0);
  CHECK(strata::int4_units_for(1) == 1);
  CHECK(strata::int4_units_for(7) == 4);
  CHECK(strata::int4_units_for(8) == 4);
  std::vector<int4x2> packed(strata::int4_units_for(7), int4x2{0});
  const int values[7] = {-8, 7, 0, -1, 3, -5, 6};
  for (std::size_t i = 0; i < 7; ++i) strata::int4_set(packed.data(), i, values[i]);
  for (std::size_t i = 0; i < 7; ++i) CHECK(strata::int4_get(packed.data(), i) == values[i]);
  CHECK(strata::hi(packed[3]) == 0);  // the unused nibble stays 0
  CHECK(strata::elements_per_unit_v<int4x2> == 2);
  CHECK(strata::elements_per_unit_v<float> == 1);
}

// ---- dtype tags -------------------------------------------------------------------------------------

TEST_CASE("dtype: bits, names, bytes, traits", "[unit][dtype]") {
  using strata::dtype;
  CHECK(strata::dtype_bits(dtype::f32) == 32);
  CHECK(strata::dtype_bits(dtype::f16) == 16);
  CHECK(strata::dtype_bits(dtype::bf16) == 16);
  CHECK(strata::dtype_bits(dtype::i8) == 8);
  CHECK(strata::dtype_bits(dtype::i4) == 4);
  CHECK(std::string(strata::dtype_name(dtype::f32)) == "f32");
  CHECK(std::string(strata::dtype_name(dtype::f16)) == "f16");
  CHECK(std::string(strata::dtype_name(dtype::bf16)) == "bf16");
  CHECK(std::string(strata::dtype_name(dtype::i8)) == "i8");
  CHECK(std::string(strata::dtype_name(dtype::i4)) == "i4");
  CHECK(strata::dtype_bytes_for(dtype::f32, 3) == 12);
  CHECK(strata::dtype_bytes_for(dtype::f16, 3) == 6);
  CHECK(strata::dtype_bytes_for(dtype::bf16, 0) == 0);
  CHECK(strata::dtype_bytes_for(dtype::i8, 5) == 5);
  CHECK(strata::dtype_bytes_for(dtype::i4, 5) == 3);
  CHECK(strata::dtype_bytes_for(dtype::i4, 6) == 3);

  STATIC_REQUIRE(strata::dtype_of_v<float> == dtype::f32);
  STATIC_REQUIRE(strata::dtype_of_v<bf16> == dtype::bf16);
  STATIC_REQUIRE(strata::dtype_of_v<std::int8_t> == dtype::i8);
  STATIC_REQUIRE(strata::dtype_of_v<strata::int4x2> == dtype::i4);
  STATIC_REQUIRE(std::is_same_v<strata::storage_of_t<dtype::f16>, f16>);
  STATIC_REQUIRE(!strata::storage_type<double>);
  STATIC_REQUIRE(!strata::storage_type<int>);
  STATIC_REQUIRE(!strata::storage_type<std::uint16_t>);
  // Each storage type's size agrees with its dtype's bits (int4x2 holds two elements).
  STATIC_REQUIRE(sizeof(f16) * 8 == strata::dtype_bits(dtype::f16));
  STATIC_REQUIRE(sizeof(strata::int4x2) * 8 ==
                 strata::dtype_bits(dtype::i4) * strata::elements_per_unit_v<strata::int4x2>);
}

// ---- bulk loops ---------------------------------------------------------------------------------------

TEST_CASE("dtype: bulk convert equals scalar convert", "[unit][dtype]") {
  std::mt19937 rng(99u);
  std::uniform_int_distribution<std::uint32_t> any;
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{33},
                              std::size_t{100'003}}) {
    std::vector<float> src(n);
    for (auto& x : src) x = float_of(any(rng));
    std::vector<f16> h(n);
    std::vector<bf16> b(n);
    strata::convert(src.data(), h.data(), n);
    strata::convert(src.data(), b.data(), n);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
      bad += !strata::same_bits(h[i], strata::to_f16(src[i]));
      bad += !strata::same_bits(b[i], strata::to_bf16(src[i]));
    }
    std::vector<float> hf(n), bf(n);
    strata::convert(h.data(), hf.data(), n);
    strata::convert(b.data(), bf.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      bad += bits_of(hf[i]) != bits_of(strata::to_float(h[i]));
      bad += bits_of(bf[i]) != bits_of(strata::to_float(b[i]));
    }
    INFO("n = " << n);
    REQUIRE(bad == 0);
  }
}
