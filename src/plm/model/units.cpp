#include "plm/model/units.h"

namespace plm::model {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

/// `prefix` followed by the index that comes after it in `name` ("layers.12.attention..." -> "layers.12").
std::string indexed(const std::string& name, const std::string& prefix) {
  const size_t end = name.find('.', prefix.size());
  return name.substr(0, end);
}

}  // namespace

std::string unit_of(const std::string& name) {
  static const std::string blocks = "vision_model.transformer.resblocks.";
  if (starts_with(name, "layers.")) return indexed(name, "layers.");
  if (starts_with(name, blocks)) return indexed(name, blocks);
  for (const char* unit : {"tok_embeddings", "vision_model", "vision_projector", "norm", "output"})
    if (starts_with(name, std::string(unit) + ".")) return unit;
  return name;
}

at::Tensor run_unit(UnitRunner* runner, const std::string& unit, const Block& fn, const at::Tensor& x, bool checkpoint,
                    const std::vector<at::Tensor>& params) {
  if (runner) return runner->run(unit, fn, x);
  if (checkpoint) return checkpointed(fn, x, params);
  return fn(x);
}

}  // namespace plm::model
