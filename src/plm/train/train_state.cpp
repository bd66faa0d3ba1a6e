#include "plm/train/train_state.h"

#include <nlohmann/json.hpp>

#include "plm/ckpt/safetensors.h"
#include "plm/train/schedule.h"

namespace plm::train {
using json = nlohmann::json;

std::string train_state_json(const TrainState& state, const config::TrainArgs& args, const data::SkipCounts& skipped) {
  json j;
  j["format"] = "plm-train-state-1";
  j["step"] = state.step;
  j["acc_step"] = state.acc_step;
  j["data_loader_state"] = state.window_data_state.empty() ? json(nullptr) : json::parse(state.window_data_state);
  j["scheduler"] = {{"base_lrs", {args.optim.lr}},
                    {"last_epoch", state.step},
                    {"_step_count", state.step + 1},
                    {"_last_lr", {args.optim.lr * lr_factor(args.optim, args.steps, state.step)}}};
  j["window_loss_sum"] = state.window_loss_sum;
  j["window_loss_tokens"] = state.window_loss_tokens;
  j["skipped"] = skipped;
  return j.dump(2) + "\n";
}

TrainState read_train_state(const std::string& text, const std::string& origin) {
  try {
    const json j = json::parse(text);
    TrainState p;
    p.step = j.at("step").get<int64_t>();
    p.acc_step = j.at("acc_step").get<int64_t>();
    const json& data = j.at("data_loader_state");
    p.window_data_state = data.is_null() ? "" : data.dump();
    p.window_loss_sum = j.value("window_loss_sum", 0.0);
    p.window_loss_tokens = j.value("window_loss_tokens", int64_t{0});
    return p;
  } catch (const json::exception& e) {
    throw ckpt::CheckpointError("the train state in '" + origin + "' cannot be read: " + e.what());
  }
}

}  // namespace plm::train
