// A scratch folder for one test, unique per process and instance, removed when the test ends.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

struct Scratch {
  std::filesystem::path dir;

  explicit Scratch(const std::string& tag = "plm_test") {
    static int n = 0;
    dir = std::filesystem::temp_directory_path() / (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  ~Scratch() { std::filesystem::remove_all(dir); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  /// dir / name, as a string.
  std::string path(const std::string& name) const { return (dir / name).string(); }

  /// Writes `bytes` to dir / name (creating folders) and returns its path.
  std::string write(const std::string& name, const std::string& bytes) const {
    const auto p = dir / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
};
