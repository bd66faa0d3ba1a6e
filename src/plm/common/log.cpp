// Compiled without LibTorch's include paths (see CMakeLists.txt): spdlog needs the system fmt.
#include "plm/common/log.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace plm::log {
namespace {

const auto process_start = std::chrono::steady_clock::now();

// %* : time since the process started, H:MM:SS.
class ElapsedFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    const auto s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - process_start).count();
    const std::string text = fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<ElapsedFlag>(); }
};

// %# : the level in capitals, as PLM writes it (INFO, WARNING, ...).
class LevelFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const auto name = spdlog::level::to_string_view(msg.level);
    for (char ch : name) dest.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(ch))));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<LevelFlag>(); }
};

spdlog::level::level_enum parse_level(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  if (name == "DEBUG" || name == "NOTSET") return spdlog::level::debug;
  if (name == "WARN" || name == "WARNING") return spdlog::level::warn;
  if (name == "ERROR") return spdlog::level::err;
  if (name == "FATAL" || name == "CRITICAL") return spdlog::level::critical;
  return spdlog::level::info;
}

std::mutex mutex;
std::shared_ptr<spdlog::logger> logger;

std::shared_ptr<spdlog::logger> make_logger(const Options& o) {
  std::vector<spdlog::sink_ptr> sinks;
  if (o.console_to_stderr)
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  else
    sinks.push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
  if (!o.file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.file));
    } catch (const spdlog::spdlog_ex& e) {
      throw std::runtime_error("cannot open log file '" + o.file + "': " + e.what());
    }
  }
  auto l = std::make_shared<spdlog::logger>("plm", sinks.begin(), sinks.end());
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<ElapsedFlag>('*').add_flag<LevelFlag>('#').set_pattern("[" + std::to_string(o.rank) +
                                                                             "] %# %Y-%m-%d %H:%M:%S.%f %* %v");
  l->set_formatter(std::move(formatter));
  l->set_level(parse_level(o.level));
  l->flush_on(spdlog::level::trace);  // a few lines per step at most; never lose the last ones
  return l;
}

spdlog::logger& get() {
  if (!logger) logger = make_logger(Options{0, "INFO", "", true});
  return *logger;
}

}  // namespace

void init(const Options& options) {
  auto fresh = make_logger(options);
  std::lock_guard<std::mutex> lock(mutex);
  logger = std::move(fresh);
}

void write(Level level, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex);
  switch (level) {
    case Level::debug:
      get().debug(message);
      break;
    case Level::info:
      get().info(message);
      break;
    case Level::warn:
      get().warn(message);
      break;
    case Level::error:
      get().error(message);
      break;
  }
}

void flush() {
  std::lock_guard<std::mutex> lock(mutex);
  get().flush();
}

}  // namespace plm::log
