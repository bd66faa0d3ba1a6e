// Logging for every part of plm: "[rank] LEVEL date time elapsed message" to the console and,
// once init() is given a file, to that file too (the trainer uses dump_dir/train.log on rank 0).
// Backed by spdlog, which is kept out of this header so that it never meets LibTorch's bundled fmt.
#pragma once

#ifndef FMT_HEADER_ONLY
#define FMT_HEADER_ONLY
#endif
#include <fmt/format.h>

#include <string>

namespace plm::log {

enum class Level { debug, info, warn, error };

struct Options {
  int rank = 0;
  std::string level = "INFO";      // PLM's names: DEBUG, INFO, WARN(ING), ERROR, FATAL, CRITICAL, NOTSET
  std::string file;                // "" = console only
  bool console_to_stderr = false;  // keep stdout clean for commands whose output is data
};

/// (Re)configures the process-wide logger. Before the first call, messages go to stderr at INFO.
/// Throws std::runtime_error naming the file if it cannot be opened.
void init(const Options& options);

/// Writes one message (no formatting).
void write(Level level, const std::string& message);

/// Flushes every sink.
void flush();

template <class... A>
void debug(fmt::format_string<A...> f, A&&... a) {
  write(Level::debug, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void info(fmt::format_string<A...> f, A&&... a) {
  write(Level::info, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void warn(fmt::format_string<A...> f, A&&... a) {
  write(Level::warn, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void error(fmt::format_string<A...> f, A&&... a) {
  write(Level::error, fmt::format(f, std::forward<A>(a)...));
}

}  // namespace plm::log
