#include "plm/train/data_parallel.h"

#include "plm/train/fully_sharded.h"
#include "plm/train/replicated.h"

namespace plm::train {

std::unique_ptr<DataParallel> make_data_parallel(config::FsdpType fsdp_type, model::PerceptionLMImpl& model,
                                                 dist::World& world, at::ScalarType compute) {
  switch (fsdp_type) {
    case config::FsdpType::full_shard:
      return std::make_unique<FullySharded>(model, world, compute);
    case config::FsdpType::no_shard:
      break;
  }
  return std::make_unique<Replicated>(model, world, compute);
}

}  // namespace plm::train
