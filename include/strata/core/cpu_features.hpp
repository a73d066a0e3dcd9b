// strata/core/cpu_features.hpp — which x86 vector extensions this CPU and OS let us use.
//
// What lives here: STRATA_X86_SIMD (1 where strata compiles its hand-written x86 vector paths:
// x86-64 with GCC or Clang, and not nvcc's pass over host code, which only gets the scalar
// paths), cpu_features (the few CPUID bits those paths need, each already combined with the
// OS's consent to save the registers, read from XCR0) and cpu() (detected once per process).
// What does not: the vector code itself (optim/detail/adam_avx2.hpp, adam_avx512.hpp) or the
// choice between paths (optim/adam.hpp's simd_level).
//
// Why cpuid + xgetbv and not -march flags: the library is compiled for baseline x86-64, and
// each vector function carries its own __attribute__((target(...))), so one binary runs on an
// old CPU (scalar), a Haswell (AVX2) and a Zen 4 / Sapphire Rapids (AVX-512). A CPUID bit alone
// is not enough: a kernel or hypervisor that does not enable the YMM/ZMM state in XCR0 leaves
// the instructions faulting, so each flag below is "the CPU has it AND the OS saves it".
#pragma once

#include <strata/core/config.hpp>

#include <string>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) &&      \
    !defined(__CUDACC__)
#  define STRATA_X86_SIMD 1
#  include <cpuid.h>
#else
#  define STRATA_X86_SIMD 0
#endif

STRATA_NAMESPACE_BEGIN

/// Vector extensions usable on this machine (CPU support and OS register saving both checked).
/// All false where STRATA_X86_SIMD is 0.
struct cpu_features {
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_bf16 = false;

  /// AVX2 + FMA + F16C: what strata's 256-bit paths use.
  bool has_avx2_path() const noexcept { return avx2 && fma && f16c; }
  /// AVX-512 F + BW + VL (+ the 256-bit set): what strata's 512-bit paths use (BW/VL for the
  /// masked 16-bit loads and stores of bf16 / f16 data).
  bool has_avx512_path() const noexcept {
    return has_avx2_path() && avx512f && avx512bw && avx512vl;
  }

  /// "avx avx2 fma f16c avx512f ..." (the flags that are set), or "none": for messages.
  std::string describe() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
      if (!on) return;
      if (!s.empty()) s += ' ';
      s += name;
    };
    add(avx, "avx");
    add(avx2, "avx2");
    add(fma, "fma");
    add(f16c, "f16c");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512dq, "avx512dq");
    add(avx512_bf16, "avx512_bf16");
    return s.empty() ? std::string("none") : s;
  }

  /// Reads CPUID and XCR0 now (cpu() caches the answer; call this only to re-detect).
  static cpu_features detect() noexcept;
};

/// This machine's features, detected on first use and cached for the process.
inline const cpu_features& cpu() noexcept {
  static const cpu_features f = cpu_features::detect();
  return f;
}

inline cpu_features cpu_features::detect() noexcept {
  cpu_features f;
#if STRATA_X86_SIMD
  unsigned a = 0, b = 0, c = 0, d = 0;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 1) return f;
  __cpuid_count(1, 0, a, b, c, d);
  const bool osxsave = (c >> 27) & 1u;
  const bool cpu_avx = (c >> 28) & 1u;
  const bool cpu_fma = (c >> 12) & 1u;
  const bool cpu_f16c = (c >> 29) & 1u;
  if (!osxsave || !cpu_avx) return f;  // no AVX at all, or the OS saves no YMM state

  // XCR0: bit 1 SSE, bit 2 AVX (upper YMM) state; bits 5-7 opmask, ZMM0-15 upper halves,
  // ZMM16-31. xgetbv is only legal once CPUID said OSXSAVE (checked above).
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0u));
  const bool os_ymm = (xcr0_lo & 0x6u) == 0x6u;
  const bool os_zmm = (xcr0_lo & 0xe6u) == 0xe6u;
  if (!os_ymm) return f;

  f.avx = true;
  f.fma = cpu_fma;
  f.f16c = cpu_f16c;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub7 = a;
    f.avx2 = (b >> 5) & 1u;
    if (os_zmm) {
      f.avx512f = (b >> 16) & 1u;
      f.avx512dq = (b >> 17) & 1u;
      f.avx512bw = (b >> 30) & 1u;
      f.avx512vl = (b >> 31) & 1u;
      if (max_sub7 >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f.avx512_bf16 = f.avx512f && ((a >> 5) & 1u);
      }
    }
  }
#endif
  return f;
}

STRATA_NAMESPACE_END
