// train_state.json: where a run is, as PLM's TrainState (step, acc_step, data_loader_state, scheduler) plus what
// plm needs to resume exactly inside an accumulation window.
#pragma once

#include <cstdint>
#include <string>

#include "plm/config/args.h"
#include "plm/data/loader.h"

namespace plm::train {

struct TrainState {
  int64_t step = 0;               // optimizer steps done
  int64_t acc_step = 0;           // micro-batches of the current step already in the accumulated gradients
  std::string window_data_state;  // the data loader's state at the start of the current step ("" = the beginning)
  double window_loss_sum = 0;     // sum over the done micro-batches of (token-mean loss x loss tokens)
  int64_t window_loss_tokens = 0;
};

/// {"format": "plm-train-state-1", "step", "acc_step", "data_loader_state" (the loader's JSON, as an object),
///  "scheduler" (PLM's LambdaLR fields: base_lrs, last_epoch, _step_count, _last_lr), "window_loss_sum",
///  "window_loss_tokens", "skipped" (dataset -> reason -> count)}.
std::string train_state_json(const TrainState& state, const config::TrainArgs& args, const data::SkipCounts& skipped);

/// Reads train_state_json()'s text; throws ckpt::CheckpointError naming `origin` when a field is missing or mistyped.
TrainState read_train_state(const std::string& text, const std::string& origin);

}  // namespace plm::train
