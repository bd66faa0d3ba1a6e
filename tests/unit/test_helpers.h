// Helpers shared by the unit-test binaries (no Catch2 or LibTorch here: callers assert on the results).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

/// The outcome of a reference Python script.
struct PythonRun {
  int status = -1;      // the shell's exit status (-1: the venv is missing)
  std::string output;   // stdout and stderr together
  std::string command;  // what ran, for failure messages
  bool ok() const { return status == 0; }
};

/// Runs the project's Python (PLM_SOURCE_DIR/.venv, made by scripts/setup.sh) on `script` (relative to the
/// repository, e.g. "tests/parity/video_parity.py") with `args` (already shell-quoted), writing its output to
/// `log` and reading it back.
inline PythonRun run_reference_python(const std::string& script, const std::string& args, const std::string& log) {
  const std::string repo = PLM_SOURCE_DIR, python = repo + "/.venv/bin/python";
  PythonRun r;
  r.command = "'" + python + "' '" + repo + "/" + script + "' " + args;
  if (!std::filesystem::exists(python)) {
    r.output = python + " is missing: run scripts/setup.sh to create the venv with the reference packages.";
    return r;
  }
  r.status = std::system((r.command + " > '" + log + "' 2>&1").c_str());
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  r.output = text.str();
  return r;
}

/// The exception of type E that `f` throws, or nullopt when it throws nothing (other types propagate).
template <typename E, typename F>
std::optional<E> thrown(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

/// The message of the E that `f` throws, or "" when it throws nothing.
template <typename E, typename F>
std::string error_of(F&& f) {
  const std::optional<E> e = thrown<E>(std::forward<F>(f));
  return e ? std::string(e->what()) : std::string();
}
