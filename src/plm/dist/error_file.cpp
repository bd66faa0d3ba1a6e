#include "plm/dist/error_file.h"

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

namespace plm::dist {

void write_error_file(const WorkerError& error) {
  const char* path = std::getenv("TORCHELASTIC_ERROR_FILE");
  if (!path || !*path) return;
  try {
    nlohmann::json extra = {{"timestamp", std::to_string(std::time(nullptr))}, {"silent_ranks", error.silent_ranks}};
    const nlohmann::json data = {{"message", {{"message", error.message}, {"extraInfo", extra}}}};
    std::ofstream out(path, std::ios::trunc);
    out << data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  } catch (...) {
  }
}

std::optional<WorkerError> read_error_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text(1 << 20, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  const nlohmann::json data = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!data.is_object() || !data.contains("message")) return std::nullopt;
  WorkerError error;
  const nlohmann::json& message = data["message"];
  if (message.is_string()) {
    error.message = message.get<std::string>();
    return error;
  }
  if (!message.is_object() || !message.contains("message") || !message["message"].is_string()) return std::nullopt;
  error.message = message["message"].get<std::string>();
  if (message.contains("extraInfo") && message["extraInfo"].is_object()) {
    const nlohmann::json& extra = message["extraInfo"];
    if (extra.contains("silent_ranks") && extra["silent_ranks"].is_array())
      for (const auto& r : extra["silent_ranks"])
        if (r.is_number_integer()) error.silent_ranks.push_back(r.get<int>());
  }
  return error;
}

}  // namespace plm::dist
