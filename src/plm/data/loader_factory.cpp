#include "plm/data/loader_factory.h"

#include "plm/config/source.h"

namespace plm::data {

std::unique_ptr<DataLoader> LoaderFactory::loader(const std::string& state) const {
  return std::make_unique<DataLoader>(mix, preprocess, options, state);
}

LoaderFactory make_loader_factory(const config::TrainArgs& args, int64_t rank, int64_t world_size) {
  if (!args.data.tokenizer_path)
    throw config::ConfigError("data.tokenizer_path is not set: the data pipeline needs a tokenizer.");
  LoaderFactory p;
  p.tokenizer = text::load_tokenizer(*args.data.tokenizer_path);
  p.preprocess = std::make_shared<Preprocessor>(p.tokenizer, PreprocessOptions::from(args));
  p.mix = resolve_datamix(args.data.datamix, load_registry(args.data.registry), args.data.registry);
  LoaderOptions& o = p.options;
  o.batch_size = args.data.batch_size;
  o.rank = rank;
  o.world_size = world_size;
  o.num_workers = args.data.num_workers.value_or(2);
  o.prefetch_batches = args.data.prefetch_batches;
  o.pad_to_longest = args.data.pad_to_longest;
  o.packing = args.data.packing;
  o.strict = args.data.strict;
  o.seed = static_cast<uint64_t>(args.data.seed);
  const text::TokenId eos = p.tokenizer->special_id("<|end_of_text|>");
  if (eos >= 0) o.pad_id = eos;
  return p;
}

}  // namespace plm::data
