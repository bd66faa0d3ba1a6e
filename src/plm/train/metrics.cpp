#include "plm/train/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <stdexcept>
#include <vector>

#include <torch/cuda.h>

#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/train/tensorboard.h"

namespace plm::train {

FlopCounter::FlopCounter(const model::PerceptionLMImpl& m) {
  const auto& a = m.args;
  const auto& d = m.dims;
  // With LoRA the base weights are frozen leaves whose gradients still pass through wherever an adapter below
  // trains (4N); the adapters' own products are left out (rank / width of the base's).
  bool vision_adapters = false;
  for (const auto& p : m.named_parameters())
    vision_adapters = vision_adapters || (model::is_lora_parameter(p.key()) && p.key().rfind("vision_", 0) == 0);
  const bool vision_trains = m.vision_model && !a.freeze_vision_model && !a.lora;
  int64_t decoder = 0, vision = 0, projector = 0;
  for (const auto& p : m.named_parameters()) {
    const std::string& name = p.key();
    const int64_t n = p.value().numel();
    if (model::is_lora_parameter(name)) continue;
    all_params_ += static_cast<double>(n);
    if (name.rfind("vision_model.", 0) == 0)
      vision += n;
    else if (name.rfind("vision_projector.", 0) == 0)
      projector += n;
    else if (name != "tok_embeddings.weight" && name != "output.weight")
      decoder += n;  // the embedding is a lookup; the output layer is counted per loss token
  }
  decoder_weights_ = static_cast<double>(decoder);
  // A frozen decoder still back-propagates to the projector below it (2 of the 6).
  decoder_m_ = a.lora ? 4 : a.freeze_language_model ? (m.vision_model ? 4 : 2) : 6;
  attention_per_len_ = 2.0 * static_cast<double>(d.n_layers * d.n_heads * d.head_dim);
  vocab_dim_ = static_cast<double>(d.vocab_size * d.dim);
  layers_dim_ = static_cast<double>(d.n_layers * d.dim);
  if (m.vision_model) {
    const auto& v = *a.vision_model;
    const double grid = static_cast<double>(v.image_size / v.patch_size);
    const double patches = grid * grid, tokens = patches + (v.use_cls_token ? 1 : 0);
    const double mv = vision_trains ? 6 : vision_adapters ? 4 : 2;
    vision_per_tile_ = mv * static_cast<double>(vision) * tokens +
                       mv * 2.0 * static_cast<double>(v.layers * v.width) * tokens * tokens +
                       (a.lora ? (vision_adapters ? 4.0 : 2.0) : 6.0) * static_cast<double>(projector) * patches;
  }
}

double FlopCounter::step_flops(int64_t tokens, int64_t attended_pairs, int64_t loss_tokens, int64_t tiles) const {
  return decoder_m_ * (decoder_weights_ * static_cast<double>(tokens) +
                       attention_per_len_ * static_cast<double>(attended_pairs)) +
         decoder_m_ * vocab_dim_ * static_cast<double>(loss_tokens) + vision_per_tile_ * static_cast<double>(tiles);
}

double FlopCounter::plm_flops_per_token(int64_t seq_len) const {
  const int64_t attention = 4 * static_cast<int64_t>(layers_dim_) * seq_len / 2;
  return 6.0 * (all_params_ - vocab_dim_) + 3.5 * static_cast<double>(attention);
}

namespace {

using Clock = std::chrono::steady_clock;

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

/// The best rate of square matrix products in `dtype` on `device`, sizes doubling from 128 up to 2048 (CPU) or
/// 8192 (GPU), each timed over at least 0.05 s (GPU: 0.2 s) of products; stops before a size would pass
/// `deadline`. Bounded in time on any device: a CPU without native bf16 matrix products (which needs minutes for
/// a few 2048 x 2048 bf16 products) stops at a small size.
double matmul_rate(at::ScalarType dtype, at::Device device, Clock::time_point deadline) {
  const int64_t largest = device.is_cuda() ? 8192 : 2048;
  const double min_seconds = device.is_cuda() ? 0.2 : 0.05;
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
  };
  double best = 0;
  for (int64_t n = 128; n <= largest; n *= 2) {
    // Constant operands: timing must not draw from the global generator (DropPath and exact resume rely on it).
    const at::Tensor a = at::full({n, n}, 0.5, at::TensorOptions().dtype(dtype).device(device)), b = a.clone();
    at::mm(a, b);  // warm-up
    sync();
    int reps = 0;
    double seconds = 0;
    const auto start = Clock::now();
    do {
      at::mm(a, b);
      sync();
      ++reps;
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
    } while (seconds < min_seconds && Clock::now() < deadline);
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) * reps / seconds);
    // The next size costs 8x per product: a warm-up and at least one timed product.
    if (Clock::now() + to_duration(16.0 * seconds / reps + min_seconds) > deadline) break;
  }
  return best;
}

}  // namespace

double peak_flops(const std::optional<double>& configured_tflops, at::ScalarType dtype, at::Device device,
                  std::string* source) {
  if (configured_tflops) {
    *source = "logging.peak_tflops";
    return *configured_tflops * 1e12;
  }
  // A CPU may run the model's 16-bit matrix products through fp32 kernels: its peak is the faster of the two.
  std::vector<at::ScalarType> dtypes{dtype};
  if (device.is_cpu() && dtype != at::kFloat) dtypes.push_back(at::kFloat);
  const double budget = device.is_cuda() ? 2.0 : 1.0;
  log::info("measuring the peak FLOP/s for MFU (at most {:.0f} s; setting logging.peak_tflops skips this)", budget);
  const auto start = Clock::now();
  double best = 0;
  std::string names;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    const Clock::duration left = start + to_duration(budget) - Clock::now();  // equal shares of what is left
    best = std::max(best, matmul_rate(dtypes[i], device, Clock::now() + left / static_cast<int>(dtypes.size() - i)));
    names += (names.empty() ? "" : " and ") + std::string(c10::toString(dtypes[i]));
  }
  *source =
      fmt::format("measured in {:.2f} s: the best {} square matmul rate on this {}",
                  std::chrono::duration<double>(Clock::now() - start).count(), names, device.is_cuda() ? "GPU" : "CPU");
  return best;
}

MemoryStats memory_stats(at::Device device) {
  MemoryStats s;
  if (device.is_cuda()) {
    const runtime::CudaMemory m = runtime::cuda_memory(device.index(), /*reset=*/true);
    constexpr double gib = 1024.0 * 1024.0 * 1024.0;
    s.max_active_gib = static_cast<double>(m.peak_active) / gib;
    s.max_reserved_gib = static_cast<double>(m.peak_reserved) / gib;
    s.total_gib = static_cast<double>(m.total) / gib;
    s.alloc_retries = m.alloc_retries;
    s.ooms = m.ooms;
    return s;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  s.max_active_gib = s.max_reserved_gib = static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);
  s.total_gib = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE)) /
                (1024.0 * 1024.0 * 1024.0);
  return s;
}

nlohmann::json metrics_record(const MetricsInputs& in) {
  using nlohmann::json;
  const double elapsed = std::max(1e-9, in.window_seconds);
  const double wps = static_cast<double>(in.rank0_tokens) / elapsed;  // PLM: this GPU's words per second
  const double model_flops_per_s = in.model_flops_per_device / elapsed;
  auto optional = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  json j;
  j["global_step"] = in.step;
  j["acc_step"] = in.acc_step;
  // The reference's keys, with its meanings.
  j["speed/wps"] = wps;
  j["speed/FLOPS"] = in.plm_flops_per_token * wps;
  j["speed/curr_iter_time"] = in.last_micro_batch_seconds;
  j["speed/data_load_time"] = in.last_micro_batch_data_seconds;
  j["optim/grad_norm"] = in.grad_norm;
  j["optim/lr"] = in.lr;
  j["optim/total_tokens"] = in.world_size * in.micro_batches_done * in.batch_size * in.max_seqlen;
  j["loss/out"] = optional(in.loss_out);
  const double total_gib = std::max(1e-9, in.memory.total_gib);
  j["memory/max_active_gib"] = in.memory.max_active_gib;
  j["memory/max_active_pct"] = 100.0 * in.memory.max_active_gib / total_gib;
  j["memory/max_reserved_gib"] = in.memory.max_reserved_gib;
  j["memory/max_reserved_pct"] = 100.0 * in.memory.max_reserved_gib / total_gib;
  j["memory/num_alloc_retries"] = in.memory.alloc_retries;
  j["memory/num_ooms"] = in.memory.ooms;
  j["memory/power_draw"] = 0;
  // plm's own figures.
  j["speed/wps_global"] = static_cast<double>(in.tokens) / elapsed;
  j["speed/loss_tokens_per_s"] = static_cast<double>(in.loss_tokens) / elapsed;
  j["speed/samples_per_s"] = static_cast<double>(in.samples) / elapsed;
  j["speed/model_flops_per_s"] = model_flops_per_s;
  j["speed/mfu"] = in.peak_flops > 0 ? json(model_flops_per_s / in.peak_flops) : json(nullptr);
  j["speed/step_time"] = optional(in.step_seconds);
  j["speed/step_data_time"] = optional(in.step_data_seconds);
  j["speed/data_wait_frac"] = in.window_data_seconds / elapsed;
  j["loss/token_mean"] = optional(in.loss_token_mean);
  if (in.rows > 0 && in.tokens > 0) {
    j["data/packing_efficiency"] = static_cast<double>(in.sample_tokens) / static_cast<double>(in.tokens);
    j["data/samples_per_row"] = static_cast<double>(in.samples) / static_cast<double>(in.rows);
  }
  return j;
}

MetricsWriter::MetricsWriter(const std::string& path, const std::string& tensorboard_dir)
    : out_(path, std::ios::app), path_(path) {
  if (!out_) throw std::runtime_error("cannot open '" + path + "' for appending metrics.");
  if (!tensorboard_dir.empty()) {
    tensorboard_ = std::make_unique<TensorBoardWriter>(tensorboard_dir);
    log::info("TensorBoard events go to {}", tensorboard_->path());
  }
}

MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::write(nlohmann::json record) {
  out_ << record.dump() << "\n";
  out_.flush();
  if (!out_) log::warn("could not write to '{}'", path_);
  if (tensorboard_) tensorboard_->write(record);
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[96];
  std::snprintf(out, sizeof(out), "%.*s.%06lld+00:00", static_cast<int>(n), buf, static_cast<long long>(micros));
  return out;
}

}  // namespace plm::train
