// Start-up facts: LibTorch version, thread set-up, BLAS, CUDA; and the summary line that logs them.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <ATen/Parallel.h>

#include "plm/common/log.h"
#include "plm/common/runtime.h"

TEST_CASE("configure_threads: explicit count, then OMP_NUM_THREADS, then all cores") {
  CHECK(plm::runtime::configure_threads(1) == 1);
  CHECK(at::get_num_threads() == 1);
  setenv("OMP_NUM_THREADS", "2", 1);
  CHECK(plm::runtime::configure_threads() == 2);
  unsetenv("OMP_NUM_THREADS");
  CHECK(plm::runtime::configure_threads() == static_cast<int>(std::thread::hardware_concurrency()));
}

TEST_CASE("version, BLAS and CUDA facts come from the linked LibTorch") {
  CHECK(plm::runtime::torch_version().rfind("2.", 0) == 0);
  CHECK(plm::runtime::blas_name() != "unknown");
  if (!plm::runtime::cuda_compiled()) CHECK(plm::runtime::cuda_device_count() == 0);
}

TEST_CASE("log_summary writes one line with version, threads, BLAS and CUDA") {
  const auto file = std::filesystem::temp_directory_path() / "plm_runtime_test.log";
  std::filesystem::remove(file);
  plm::log::init({0, "INFO", file.string(), true});
  plm::runtime::configure_threads(1);
  plm::runtime::log_summary();
  plm::log::flush();
  std::ifstream in(file);
  std::string line;
  REQUIRE(std::getline(in, line));
  CHECK_THAT(line, Catch::Contains("LibTorch " + plm::runtime::torch_version()));
  CHECK_THAT(line, Catch::Contains("intra-op threads 1 of"));
  CHECK_THAT(line, Catch::Contains("BLAS " + plm::runtime::blas_name()));
  CHECK_THAT(line, Catch::Contains("CUDA "));
}
