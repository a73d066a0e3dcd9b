// needs: nlohmann_json
// The checkpoint manifest (checkpoint/manifest.hpp): a round trip through JSON keeps every
// field, and every way a manifest on disk can be wrong is a format_error naming the file and
// the field.
#include "catch.hpp"

#if __has_include(<nlohmann/json.hpp>)

#include <strata/checkpoint/manifest.hpp>

#include <functional>
#include <string>
#include <vector>

using namespace strata;
using namespace strata::checkpoint;
using json = nlohmann::json;

namespace {

const std::string file = "ckpt/step-7/rank-2.json";

// Rank 2 of 3: a replicated f32, a sharded f32 (10 elements over 3 ranks: rank 2 holds elements
// 8..9 and two of padding) and an i4 with an odd element count.
manifest sample() {
  manifest m;
  m.tag = "step-7";
  m.step = 7;
  m.world = 3;
  m.rank = 2;
  m.zero_stage = 3;
  m.metadata = {{"lr", "0.001"}, {"schedule", {{"warmup", 10}, {"kind", "cosine"}}}};
  tensor_entry a{"a", dtype::f32, 6, std::nullopt, "rank-2.bin", 0, 24, 16, {1u, 2u}};
  tensor_entry s{"s", dtype::f32, 10, shard_spec{shard_layout(10, 3), 2}, "rank-2.bin", 4096, 16, 8,
                 {3u, 0xffffffffu}};
  tensor_entry q{"q", dtype::i4, 7, std::nullopt, "rank-2.bin", 8192, 4, 1024, {5u}};
  m.tensors = {a, s, q};
  return m;
}

}  // namespace

TEST_CASE("manifest: a round trip through JSON keeps every field", "[checkpoint][manifest]") {
  const manifest m = sample();
  const std::string text = serialize(m, file);
  const manifest back = parse_manifest(text, file);
  CHECK(back.version == manifest_version);
  CHECK(back.tag == "step-7");
  CHECK(back.step == 7);
  CHECK(back.world == 3);
  CHECK(back.rank == 2);
  CHECK(back.zero_stage == 3);
  CHECK(back.metadata == m.metadata);
  CHECK(back.metadata["lr"] == "0.001");
  REQUIRE(back.tensors.size() == 3);
  const tensor_entry& s = back.tensors[1];
  CHECK(s.name == "s");
  CHECK(s.type == dtype::f32);
  CHECK(s.numel == 10);
  REQUIRE(s.shard.has_value());
  CHECK(s.shard->rank == 2);
  CHECK(s.shard->layout.world() == 3);
  CHECK(s.shard->layout.shard_numel() == 4);
  CHECK(s.shard->offset() == 8);
  CHECK(s.shard->valid() == 2);
  CHECK(s.stored_numel() == 4);
  CHECK(s.offset == 4096);
  CHECK(s.bytes == 16);
  CHECK(s.block_bytes == 8);
  CHECK(s.crc32c == std::vector<std::uint32_t>{3u, 0xffffffffu});
  CHECK(!back.tensors[0].shard.has_value());
  CHECK(back.tensors[2].type == dtype::i4);
  CHECK(back.find("q") == &back.tensors[2]);
  CHECK(back.find("nope") == nullptr);
  // Padding is spelt out, not left for the reader to work out.
  const json j = json::parse(text);
  CHECK(j["tensors"][1]["layout"]["padding"] == 2);
  CHECK(j["tensors"][0]["layout"].is_null());
  CHECK(to_json(back, file) == to_json(m, file));
  CHECK(manifest_file_name(2) == "rank-2.json");
  CHECK(data_file_name(2) == "rank-2.bin");
}

TEST_CASE("manifest: every dtype is written by its core/dtype.hpp name", "[checkpoint][manifest]") {
  for (dtype d : {dtype::f32, dtype::f16, dtype::bf16, dtype::i8, dtype::i4}) {
    CHECK(dtype_from_name(dtype_name(d)) == d);
  }
  CHECK(!dtype_from_name("f64").has_value());
}

TEST_CASE("manifest: every inconsistency is a format_error naming the file and the field",
          "[checkpoint][manifest]") {
  struct bad_case {
    const char* what;
    std::function<void(json&)> edit;
    const char* field;  // must appear in the message
  };
  const std::vector<bad_case> cases = {
      {"top level not an object", [](json& j) { j = json::array(); }, "(top level)"},
      {"another format", [](json& j) { j["format"] = "safetensors"; }, "format"},
      {"unknown version", [](json& j) { j["version"] = 2; }, "version: is 2; this build reads version 1"},
      {"no tag", [](json& j) { j.erase("tag"); }, "tag: missing"},
      {"empty tag", [](json& j) { j["tag"] = ""; }, "tag: is empty"},
      {"step of the wrong type", [](json& j) { j["step"] = "7"; }, "step: is \"7\""},
      {"negative step", [](json& j) { j["step"] = -1; }, "step"},
      {"rank outside the world", [](json& j) { j["rank"] = 3; }, "rank: is 3, outside the world of 3"},
      {"world 0", [](json& j) { j["world"] = 0; }, "world"},
      {"stage 4", [](json& j) { j["zero_stage"] = 4; }, "zero_stage"},
      {"metadata not an object", [](json& j) { j["metadata"] = json::array({1}); }, "metadata"},
      {"tensors not an array", [](json& j) { j["tensors"] = 1; }, "tensors: is not an array"},
      {"tensor without numel", [](json& j) { j["tensors"][0].erase("numel"); }, "tensors[0] ('a').numel: missing"},
      {"empty name", [](json& j) { j["tensors"][0]["name"] = ""; }, "tensors[0].name: is empty"},
      {"unknown dtype", [](json& j) { j["tensors"][0]["dtype"] = "f64"; }, "tensors[0] ('a').dtype"},
      {"layout offset", [](json& j) { j["tensors"][1]["layout"]["offset"] = 6; },
       "tensors[1] ('s').layout.offset: is 6, but rank 2's shard of 10 elements over 3 ranks has 8"},
      {"layout rank", [](json& j) { j["tensors"][1]["layout"]["rank"] = 3; }, "tensors[1] ('s').layout.rank"},
      {"layout world 0", [](json& j) { j["tensors"][1]["layout"]["world"] = 0; }, "layout.world"},
      {"layout shard length", [](json& j) { j["tensors"][1]["layout"]["shard_numel"] = 3; },
       "layout.shard_numel"},
      {"layout valid", [](json& j) { j["tensors"][1]["layout"]["valid"] = 4; }, "layout.valid"},
      {"layout padding", [](json& j) { j["tensors"][1]["layout"]["padding"] = 0; }, "layout.padding"},
      {"layout not an object", [](json& j) { j["tensors"][1]["layout"] = 5; }, "tensors[1] ('s').layout"},
      {"bytes not the dtype's size", [](json& j) { j["tensors"][0]["bytes"] = 20; },
       "tensors[0] ('a').bytes: is 20, but 6 f32 elements take 24"},
      {"block size 0", [](json& j) { j["tensors"][0]["block_bytes"] = 0; }, "tensors[0] ('a').block_bytes"},
      {"too few blocks", [](json& j) { j["tensors"][0]["crc32c"] = json::array({1}); },
       "tensors[0] ('a').crc32c: has 1 blocks, but 24 bytes in blocks of 16 need 2"},
      {"too many blocks", [](json& j) { j["tensors"][2]["crc32c"].push_back(9); }, "tensors[2] ('q').crc32c"},
      {"a CRC over 32 bits", [](json& j) { j["tensors"][0]["crc32c"][1] = 4294967296ull; },
       "tensors[0] ('a').crc32c[1]"},
      {"a CRC that is negative", [](json& j) { j["tensors"][0]["crc32c"][0] = -1; }, "crc32c[0]"},
      {"a file outside the directory", [](json& j) { j["tensors"][0]["file"] = "../rank-2.bin"; },
       "tensors[0] ('a').file"},
      {"a file in a subdirectory", [](json& j) { j["tensors"][0]["file"] = "x/rank-2.bin"; }, ".file"},
      {"a name twice", [](json& j) { j["tensors"][2]["name"] = "a"; }, "tensors[2] ('a').name: appears twice"},
      {"overlapping tensors", [](json& j) { j["tensors"][1]["offset"] = 16; }, "tensors[1] ('s').offset: is 16, inside 'a'"},
  };
  const json good = to_json(sample(), file);
  for (const bad_case& c : cases) {
    json j = good;
    c.edit(j);
    INFO(c.what);
    try {
      (void)parse_manifest(j.dump(), file);
      FAIL_CHECK("accepted: " << c.what);
    } catch (const format_error& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find("checkpoint manifest '" + file + "'") != std::string::npos);
      CHECK(msg.find(c.field) != std::string::npos);
    }
  }
}

TEST_CASE("manifest: text that is not JSON is a format_error naming the file", "[checkpoint][manifest]") {
  try {
    (void)parse_manifest("{\"format\": \"strata-checkpoint\", ", file);
    FAIL("accepted broken JSON");
  } catch (const format_error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find(file) != std::string::npos);
    CHECK(msg.find("not valid JSON") != std::string::npos);
  }
}

TEST_CASE("manifest: an inconsistent manifest is never written", "[checkpoint][manifest]") {
  manifest m = sample();
  m.tensors[1].bytes = 12;  // three elements' worth for a shard of four
  CHECK_THROWS_AS(serialize(m, file), format_error);
  m = sample();
  m.tensors[1].shard = shard_spec{shard_layout(10, 3), 3};  // rank 3 of 3
  CHECK_THROWS_AS(validate(m, file), format_error);
  m = sample();
  m.version = 0;
  CHECK_THROWS_AS(validate(m, file), format_error);
}

#else

#include <cstdio>
TEST_CASE("manifest: skipped") { std::puts("SKIP: nlohmann/json not found"); }

#endif
