#include "plm/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/sharded.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/config/emit.h"
#include "plm/config/source.h"
#include "plm/data/pipeline.h"
#include "plm/dist/env.h"
#include "plm/dist/fsdp.h"
#include "plm/dist/process_group.h"
#include "plm/eval/validation.h"
#include "plm/model/init.h"
#include "plm/train/adamw.h"
#include "plm/train/checkpoint_store.h"
#include "plm/train/metrics.h"
#include "plm/train/precision.h"
#include "plm/train/schedule.h"
#include "plm/train/sharded_checkpoint.h"
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

at::ScalarType compute_dtype(const std::string& name) {
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp32") return at::kFloat;
  throw config::ConfigError("distributed.model_dtype is '" + name +
                            "': training supports bf16 and fp32 (fp16 would need loss scaling, which is not "
                            "implemented; bf16 needs none).");
}

/// PLM's `env` section (plm-spec 5.4): each variable is exported unless the environment already sets it. On the CPU
/// the thread counts are left alone: PLM's OMP_NUM_THREADS=1 is for GPU processes and would make a CPU run
/// single-threaded.
void apply_environment(const config::EnvironmentArgs& env, bool cpu) {
  auto set = [&](const char* key, const std::string& value, const char* = nullptr) {
    if (cpu && (std::string(key) == "OMP_NUM_THREADS" || std::string(key) == "MKL_NUM_THREADS")) return;
    if (!std::getenv(key)) setenv(key, value.c_str(), 0);
  };
  const_cast<config::EnvironmentArgs&>(env).visit(set);
}

/// Counters between two metrics records.
struct LogWindow {
  Clock::time_point start = Clock::now();
  int64_t tokens = 0, loss_tokens = 0, samples = 0, tiles = 0, steps = 0;
  double model_flops = 0, data_seconds = 0;
};

/// One optimizer step, for the metrics.
struct StepRecord {
  double loss, grad_norm, lr, iter_seconds, data_seconds;
};

/// Sums `values` over the ranks of `world` (in place; a no-op for one rank).
void sum_over_ranks(dist::World& world, std::vector<double>& values) {
  if (world.size() == 1) return;
  const at::Tensor t = at::tensor(values, at::kDouble);
  world.all_reduce(t, dist::ReduceOp::sum);
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<int64_t>(i)].item<double>();
}

/// Sums the fp32 gradients of `params` over the ranks (no_shard), as one flat buffer; undefined gradients count as
/// zeros (and become defined).
void all_reduce_gradients(dist::World& world, const NamedTensors& params) {
  std::vector<at::Tensor> flat;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) const_cast<at::Tensor&>(p).mutable_grad() = at::zeros_like(p);
    flat.push_back(p.grad().reshape({-1}));
  }
  if (flat.empty()) return;
  const at::Tensor buffer = at::cat(flat);
  world.all_reduce(buffer, dist::ReduceOp::sum);
  int64_t offset = 0;
  for (const auto& [name, p] : params) {
    const int64_t n = p.numel();
    p.grad().copy_(buffer.narrow(0, offset, n).view(p.sizes()));
    offset += n;
  }
}

}  // namespace

struct Trainer::Impl {
  config::TrainArgs args;
  at::Device device{at::kCPU};
  at::ScalarType compute = at::kFloat;
  data::Pipeline pipeline;
  std::unique_ptr<data::DataLoader> loader;
  model::PerceptionLM model{nullptr};
  std::unique_ptr<dist::World> world;
  std::unique_ptr<dist::ShardedModel> sharded;  // distributed.fsdp_type full_shard
  std::unique_ptr<MasterWeights> masters;       // no_shard
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<CheckpointStore> store;
  std::unique_ptr<FlopCounter> flops;
  std::unique_ptr<MetricsWriter> metrics;
  std::optional<data::Pipeline> val_pipeline;  // data.val_datamix; validate() reads it from its start each time
  double peak = 0;
  std::atomic<bool> stop{false};
  Position pos;
  LogWindow window;
  Clock::time_point run_start = Clock::now();
  int64_t run_start_step = 0;
  int64_t last_saved_step = -1;

  bool stop_requested() const { return stop.load() || stop_signal() != 0; }
  bool leader() const { return world->rank() == 0; }
  NamedTensors trainable() const { return sharded ? sharded->trainable_shards() : masters->trainable(); }
  /// Whether any rank was asked to stop (a collective when there are several).
  bool any_rank_stopping() {
    std::vector<double> flag{stop_requested() ? 1.0 : 0.0};
    sum_over_ranks(*world, flag);
    return flag[0] > 0;
  }
  /// Every rank runs every unit on every micro-batch (dist/fsdp.h): a batch without media gets one dummy tile,
  /// dropped after the vision tower like the dummy tiles of text-only samples.
  void ensure_vision_runs(model::ModelInputs& in) const {
    if (!sharded || !model->vision_model || in.images.defined()) return;
    const int64_t r = model->args.vision_model->image_size;
    in.images = at::zeros({1, 3, r, r}, at::TensorOptions().device(device));
    in.image_mask = at::zeros_like(in.tokens, at::kBool);
    in.chunk_has_text = at::ones({1}, at::TensorOptions().dtype(at::kBool).device(device));
  }
  void log_memory_footprint();

  void setup();
  std::string save();
  void validate();
  void restore(const std::string& dir);
  void log_step(const StepRecord& r);
};

void Trainer::Impl::setup() {
  if (args.dump_dir.empty())
    throw config::ConfigError("dump_dir is not set: training writes its checkpoints, metrics and logs there.");
  compute = compute_dtype(args.distributed.model_dtype);
  if (args.grad_acc_steps < 1) throw config::ConfigError("grad_acc_steps must be at least 1.");
  const dist::LaunchEnv env = dist::launch_env();
  const int gpus = runtime::cuda_device_count();
  if (args.distributed.device == "cuda" && gpus == 0)
    throw config::ConfigError(
        std::string("distributed.device is cuda but ") +
        (runtime::cuda_compiled() ? "no CUDA device is visible." : "this plm was built without CUDA (-DPLM_CUDA=ON)."));
  if (args.distributed.device != "cpu" && gpus > 0) {
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % gpus));
    runtime::set_cuda_device(device.index());
  }
  apply_environment(args.env, device.is_cpu());
  dist::WorldOptions world_options;
  world_options.timeout = std::chrono::seconds(args.distributed.timeout_s);
  world_options.cuda = device.is_cuda();
  world = std::make_unique<dist::World>(env, world_options);
  const int rank = world->rank(), size = world->size();
  if (leader()) {
    fs::create_directories(args.dump_dir);
    std::ofstream(fs::path(args.dump_dir) / "config.yaml") << config::to_yaml(args);
  }
  // Rank 0 writes train.log; every rank logs to its console (launchers prefix the lines with the rank).
  log::init({rank, args.logging.level, leader() ? (fs::path(args.dump_dir) / "train.log").string() : "", false});
  runtime::configure_threads();
  if (leader()) runtime::log_summary();
  log::info("training '{}' for {} steps into {} (rank {} of {}, {})", args.name, args.steps, args.dump_dir, rank, size,
            args.distributed.fsdp_type);

  pipeline = data::make_pipeline(args, rank, size);
  const int64_t n_words = pipeline.tokenizer->vocab_size();
  if (n_words > args.model.vocab_size)
    throw config::ConfigError("model.vocab_size is " + std::to_string(args.model.vocab_size) + " but the tokenizer '" +
                              args.data.tokenizer_path.value_or("") + "' has " + std::to_string(n_words) + " tokens.");

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
  model->train();
  model->apply_freezing();
  model->set_activation_checkpointing(args.distributed.full_activation_checkpointing);
  model->to(device);
  const auto counts = model::count_parameters(*model);
  log::info("model parameters: {} total, {} trainable, {} frozen", counts.total, counts.trainable,
            counts.total - counts.trainable);

  flops = std::make_unique<FlopCounter>(*model);
  if (args.distributed.fsdp_type == "full_shard") {
    sharded = std::make_unique<dist::ShardedModel>(*model, *world, compute);
    optimizer = std::make_unique<AdamW>(sharded->trainable_shards(), args.optim);
    if (!args.optim.decay_norms_and_biases) optimizer->set_decay_masks(sharded->matrix_masks());
  } else {
    masters = std::make_unique<MasterWeights>(*model, compute);
    optimizer = std::make_unique<AdamW>(masters->trainable(), args.optim, args.optim.decay_norms_and_biases);
  }
  // Identical initial weights on every rank; from here on each rank draws its own DropPath masks.
  if (size > 1) at::manual_seed(static_cast<uint64_t>(args.seed) + static_cast<uint64_t>(rank));
  store = std::make_unique<CheckpointStore>(
      args.checkpoint.path.value_or((fs::path(args.dump_dir) / "checkpoints").string()), args.checkpoint.dump,
      args.checkpoint.eval);
  // Rank 0 picks the newest complete checkpoint (reading every byte once) and tells the others its step.
  at::Tensor resume_step = at::full({1}, -1, at::kLong);
  if (leader())
    if (const auto dir = store->newest_complete()) resume_step.fill_(std::stoll(fs::path(*dir).filename().string()));
  world->broadcast(resume_step, 0);
  if (const int64_t step = resume_step.item<int64_t>(); step >= 0) {
    restore(store->step_dir(step));
    last_saved_step = pos.step;
  }
  run_start_step = pos.step;
  loader = pipeline.loader(pos.window_data_state);

  std::string peak_source;
  peak = peak_flops(args.logging.peak_tflops, compute, device, &peak_source);
  log::info("MFU is relative to {:.3g} TFLOP/s ({})", peak / 1e12, peak_source);
  if (leader()) metrics = std::make_unique<MetricsWriter>((fs::path(args.dump_dir) / "metrics.jsonl").string());
  val_pipeline = eval::validation_pipeline(args);
}

void Trainer::Impl::validate() {
  const eval::ValidationLoss v = eval::validation_loss(*model, *val_pipeline, args.data.val_max_batches);
  json j{{"global_step", pos.step}, {"eval/loss", v.loss}, {"eval/loss_tokens", v.tokens}};
  for (const auto& [dataset, loss] : v.dataset_loss) j["eval/loss/" + dataset] = loss;
  j["created_at"] = utc_timestamp();
  if (leader()) metrics->write(j);
  log::info("step {}/{} | eval loss {:.4f} over {} loss tokens ({} batches, {:.2f} s)", pos.step, args.steps, v.loss,
            v.tokens, v.batches, v.seconds);
}

std::string Trainer::Impl::save() {
  CheckpointContents c;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    c.extra.insert("rng.cpu", gen.get_state());
  }
  if (pos.acc_step > 0)
    for (const auto& [name, t] : trainable())
      if (t.grad().defined()) c.extra.insert("grad." + name, t.grad());
  c.params_json = config::to_json(args);
  c.train_state_json = train_state_json(pos, args, loader ? loader->skipped() : data::SkipCounts{});
  const auto start = Clock::now();
  std::string dir = store->step_dir(pos.step);
  if (sharded) {
    dir = store->save_sharded(
        pos.step,
        sharded_checkpoint_files(*sharded, *optimizer, std::move(c.extra), world->rank(),
                                 {{"params.json", c.params_json}, {"train_state.json", c.train_state_json}}),
        *world);
  } else if (leader()) {  // no_shard: the ranks hold the same weights and optimizer state
    for (const auto& [name, t] : masters->all()) c.model.insert(name, t.detach());
    for (const auto& [name, t] : optimizer->state()) c.optimizer.insert(name, t);
    dir = store->save(pos.step, c);
  }
  if (leader()) store->clean_up(dir);
  last_saved_step = pos.step;
  log::info("saved {} (step {}, acc_step {}) in {:.2f} s", dir, pos.step, pos.acc_step, seconds_since(start));
  return dir;
}

void Trainer::Impl::restore(const std::string& dir) {
  if (sharded) {
    const ckpt::TensorMap extra = restore_sharded(dir, *sharded, *optimizer, world->rank());
    pos = read_train_state(CheckpointStore::load(dir).train_state_json, dir);
    if (const at::Tensor* rng = extra.find("rng.cpu")) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(*rng);
    }
    for (const auto& [name, shard] : sharded->trainable_shards())
      if (const at::Tensor* g = extra.find("grad." + name)) shard.mutable_grad() = g->to(shard.device()).clone();
    log::info("resumed from {} at step {} (acc_step {}, {} ranks)", dir, pos.step, pos.acc_step, world->size());
    return;
  }
  const CheckpointContents c = ckpt::is_sharded_checkpoint(dir) ? as_plain(dir) : CheckpointStore::load(dir);
  at::NoGradGuard no_grad;
  for (const auto& [name, master] : masters->all()) {
    const at::Tensor* t = c.model.find(name);
    if (!t || !t->sizes().equals(master.sizes()))
      throw ckpt::CheckpointError("checkpoint '" + dir + "' " + (t ? "has another shape for '" : "has no tensor '") +
                                  name + "': it was written by a run with another model configuration.");
    const_cast<at::Tensor&>(master).copy_(*t);
  }
  optimizer->load_state(NamedTensors(c.optimizer.begin(), c.optimizer.end()));
  pos = read_train_state(c.train_state_json, dir);
  if (const at::Tensor* rng = c.extra.find("rng.cpu")) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle on the process's generator
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*rng);
  }
  for (const auto& [name, master] : masters->trainable())
    if (const at::Tensor* g = c.extra.find("grad." + name)) master.mutable_grad() = g->to(master.device()).clone();
  masters->publish();
  log::info("resumed from {} at step {} (acc_step {})", dir, pos.step, pos.acc_step);
}

void Trainer::Impl::log_memory_footprint() {
  int64_t params = 0, grads = 0, state = 0, padding = 0;
  if (sharded) {
    const dist::ShardedModel::Footprint f = sharded->footprint();
    params = f.shard_bytes;
    grads = f.grad_bytes;
    padding = f.padding_elements;
  } else {
    for (const auto& [name, t] : masters->all()) params += static_cast<int64_t>(t.nbytes());
    for (const auto& [name, t] : masters->trainable())
      if (t.grad().defined()) grads += static_cast<int64_t>(t.grad().nbytes());
  }
  for (const auto& [name, t] : optimizer->state()) state += static_cast<int64_t>(t.nbytes());
  // Gradients exist only inside a step (zero_grad drops them): count them as the trainable parameters' size.
  if (grads == 0)
    for (const auto& [name, t] : trainable()) grads += static_cast<int64_t>(t.nbytes());
  log::info("rank {} holds {} bytes of fp32 parameters, {} of gradients, {} of optimizer state ({} padding elements)",
            world->rank(), params, grads, state, padding);
}

void Trainer::Impl::log_step(const StepRecord& r) {
  std::vector<double> counts{static_cast<double>(window.tokens), static_cast<double>(window.loss_tokens),
                             static_cast<double>(window.samples), window.model_flops};
  sum_over_ranks(*world, counts);
  window.tokens = static_cast<int64_t>(counts[0]);
  window.loss_tokens = static_cast<int64_t>(counts[1]);
  window.samples = static_cast<int64_t>(counts[2]);
  window.model_flops = counts[3] / world->size();  // per device, as MFU divides by one device's peak
  if (!leader()) {
    window = LogWindow{};
    return;
  }
  const double elapsed = std::max(1e-9, seconds_since(window.start));
  const MemoryStats mem = memory_stats(device);
  const double total_gib = mem.total_gib;
  const double model_flops_per_s = window.model_flops / elapsed;
  json j;
  j["global_step"] = pos.step;
  j["acc_step"] = pos.acc_step;
  j["speed/wps"] = static_cast<double>(window.tokens) / elapsed;
  j["speed/FLOPS"] = flops->plm_flops_per_token(args.model.max_seqlen) * static_cast<double>(window.tokens) / elapsed;
  j["speed/curr_iter_time"] = r.iter_seconds;
  j["speed/data_load_time"] = r.data_seconds;
  j["speed/loss_tokens_per_s"] = static_cast<double>(window.loss_tokens) / elapsed;
  j["speed/samples_per_s"] = static_cast<double>(window.samples) / elapsed;
  j["speed/model_flops_per_s"] = model_flops_per_s;
  j["speed/mfu"] = peak > 0 ? json(model_flops_per_s / peak) : json(nullptr);
  j["speed/data_wait_frac"] = window.data_seconds / elapsed;
  j["optim/grad_norm"] = r.grad_norm;
  j["optim/lr"] = r.lr;
  j["optim/total_tokens"] =
      (args.grad_acc_steps * pos.step + pos.acc_step) * args.data.batch_size * args.model.max_seqlen;
  j["memory/max_active_gib"] = mem.max_active_gib;
  j["memory/max_active_pct"] = 100.0 * mem.max_active_gib / total_gib;
  j["memory/max_reserved_gib"] = mem.max_reserved_gib;
  j["memory/max_reserved_pct"] = 100.0 * mem.max_reserved_gib / total_gib;
  j["memory/num_alloc_retries"] = mem.alloc_retries;
  j["memory/num_ooms"] = mem.ooms;
  j["memory/power_draw"] = 0;
  j["loss/out"] = r.loss;
  for (const auto& [dataset, reasons] : loader->skipped())
    for (const auto& [reason, count] : reasons) j["data/skipped/" + dataset + "/" + reason] = count;
  j["created_at"] = utc_timestamp();
  metrics->write(j);

  const double per_step =
      seconds_since(run_start) / static_cast<double>(std::max<int64_t>(1, pos.step - run_start_step));
  const auto eta = static_cast<int64_t>(per_step * static_cast<double>(args.steps - pos.step));
  log::info(
      "step {}/{} | loss {:.4f} | grad {:.3f} | lr {:.3e} | {:.0f} tok/s ({:.0f} loss) | {:.2f} samples/s | "
      "iter {:.3f}s data {:.3f}s | mfu {} | mem {:.2f} GiB | eta {}:{:02d}:{:02d}",
      pos.step, args.steps, r.loss, r.grad_norm, r.lr, static_cast<double>(window.tokens) / elapsed,
      static_cast<double>(window.loss_tokens) / elapsed, static_cast<double>(window.samples) / elapsed, r.iter_seconds,
      r.data_seconds, peak > 0 ? fmt::format("{:.2f}%", 100 * model_flops_per_s / peak) : "n/a", mem.max_active_gib,
      eta / 3600, eta / 60 % 60, eta % 60);
  window = LogWindow{};
}

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
  if (impl_->sharded) return impl_->sharded->full_parameters();
  return impl_->masters->all();
}
int64_t Trainer::step() const {
  return impl_->pos.step;
}

TrainOutcome Trainer::run() {
  Impl& m = *impl_;
  const config::TrainArgs& a = m.args;
  const int64_t G = a.grad_acc_steps;
  const int W = m.world->size();
  const bool global_tokens = a.optim.loss_normalization == "global_tokens";
  TrainOutcome out;
  while (m.pos.step < a.steps) {
    const auto data_start = Clock::now();
    std::vector<data::Batch> batches;
    for (int64_t i = 0; i < G; ++i) batches.push_back(m.loader->next());
    const std::string after_window = m.loader->state_json();
    const double data_seconds = seconds_since(data_start);
    const auto compute_start = Clock::now();
    std::vector<int64_t> n(static_cast<size_t>(G));
    std::vector<double> step_tokens{0.0};  // the loss tokens of the whole step, over all ranks
    for (int64_t i = 0; i < G; ++i)
      step_tokens[0] += static_cast<double>(n[i] = batches[i].loss_mask.sum().item<int64_t>());
    sum_over_ranks(*m.world, step_tokens);
    const double total = step_tokens[0];
    std::set<std::string> bad_samples;
    for (int64_t i = m.pos.acc_step; i < G; ++i) {
      const data::Batch& b = batches[static_cast<size_t>(i)];
      // A micro-batch without loss tokens contributes nothing (PLM would get a NaN mean). With several ranks it
      // still runs forward and backward, scaled by 0, so that every rank issues the same collectives.
      if (n[i] > 0 || W > 1) {
        at::Tensor mask = b.loss_mask.to(m.device);
        if (n[i] == 0) mask = at::zeros_like(mask).index_put_({0, 0}, true);
        model::ModelInputs in = eval::model_inputs(*m.model, b, m.device);
        m.ensure_vision_runs(in);
        const at::Tensor loss = m.model->loss(in, b.labels.to(m.device), mask);
        // Gradients are summed over ranks: reference = the mean over ranks of each rank's mean (PLM's FSDP average).
        const double scale = n[i] == 0       ? 0.0
                             : global_tokens ? static_cast<double>(n[i]) / total
                                             : 1.0 / static_cast<double>(G * W);
        (loss * scale).backward();
        if (m.sharded) m.sharded->finish_gradients();
        if (m.masters) m.masters->accumulate_gradients();
        if (n[i] > 0) {
          const double value = loss.item<double>();
          if (!std::isfinite(value)) bad_samples.insert(b.sample_ids.begin(), b.sample_ids.end());
          m.pos.window_loss_sum += value * static_cast<double>(n[i]);
          m.pos.window_loss_tokens += n[i];
        }
      }
      m.pos.acc_step = i + 1;
      m.window.tokens += b.input_ids.numel();
      m.window.loss_tokens += n[i];
      m.window.samples += b.input_ids.size(0);
      const int64_t tiles = m.model->vision_model && b.images.defined() ? b.images.size(0) : 0;
      m.window.tiles += tiles;
      m.window.model_flops += m.flops->step_flops(b.input_ids.numel(), b.input_ids.size(1), n[i], tiles);
      if (on_micro_batch) on_micro_batch(m.pos.step, m.pos.acc_step);
      // One process can stop inside a window (its partial gradients are saved); several stop at step boundaries.
      if (W == 1 && m.pos.acc_step < G && m.stop_requested()) {
        out.checkpoint = m.save();
        out.stopped = true;
        out.step = m.pos.step;
        return out;
      }
    }
    m.pos.acc_step = 0;
    if (!m.sharded && W > 1) all_reduce_gradients(*m.world, m.masters->trainable());
    const NamedTensors trainable = m.trainable();
    std::function<double(double)> across_ranks;
    if (m.sharded && W > 1)
      across_ranks = [&m](double local) {
        std::vector<double> v{local};
        sum_over_ranks(*m.world, v);
        return v[0];
      };
    const double grad_norm = clip_grad_norm(trainable, a.optim.clip, across_ranks);
    std::vector<double> window_loss{m.pos.window_loss_sum, static_cast<double>(m.pos.window_loss_tokens),
                                    bad_samples.empty() ? 0.0 : 1.0};
    sum_over_ranks(*m.world, window_loss);
    const double loss = window_loss[0] / std::max(1.0, window_loss[1]);
    const double lr = lr_for_update(a.optim, a.steps, m.pos.step + 1);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm) || window_loss[2] > 0) {
      if (bad_samples.empty())
        for (const auto& b : batches) bad_samples.insert(b.sample_ids.begin(), b.sample_ids.end());
      std::string ids;
      for (const auto& id : bad_samples) ids += (ids.empty() ? "" : ", ") + id;
      const std::string what = "step " + std::to_string(m.pos.step + 1) + ": the loss is " + std::to_string(loss) +
                               " and the gradient norm " + std::to_string(grad_norm) + " (samples: " + ids + ")";
      if (a.optim.nan_policy == "abort")
        throw std::runtime_error(what + "; stopping (optim.nan_policy=abort; the last checkpoint is intact).");
      log::warn("{}; the update is skipped (optim.nan_policy=skip).", what);
    } else {
      m.optimizer->step(lr);
    }
    m.optimizer->zero_grad();
    if (m.masters) m.masters->publish();
    ++m.pos.step;
    m.pos.window_data_state = after_window;
    m.pos.window_loss_sum = 0;
    m.pos.window_loss_tokens = 0;
    m.window.data_seconds += data_seconds;
    ++m.window.steps;
    if (m.pos.step % a.logging.freq == 0 || m.pos.step == a.steps)
      m.log_step({loss, grad_norm, lr, seconds_since(compute_start), data_seconds});
    const bool due = (a.checkpoint.dump.every > 0 && m.pos.step % a.checkpoint.dump.every == 0) ||
                     (a.checkpoint.eval.every > 0 && m.pos.step % a.checkpoint.eval.every == 0) ||
                     m.pos.step == a.steps;
    if (due) out.checkpoint = m.save();
    if (m.val_pipeline &&
        ((a.checkpoint.eval.every > 0 && m.pos.step % a.checkpoint.eval.every == 0) || m.pos.step == a.steps))
      m.validate();
    if (W > 1 ? m.any_rank_stopping() : m.stop_requested()) {
      if (!due) out.checkpoint = m.save();
      out.stopped = true;
      break;
    }
  }
  if (m.last_saved_step != m.pos.step && !out.stopped) out.checkpoint = m.save();
  m.log_memory_footprint();
  out.step = m.pos.step;
  return out;
}

}  // namespace plm::train
