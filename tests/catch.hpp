// tests/catch.hpp — the one place tests get Catch2 from, so they work with v2 and v3.
//
// Debian 12 ships Catch2 v2 (single header <catch2/catch.hpp>); v3 split it into
// <catch2/catch_all.hpp> and a library. tests/CMakeLists.txt defines STRATA_CATCH2_V3 or
// STRATA_CATCH2_V2 after finding the package; without either, __has_include decides (v3 first).
// Tests write `#include "catch.hpp"` and use the macros both versions share (TEST_CASE,
// SECTION, REQUIRE, CHECK, GENERATE, Approx, ...).
#pragma once

#if defined(STRATA_CATCH2_V3)
#  include <catch2/catch_all.hpp>
#elif defined(STRATA_CATCH2_V2)
#  include <catch2/catch.hpp>
#elif __has_include(<catch2/catch_all.hpp>)
#  define STRATA_CATCH2_V3 1
#  include <catch2/catch_all.hpp>
#elif __has_include(<catch2/catch.hpp>)
#  define STRATA_CATCH2_V2 1
#  include <catch2/catch.hpp>
#else
#  error "Catch2 not found: install it (Debian: apt install catch2) or build with -DSTRATA_BUILD_TESTS=OFF"
#endif

#if defined(STRATA_CATCH2_V3)
// v2 puts Approx in the global namespace and tests are written against v2; give v3 the same.
using Catch::Approx;
#endif
