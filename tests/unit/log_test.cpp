#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "plm/common/log.h"

namespace fs = std::filesystem;

static std::vector<std::string> read_lines(const fs::path& p) {
  plm::log::flush();
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

TEST_CASE("log lines carry rank, level, time and elapsed time, and reach the file sink") {
  const fs::path file = fs::temp_directory_path() / "plm_log_test.log";
  fs::remove(file);
  plm::log::init({3, "INFO", file.string(), true});
  plm::log::info("step {} loss {:.3f}", 7, 1.5);
  plm::log::warn("braces in arguments are not re-formatted: {}", "{oops}");
  plm::log::debug("hidden at INFO");
  const auto lines = read_lines(file);
  REQUIRE(lines.size() == 2);
  const std::regex shape(R"(\[3\] INFO \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} \d+:\d\d:\d\d step 7 loss 1\.500)");
  CHECK(std::regex_match(lines[0], shape));
  CHECK(lines[1].find("WARNING") != std::string::npos);
  CHECK(lines[1].find("{oops}") != std::string::npos);
}

TEST_CASE("log level DEBUG lets debug messages through, and an unwritable file is a clear error") {
  const fs::path file = fs::temp_directory_path() / "plm_log_debug.log";
  fs::remove(file);
  plm::log::init({0, "DEBUG", file.string(), true});
  plm::log::debug("visible");
  const auto lines = read_lines(file);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("[0] DEBUG") == 0);
  CHECK_THROWS_WITH(plm::log::init({0, "INFO", "/proc/nonexistent/dir/x.log", true}),
                    Catch::Contains("/proc/nonexistent/dir/x.log"));
}
