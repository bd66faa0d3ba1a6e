#include "plm/train/trainer.h"

#include <ATen/Context.h>
#include <torch/csrc/autograd/anomaly_mode.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "plm/ckpt/checkpoint_store.h"
#include "plm/ckpt/lora_base.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/config/emit.h"
#include "plm/config/source.h"
#include "plm/data/loader_factory.h"
#include "plm/dist/env.h"
#include "plm/dist/process_group.h"
#include "plm/eval/validation.h"
#include "plm/model/init.h"
#include "plm/train/adamw.h"
#include "plm/train/data_parallel.h"
#include "plm/train/metrics.h"
#include "plm/train/profiler.h"
#include "plm/train/schedule.h"
#include "plm/train/signals.h"
#include "plm/train/train_state.h"

namespace plm::train {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

at::ScalarType compute_dtype(config::ModelDtype dtype) {
  switch (dtype) {
    case config::ModelDtype::bf16:
      return at::kBFloat16;
    case config::ModelDtype::fp32:
      return at::kFloat;
    case config::ModelDtype::fp16:
      break;
  }
  throw config::ConfigError(
      "distributed.model_dtype is 'fp16': training supports bf16 and fp32 (fp16 would need loss scaling, which is "
      "not implemented; bf16 needs none).");
}

/// PLM's `env` section (docs/reference.md 5.4): each variable is exported unless the environment already sets it. On
/// the CPU the thread counts are left alone: PLM's OMP_NUM_THREADS=1 is for GPU processes and would make a CPU run
/// single-threaded.
void apply_environment(const config::EnvironmentArgs& env, bool cpu) {
  auto set = [&](const char* key, const std::string& value, const char* = nullptr) {
    if (cpu && (std::string(key) == "OMP_NUM_THREADS" || std::string(key) == "MKL_NUM_THREADS")) return;
    if (!std::getenv(key)) setenv(key, value.c_str(), 0);
  };
  const_cast<config::EnvironmentArgs&>(env).visit(set);
}

/// Counters between two metrics records, this rank's.
struct LogWindow {
  Clock::time_point start = Clock::now();
  int64_t tokens = 0, loss_tokens = 0, samples = 0;
  int64_t rows = 0, sample_tokens = 0;  // rows computed, and the samples' tokens in them (packing efficiency)
  double model_flops = 0, data_seconds = 0;
};

/// Sums `values` over the ranks of `world` (in place; a no-op for one rank).
void sum_over_ranks(dist::World& world, std::vector<double>& values) {
  if (world.size() == 1) return;
  const at::Tensor t = at::tensor(values, at::kDouble);
  world.all_reduce(t, dist::ReduceOp::sum);
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<int64_t>(i)].item<double>();
}

/// The micro-batches of one optimizer step, read before any of them runs.
struct StepBatches {
  std::vector<data::Batch> batches;       // grad_acc_steps of them
  std::vector<int64_t> loss_tokens;       // per micro-batch, on this rank
  double step_loss_tokens = 0;            // of the whole step on all ranks (global_tokens normalises by it)
  std::string data_state_after;           // the loader's state after the last one
  double data_seconds = 0;                // waiting for all of them
  std::vector<double> data_seconds_each;  // waiting for each
};

/// What finishing a step decided.
struct StepResult {
  double loss = 0, grad_norm = 0, lr = 0;  // loss: token-weighted over the step's micro-batches and ranks
};

}  // namespace

struct Trainer::Impl {
  config::TrainArgs args;
  at::Device device{at::kCPU};
  at::ScalarType compute = at::kFloat;
  data::LoaderFactory loaders;
  std::unique_ptr<data::DataLoader> loader;
  model::PerceptionLM model{nullptr};
  std::unique_ptr<dist::World> world;
  std::unique_ptr<DataParallel> parallel;  // distributed.fsdp_type: replicated or fully sharded
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<ckpt::CheckpointStore> store;
  std::unique_ptr<FlopCounter> flops;
  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<StepProfiler> profiler;          // profiling.run
  std::optional<data::LoaderFactory> val_loaders;  // data.val_datamix; each validation reads from its start
  double peak = 0;
  std::atomic<bool> stop{false};
  TrainState state;
  std::set<std::string> bad_samples;  // of the current step: ids of samples whose loss was not finite
  /// A micro-batch's loss, still on the device: the step reads them all at once (settle_losses), not one by one.
  struct PendingLoss {
    at::Tensor loss;  // the token mean, detached
    int64_t loss_tokens;
    std::vector<std::string> sample_ids;
    int64_t step, acc_step;  // where it ran (for the debug log)
  };
  std::vector<PendingLoss> pending_losses;
  at::Tensor last_loss;  // the token-mean loss of this rank's last micro-batch, on the device (undefined: no tokens)
  LogWindow window;
  Clock::time_point run_start = Clock::now();
  int64_t run_start_step = 0;
  int64_t last_saved_step = -1;
  bool first_batch_shown = false;
  data::WorkTotals logged_work;             // the loader's totals at the previous metrics record
  std::optional<ckpt::LoraBase> lora_base;  // model.lora over checkpoint.init_ckpt_path: checkpoints hold adapters

  bool stop_requested() const { return stop.load() || stop_signal() != 0; }
  bool leader() const { return world->rank() == 0; }
  /// Whether any rank was asked to stop (a collective when there are several).
  bool any_rank_stopping() {
    std::vector<double> flag{stop_requested() ? 1.0 : 0.0};
    sum_over_ranks(*world, flag);
    return flag[0] > 0;
  }

  void setup();
  StepBatches read_step();
  std::string run_data_state();
  void forward_backward(const data::Batch& batch, int64_t loss_tokens, double scale);
  void settle_losses();
  double loss_scale(const StepBatches& step, size_t micro_batch) const;
  StepResult finish_step(const StepBatches& step);
  bool due(int64_t every) const { return every > 0 && state.step % every == 0; }
  std::string save();
  void restore(const std::string& dir);
  void note_lora_base();  // model.lora: the base checkpoint and its checksum (lora_base)
  void run_validation();
  bool record_due_inside_window() const;
  void log_record(MetricsInputs in);
  void log_memory_footprint();
};

// ---------------------------------------------------------------------------------------------------------------
// Set-up: devices and ranks, dump_dir, data, model, data parallelism, optimizer, resume.
// ---------------------------------------------------------------------------------------------------------------

void Trainer::Impl::setup() {
  if (args.dump_dir.empty())
    throw config::ConfigError("dump_dir is not set: training writes its checkpoints, metrics and logs there.");
  compute = compute_dtype(args.distributed.model_dtype);
  if (args.grad_acc_steps < 1) throw config::ConfigError("grad_acc_steps must be at least 1.");
  const dist::LaunchEnv env = dist::launch_env();
  const int gpus = runtime::cuda_device_count();
  if (args.distributed.device == config::Device::cuda && gpus == 0)
    throw config::ConfigError(
        std::string("distributed.device is cuda but ") +
        (runtime::cuda_compiled() ? "no CUDA device is visible." : "this plm was built without CUDA (-DPLM_CUDA=ON)."));
  if (args.distributed.device != config::Device::cpu && gpus > 0) {
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % gpus));
    runtime::set_cuda_device(device.index());
  }
  apply_environment(args.env, device.is_cpu());
  // PLM's setup_torch_distributed: TF32 CUDA matmuls only when asked (cuDNN's convolutions keep torch's default,
  // TF32 on), and autograd's anomaly mode (each backward op checked for NaN, naming the forward op that made it).
  at::globalContext().setAllowTF32CuBLAS(args.distributed.matmul_allow_tf32);
  torch::autograd::AnomalyMode::set_enabled(args.distributed.detect_anomaly);
  dist::WorldOptions world_options;
  world_options.timeout = std::chrono::seconds(args.distributed.timeout_s);
  world_options.cuda = device.is_cuda();
  world = std::make_unique<dist::World>(env, world_options);
  const int rank = world->rank(), size = world->size();
  // PLM's mesh: dp_replicate x dp_shard = the world (dp_replicate is recomputed to make it so). dp_shard 1 or the
  // whole world is one sharding group (full_shard) or none (no_shard); anything else is HSDP.
  if (const auto& d = args.distributed; d.dp_shard > 1 && d.dp_shard != size)
    throw config::ConfigError("distributed.dp_shard is " + std::to_string(d.dp_shard) + " on " + std::to_string(size) +
                              " ranks: that asks for several replicas of sharded groups (HSDP), which plm does not "
                              "implement yet; leave distributed.dp_shard at 1 (full_shard then shards over all ranks, "
                              "as PLM's recipes do).");
  if (const int64_t global = args.data.global_batch_size; global > 0) {  // the per-rank batch follows the world
    const int64_t per_step = int64_t{size} * args.grad_acc_steps;
    if (global % per_step != 0)
      throw config::ConfigError("data.global_batch_size is " + std::to_string(global) + ", which " +
                                std::to_string(size) + " ranks x " + std::to_string(args.grad_acc_steps) +
                                " grad_acc_steps cannot split evenly; make it a multiple of " +
                                std::to_string(per_step) + ".");
    args.data.batch_size = global / per_step;
  }
  if (leader()) fs::create_directories(args.dump_dir);
  // Rank 0 writes train.log; every rank logs to its console (launchers prefix the lines with the rank).
  log::init({rank, args.logging.level, leader() ? (fs::path(args.dump_dir) / "train.log").string() : "", false});
  runtime::configure_threads();
  if (leader()) runtime::log_summary();
  log::info("training '{}' for {} steps into {} (rank {} of {}, {})", args.name, args.steps, args.dump_dir, rank, size,
            config::name_of(args.distributed.fsdp_type));
  if (args.data.global_batch_size > 0)
    log::info("data.batch_size {} per rank: data.global_batch_size {} over {} ranks x {} grad_acc_steps",
              args.data.batch_size, args.data.global_batch_size, size, args.grad_acc_steps);

  loaders = data::make_loader_factory(args, rank, size);
  // PLM fills vocab_size -1 from the tokenizer and asserts that any other value equals its size.
  const int64_t n_words = loaders.tokenizer->vocab_size();
  if (args.model.vocab_size == -1) {
    args.model.vocab_size = n_words;
    log::info("model.vocab_size: {} (the tokenizer's)", n_words);
  }
  if (n_words != args.model.vocab_size)
    throw config::ConfigError("model.vocab_size is " + std::to_string(args.model.vocab_size) + " but the tokenizer '" +
                              args.data.tokenizer_path.value_or("") + "' has " + std::to_string(n_words) +
                              " tokens; they must be equal (-1 takes the tokenizer's).");
  if (leader()) std::ofstream(fs::path(args.dump_dir) / "config.yaml") << config::to_yaml(args);

  at::manual_seed(static_cast<uint64_t>(args.seed));
  model = model::PerceptionLM(args.model);
  if (args.checkpoint.init_ckpt_path || args.checkpoint.vision_model_path) {
    const ckpt::LoadReport report = ckpt::init_from_checkpoints(*model, args.checkpoint);
    log::info("initialised from {} ({} tensors loaded)",
              args.checkpoint.init_ckpt_path.value_or(args.checkpoint.vision_model_path.value_or("")),
              report.loaded.size());
    if (const std::string problems = report.problems(); !problems.empty()) log::warn("{}", problems);
  } else {
    model::init_all(*model);
  }
  if (args.model.lora) note_lora_base();
  model->train();
  model->apply_freezing();
  model->set_activation_checkpointing(args.distributed.full_activation_checkpointing);
  model->to(device);
  const auto counts = model::count_parameters(*model);
  log::info("model parameters: {} total, {} trainable, {} frozen", counts.total, counts.trainable,
            counts.total - counts.trainable);

  flops = std::make_unique<FlopCounter>(*model);
  parallel = make_data_parallel(args.distributed.fsdp_type, *model, *world, compute);
  optimizer = parallel->make_optimizer(args.optim);
  // Identical initial weights on every rank. From here on nothing draws from a generator: DropPath and LoRA dropout
  // masks are functions of (seed, step, sample), model::drop_path_keys and model::row_keys, so ranks, devices and
  // resumes draw the same ones.
  store = std::make_unique<ckpt::CheckpointStore>(
      args.checkpoint.path.value_or((fs::path(args.dump_dir) / "checkpoints").string()), args.checkpoint.dump,
      args.checkpoint.eval);
  // Rank 0 picks the newest complete checkpoint (reading every byte once) and tells the others its step.
  // A refusal (step folders, none verifies) reaches every rank as -2, so that none waits for the others.
  at::Tensor resume_step = at::full({1}, -1, at::kLong);
  std::optional<ckpt::CheckpointError> refusal;
  if (leader()) try {
      if (const auto dir = store->newest_complete(args.checkpoint.restart_when_damaged))
        resume_step.fill_(std::stoll(fs::path(*dir).filename().string()));
    } catch (const ckpt::CheckpointError& e) {
      refusal = e;
      resume_step.fill_(-2);
    }
  world->broadcast(resume_step, 0);
  if (refusal) throw *refusal;
  if (resume_step.item<int64_t>() == -2)
    throw ckpt::CheckpointError("rank 0 found no checkpoint that verifies in '" + store->root() +
                                "' and refused to start (its log says why).");
  const int64_t resumed = resume_step.item<int64_t>();
  if (resumed >= 0) {
    restore(store->step_dir(resumed));
    last_saved_step = state.step;
  }
  run_start_step = state.step;
  try {
    loader = loaders.loader(state.window_data_state);
  } catch (const config::ConfigError& e) {  // a data state this run cannot continue: name the checkpoint
    if (resumed < 0) throw;
    throw config::ConfigError(store->step_dir(resumed) + "/train_state.json: " + e.what());
  }

  std::string peak_source;
  peak = peak_flops(args.logging.peak_tflops, compute, device, &peak_source);
  log::info("MFU is relative to {:.3g} TFLOP/s ({})", peak / 1e12, peak_source);
  if (leader())
    metrics = std::make_unique<MetricsWriter>(
        (fs::path(args.dump_dir) / "metrics.jsonl").string(),
        args.logging.tensorboard ? (fs::path(args.dump_dir) / "tensorboard").string() : "");
  val_loaders = eval::validation_loaders(args);
  if (args.profiling.run)
    profiler = std::make_unique<StepProfiler>(args.profiling, args.dump_dir, rank, device.is_cuda());
}

// ---------------------------------------------------------------------------------------------------------------
// One optimizer step: read its micro-batches, forward and backward each at its scale, then finish the step.
// ---------------------------------------------------------------------------------------------------------------

StepBatches Trainer::Impl::read_step() {
  const auto start = Clock::now();
  StepBatches step;
  for (int64_t i = 0; i < args.grad_acc_steps; ++i) {
    const auto one = Clock::now();
    step.batches.push_back(loader->next());
    step.data_seconds_each.push_back(seconds_since(one));
  }
  step.data_state_after = run_data_state();
  step.data_seconds = seconds_since(start);
  if (args.data.show_first_batch && leader() && !first_batch_shown) {  // PLM's show_first_batch, on rank 0
    first_batch_shown = true;
    const data::Batch& b = step.batches.front();
    std::string inputs, labels;
    for (const std::string& row : data::decoded_rows(b.input_ids, *loaders.tokenizer)) inputs += "\n" + row;
    for (const std::string& row : data::decoded_rows(b.labels, *loaders.tokenizer)) labels += "\n" + row;
    log::info("Input text: {}", inputs);
    log::info("Label text: {}", labels);
  }
  std::vector<double> total{0.0};
  for (const data::Batch& b : step.batches) {
    step.loss_tokens.push_back(b.loss_mask.sum().item<int64_t>());
    total[0] += static_cast<double>(step.loss_tokens.back());
  }
  sum_over_ranks(*world, total);
  step.step_loss_tokens = total[0];
  return step;
}

// The data position a checkpoint records: the loader's, the same on every rank, or with data.packing=tokens every
// rank's own (gathered in one all-reduce of a few numbers; doubles hold slots and cursors exactly below 2^53).
std::string Trainer::Impl::run_data_state() {
  const std::string mine = loader->state_json();
  if (args.data.packing != config::Packing::tokens) return mine;
  const data::StreamState s = data::StreamState::from_json(mine);
  const size_t width = 1 + s.cursors.size(), ranks = static_cast<size_t>(world->size());
  const size_t at = static_cast<size_t>(world->rank()) * width;
  std::vector<double> all(width * ranks, 0.0);
  all[at] = static_cast<double>(s.slot);
  for (size_t i = 0; i < s.cursors.size(); ++i) all[at + 1 + i] = static_cast<double>(s.cursors[i]);
  sum_over_ranks(*world, all);
  std::vector<data::StreamState> states(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    states[r].slot = static_cast<int64_t>(all[r * width]);
    for (size_t i = 1; i < width; ++i) states[r].cursors.push_back(static_cast<int64_t>(all[r * width + i]));
  }
  return data::ranks_state_json(states);
}

// Gradients are summed over ranks, so the scale decides what the step's gradient means:
//   reference:     loss_i / (grad_acc_steps x ranks): the mean over ranks and micro-batches of each one's token mean
//                  (PLM, whose FSDP averages over ranks);
//   global_tokens: loss_i x n_i / (the loss tokens of the step on all ranks): the token mean of the whole step.
double Trainer::Impl::loss_scale(const StepBatches& step, size_t i) const {
  const int64_t n = step.loss_tokens[i];
  if (n == 0) return 0.0;
  if (args.optim.loss_normalization == config::LossNormalization::global_tokens)
    return static_cast<double>(n) / step.step_loss_tokens;
  return 1.0 / static_cast<double>(args.grad_acc_steps * world->size());
}

void Trainer::Impl::forward_backward(const data::Batch& b, int64_t loss_tokens, double scale) {
  // A micro-batch without loss tokens contributes nothing (PLM would get a NaN mean). With several ranks it still
  // runs forward and backward, scaled by 0, so that every rank issues the same collectives.
  // Nothing here reads the device: the loss-token count comes from the collator, the masks stay on the host
  // (model_inputs.h) and the loss is read with the step's others (settle_losses).
  last_loss = at::Tensor();
  if (loss_tokens > 0 || world->size() > 1) {
    at::Tensor mask = b.loss_mask;
    if (loss_tokens == 0) mask = at::zeros_like(mask).index_put_({0, 0}, true);
    model::ModelInputs in = model::model_inputs(*model, b, device);
    if (in.images.defined()) in.drop_path_keys = model::drop_path_keys(b, static_cast<uint64_t>(args.seed), state.step);
    if (args.model.lora) in.row_keys = model::row_keys(b, static_cast<uint64_t>(args.seed), state.step);
    parallel->prepare(in);
    const at::Tensor loss = model->loss(in, b.labels, mask);
    (loss * scale).backward();
    parallel->after_backward();
    if (loss_tokens > 0) {
      last_loss = loss.detach();
      pending_losses.push_back({last_loss, loss_tokens, b.sample_ids, state.step + 1, state.acc_step + 1});
    }
  }
  window.tokens += b.input_ids.numel();
  window.loss_tokens += loss_tokens;
  window.samples += b.samples();
  window.rows += b.input_ids.size(0);
  window.sample_tokens += b.sample_tokens;
  const int64_t tiles = model->vision_model && b.images.defined() ? b.images.size(0) : 0;
  window.model_flops += flops->step_flops(b.useful_tokens(), b.attended_pairs(), loss_tokens, tiles);
}

// The pending micro-batch losses in one read from the device: into the window's sums, and their samples into
// bad_samples when not finite. Called where a value is needed: the step's end, a metrics record, a checkpoint.
void Trainer::Impl::settle_losses() {
  if (pending_losses.empty()) return;
  std::vector<at::Tensor> losses;
  for (const PendingLoss& p : pending_losses) losses.push_back(p.loss.to(at::kDouble));
  const at::Tensor values = at::stack(losses).to(at::kCPU);
  for (size_t i = 0; i < pending_losses.size(); ++i) {
    const PendingLoss& p = pending_losses[i];
    const double value = values[static_cast<int64_t>(i)].item<double>();
    log::debug("step {} micro-batch {}: loss {:.9g} over {} loss tokens", p.step, p.acc_step, value, p.loss_tokens);
    if (!std::isfinite(value)) bad_samples.insert(p.sample_ids.begin(), p.sample_ids.end());
    state.window_loss_sum += value * static_cast<double>(p.loss_tokens);
    state.window_loss_tokens += p.loss_tokens;
  }
  pending_losses.clear();
}

StepResult Trainer::Impl::finish_step(const StepBatches& step) {
  parallel->reduce_gradients();
  StepResult r;
  r.grad_norm = parallel->clip_gradients(args.optim.clip);  // a read from the device, with the losses' read next
  settle_losses();
  std::vector<double> window_loss{state.window_loss_sum, static_cast<double>(state.window_loss_tokens),
                                  bad_samples.empty() ? 0.0 : 1.0};
  sum_over_ranks(*world, window_loss);
  r.loss = window_loss[0] / std::max(1.0, window_loss[1]);
  r.lr = lr_for_update(args.optim, args.steps, state.step + 1);
  // The NaN/inf guard: every rank takes the same decision (the loss and the bad-sample flag are summed).
  if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm) || window_loss[2] > 0) {
    if (bad_samples.empty())
      for (const auto& b : step.batches) bad_samples.insert(b.sample_ids.begin(), b.sample_ids.end());
    std::string ids;
    for (const auto& id : bad_samples) ids += (ids.empty() ? "" : ", ") + id;
    const std::string what = "step " + std::to_string(state.step + 1) + ": the loss is " + std::to_string(r.loss) +
                             " and the gradient norm " + std::to_string(r.grad_norm) + " (samples: " + ids + ")";
    if (args.optim.nan_policy == config::NanPolicy::abort)
      throw std::runtime_error(what + "; stopping (optim.nan_policy=abort; the last checkpoint is intact).");
    log::warn("{}; the update is skipped (optim.nan_policy=skip).", what);
  } else {
    optimizer->step(r.lr);
  }
  optimizer->zero_grad();
  parallel->publish();
  bad_samples.clear();
  ++state.step;
  state.acc_step = 0;
  state.window_data_state = step.data_state_after;
  state.window_loss_sum = 0;
  state.window_loss_tokens = 0;
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints, validation and metrics.
// ---------------------------------------------------------------------------------------------------------------

std::string Trainer::Impl::save() {
  ckpt::TensorMap extra;  // no generator state: training draws from none (DropPath is keyed, model_inputs.h)
  settle_losses();
  if (state.acc_step > 0)
    for (const auto& [name, t] : parallel->trainable())
      if (t.grad().defined()) extra.insert("grad." + name, t.grad());
  const CheckpointTexts texts{config::to_json(args),
                              train_state_json(state, args, loader ? loader->skipped() : data::SkipCounts{}),
                              lora_base ? ckpt::to_json(*lora_base) : std::string()};
  const auto start = Clock::now();
  const std::string dir = parallel->save(*store, state.step, optimizer->state(), std::move(extra), texts);
  if (leader()) store->clean_up(dir);
  last_saved_step = state.step;
  log::info("saved {} (step {}, acc_step {}) in {:.2f} s", dir, state.step, state.acc_step, seconds_since(start));
  return dir;
}

void Trainer::Impl::note_lora_base() {
  if (!args.checkpoint.init_ckpt_path) {
    log::warn(
        "model.lora without checkpoint.init_ckpt_path: the base model is a random one, so checkpoints hold the "
        "whole model, not only the adapters");
    return;
  }
  const std::string path = fs::absolute(*args.checkpoint.init_ckpt_path).lexically_normal().string();
  lora_base = ckpt::LoraBase{path, ckpt::lora_base_checksum(ckpt::read_native_weights(path, args.model).tensors)};
  const auto counts = model::count_parameters(*model);
  log::info(
      "LoRA rank {} (alpha {}) on {}: {} adapter parameters over the base {} (weights {}); checkpoints hold the "
      "adapters and their optimizer state only",
      args.model.lora->rank, args.model.lora->alpha, args.model.lora->targets, counts.adapters, path,
      lora_base->checksum);
}

void Trainer::Impl::restore(const std::string& dir) {
  Restored r = parallel->restore(dir);
  if (!r.lora_base_json.empty()) {
    const std::string file = (fs::path(dir) / ckpt::kLoraBaseFile).string();
    const ckpt::LoraBase saved = ckpt::lora_base_from_json(r.lora_base_json, file);
    if (!lora_base || saved.checksum != lora_base->checksum)
      throw ckpt::CheckpointError("'" + file + "' says these adapters were trained on '" + saved.path + "' (weights " +
                                  saved.checksum + "), but this run's base is " +
                                  (lora_base
                                       ? "'" + lora_base->path + "' (weights " + lora_base->checksum + ")"
                                       : std::string("not a LoRA base (model.lora and checkpoint.init_ckpt_path)")) +
                                  ": resume with the base they were trained on, or start a new dump_dir.");
  }
  optimizer->load_state(r.optimizer_state);
  state = read_train_state(r.train_state_json, dir);
  for (const auto& [name, t] : parallel->trainable())
    if (const at::Tensor* g = r.extra.find("grad." + name)) t.mutable_grad() = g->to(t.device()).clone();
  parallel->publish();
  log::info("resumed from {} at step {} (acc_step {}, {} ranks)", dir, state.step, state.acc_step, world->size());
}

void Trainer::Impl::run_validation() {
  const eval::ValidationLoss v = eval::validation_loss(*model, *val_loaders, args.data.val_max_batches);
  json j{{"global_step", state.step}, {"eval/loss", v.loss}, {"eval/loss_tokens", v.tokens}};
  for (const auto& [dataset, loss] : v.dataset_loss) j["eval/loss/" + dataset] = loss;
  j["created_at"] = utc_timestamp();
  if (leader()) metrics->write(j);
  log::info("step {}/{} | eval loss {:.4f} over {} loss tokens ({} batches, {:.2f} s)", state.step, args.steps, v.loss,
            v.tokens, v.batches, v.seconds);
}

void Trainer::Impl::log_memory_footprint() {
  const Footprint f = parallel->footprint();
  int64_t grads = f.gradient_bytes, optimizer_state = 0;
  for (const auto& [name, t] : optimizer->state()) optimizer_state += static_cast<int64_t>(t.nbytes());
  // Gradients exist only inside a step (zero_grad drops them): count them as the trainable parameters' size.
  if (grads == 0)
    for (const auto& [name, t] : parallel->trainable()) grads += static_cast<int64_t>(t.nbytes());
  log::info("rank {} holds {} bytes of master parameters, {} of gradients, {} of optimizer state ({} padding elements)",
            world->rank(), f.parameter_bytes, grads, optimizer_state, f.padding_elements);
}

// PLM's every_n_steps(step, logging.freq, acc_freq=logging.acc_freq) for a micro-batch that does not end a step
// (the caller's case): state.step optimizer steps are done and state.acc_step (>= 1) micro-batches of the next one.
bool Trainer::Impl::record_due_inside_window() const {
  const auto& acc_freq = args.logging.acc_freq;
  return acc_freq && state.step % args.logging.freq == 0 && state.acc_step % *acc_freq == 0;
}

// One metrics record, a collective: every rank calls it at the same micro-batch. `in` carries what the caller knows
// (the step's or the micro-batch's figures); the window's counts, the ranks' sums and loss/out are added here.
void Trainer::Impl::log_record(MetricsInputs in) {
  settle_losses();
  const std::optional<double> last = last_loss.defined() ? std::optional(last_loss.item<double>()) : std::nullopt;
  std::vector<double> counts{static_cast<double>(window.tokens),
                             static_cast<double>(window.loss_tokens),
                             static_cast<double>(window.samples),
                             window.model_flops,
                             last.value_or(0.0),
                             last ? 1.0 : 0.0,
                             static_cast<double>(window.rows),
                             static_cast<double>(window.sample_tokens)};
  sum_over_ranks(*world, counts);
  if (!leader()) {
    window = LogWindow{};
    return;
  }
  in.step = state.step;
  in.acc_step = state.acc_step;
  in.world_size = world->size();
  in.window_seconds = seconds_since(window.start);
  in.rank0_tokens = window.tokens;
  in.tokens = static_cast<int64_t>(counts[0]);
  in.loss_tokens = static_cast<int64_t>(counts[1]);
  in.samples = static_cast<int64_t>(counts[2]);
  in.rows = static_cast<int64_t>(counts[6]);
  in.sample_tokens = static_cast<int64_t>(counts[7]);
  in.model_flops_per_device = counts[3] / world->size();   // MFU divides by one device's peak
  if (counts[5] > 0) in.loss_out = counts[4] / counts[5];  // ranks without loss tokens are left out
  in.plm_flops_per_token = flops->plm_flops_per_token(args.model.max_seqlen);
  in.window_data_seconds = window.data_seconds;
  in.micro_batches_done = args.grad_acc_steps * state.step + state.acc_step;
  in.batch_size = args.data.batch_size;
  in.max_seqlen = args.model.max_seqlen;
  in.memory = memory_stats(device);
  const double model_flops_per_s = in.model_flops_per_device / std::max(1e-9, in.window_seconds);
  if (peak > 0 && model_flops_per_s > peak) {  // so that MFU never exceeds 1
    log::warn(
        "the model ran at {:.3g} TFLOP/s, above the peak of {:.3g}: MFU is relative to {:.3g} TFLOP/s from "
        "now on (set logging.peak_tflops to the device's peak)",
        model_flops_per_s / 1e12, peak / 1e12, model_flops_per_s / 1e12);
    peak = model_flops_per_s;
  }
  in.peak_flops = peak;
  json j = metrics_record(in);
  for (const auto& [dataset, reasons] : loader->skipped())
    for (const auto& [reason, count] : reasons) j["data/skipped/" + dataset + "/" + reason] = count;
  const data::WorkTotals work = loader->work_totals();  // rank 0's workers, since the previous record
  j["data/preprocess_worker_s"] = work.preprocess_seconds - logged_work.preprocess_seconds;
  j["data/samples_preprocessed"] = work.samples - logged_work.samples;
  j["data/videos_read"] = work.videos - logged_work.videos;
  j["data/video_frames_decoded"] = work.video_frames_decoded - logged_work.video_frames_decoded;
  logged_work = work;
  j["created_at"] = utc_timestamp();
  metrics->write(j);

  const double elapsed = std::max(1e-9, in.window_seconds);
  const std::string mfu = peak > 0 ? fmt::format("{:.2f}%", 100 * model_flops_per_s / peak) : "n/a";
  if (!in.step_seconds) {  // inside an accumulation window (logging.acc_freq)
    log::info(
        "step {}/{} acc {}/{} | loss/out {} | lr {:.3e} | {:.0f} tok/s | micro-batch {:.3f}s data {:.3f}s | "
        "mfu {}",
        state.step, args.steps, state.acc_step, args.grad_acc_steps,
        in.loss_out ? fmt::format("{:.4f}", *in.loss_out) : "n/a", in.lr, static_cast<double>(in.tokens) / elapsed,
        in.last_micro_batch_seconds, in.last_micro_batch_data_seconds, mfu);
    window = LogWindow{};
    return;
  }
  const double per_step =
      seconds_since(run_start) / static_cast<double>(std::max<int64_t>(1, state.step - run_start_step));
  const auto eta = static_cast<int64_t>(per_step * static_cast<double>(args.steps - state.step));
  log::info(
      "step {}/{} | loss {:.4f} | grad {:.3f} | lr {:.3e} | {:.0f} tok/s ({:.0f} loss) | {:.2f} samples/s | "
      "step {:.3f}s data {:.3f}s | mfu {} | mem {:.2f} GiB | eta {}:{:02d}:{:02d}",
      state.step, args.steps, in.loss_token_mean.value_or(std::nan("")), in.grad_norm, in.lr,
      static_cast<double>(in.tokens) / elapsed, static_cast<double>(in.loss_tokens) / elapsed,
      static_cast<double>(in.samples) / elapsed, *in.step_seconds, *in.step_data_seconds, mfu, in.memory.max_active_gib,
      eta / 3600, eta / 60 % 60, eta % 60);
  window = LogWindow{};
}

// ---------------------------------------------------------------------------------------------------------------
// The public face.
// ---------------------------------------------------------------------------------------------------------------

Trainer::Trainer(config::TrainArgs args) : impl_(std::make_unique<Impl>()) {
  impl_->args = std::move(args);
  impl_->setup();
}

Trainer::~Trainer() = default;

void Trainer::request_stop() {
  impl_->stop.store(true);
}
model::PerceptionLMImpl& Trainer::model() {
  return *impl_->model;
}
NamedTensors Trainer::parameters() const {
  return impl_->parallel->full_parameters();
}
int64_t Trainer::step() const {
  return impl_->state.step;
}

TrainOutcome Trainer::run() {
  Impl& m = *impl_;
  const config::TrainArgs& a = m.args;
  const bool one_process = m.world->size() == 1;
  TrainOutcome out;
  while (m.state.step < a.steps) {
    const StepBatches step = m.read_step();
    const auto compute_start = Clock::now();
    auto micro_batch_start = compute_start;
    // A resumed window's first acc_step micro-batches are in the restored gradients already.
    for (int64_t i = m.state.acc_step; i < a.grad_acc_steps; ++i) {
      const auto k = static_cast<size_t>(i);
      micro_batch_start = Clock::now();
      m.forward_backward(step.batches[k], step.loss_tokens[k], m.loss_scale(step, k));
      m.state.acc_step = i + 1;
      m.window.data_seconds += step.data_seconds_each[k];
      if (m.state.acc_step < a.grad_acc_steps) {  // inside the window; PLM's order: profiler step, then metrics
        const double micro_batch_seconds = seconds_since(micro_batch_start);
        if (m.profiler) m.profiler->tick();
        if (m.record_due_inside_window()) {
          MetricsInputs in;
          in.grad_norm = -1;  // PLM's value for a micro-batch without an update
          in.lr = lr_for_update(a.optim, a.steps, m.state.step + 1);
          in.last_micro_batch_seconds = micro_batch_seconds;
          in.last_micro_batch_data_seconds = step.data_seconds_each[k];
          m.log_record(in);
        }
      }
      if (on_micro_batch) on_micro_batch(m.state.step, m.state.acc_step);
      // One process can stop inside a window (its partial gradients are saved); several stop at step boundaries.
      if (one_process && m.state.acc_step < a.grad_acc_steps && m.stop_requested()) {
        out.checkpoint = m.save();
        out.stopped = true;
        out.step = m.state.step;
        return out;
      }
    }
    const StepResult r = m.finish_step(step);
    const double micro_batch_seconds = seconds_since(micro_batch_start), step_seconds = seconds_since(compute_start);
    if (m.profiler) m.profiler->tick();  // after the update, before metrics, as PLM's loop (a trace save is not timed)
    if (m.due(a.logging.freq) || m.state.step == a.steps) {
      MetricsInputs in;
      in.grad_norm = r.grad_norm;
      in.lr = r.lr;
      if (step.step_loss_tokens > 0) in.loss_token_mean = r.loss;
      in.last_micro_batch_seconds = micro_batch_seconds;
      in.last_micro_batch_data_seconds = step.data_seconds_each.back();
      in.step_seconds = step_seconds;
      in.step_data_seconds = step.data_seconds;
      m.log_record(in);
    }
    const bool eval_due = m.due(a.checkpoint.eval.every) || m.state.step == a.steps;
    const bool save_due = m.due(a.checkpoint.dump.every) || eval_due;
    if (save_due) out.checkpoint = m.save();
    if (m.val_loaders && eval_due) m.run_validation();
    if (one_process ? m.stop_requested() : m.any_rank_stopping()) {
      if (!save_due) out.checkpoint = m.save();
      out.stopped = true;
      break;
    }
  }
  if (m.last_saved_step != m.state.step && !out.stopped) out.checkpoint = m.save();
  m.log_memory_footprint();
  out.step = m.state.step;
  return out;
}

}  // namespace plm::train
