// The trace recorder: spans, busy time, overlap, and Chrome trace JSON that a viewer can load.
#include "catch.hpp"

#include <strata/exec/trace.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

using namespace strata;

TEST_CASE("busy time is the union of a queue's spans", "[trace]") {
  std::vector<span> s = {
      {"compute", span_kind::compute, "a", 0, 10},
      {"compute", span_kind::compute, "b", 5, 15},   // overlaps a: counted once
      {"compute", span_kind::compute, "c", 20, 30},
      {"h2d", span_kind::h2d, "f", 8, 22},
      {"d2h", span_kind::d2h, "w", 30, 40},
  };
  auto sum = trace_recorder::summarize(s);
  CHECK(sum.wall_us == 40);
  CHECK(sum.busy_us_by_queue.at("compute") == 25);
  CHECK(sum.busy_us_by_queue.at("h2d") == 14);
  CHECK(sum.compute_fraction == Approx(25.0 / 40.0));
  // h2d [8,22] meets compute [0,15] u [20,30] in [8,15] and [20,22].
  CHECK(trace_recorder::overlap_us(s, span_kind::h2d, span_kind::compute) == 9);
  CHECK(trace_recorder::overlap_us(s, span_kind::d2h, span_kind::compute) == 0);  // touching
  CHECK(trace_recorder::overlap_us(s, span_kind::d2h, span_kind::h2d) == 0);
  CHECK(sum.to_string().find("compute busy 62.5%") != std::string::npos);
}

TEST_CASE("an empty trace summarises to zero", "[trace]") {
  trace_recorder t;
  auto sum = t.summarize();
  CHECK(sum.wall_us == 0);
  CHECK(sum.compute_fraction == 0);
}

TEST_CASE("scopes record spans; a disabled recorder records nothing", "[trace]") {
  trace_recorder t;
  { trace_recorder::scope s(t, "compute", span_kind::compute, "work"); }
  auto spans = t.spans();
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].label == "work");
  CHECK(spans[0].end_us >= spans[0].begin_us);
  t.clear();
  t.set_enabled(false);
  { trace_recorder::scope s(t, "compute", span_kind::compute, "unseen"); }
  CHECK(t.spans().empty());
}

TEST_CASE("Chrome trace JSON names queues and spans, escaped", "[trace]") {
  trace_recorder t;
  t.record("h2d", span_kind::h2d, "fetch \"w\"\\1", 1.5, 3.25);
  t.record("compute", span_kind::compute, "layer 0", 2, 5);
  const std::string path = "trace_test.json";
  t.write_chrome_json(path);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string j = ss.str();
  std::remove(path.c_str());
  CHECK(j.find("\"traceEvents\"") != std::string::npos);
  CHECK(j.find("\"thread_name\"") != std::string::npos);
  CHECK(j.find("\"name\":\"h2d\"") != std::string::npos);
  CHECK(j.find("\"name\":\"fetch \\\"w\\\"\\\\1\"") != std::string::npos);
  CHECK(j.find("\"cat\":\"compute\"") != std::string::npos);
  CHECK(j.find("\"ts\":1.500,\"dur\":1.750") != std::string::npos);
  // Balanced brackets and braces outside strings: the file parses as one JSON value.
  int depth = 0;
  bool in_string = false, escaped = false, went_negative = false;
  for (char c : j) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') went_negative |= --depth < 0;
  }
  CHECK(depth == 0);
  CHECK_FALSE(went_negative);
  CHECK_FALSE(in_string);
  CHECK_THROWS_AS(t.write_chrome_json("/nonexistent-dir/x.json"), io_error);
}
