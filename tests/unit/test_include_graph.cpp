// The house's rules, read from the headers themselves (DESIGN §1): each floor includes only
// floors below it (and its own folder); no floor includes another floor's detail/; above the
// tensor floor nothing names detail::tensor_core (higher floors use tensor_ref). The test reads
// include/strata under STRATA_SOURCE_DIR and names every include that breaks a rule.
#include "catch.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Floor of each folder under include/strata (io and comm share floor 3, optim and infer 7).
const std::map<std::string, int> floors = {
    {"core", 1},  {"memory", 2}, {"io", 3},    {"comm", 3},       {"exec", 4}, {"tensor", 5},
    {"schedule", 6}, {"optim", 7}, {"infer", 7}, {"checkpoint", 8}, {"plan", 9},
};

struct header {
  std::string folder;  // "" for the umbrella
  fs::path path;
};

std::vector<header> headers() {
  const char* src = std::getenv("STRATA_SOURCE_DIR");
  REQUIRE(src != nullptr);
  const fs::path root = fs::path(src) / "include" / "strata";
  std::vector<header> out;
  for (auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const auto ext = e.path().extension().string();
    if (ext != ".hpp" && ext != ".cuh" && ext != ".inl") continue;
    const auto rel = fs::relative(e.path(), root);
    out.push_back({rel.begin() == rel.end() || std::next(rel.begin()) == rel.end()
                       ? std::string()
                       : rel.begin()->string(),
                   e.path()});
  }
  return out;
}

}  // namespace

TEST_CASE("each floor includes only lower floors, and never another floor's detail/",
          "[include_graph]") {
  const std::regex include_re(R"(^\s*#\s*include\s*[<"]strata/([a-z_]+)/(detail/)?)");
  std::vector<std::string> broken;
  std::size_t seen = 0;
  for (const header& h : headers()) {
    if (h.folder.empty()) continue;  // the umbrella includes everything
    REQUIRE(floors.count(h.folder) == 1);
    std::ifstream in(h.path);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      std::smatch m;
      if (!std::regex_search(line, m, include_re)) continue;
      ++seen;
      const std::string to = m[1];
      const bool detail = m[2].matched;
      const std::string where = h.path.string() + ":" + std::to_string(n) + ": " + line;
      if (to == h.folder) continue;
      if (!floors.count(to)) {
        broken.push_back(where + "  (unknown folder)");
      } else if (detail) {
        broken.push_back(where + "  (another floor's detail/)");
      } else if (floors.at(to) >= floors.at(h.folder)) {
        broken.push_back(where + "  (floor " + std::to_string(floors.at(to)) + " from floor " +
                         std::to_string(floors.at(h.folder)) + ")");
      }
    }
  }
  CHECK(seen > 50);  // the scan found the headers' includes at all
  for (auto& b : broken) UNSCOPED_INFO(b);
  CHECK(broken.empty());
}

TEST_CASE("above the tensor floor, tensors are reached only through tensor_ref",
          "[include_graph]") {
  std::vector<std::string> broken;
  for (const header& h : headers()) {
    if (h.folder.empty() || floors.at(h.folder) <= floors.at("tensor")) continue;
    std::ifstream in(h.path);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n)
      if (line.find("tensor_core") != std::string::npos || line.find(".core()") != std::string::npos)
        broken.push_back(h.path.string() + ":" + std::to_string(n) + ": " + line);
  }
  for (auto& b : broken) UNSCOPED_INFO(b);
  CHECK(broken.empty());
}
