#include "plm/ckpt/sharded.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace plm::ckpt {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string shard_file_name(const std::string& kind, int rank, int world_size) {
  return fmt::format("{}.shard-{:05d}-of-{:05d}.safetensors", kind, rank, world_size);
}

std::string layout_to_json(const dist::ShardLayout& layout) {
  json units = json::array();
  for (const dist::UnitLayout& u : layout.units) {
    json params = json::array();
    for (const dist::FlatParameter& p : u.parameters)
      params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}, {"numel", p.numel}});
    units.push_back({{"name", u.name}, {"numel", u.numel}, {"trainable", u.trainable}, {"parameters", params}});
  }
  return json{{"format", "plm-shards-1"}, {"world_size", layout.world_size}, {"units", units}}.dump(1) + "\n";
}

dist::ShardLayout layout_from_json(const std::string& text, const std::string& origin) {
  try {
    const json j = json::parse(text);
    if (j.value("format", std::string()) != "plm-shards-1")
      throw CheckpointError("'" + origin + "' is not a plm shard layout (format \"plm-shards-1\").");
    dist::ShardLayout layout;
    layout.world_size = j.at("world_size").get<int>();
    for (const json& u : j.at("units")) {
      dist::UnitLayout unit{
          u.at("name").get<std::string>(), {}, u.at("numel").get<int64_t>(), u.at("trainable").get<bool>()};
      for (const json& p : u.at("parameters"))
        unit.parameters.push_back({p.at("name").get<std::string>(), p.at("shape").get<std::vector<int64_t>>(),
                                   p.at("offset").get<int64_t>(), p.at("numel").get<int64_t>()});
      layout.units.push_back(std::move(unit));
    }
    if (layout.world_size < 1) throw CheckpointError("'" + origin + "' has a world size below 1.");
    return layout;
  } catch (const json::exception& e) {
    throw CheckpointError("'" + origin + "' is not a valid shard layout: " + e.what());
  }
}

dist::ShardLayout read_layout(const std::string& dir) {
  const fs::path path = fs::path(dir) / "shards.json";
  std::ifstream in(path);
  if (!in) throw CheckpointError("'" + path.string() + "' cannot be read: '" + dir + "' is not a sharded checkpoint.");
  std::stringstream text;
  text << in.rdbuf();
  return layout_from_json(text.str(), path.string());
}

bool is_sharded_checkpoint(const std::string& dir) {
  return fs::exists(fs::path(dir) / "shards.json");
}

ShardedCheckpointReader::ShardedCheckpointReader(std::string dir) : dir_(std::move(dir)), layout_(read_layout(dir_)) {}

const dist::UnitLayout* ShardedCheckpointReader::unit(const std::string& name) const {
  for (const dist::UnitLayout& u : layout_.units)
    if (u.name == name) return &u;
  return nullptr;
}

const TensorMap& ShardedCheckpointReader::file(const std::string& kind, int rank) {
  const std::string path = (fs::path(dir_) / shard_file_name(kind, rank, layout_.world_size)).string();
  auto it = files_.find(path);
  if (it == files_.end()) {
    if (!fs::exists(path)) throw CheckpointError("the shard '" + path + "' is missing.");
    it = files_.emplace(path, read_safetensors(path)).first;
  }
  return it->second;
}

const at::Tensor* ShardedCheckpointReader::find(const std::string& kind, int rank, const std::string& key) {
  if (rank >= layout_.world_size) return nullptr;
  const std::string path = (fs::path(dir_) / shard_file_name(kind, rank, layout_.world_size)).string();
  if (!fs::exists(path)) return nullptr;
  return file(kind, rank).find(key);
}

at::Tensor ShardedCheckpointReader::read_flat_range(const std::string& kind, const dist::UnitLayout& unit,
                                                    const std::string& key, int64_t begin, int64_t length) {
  const int64_t old_len = dist::shard_length(unit.numel, layout_.world_size);
  at::Tensor out = at::zeros({length}, at::kFloat);
  bool found = false;
  const int64_t end = std::min(begin + length, unit.numel);
  for (int64_t pos = begin; pos < end;) {
    const int rank = static_cast<int>(pos / old_len);
    const int64_t within = pos - rank * old_len, n = std::min(end - pos, old_len - within);
    if (const at::Tensor* t = file(kind, rank).find(key)) {
      if (t->numel() != old_len)
        throw CheckpointError("'" + (fs::path(dir_) / shard_file_name(kind, rank, layout_.world_size)).string() +
                              "' holds " + std::to_string(t->numel()) + " elements of '" + key +
                              "' but its layout gives shards of " + std::to_string(old_len) + ".");
      out.narrow(0, pos - begin, n).copy_(t->reshape({-1}).narrow(0, within, n));
      found = true;
    }
    pos += n;
  }
  return found ? out : at::Tensor();
}

TensorMap unflatten(const std::string& dir) {
  ShardedCheckpointReader reader(dir);
  TensorMap out;
  for (const dist::UnitLayout& unit : reader.layout().units) {
    const at::Tensor flat = reader.read_flat_range("model", unit, unit.name, 0, unit.numel);
    if (!flat.defined()) throw CheckpointError("the shards of '" + dir + "' do not hold the unit '" + unit.name + "'.");
    for (const dist::FlatParameter& p : unit.parameters)
      out.insert(p.name, flat.narrow(0, p.offset, p.numel).view(p.shape).clone());
  }
  return out;
}

}  // namespace plm::ckpt
