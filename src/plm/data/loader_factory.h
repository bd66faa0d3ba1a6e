// Everything the data loader needs, built from a run's configuration: tokenizer, datamix, preprocessing.
#pragma once

#include <memory>

#include "plm/config/args.h"
#include "plm/data/loader.h"

namespace plm::data {

struct Pipeline {
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
Pipeline make_pipeline(const config::TrainArgs& args, int64_t rank = 0, int64_t world_size = 1);

}  // namespace plm::data
