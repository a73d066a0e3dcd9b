// The checkpoint directory (checkpoint/directory.hpp): commits go TAG.partial -> TAG -> latest
// in the documented phases; the last N are kept, older ones removed only after `latest` names
// the new one; what a crash leaves is removed and reported when a root is opened; a `latest`
// naming a missing checkpoint is an error naming both; symbolic links cannot redirect writes.
// (No nlohmann needed: files here are written as plain bytes.)
#include "catch.hpp"
#include "io/io_test_support.hpp"

#include <strata/checkpoint/directory.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

using namespace strata;
using namespace strata::checkpoint;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

void commit_one(checkpoint_root& root, const std::string& tag) {
  pending_checkpoint p = root.begin(tag);
  const std::string body = "payload of " + tag;
  p.write_file("data.bin", std::as_bytes(std::span(body.data(), body.size())));
  p.commit();
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST_CASE("checkpoint directory: a commit goes through its phases in order", "[checkpoint][directory]") {
  io_test::scratch_dir scratch;
  std::vector<std::string> seen;
  std::string latest_when_pruned;
  const fs::path dir = scratch.path / "root";
  root_options o;
  o.keep = 2;
  o.on_phase = [&](const phase_event& e) {
    seen.push_back(std::string(commit_phase_name(e.phase)) + " " + std::string(e.tag));
    if (e.phase == commit_phase::pruned) latest_when_pruned = slurp(dir / "latest");
  };
  checkpoint_root root(dir.string(), o);
  CHECK(!root.latest().has_value());
  commit_one(root, "a");
  const std::vector<std::string> one = {
      "partial_created a", "file_written a",   "file_synced a",    "file_written a",
      "file_synced a",     "dir_synced a",     "renamed a",        "root_synced a",
      "latest_written a",  "latest_renamed a", "latest_synced a"};
  CHECK(seen == one);
  CHECK(root.latest() == "a");
  CHECK(slurp(dir / "a" / "data.bin") == "payload of a");
  CHECK(!fs::exists(dir / "a.partial"));
  CHECK(!fs::exists(dir / "latest.tmp"));

  commit_one(root, "b");
  seen.clear();
  commit_one(root, "c");  // keep 2: "a" goes, after latest names "c"
  CHECK(seen.back() == "pruned c");
  CHECK(latest_when_pruned == "c\n");
  CHECK(root.committed() == std::vector<std::string>{"b", "c"});
  CHECK(!fs::exists(dir / "a"));
  CHECK(root.latest() == "c");
  // Commit order, not name order.
  commit_one(root, "0-first-by-name");
  CHECK(root.committed() == std::vector<std::string>{"c", "0-first-by-name"});
}

TEST_CASE("checkpoint directory: opening a root removes and reports what a crash left",
          "[checkpoint][directory]") {
  io_test::scratch_dir scratch;
  const fs::path dir = scratch.path / "root";
  {
    checkpoint_root root(dir.string());
    commit_one(root, "a");
  }
  fs::create_directory(dir / "b.partial");
  spit(dir / "b.partial" / "rank-0.bin", "half a checkpoint");
  fs::create_directory(dir / "old.pruning");
  spit(dir / "latest.tmp", "b\n");
  // Renamed into place, `latest` never switched: a later commit record than latest's.
  fs::create_directory(dir / "c");
  spit(dir / "c" / "commit", "sequence 7\ntag c\n");
  spit(dir / "c" / "data.bin", "unpublished");
  // Not ours (no commit record): left alone.
  fs::create_directory(dir / "notes");

  std::vector<std::string> told;
  root_options o;
  o.on_recovery = [&](const std::string& line) { told.push_back(line); };
  checkpoint_root root(dir.string(), o);
  CHECK(told == root.recovered());
  REQUIRE(told.size() == 4);
  std::string all;
  for (auto& t : told) all += t + "\n";
  INFO(all);
  CHECK(all.find("'b.partial', a checkpoint that was never committed") != std::string::npos);
  CHECK(all.find("'old.pruning'") != std::string::npos);
  CHECK(all.find("'latest.tmp'") != std::string::npos);
  CHECK(all.find("checkpoint 'c', committed but never made 'latest'") != std::string::npos);
  CHECK(!fs::exists(dir / "b.partial"));
  CHECK(!fs::exists(dir / "old.pruning"));
  CHECK(!fs::exists(dir / "latest.tmp"));
  CHECK(!fs::exists(dir / "c"));
  CHECK(fs::exists(dir / "notes"));
  CHECK(root.latest() == "a");
  CHECK(slurp(dir / "a" / "data.bin") == "payload of a");
  // The tag of the unpublished checkpoint can be written again.
  commit_one(root, "c");
  CHECK(root.latest() == "c");
}

TEST_CASE("checkpoint directory: a latest naming a missing checkpoint names both",
          "[checkpoint][directory]") {
  io_test::scratch_dir scratch;
  const fs::path dir = scratch.path / "root";
  checkpoint_root root(dir.string());
  spit(dir / "latest", "ghost\n");
  std::string msg = message_of([&] { (void)root.latest(); });
  INFO(msg);
  CHECK(msg.find("'latest' names checkpoint 'ghost'") != std::string::npos);
  CHECK(msg.find("'" + (dir / "ghost").string() + "' is not there") != std::string::npos);
  CHECK_THROWS_AS(root.latest(), format_error);
  spit(dir / "latest", "../etc\n");
  msg = message_of([&] { (void)root.latest(); });
  CHECK(msg.find("not a checkpoint tag") != std::string::npos);
}

TEST_CASE("checkpoint directory: symbolic links cannot redirect writes", "[checkpoint][directory]") {
  io_test::scratch_dir scratch;
  const fs::path real = scratch.path / "real";
  const fs::path elsewhere = scratch.path / "elsewhere";
  fs::create_directory(real);
  fs::create_directory(elsewhere);
  spit(scratch.path / "victim", "precious");

  // The root itself.
  REQUIRE(::symlink(real.c_str(), (scratch.path / "link").c_str()) == 0);
  const std::string msg = message_of([&] { checkpoint_root r((scratch.path / "link").string()); });
  CHECK(msg.find("is a symbolic link") != std::string::npos);

  checkpoint_root root(real.string());
  commit_one(root, "a");
  // A link where TAG.partial would be made: refused, nothing lands where it points.
  REQUIRE(::symlink(elsewhere.c_str(), (real / "b.partial").c_str()) == 0);
  CHECK_THROWS_AS(root.begin("b"), io_error);
  CHECK(fs::is_empty(elsewhere));
  fs::remove(real / "b.partial");
  // A link where latest.tmp would be made: the commit fails, the victim and `latest` stand.
  REQUIRE(::symlink((scratch.path / "victim").c_str(), (real / "latest.tmp").c_str()) == 0);
  {
    pending_checkpoint p = root.begin("b");
    CHECK_THROWS_AS(p.commit(), io_error);
  }
  CHECK(slurp(scratch.path / "victim") == "precious");
  CHECK(root.latest() == "a");
  CHECK(!fs::exists(real / "b"));
  CHECK(!fs::exists(real / "b.partial"));
  // Opening the root again removes the link (the link, not what it points to).
  REQUIRE(fs::is_symlink(real / "latest.tmp"));
  checkpoint_root again(real.string());
  CHECK(!fs::exists(fs::symlink_status(real / "latest.tmp")));
  CHECK(slurp(scratch.path / "victim") == "precious");
  commit_one(again, "b");
  CHECK(again.latest() == "b");
}

TEST_CASE("checkpoint directory: tags, existing tags, abandoned checkpoints", "[checkpoint][directory]") {
  io_test::scratch_dir scratch;
  checkpoint_root root((scratch.path / "root").string());
  for (const char* bad : {"", ".hidden", "a/b", "latest", "latest.tmp", "x.partial", "x.pruning", "sp ace"})
    CHECK_THROWS_AS(root.begin(bad), config_error);
  commit_one(root, "a");
  CHECK_THROWS_AS(root.begin("a"), io_error);
  {
    pending_checkpoint p = root.begin("b");
    p.write_file("x", {});
    CHECK(fs::exists(p.path()));
  }  // never committed: removed
  CHECK(!fs::exists(scratch.path / "root" / "b.partial"));
  CHECK(root.committed() == std::vector<std::string>{"a"});
  CHECK_THROWS_AS(root.open("b"), io_error);
}
