// strata/io/crc32c.hpp — CRC-32C (Castagnoli), the checksum on every block strata writes to a file.
//
// What lives here: crc32c() with the usual conventions (initial value ~0, final xor ~0, so
// crc32c("123456789") == 0xE3069283) that chains — crc32c(b, n, crc32c(a, m)) is the CRC of a
// followed by b — and crc32c_hardware(), which says whether the SSE4.2 instruction does the
// work. The instruction is chosen at run time, not at compile time: a binary built without
// -msse4.2 still uses it where the CPU has it, and never executes it where the CPU does not.
// Everywhere else (other CPUs, other architectures) a slicing-by-8 table does the work.
// What does not: where checksums are stored and checked (nvme_store.hpp).
#pragma once

#include <strata/core/config.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#  define STRATA_IO_CRC32C_X86 1
#  include <nmmintrin.h>
#else
#  define STRATA_IO_CRC32C_X86 0
#endif

STRATA_NAMESPACE_BEGIN
namespace io {
namespace detail {

// Reflected polynomial of CRC-32C.
inline constexpr std::uint32_t crc32c_poly = 0x82F63B78u;

// tables[k][b]: the CRC register after feeding byte b followed by k zero bytes, so eight bytes
// are folded per step (slicing-by-8) instead of one.
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc32c_tables() noexcept {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ crc32c_poly : c >> 1;
    t[0][b] = c;
  }
  for (std::size_t k = 1; k < 8; ++k)
    for (std::size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  return t;
}

inline constexpr auto crc32c_tables = make_crc32c_tables();

// Both paths work on the raw register (already inverted); crc32c() does the inversions.
inline std::uint32_t crc32c_table_update(std::uint32_t crc, const unsigned char* p,
                                         std::size_t n) noexcept {
  const auto& t = crc32c_tables;
  while (n && (reinterpret_cast<std::uintptr_t>(p) & 7u)) {
    crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFFu];
    --n;
  }
  for (; n >= 8; n -= 8, p += 8) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= crc;
    crc = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFFu] ^ t[2][(hi >> 8) & 0xFFu] ^ t[1][(hi >> 16) & 0xFFu] ^ t[0][hi >> 24];
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFFu];
  return crc;
}

// Shifting a CRC register over n zero bytes is linear over GF(2): a 32x32 bit matrix, kept
// as four byte-indexed tables. The hardware path uses it to run three independent CRCs over
// three adjacent stretches at once (the instruction's latency is three times its throughput)
// and join them: crc(A B) = shift(crc(A), |B|) ^ crc0(B).
using crc32c_shift_table = std::array<std::array<std::uint32_t, 256>, 4>;

constexpr std::uint32_t gf2_times(const std::array<std::uint32_t, 32>& mat, std::uint32_t vec) noexcept {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; vec; vec >>= 1, ++i)
    if (vec & 1u) sum ^= mat[i];
  return sum;
}

constexpr std::array<std::uint32_t, 32> gf2_square(const std::array<std::uint32_t, 32>& mat) noexcept {
  std::array<std::uint32_t, 32> sq{};
  for (std::size_t n = 0; n < 32; ++n) sq[n] = gf2_times(mat, mat[n]);
  return sq;
}

// The matrix that feeds `bytes` zero bytes (a power of two) into a CRC register.
constexpr crc32c_shift_table make_crc32c_shift(std::size_t bytes) noexcept {
  std::array<std::uint32_t, 32> op{};  // one zero bit
  op[0] = crc32c_poly;
  for (std::size_t n = 1; n < 32; ++n) op[n] = std::uint32_t{1} << (n - 1);
  for (std::size_t bits = 1; bits < 8 * bytes; bits *= 2) op = gf2_square(op);
  crc32c_shift_table t{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    t[0][n] = gf2_times(op, n);
    t[1][n] = gf2_times(op, n << 8);
    t[2][n] = gf2_times(op, n << 16);
    t[3][n] = gf2_times(op, n << 24);
  }
  return t;
}

inline constexpr std::size_t crc32c_long = 8192, crc32c_short = 256;
inline constexpr crc32c_shift_table crc32c_shift_long = make_crc32c_shift(crc32c_long);
inline constexpr crc32c_shift_table crc32c_shift_short = make_crc32c_shift(crc32c_short);

inline std::uint32_t crc32c_shift(const crc32c_shift_table& t, std::uint32_t crc) noexcept {
  return t[0][crc & 0xFFu] ^ t[1][(crc >> 8) & 0xFFu] ^ t[2][(crc >> 16) & 0xFFu] ^ t[3][crc >> 24];
}

#if STRATA_IO_CRC32C_X86
// Compiled for SSE4.2 whatever the translation unit's flags, and only ever called after the
// run-time check in crc32c_hardware().
__attribute__((target("sse4.2"))) inline std::uint64_t
crc32c_sse42_stripes(std::uint64_t c0, const unsigned char*& p, std::size_t& n, std::size_t stripe,
                     const crc32c_shift_table& shift) noexcept {
  while (n >= 3 * stripe) {
    std::uint64_t c1 = 0, c2 = 0;
    for (const unsigned char* end = p + stripe; p < end; p += 8) {
      std::uint64_t w0, w1, w2;
      std::memcpy(&w0, p, 8);
      std::memcpy(&w1, p + stripe, 8);
      std::memcpy(&w2, p + 2 * stripe, 8);
      c0 = _mm_crc32_u64(c0, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
    }
    c0 = crc32c_shift(shift, static_cast<std::uint32_t>(c0)) ^ c1;
    c0 = crc32c_shift(shift, static_cast<std::uint32_t>(c0)) ^ c2;
    p += 2 * stripe;
    n -= 3 * stripe;
  }
  return c0;
}

__attribute__((target("sse4.2"))) inline std::uint32_t
crc32c_sse42_update(std::uint32_t crc, const unsigned char* p, std::size_t n) noexcept {
  while (n && (reinterpret_cast<std::uintptr_t>(p) & 7u)) {
    crc = _mm_crc32_u8(crc, *p++);
    --n;
  }
  std::uint64_t c = crc;
  c = crc32c_sse42_stripes(c, p, n, crc32c_long, crc32c_shift_long);
  c = crc32c_sse42_stripes(c, p, n, crc32c_short, crc32c_shift_short);
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
  }
  crc = static_cast<std::uint32_t>(c);
  while (n--) crc = _mm_crc32_u8(crc, *p++);
  return crc;
}
#endif

inline bool cpu_has_sse42() noexcept {
#if STRATA_IO_CRC32C_X86
  __builtin_cpu_init();  // may run before the library's own constructors did it
  return __builtin_cpu_supports("sse4.2") != 0;
#else
  return false;
#endif
}

}  // namespace detail

/// True when crc32c() uses the CPU's CRC32 instruction (SSE4.2), false for the table.
inline bool crc32c_hardware() noexcept {
  static const bool hardware = detail::cpu_has_sse42();
  return hardware;
}

/// CRC-32C of `bytes` bytes at `data`. `seed` is the CRC of the bytes before them (0 for none),
/// so a CRC can be computed piece by piece.
[[nodiscard]] inline std::uint32_t crc32c(const void* data, std::size_t bytes,
                                         std::uint32_t seed = 0) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t crc = ~seed;
#if STRATA_IO_CRC32C_X86
  if (crc32c_hardware()) return ~detail::crc32c_sse42_update(crc, p, bytes);
#endif
  return ~detail::crc32c_table_update(crc, p, bytes);
}

/// The table path alone, whatever the CPU: the reference the hardware path is tested against.
[[nodiscard]] inline std::uint32_t crc32c_portable(const void* data, std::size_t bytes,
                                                  std::uint32_t seed = 0) noexcept {
  return ~detail::crc32c_table_update(~seed, static_cast<const unsigned char*>(data), bytes);
}

}  // namespace io
STRATA_NAMESPACE_END
