// Everything a data loader needs, resolved once from a run's configuration (tokenizer, datamix, preprocessing, loader
// options), from which the run makes its loaders: training's, and a fresh one for each validation.
#pragma once

#include <memory>

#include "plm/config/args.h"
#include "plm/data/loader.h"

namespace plm::data {

/// What a loader is made from; loader() makes one.
struct LoaderFactory {
  std::shared_ptr<const text::Tokenizer> tokenizer;
  std::shared_ptr<const Preprocessor> preprocess;
  std::vector<MixEntry> mix;
  LoaderOptions options;

  /// A loader for this rank, starting at `state` ("" = the beginning).
  std::unique_ptr<DataLoader> loader(const std::string& state = "") const;
};

/// Reads data.tokenizer_path, data.registry and data.datamix and gathers the preprocessing and loader settings
/// (seed: data.seed; workers: data.num_workers or 2; padding id: the tokenizer's <|end_of_text|>). Throws
/// config::ConfigError or text::TokenizerError naming what is wrong.
LoaderFactory make_loader_factory(const config::TrainArgs& args, int64_t rank = 0, int64_t world_size = 1);

}  // namespace plm::data
