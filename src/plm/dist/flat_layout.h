// The in-memory layout of fully sharded data parallel (dist/fsdp.h): each unit of the model (model/units.h) keeps
// its parameters as one flat fp32 buffer, the parameters flattened in registration order, then zero padding to a
// multiple of the world size W; rank r owns elements [r S, (r + 1) S), S = shard_length(numel, W). A sharded
// checkpoint stores the same layout as shards.json (ckpt/sharded.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace plm::dist {

/// One parameter's place in its unit's flat buffer.
struct FlatParameter {
  std::string name;  // PLM's parameter name
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
};

/// One unit's flat buffer.
struct UnitLayout {
  std::string name;
  std::vector<FlatParameter> parameters;
  int64_t numel = 0;  // without padding
  bool trainable = false;
};

struct ShardLayout {
  int world_size = 1;
  std::vector<UnitLayout> units;
};

/// ceil(numel / world_size): the shard length of a flat buffer padded to a multiple of world_size.
inline int64_t shard_length(int64_t numel, int world_size) {
  return (numel + world_size - 1) / world_size;
}

}  // namespace plm::dist
