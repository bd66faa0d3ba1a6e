// Validation loss: the training loss (model::PerceptionLMImpl::loss, fp32 cross-entropy over the loss positions)
// on held-out batches, weighted by loss tokens so that the value does not depend on how samples fall into batches.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "plm/data/loader_factory.h"
#include "plm/model/perception_lm.h"

namespace plm::eval {

struct ValidationLoss {
  double loss = 0;      // sum over batches of loss x loss tokens / tokens; NaN when there were no loss tokens
  int64_t tokens = 0;   // loss tokens seen
  int64_t batches = 0;  // batches read
  int64_t samples = 0;  // rows read
  double seconds = 0;   // wall time
  std::map<std::string, double> dataset_loss;     // the same per dataset (the part of a sample id before '#')
  std::map<std::string, int64_t> dataset_tokens;  // loss tokens per dataset

  /// {"loss": .., "tokens": .., "batches": .., "samples": .., "datasets": {"<name>": {"loss": .., "tokens": ..}}};
  /// a NaN loss is written as null.
  std::string to_json() const;
};

/// The loaders of data.val_datamix (resolved against data.registry, with the training run's tokenizer,
/// preprocessing and batch size), or nullopt when val_datamix is empty. Throws config::ConfigError naming
/// data.val_datamix or data.val_max_batches (< 1).
std::optional<data::LoaderFactory> validation_loaders(const config::TrainArgs& args);

/// Reads `max_batches` batches (>= 1) from `loader` and computes the loss on each in eval mode without autograd,
/// on the device and in the dtype of the model's parameters. Rows of different datasets go through the model in
/// separate groups (each row's loss does not depend on the others), so the per-dataset values come from the same
/// model::loss; a batch or group without loss tokens is skipped. The model's training mode is restored.
ValidationLoss validation_loss(model::PerceptionLMImpl& model, data::DataLoader& loader, int64_t max_batches);

/// The same over a fresh loader of `loaders` started at its beginning, so repeated calls see the same batches.
ValidationLoss validation_loss(model::PerceptionLMImpl& model, const data::LoaderFactory& loaders, int64_t max_batches);

}  // namespace plm::eval
