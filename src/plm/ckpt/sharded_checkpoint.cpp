#include "plm/ckpt/sharded_checkpoint.h"

#include <filesystem>
#include <functional>
#include <optional>

namespace plm::ckpt {
namespace fs = std::filesystem;

namespace {

const char* const kStateSuffixes[] = {".exp_avg", ".exp_avg_sq"};

/// Elements [begin, begin + length) of a unit's flat buffer built from per-parameter tensors "<param><suffix>"
/// (a plain checkpoint); undefined when none of them is present.
at::Tensor flat_from_named(const TensorMap& named, const dist::UnitLayout& unit, const std::string& suffix,
                           int64_t begin, int64_t length, const std::string& dir) {
  at::Tensor out = at::zeros({length}, at::kFloat);
  bool found = false;
  for (const dist::FlatParameter& p : unit.parameters) {
    const int64_t lo = std::max(begin, p.offset), hi = std::min(begin + length, p.offset + p.numel);
    const at::Tensor* t = named.find(p.name + suffix);
    if (!t) continue;
    if (t->numel() != p.numel)
      throw CheckpointError("checkpoint '" + dir + "' has another shape for '" + p.name + suffix +
                            "': it was written by a run with another model configuration.");
    found = true;
    if (lo < hi) out.narrow(0, lo - begin, hi - lo).copy_(t->reshape({-1}).narrow(0, lo - p.offset, hi - lo));
  }
  return found ? out : at::Tensor();
}

void check_same_units(const dist::ShardLayout& saved, const dist::ShardLayout& mine, const std::string& dir) {
  for (const dist::UnitLayout& u : mine.units) {
    const dist::UnitLayout* s = nullptr;
    for (const dist::UnitLayout& c : saved.units)
      if (c.name == u.name) s = &c;
    bool same = s && s->numel == u.numel && s->parameters.size() == u.parameters.size();
    for (size_t i = 0; same && i < u.parameters.size(); ++i)
      same = s->parameters[i].name == u.parameters[i].name && s->parameters[i].shape == u.parameters[i].shape;
    if (!same)
      throw CheckpointError("checkpoint '" + dir + "' " + (s ? "lays out the unit '" : "has no unit '") + u.name +
                            "' " + (s ? "differently" : "") +
                            ": it was written by a run with another model configuration.");
  }
}

}  // namespace

RankFiles sharded_checkpoint_files(const dist::ShardLayout& layout, const NamedTensors& shards,
                                   const NamedTensors& optimizer_state, TensorMap extra, int rank,
                                   std::vector<std::pair<std::string, std::string>> texts) {
  const int world = layout.world_size;
  RankFiles files;
  TensorMap model, state;
  for (const auto& [name, shard] : shards) model.insert(name, shard.detach().to(at::kFloat));  // the files are fp32
  for (const auto& [name, t] : optimizer_state) state.insert(name, t);
  files.tensors.emplace_back(shard_file_name("model", rank, world), std::move(model));
  files.tensors.emplace_back(shard_file_name("optimizer", rank, world), std::move(state));
  files.tensors.emplace_back(shard_file_name("extra", rank, world), std::move(extra));
  if (rank == 0) {
    files.texts = std::move(texts);
    files.texts.emplace_back("shards.json", layout_to_json(layout));
  }
  return files;
}

ShardedRestore restore_sharded(const std::string& dir, const dist::ShardLayout& mine, const NamedTensors& shards,
                               int rank) {
  const bool sharded = is_sharded_checkpoint(dir);
  std::optional<ShardedCheckpointReader> reader;
  CheckpointContents plain;
  if (sharded) {
    reader.emplace(dir);
    check_same_units(reader->layout(), mine, dir);
  } else {
    plain = CheckpointStore::load(dir);
  }
  // Range [begin, begin + length) of `key` ("<unit><suffix>") of `unit` in the checkpoint's `kind` files.
  auto read = [&](const std::string& kind, const dist::UnitLayout& unit, const std::string& suffix, int64_t begin,
                  int64_t length) -> at::Tensor {
    if (sharded) return reader->read_flat_range(kind, *reader->unit(unit.name), unit.name + suffix, begin, length);
    const TensorMap& named = kind == "model" ? plain.model : kind == "optimizer" ? plain.optimizer : plain.extra;
    const std::string prefix = kind == "extra" ? "grad." : "";
    if (!prefix.empty()) {  // plain files name gradients "grad.<param>"
      TensorMap renamed;
      for (const dist::FlatParameter& p : unit.parameters)
        if (const at::Tensor* t = named.find(prefix + p.name)) renamed.insert(p.name, *t);
      return flat_from_named(renamed, unit, "", begin, length, dir);
    }
    return flat_from_named(named, unit, suffix, begin, length, dir);
  };

  at::NoGradGuard no_grad;
  ShardedRestore out;
  for (size_t i = 0; i < shards.size(); ++i) {
    const dist::UnitLayout& unit = mine.units[i];
    const at::Tensor& shard = shards[i].second;
    const int64_t length = shard.numel(), begin = rank * length;
    const at::Tensor values = read("model", unit, "", begin, length);
    if (!values.defined())
      throw CheckpointError("checkpoint '" + dir + "' has no tensor of the unit '" + unit.name +
                            "': it was written by a run with another model configuration.");
    const_cast<at::Tensor&>(shard).copy_(values);
    if (!unit.trainable) continue;
    for (const char* suffix : kStateSuffixes)
      if (const at::Tensor t = read("optimizer", unit, suffix, begin, length); t.defined())
        out.optimizer_state.emplace_back(unit.name + suffix, t);
    // Every element of a unit was updated the same number of times: take the step of its first parameter.
    const at::Tensor* step = sharded ? reader->find("optimizer", 0, unit.name + ".step")
                                     : plain.optimizer.find(unit.parameters.front().name + ".step");
    if (step) out.optimizer_state.emplace_back(unit.name + ".step", *step);
    const at::Tensor grad =
        sharded ? reader->read_flat_range("extra", *reader->unit(unit.name), "grad." + unit.name, begin, length)
                : read("extra", unit, "", begin, length);
    if (grad.defined()) out.extra.insert("grad." + unit.name, grad);
  }
  return out;
}

CheckpointContents as_plain(const std::string& dir) {
  ShardedCheckpointReader reader(dir);
  CheckpointContents c;
  c.model = unflatten(dir);
  for (const dist::UnitLayout& unit : reader.layout().units) {
    auto split = [&](const std::string& kind, const std::string& key, const std::string& prefix,
                     const std::string& suffix, TensorMap& into) {
      const at::Tensor flat = reader.read_flat_range(kind, unit, key, 0, unit.numel);
      if (!flat.defined()) return;
      for (const dist::FlatParameter& p : unit.parameters)
        into.insert(prefix + p.name + suffix, flat.narrow(0, p.offset, p.numel).view(p.shape).clone());
    };
    for (const char* suffix : kStateSuffixes) split("optimizer", unit.name + suffix, "", suffix, c.optimizer);
    if (const at::Tensor* step = reader.find("optimizer", 0, unit.name + ".step"))
      for (const dist::FlatParameter& p : unit.parameters) c.optimizer.insert(p.name + ".step", *step);
    split("extra", "grad." + unit.name, "grad.", "", c.extra);
  }
  const CheckpointContents texts = CheckpointStore::load(dir);
  c.params_json = texts.params_json;
  c.train_state_json = texts.train_state_json;
  c.texts = texts.texts;
  return c;
}

}  // namespace plm::ckpt
