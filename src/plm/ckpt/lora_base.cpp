#include "plm/ckpt/lora_base.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "plm/ckpt/safetensors.h"
#include "plm/model/lora.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace plm::ckpt {

std::string lora_base_checksum(const NamedTensors& base) {
  std::vector<const std::pair<std::string, at::Tensor>*> order;
  for (const auto& entry : base)
    if (!model::is_lora_parameter(entry.first)) order.push_back(&entry);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
  uLong crc = ::crc32_z(0, nullptr, 0);
  auto add = [&crc](const void* p, size_t n) { crc = ::crc32_z(crc, static_cast<const Bytef*>(p), n); };
  for (const auto* entry : order) {
    const at::Tensor t = entry->second.cpu().contiguous();
    const std::string head =
        entry->first + "|" + std::string(c10::toString(t.scalar_type())) + "|" + c10::str(t.sizes()) + "|";
    add(head.data(), head.size());
    add(t.data_ptr(), t.nbytes());
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "crc32:%08lx", static_cast<unsigned long>(crc));
  return buf;
}

std::string to_json(const LoraBase& base) {
  return json{{"base", base.path}, {"checksum", base.checksum}}.dump(2) + "\n";
}

LoraBase lora_base_from_json(const std::string& text, const std::string& origin) {
  try {
    const json j = json::parse(text);
    return {j.at("base").get<std::string>(), j.at("checksum").get<std::string>()};
  } catch (const json::exception& e) {
    throw CheckpointError("'" + origin + "' is not a LoRA base record {\"base\": path, \"checksum\": ...} (" +
                          e.what() + ").");
  }
}

std::optional<LoraBase> read_lora_base(const std::string& step_dir) {
  const fs::path file = fs::path(step_dir) / kLoraBaseFile;
  if (!fs::is_directory(step_dir) || !fs::exists(file)) return std::nullopt;
  return lora_base_from_json(read_text(file.string()), file.string());
}

}  // namespace plm::ckpt
