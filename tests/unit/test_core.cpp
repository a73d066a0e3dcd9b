// Shapes, alignment arithmetic, the error hierarchy and byte formatting.
#include "catch.hpp"

#include <strata/core/align.hpp>
#include <strata/core/error.hpp>
#include <strata/core/shape.hpp>

using namespace strata;

TEST_CASE("shape: extents, element count, strides, text", "[core]") {
  constexpr shape s{2, 3, 4};
  STATIC_REQUIRE(s.rank() == 3);
  STATIC_REQUIRE(s.numel() == 24);
  STATIC_REQUIRE(s.stride(0) == 12);
  STATIC_REQUIRE(s.stride(2) == 1);
  STATIC_REQUIRE(bytes_of<double>(s) == 192);
  STATIC_REQUIRE(shape{}.numel() == 1);  // a scalar
  CHECK(s.to_string() == "(2, 3, 4)");
  CHECK(shape{7}.to_string() == "(7)");
  CHECK(s == shape{2, 3, 4});
  CHECK_FALSE(s == shape{2, 3});
  CHECK_FALSE(s == shape{2, 3, 5});
  CHECK(shape{5, 0}.numel() == 0);
  CHECK_THROWS_AS((shape{1, 2, 3, 4, 5, 6, 7, 8, 9}), config_error);
}

TEST_CASE("alignment helpers", "[core]") {
  STATIC_REQUIRE(align_up(0, 64) == 0);
  STATIC_REQUIRE(align_up(1, 64) == 64);
  STATIC_REQUIRE(align_up(64, 64) == 64);
  STATIC_REQUIRE(align_up(65, 4096) == 4096);
  STATIC_REQUIRE(align_down(4097, 4096) == 4096);
  STATIC_REQUIRE(is_pow2(4096) && !is_pow2(0) && !is_pow2(48));
  STATIC_REQUIRE(is_aligned(std::size_t{8192}, 4096) && !is_aligned(std::size_t{100}, 64));
  alignas(64) char buf[128];
  CHECK(is_aligned(buf, 64));
  CHECK_FALSE(is_aligned(buf + 1, 2));
}

TEST_CASE("every strata exception is a strata::error", "[core]") {
  auto caught_as_base = [](auto thrower) {
    try {
      thrower();
    } catch (const error&) {
      return true;
    } catch (...) {
    }
    return false;
  };
  CHECK(caught_as_base([] { throw config_error("c"); }));
  CHECK(caught_as_base([] { throw access_error("a"); }));
  CHECK(caught_as_base([] { throw io_error("i"); }));
  CHECK(caught_as_base([] { throw comm_error("m"); }));
  CHECK(caught_as_base([] { throw format_error("f"); }));
  CHECK(caught_as_base([] { throw cuda_error(2, "x"); }));
  CHECK(caught_as_base([] { throw out_of_budget("device", 1, 0, 0, "t"); }));
  cuda_error e(2, "cudaMalloc: out of memory");
  CHECK(e.code() == 2);
}

TEST_CASE("format_bytes gives exact counts with readable units", "[core]") {
  CHECK(format_bytes(0) == "0 bytes");
  CHECK(format_bytes(1023) == "1023 bytes");
  CHECK(format_bytes(1024) == "1.00 KiB (1024 bytes)");
  CHECK(format_bytes(3u << 20) == "3.00 MiB (3145728 bytes)");
  CHECK(format_bytes(std::size_t{5} << 30) == "5.00 GiB (5368709120 bytes)");
}

TEST_CASE("out_of_budget words its message with tier, asker and numbers", "[core]") {
  out_of_budget e("pinned", 4096, 1024, 8192, "staging ring");
  CHECK(std::string(e.what()) ==
        "out of budget on tier 'pinned': 'staging ring' requested 4.00 KiB (4096 bytes), "
        "1.00 KiB (1024 bytes) available of its 8.00 KiB (8192 bytes) budget");
}
