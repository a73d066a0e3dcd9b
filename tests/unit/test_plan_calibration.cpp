// needs: nlohmann_json
// The planner's calibration (plan/calibration.hpp, plan/calibration_json.hpp): a JSON round trip
// keeps every field bit for bit; a file of another format or version, with a field missing or of
// the wrong type, is refused naming the file and the field; saving is atomic (no .partial left,
// an existing file replaced whole); gemm_rate and allgather_rate pick the nearest measurement;
// calibrate() at tiny sizes fills every field it measures, calls the probes once per shape and
// reports one progress line per measurement; a calibration is stale exactly when its
// fingerprint is not this machine's. No timing is asserted: only that rates are positive.
// The NVMe measurement runs in STRATA_TEST_TMPDIR (a real file system: /tmp may be a tmpfs
// without O_DIRECT), else the working directory (tests/io/io_test_support.hpp).
#include "catch.hpp"

#if __has_include(<nlohmann/json.hpp>)

#include "io/io_test_support.hpp"

#include <strata/plan/calibration.hpp>
#include <strata/plan/calibration_json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

using namespace strata;
using namespace strata::plan;
using json = nlohmann::json;

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

// Every field set, with doubles whose shortest decimal form is long (1/3, 0.1) or extreme.
calibration sample() {
  calibration c;
  c.machine = "Test CPU @ 3.00GHz, 8 logical cores, avx2";
  c.measured_at = "2025-01-31T17:04:05Z";
  c.threads = 8;
  c.gemm = {{64, 64, 64, 1.0 / 3.0 * 1e10}, {1024, 4096, 512, 2.0e11 + 0.1},
            {7, 3, 5, std::nextafter(1e9, 2e9)}};
  c.gemm_flops = 1.2345678901234567e11;
  c.triad_bytes_s = 0.1 * 3e11;
  c.copy_bytes_s = std::numeric_limits<double>::denorm_min();
  c.nvme_read_bytes_s = 3.2e9 / 7.0;
  c.nvme_write_bytes_s = std::numeric_limits<double>::max();
  c.nvme_block = std::size_t{1} << 20;
  c.nvme_depth = 16;
  c.nvme_engine = "uring";
  c.nvme_dir = "/mnt/nvme/strata \"scratch\"";
  c.allgather_bytes_s = {{2, 9.5e9 / 3.0}, {4, 7.25e9}};
  c.h2d_bytes_s = 2.5e10 / 3.0;
  c.d2h_bytes_s = 2.4e10 + 0.5;
  c.gpu_gemm_flops = 9.9e14 / 7.0;
  c.kernels = {{"gpt.matmul.q4.flops_per_s", 1.1e10 / 3.0}, {"gpt.matmul.f32.flops_per_s", 2e10}};
  c.nvme_by_size = {{4 << 20, 1.1e9 / 3.0, 1.3e9}, {16 << 20, 1.7e9, 1.9e9 / 7.0}};
  c.fingerprint = "Test CPU, 8 logical cores, avx2; nvme: /dev/nvme0n1 (ext4); RAM 64 GiB";
  return c;
}

void check_same(const calibration& a, const calibration& b) {
  CHECK(a.machine == b.machine);
  CHECK(a.measured_at == b.measured_at);
  CHECK(a.threads == b.threads);
  REQUIRE(a.gemm.size() == b.gemm.size());
  for (std::size_t i = 0; i < a.gemm.size(); ++i) {
    CHECK(a.gemm[i].m == b.gemm[i].m);
    CHECK(a.gemm[i].n == b.gemm[i].n);
    CHECK(a.gemm[i].k == b.gemm[i].k);
    CHECK(a.gemm[i].flops_per_s == b.gemm[i].flops_per_s);  // exact: same bits
  }
  CHECK(a.gemm_flops == b.gemm_flops);
  CHECK(a.triad_bytes_s == b.triad_bytes_s);
  CHECK(a.copy_bytes_s == b.copy_bytes_s);
  CHECK(a.nvme_read_bytes_s == b.nvme_read_bytes_s);
  CHECK(a.nvme_write_bytes_s == b.nvme_write_bytes_s);
  CHECK(a.nvme_block == b.nvme_block);
  CHECK(a.nvme_depth == b.nvme_depth);
  CHECK(a.nvme_engine == b.nvme_engine);
  CHECK(a.nvme_dir == b.nvme_dir);
  CHECK(a.allgather_bytes_s == b.allgather_bytes_s);
  CHECK(a.h2d_bytes_s == b.h2d_bytes_s);
  CHECK(a.d2h_bytes_s == b.d2h_bytes_s);
  CHECK(a.gpu_gemm_flops == b.gpu_gemm_flops);
  CHECK(a.kernels == b.kernels);
  REQUIRE(a.nvme_by_size.size() == b.nvme_by_size.size());
  for (std::size_t i = 0; i < a.nvme_by_size.size(); ++i) {
    CHECK(a.nvme_by_size[i].bytes == b.nvme_by_size[i].bytes);
    CHECK(a.nvme_by_size[i].read_bytes_s == b.nvme_by_size[i].read_bytes_s);
    CHECK(a.nvme_by_size[i].write_bytes_s == b.nvme_by_size[i].write_bytes_s);
  }
  CHECK(a.fingerprint == b.fingerprint);
}

json sample_json() {
  json j;
  to_json(j, sample());
  return j;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The message of the E that f throws ("" and a failed check when it throws nothing or another
/// type).
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("threw another type: " << e.what());
    return "";
  }
  FAIL_CHECK("did not throw");
  return "";
}

/// load_calibration of `j` written to `path` must be a format_error naming the file and `field`.
void check_refused(const std::string& path, const json& j, const std::string& field) {
  INFO("field " << field);
  write_text(path, j.dump(2));
  const std::string m = message_of<format_error>([&] { (void)load_calibration(path); });
  CHECK(m.find(path) != std::string::npos);
  CHECK(m.find(field) != std::string::npos);
}

}  // namespace

TEST_CASE("calibration: a JSON round trip keeps every field, bit for bit", "[plan][calibration]") {
  io_test::scratch_dir scratch;
  const std::string path = scratch.file("calibration.json");
  save_calibration(sample(), path);
  check_same(load_calibration(path), sample());

  // Through nlohmann's own conversions too.
  const json j = sample();
  check_same(j.get<calibration>(), sample());
  CHECK(j.at("format") == "strata-calibration");
  CHECK(j.at("version") == 1);

  // An empty calibration (nothing measured) is a valid file as well.
  save_calibration(calibration{}, path);
  check_same(load_calibration(path), calibration{});
}

TEST_CASE("calibration: a file of another format or version, or missing a field, is refused "
          "naming it",
          "[plan][calibration]") {
  io_test::scratch_dir scratch;
  const std::string path = scratch.file("bad.json");

  json j = sample_json();
  j["format"] = "strata-checkpoint";
  check_refused(path, j, "format");
  j = sample_json();
  j["version"] = 2;
  check_refused(path, j, "version");

  // Every top-level field, in turn.
  const json full = sample_json();
  for (const auto& item : full.items()) {
    j = full;
    j.erase(item.key());
    check_refused(path, j, item.key());
  }
  // Nested ones name their place.
  j = sample_json();
  j["gemm"][1].erase("k");
  check_refused(path, j, "gemm[1].k");
  j = sample_json();
  j["allgather_bytes_s"][0].erase("bytes_s");
  check_refused(path, j, "allgather_bytes_s[0].bytes_s");
  j = sample_json();
  j["kernels"]["gpt.matmul.q4.flops_per_s"] = "fast";
  check_refused(path, j, "kernels.gpt.matmul.q4.flops_per_s");
  j = sample_json();
  j["kernels"]["gpt.matmul.f32.flops_per_s"] = 0.0;
  check_refused(path, j, "kernels.gpt.matmul.f32.flops_per_s");

  // Wrong types and values calibrate() cannot have written.
  j = sample_json();
  j["threads"] = "eight";
  check_refused(path, j, "threads");
  j = sample_json();
  j["triad_bytes_s"] = -1.0;
  check_refused(path, j, "triad_bytes_s");
  j = sample_json();
  j["gemm"][0]["m"] = 0;
  check_refused(path, j, "gemm[0]");
  j = sample_json();
  j["allgather_bytes_s"][1]["world"] = 2;
  check_refused(path, j, "allgather_bytes_s[1].world");
  j = sample_json();
  j["nvme_block"] = 1.5;
  check_refused(path, j, "nvme_block");
  check_refused(path, json::array({1, 2}), "top level");

  // Not JSON at all, and no file.
  write_text(path, "{\"format\": \"strata-calibration\", ");
  CHECK(message_of<format_error>([&] { (void)load_calibration(path); }).find(path) !=
        std::string::npos);
  const std::string missing = scratch.file("missing.json");
  CHECK(message_of<io_error>([&] { (void)load_calibration(missing); }).find(missing) !=
        std::string::npos);
}

TEST_CASE("calibration: save is atomic and replaces an existing file", "[plan][calibration]") {
  io_test::scratch_dir scratch;
  const std::string path = scratch.file("calibration.json");
  const std::string partial = path + ".partial";

  save_calibration(sample(), path);
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(partial));

  calibration other = sample();
  other.machine = "another machine";
  other.gemm.pop_back();
  other.allgather_bytes_s = {{8, 1e9}};
  // A .partial that a crashed writer left behind is overwritten, then renamed away.
  write_text(partial, "half a file");
  save_calibration(other, path);
  CHECK_FALSE(std::filesystem::exists(partial));
  check_same(load_calibration(path), other);
  CHECK(scratch.files() == 1);

  // A calibration that could not be read back is refused before the old file is touched.
  const std::string before = read_text(path);
  calibration bad = other;
  bad.nvme_read_bytes_s = std::nan("");
  const std::string m = message_of<config_error>([&] { save_calibration(bad, path); });
  CHECK(m.find("nvme_read_bytes_s") != std::string::npos);
  CHECK(read_text(path) == before);
  CHECK_FALSE(std::filesystem::exists(partial));

  // A directory that does not exist: io_error naming the file.
  const std::string nowhere = scratch.file("no/such/dir/c.json");
  CHECK(message_of<io_error>([&] { save_calibration(other, nowhere); }).find(nowhere) !=
        std::string::npos);
}

TEST_CASE("calibration: gemm_rate picks the nearest measured shape, dimension by dimension",
          "[plan][calibration]") {
  calibration c;
  c.gemm = {{64, 64, 64, 1e9}, {1024, 1024, 1024, 2e9}, {4096, 4096, 4096, 3e9}};
  CHECK(c.gemm_rate(64, 64, 64) == 1e9);
  CHECK(c.gemm_rate(128, 128, 128) == 1e9);     // 3 doublings from 64^3, 9 from 1024^3
  CHECK(c.gemm_rate(512, 512, 512) == 2e9);     // 9 from 64^3, 3 from 1024^3
  CHECK(c.gemm_rate(1024, 64, 64) == 1e9);      // 4 from 64^3, 8 from 1024^3
  CHECK(c.gemm_rate(64, 4096, 4096) == 3e9);    // 12, 8, 6: the FLOPs of 1024^3, not its shape
  CHECK(c.gemm_rate(8192, 8192, 8192) == 3e9);  // beyond the largest
  CHECK(c.gemm_rate(1, 1, 1) == 1e9);           // below the smallest
  CHECK_THROWS_AS(c.gemm_rate(0, 64, 64), config_error);
  // Two shapes of the same FLOPs: the one of the same shape answers.
  calibration same_flops;
  same_flops.gemm = {{64, 3072, 512, 1e9}, {512, 768, 256, 3e9}};
  CHECK(same_flops.gemm_rate(512, 768, 256) == 3e9);
  CHECK(same_flops.gemm_rate(64, 3072, 512) == 1e9);

  // NVMe rates by tensor size: interpolated in log(size) between the small sizes, then the
  // large measurement's.
  calibration n;
  n.nvme_read_bytes_s = 2e9, n.nvme_write_bytes_s = 3e9;
  CHECK(n.nvme_read_rate(1 << 20) == 2e9);  // nothing by size: the large rate
  n.nvme_by_size = {{4 << 20, 1e9, 1.5e9}, {16 << 20, 1.6e9, 2e9}};
  CHECK(n.nvme_read_rate(1 << 20) == 1e9);
  CHECK(n.nvme_read_rate(8 << 20) == Approx(1.3e9));
  CHECK(n.nvme_write_rate(8 << 20) == Approx(1.75e9));
  CHECK(n.nvme_read_rate(32 << 20) == 1.6e9);
  CHECK(n.nvme_read_rate(std::size_t{1} << 30) == 2e9);

  calibration mix_only;
  mix_only.gemm_flops = 5e9;
  CHECK(mix_only.gemm_rate(100, 100, 100) == 5e9);
  const std::string m = message_of<config_error>([] { (void)calibration{}.gemm_rate(8, 8, 8); });
  CHECK(m.find("8x8x8") != std::string::npos);
}

TEST_CASE("calibration: allgather_rate takes the exact world or the nearest measured one",
          "[plan][calibration]") {
  calibration c;
  c.allgather_bytes_s = {{2, 10.0}, {4, 20.0}, {8, 40.0}};
  CHECK(c.allgather_rate(2) == 10.0);
  CHECK(c.allgather_rate(4) == 20.0);
  CHECK(c.allgather_rate(8) == 40.0);
  CHECK(c.allgather_rate(1) == 10.0);
  CHECK(c.allgather_rate(3) == 20.0);  // a tie goes to the larger world
  CHECK(c.allgather_rate(5) == 20.0);
  CHECK(c.allgather_rate(6) == 40.0);  // a tie again
  CHECK(c.allgather_rate(64) == 40.0);
  CHECK_THROWS_AS(c.allgather_rate(0), config_error);
  CHECK_THROWS_AS(calibration{}.allgather_rate(2), config_error);
}

TEST_CASE("calibration: calibrate() at tiny sizes fills every field and reports each measurement",
          "[plan][calibration]") {
  io_test::scratch_dir scratch;
  const std::string dir = scratch.path.string();
  const std::vector<std::array<int, 3>> shapes = {{64, 64, 64}, {128, 32, 256}, {16, 512, 8}};

  std::vector<std::array<int, 3>> host_calls, gpu_calls;
  const gemm_probe host = [&](int m, int n, int k) {
    host_calls.push_back({m, n, k});
    return 1e9 * m;  // a fixed, shape-dependent answer
  };
  const gemm_probe gpu = [&](int m, int n, int k) {
    gpu_calls.push_back({m, n, k});
    return 5e12;
  };
  std::vector<std::string> lines;
  calibrate_options o;
  o.threads = 2;
  o.triad_bytes = 8 * MiB;
  o.nvme_dir = dir;
  o.nvme_bytes = 8 * MiB;
  o.allgather_worlds = {3, 2};
  o.allgather_bytes = 1 * MiB;
  o.h2d_bytes = 1 * MiB;
  o.repetitions = 2;
  o.progress = [&](const std::string& line) { lines.push_back(line); };
  o.kernels = {{"model.kernel.flops_per_s", [] { return 3.5e9; }}};

  const calibration c = calibrate(o, shapes, host, gpu);
  CHECK(c.kernel("model.kernel.flops_per_s") == 3.5e9);
  CHECK_THROWS_WITH(c.kernel("other"), Catch::Contains("'other'"));

  CHECK(host_calls == shapes);
  CHECK(gpu_calls == shapes);
  REQUIRE(c.gemm.size() == shapes.size());
  double flop = 0, time = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    CHECK(c.gemm[i].m == shapes[i][0]);
    CHECK(c.gemm[i].n == shapes[i][1]);
    CHECK(c.gemm[i].k == shapes[i][2]);
    CHECK(c.gemm[i].flops_per_s == 1e9 * shapes[i][0]);
    const double f = 2.0 * shapes[i][0] * shapes[i][1] * shapes[i][2];
    flop += f;
    time += f / c.gemm[i].flops_per_s;
  }
  CHECK(c.gemm_flops == Approx(flop / time).epsilon(1e-12));
  CHECK(c.gpu_gemm_flops == Approx(5e12).epsilon(1e-12));

  CHECK_FALSE(c.machine.empty());
  CHECK(c.machine.find("logical cores") != std::string::npos);
  REQUIRE(c.measured_at.size() == 20);  // 2025-01-31T17:04:05Z
  CHECK(c.measured_at[4] == '-');
  CHECK(c.measured_at[10] == 'T');
  CHECK(c.measured_at.back() == 'Z');
  CHECK(c.threads == 2);
  CHECK(c.triad_bytes_s > 0);
  CHECK(c.copy_bytes_s > 0);
  CHECK(c.nvme_read_bytes_s > 0);
  CHECK(c.nvme_write_bytes_s > 0);
  CHECK(c.nvme_block == io::engine_config{}.block_bytes);
  CHECK(c.nvme_depth == static_cast<int>(io::engine_config{}.queue_depth));
  CHECK((c.nvme_engine == "uring" || c.nvme_engine == "posix"));
  CHECK(c.nvme_dir == dir);
  REQUIRE(c.nvme_by_size.size() == 1);  // 4 MiB, below the 8 MiB measured
  CHECK(c.nvme_by_size[0].bytes == 4 * MiB);
  CHECK(c.nvme_by_size[0].read_bytes_s > 0);
  REQUIRE(c.allgather_bytes_s.size() == 2);
  CHECK(c.allgather_bytes_s[0].first == 2);  // sorted by world size
  CHECK(c.allgather_bytes_s[1].first == 3);
  CHECK(c.allgather_bytes_s[0].second > 0);
  CHECK(c.allgather_bytes_s[1].second > 0);
  if (cuda_enabled) {
    CHECK(c.h2d_bytes_s >= 0);  // > 0 only where a GPU is found
    CHECK((c.h2d_bytes_s > 0) == (c.d2h_bytes_s > 0));
  } else {
    CHECK(c.h2d_bytes_s == 0);
    CHECK(c.d2h_bytes_s == 0);
  }
  CHECK(c.fingerprint == hardware_fingerprint(dir));
  CHECK(scratch.files() == 0);  // the store's arena file is gone

  // One line per measurement, in order: each shape, the mix, triad, copy, nvme, each world,
  // h2d/d2h, the GPU GEMM, each kernel.
  const std::vector<std::string> prefixes = {
      "gemm 64x64x64: ", "gemm 128x32x256: ", "gemm 16x512x8: ", "gemm mix: ", "triad: ",
      "copy: ", "nvme 4.00 MiB", "nvme: read ", "allgather world 2: ", "allgather world 3: ", "h2d/d2h: ",
      "gpu gemm: ", "kernel model.kernel.flops_per_s: "};
  REQUIRE(lines.size() == prefixes.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO(lines[i]);
    CHECK(lines[i].rfind(prefixes[i], 0) == 0);
  }
  if (!cuda_enabled) CHECK(lines[10].find("host build") != std::string::npos);

  // The whole record survives the file.
  const std::string path = scratch.file("calibration.json");
  save_calibration(c, path);
  check_same(load_calibration(path), c);
}

TEST_CASE("calibration: without an NVMe directory or a GPU probe those rates stay 0",
          "[plan][calibration]") {
  int calls = 0;
  std::vector<std::string> lines;
  calibrate_options o;
  o.threads = 1;
  o.triad_bytes = 1 * MiB;
  o.allgather_worlds = {1};
  o.allgather_bytes = 64 * 1024;
  o.repetitions = 1;
  o.progress = [&](const std::string& line) { lines.push_back(line); };
  const calibration c = calibrate(o, {{8, 8, 8}}, [&](int, int, int) { return ++calls, 1e6; });
  CHECK(calls == 1);
  CHECK(c.triad_bytes_s > 0);
  CHECK(c.nvme_read_bytes_s == 0);
  CHECK(c.nvme_write_bytes_s == 0);
  CHECK(c.nvme_engine.empty());
  CHECK(c.nvme_dir.empty());
  CHECK(c.gpu_gemm_flops == 0);
  REQUIRE(c.allgather_bytes_s.size() == 1);
  CHECK(c.allgather_bytes_s[0].second > 0);
  REQUIRE(lines.size() == 8);  // gemm, mix, triad, copy, nvme, allgather, h2d/d2h, gpu gemm
  CHECK(lines[4].rfind("nvme: skipped", 0) == 0);
  CHECK(lines[7].rfind("gpu gemm: 0", 0) == 0);
  CHECK(c.fingerprint == hardware_fingerprint(""));
}

TEST_CASE("calibration: bad options and bad directories are refused before measuring, naming "
          "them",
          "[plan][calibration]") {
  io_test::scratch_dir scratch;
  int calls = 0;
  const gemm_probe probe = [&](int, int, int) { return ++calls, 1e9; };
  const std::vector<std::array<int, 3>> shapes = {{8, 8, 8}};
  calibrate_options o;
  o.triad_bytes = 1 * MiB;
  o.allgather_bytes = 64 * 1024;
  o.repetitions = 1;

  const std::string missing = scratch.file("no-such-dir");
  o.nvme_dir = missing;
  CHECK(message_of<config_error>([&] { (void)calibrate(o, shapes, probe); }).find(missing) !=
        std::string::npos);
  const std::string file = scratch.file("a-file");
  write_text(file, "x");
  o.nvme_dir = file;
  CHECK(message_of<config_error>([&] { (void)calibrate(o, shapes, probe); }).find(file) !=
        std::string::npos);
  o.nvme_dir.clear();
  o.repetitions = 0;
  CHECK(message_of<config_error>([&] { (void)calibrate(o, shapes, probe); }).find("repetitions") !=
        std::string::npos);
  o.repetitions = 1;
  CHECK_THROWS_AS(calibrate(o, {}, probe), config_error);
  CHECK_THROWS_AS(calibrate(o, {{8, 0, 8}}, probe), config_error);
  CHECK_THROWS_AS(calibrate(o, shapes, gemm_probe{}), config_error);
  CHECK(calls == 0);

  // A probe that measured nothing is named with its shape.
  const std::string m = message_of<config_error>(
      [&] { (void)calibrate(o, {{3, 5, 7}}, [](int, int, int) { return 0.0; }); });
  CHECK(m.find("3x5x7") != std::string::npos);

  // Not enough room: the directory, the bytes needed and the bytes free are named.
  const std::string dir = scratch.path.string();
  const std::string room = message_of<config_error>(
      [&] { (void)measure_nvme(dir, std::size_t{1} << 60, 1); });
  CHECK(room.find(dir) != std::string::npos);
  CHECK(room.find("free") != std::string::npos);
  CHECK(room.find(std::to_string(std::size_t{1} << 61)) != std::string::npos);
  CHECK(message_of<config_error>([&] { (void)measure_nvme(missing, MiB, 1); }).find(missing) !=
        std::string::npos);
  CHECK(scratch.files() == 1);  // a-file only
}

TEST_CASE("calibration: stale exactly when the fingerprint is not this machine's",
          "[plan][calibration]") {
  io_test::scratch_dir scratch;
  const std::string dir = scratch.path.string();
  calibration c;
  c.fingerprint = hardware_fingerprint(dir);
  CHECK(c.fingerprint == hardware_fingerprint(dir));  // deterministic
  CHECK(c.fingerprint.find(machine_description()) != std::string::npos);
  CHECK_FALSE(is_stale(c, dir));
  // Another directory on the same file system is the same device.
  std::filesystem::create_directory(scratch.path / "sub");
  CHECK_FALSE(is_stale(c, scratch.file("sub")));

  calibration other = c;
  other.fingerprint += " (another drive)";
  CHECK(is_stale(other, dir));
  other.fingerprint.clear();
  CHECK(is_stale(other, dir));
  // Measured without an NVMe directory: stale for a run that has one, and the reverse.
  calibration no_nvme;
  no_nvme.fingerprint = hardware_fingerprint("");
  CHECK(no_nvme.fingerprint.find("nvme: none") != std::string::npos);
  CHECK_FALSE(is_stale(no_nvme, ""));
  CHECK(is_stale(no_nvme, dir));
  CHECK(is_stale(c, ""));
}

#else

#include <cstdio>
TEST_CASE("calibration: skipped") { std::puts("SKIP: nlohmann/json not found"); }

#endif
