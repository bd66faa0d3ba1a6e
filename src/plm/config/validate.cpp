#include "plm/config/validate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <initializer_list>

namespace plm::config {
namespace {

class Checker {
 public:
  explicit Checker(const Loaded& loaded) : loaded_(loaded) {}

  void require(bool ok, const std::string& path, const std::string& what) {
    if (!ok) errors.push_back(loaded_.source.where(path) + ": key '" + path + "' " + what + ".");
  }
  void one_of(const std::string& value, const std::string& path, std::initializer_list<const char*> allowed) {
    std::string list;
    for (const char* a : allowed) {
      if (value == a) return;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    require(false, path, "is '" + value + "' but must be one of: " + list);
  }
  template <class T>
  void at_least(T value, T min, const std::string& path) {
    require(value >= min, path, "must be at least " + std::to_string(min) + ", got " + std::to_string(value));
  }
  // An upper bound with its reason: a value that validates must not then exhaust memory or threads.
  void at_most(int64_t value, int64_t max, const std::string& path, const std::string& why) {
    require(value <= max, path,
            "is " + std::to_string(value) + ", more than " + std::to_string(max) + " (" + why + ")");
  }
  void finite(double value, const std::string& path) {
    require(std::isfinite(value), path, "must be a finite number, got " + std::to_string(value));
  }

  std::vector<std::string> errors;

 private:
  const Loaded& loaded_;
};

// Upper bounds far above any PLM (8B: dim 4096, 32 layers, 11,520 tokens, PE-G width 1536, 50 layers) and below
// what would make set-up allocate without bound (RoPE tables and masks scale with max_seqlen, blocks with layers).
constexpr int64_t kMaxWidth = 1 << 16, kMaxLayers = 1 << 10, kMaxSeqlen = 1 << 20, kMaxVocab = 1 << 24;

void check_model(const ModelArgs& m, Checker& c) {
  c.at_least<int64_t>(m.dim, 1, "model.dim");
  c.at_least<int64_t>(m.n_layers, 1, "model.n_layers");
  c.at_most(m.dim, kMaxWidth, "model.dim", "the largest Llama 3 has 16384");
  c.at_most(m.n_layers, kMaxLayers, "model.n_layers", "the largest Llama 3 has 126");
  c.at_most(m.max_seqlen, kMaxSeqlen, "model.max_seqlen", "RoPE tables and attention masks are sized by it");
  c.at_most(m.vocab_size, kMaxVocab, "model.vocab_size", "Llama 3's is 128256");
  c.finite(m.norm_eps, "model.norm_eps");
  c.finite(m.rope_theta, "model.rope_theta");
  c.require(m.n_heads || m.head_dim, "model.n_heads", "or model.head_dim must be set");
  const int64_t heads = m.n_heads.value_or(m.head_dim && *m.head_dim > 0 ? m.dim / *m.head_dim : 0);
  if (m.n_heads) c.at_least<int64_t>(*m.n_heads, 1, "model.n_heads");
  if (heads > 0 && !m.head_dim) c.require(m.dim % heads == 0, "model.n_heads", "must divide model.dim");
  if (heads > 0 && m.n_kv_heads) {
    c.at_least<int64_t>(*m.n_kv_heads, 1, "model.n_kv_heads");
    if (*m.n_kv_heads > 0) c.require(heads % *m.n_kv_heads == 0, "model.n_kv_heads", "must divide the number of heads");
  }
  c.at_least<int64_t>(m.multiple_of, 1, "model.multiple_of");
  c.require(m.norm_eps > 0, "model.norm_eps", "must be positive");
  c.require(m.rope_theta > 0, "model.rope_theta", "must be positive");
  c.at_least<int64_t>(m.rope_scale_factor, 1, "model.rope_scale_factor");
  c.require(m.high_freq_factor > m.low_freq_factor, "model.high_freq_factor",
            "must be larger than model.low_freq_factor");
  c.one_of(m.init_std_factor, "model.init_std_factor", {"disabled", "global_depth", "current_depth", "dim_ratio"});
  c.at_least<int64_t>(m.max_seqlen, 1, "model.max_seqlen");
  c.require(m.vocab_size > 0 || m.vocab_size == -1, "model.vocab_size",
            "must be the tokenizer's vocabulary size (128256 for Llama 3), or -1 to take it from the tokenizer");
  c.require(!m.sliding_window, "model.sliding_window", "must be null: PLM uses full causal attention");
  c.one_of(m.attn_impl, "model.attn_impl", {"sdpa", "flex_attention", "fmha"});
  c.at_least<int64_t>(m.pooling_ratio, 1, "model.pooling_ratio");
  if (m.lora) {
    c.at_least<int64_t>(m.lora->rank, 1, "model.lora.rank");
    c.at_most(m.lora->rank, kMaxWidth, "model.lora.rank", "adapters are rank x width");
    c.finite(m.lora->alpha, "model.lora.alpha");
    c.require(m.lora->dropout >= 0 && m.lora->dropout < 1, "model.lora.dropout", "must be in [0, 1)");
    c.require(!m.lora->targets.empty(), "model.lora.targets", "must name at least one linear (e.g. wq,wv)");
    c.one_of(m.lora->init, "model.lora.init", {"peft"});
  }
  if (!m.vision_model) return;
  const VisionModelArgs& v = *m.vision_model;
  c.at_most(v.width, kMaxWidth, "model.vision_model.width", "PE-G's is 1536");
  c.at_most(v.layers, kMaxLayers, "model.vision_model.layers", "PE-G has 50");
  c.at_most(v.image_size, 1 << 14, "model.vision_model.image_size", "PE's tiles are 448");
  c.at_least<int64_t>(v.patch_size, 1, "model.vision_model.patch_size");
  c.at_least<int64_t>(v.width, 1, "model.vision_model.width");
  c.at_least<int64_t>(v.layers, 1, "model.vision_model.layers");
  c.at_least<int64_t>(v.heads, 1, "model.vision_model.heads");
  c.require(v.mlp_ratio > 0, "model.vision_model.mlp_ratio", "must be positive");
  if (v.heads > 0) c.require(v.width % v.heads == 0, "model.vision_model.heads", "must divide the width");
  if (v.patch_size > 0) {
    c.require(v.image_size > 0 && v.image_size % v.patch_size == 0, "model.vision_model.image_size",
              "must be a positive multiple of patch_size");
    const int64_t grid = v.image_size / v.patch_size;
    if (m.pooling_ratio > 0)
      c.require(grid % m.pooling_ratio == 0, "model.pooling_ratio",
                "must divide the patch grid side (" + std::to_string(grid) + ")");
  }
  c.require(v.drop_path >= 0 && v.drop_path < 1, "model.vision_model.drop_path", "must be in [0, 1)");
  c.one_of(v.pool_type, "model.vision_model.pool_type", {"none"});
}

void check_data(const DataArgs& d, Checker& c) {
  try {
    parse_datamix(d.datamix);
  } catch (const ConfigError& e) {
    c.require(false, "data.datamix", e.what());
  }
  c.at_least<int64_t>(d.batch_size, 1, "data.batch_size");
  c.at_most(d.batch_size, 1 << 20, "data.batch_size", "samples per rank per micro-batch");
  if (d.image_res) c.at_least<int64_t>(*d.image_res, 1, "data.image_res");
  if (d.image_res) c.at_most(*d.image_res, 1 << 14, "data.image_res", "PLM's tiles are 448");
  if (d.max_num_tiles) c.at_least<int64_t>(*d.max_num_tiles, 1, "data.max_num_tiles");
  if (d.max_num_tiles) c.at_most(*d.max_num_tiles, 1024, "data.max_num_tiles", "PLM's stage 3 uses 36");
  if (d.num_workers) c.at_least<int64_t>(*d.num_workers, 0, "data.num_workers");
  if (d.num_workers) c.at_most(*d.num_workers, 1024, "data.num_workers", "one thread each, each with its buffers");
  if (d.max_video_frames) c.at_least<int64_t>(*d.max_video_frames, 1, "data.max_video_frames");
  if (d.max_video_frames) c.at_most(*d.max_video_frames, 1 << 14, "data.max_video_frames", "PLM's stage 3 uses 32");
  if (d.vision_input_type) c.one_of(*d.vision_input_type, "data.vision_input_type", {"vanilla", "thumb+tile"});
  if (d.tokenizer_name) c.one_of(*d.tokenizer_name, "data.tokenizer_name", {"plmchat", "llama3"});
  c.at_least<int64_t>(d.prefetch_batches, 1, "data.prefetch_batches");
  c.at_most(d.prefetch_batches, 1024, "data.prefetch_batches", "each is a whole batch held in memory");
  if (d.conversation_format) c.one_of(*d.conversation_format, "data.conversation_format", {"plm_sft", "warmup"});
  c.at_least<int64_t>(d.max_video_decode_frames, 0, "data.max_video_decode_frames");
  c.at_least<int64_t>(d.global_batch_size, 0, "data.global_batch_size");
  c.one_of(d.long_video_policy, "data.long_video_policy", {"decode", "skip"});
}

void check_optim(const OptimArgs& o, Checker& c) {
  for (const auto& [value, key] : {std::pair{o.lr, "optim.lr"},
                                   {o.weight_decay, "optim.weight_decay"},
                                   {o.epsilon, "optim.epsilon"},
                                   {o.clip, "optim.clip"},
                                   {o.lr_min_ratio, "optim.lr_min_ratio"},
                                   {o.cycle_length, "optim.cycle_length"}})
    c.finite(value, key);
  c.require(o.lr >= 0, "optim.lr", "must not be negative");
  c.require(o.weight_decay >= 0, "optim.weight_decay", "must not be negative");
  c.require(o.epsilon > 0, "optim.epsilon", "must be positive");
  c.require(o.beta1 >= 0 && o.beta1 < 1, "optim.beta1", "must be in [0, 1)");
  c.require(o.beta2 >= 0 && o.beta2 < 1, "optim.beta2", "must be in [0, 1)");
  c.require(o.clip >= 0, "optim.clip", "must not be negative (0 disables clipping)");
  c.one_of(o.scheduler, "optim.scheduler", {"cosine", "constant", "linear", "inv_sqrt", "wsd"});
  c.at_least<int64_t>(o.warmup, 0, "optim.warmup");
  c.require(o.lr_min_ratio >= 0 && o.lr_min_ratio <= 1, "optim.lr_min_ratio", "must be in [0, 1]");
  c.require(o.cycle_length > 0, "optim.cycle_length", "must be positive");
  c.require(o.decay_fraction >= 0 && o.decay_fraction <= 1, "optim.decay_fraction", "must be in [0, 1]");
}

void check_distributed(const DistributedArgs& d, Checker& c) {
  c.at_least<int64_t>(d.dp_shard, 1, "distributed.dp_shard");
  c.at_least<int64_t>(d.dp_replicate, 1, "distributed.dp_replicate");
  c.require(d.tp_size == 1, "distributed.tp_size",
            "must be 1: tensor parallelism is not supported (PLM's recipes use 1; shard with fsdp_type full_shard)");
  c.at_least<int64_t>(d.timeout_s, 1, "distributed.timeout_s");
}

}  // namespace

std::vector<std::pair<std::string, double>> parse_datamix(const std::string& datamix) {
  std::string text;
  for (char ch : datamix)
    if (!std::isspace(static_cast<unsigned char>(ch))) text += ch;
  std::vector<std::pair<std::string, double>> mix;
  double total = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string entry = text.substr(start, comma - start);
    start = comma + 1;
    const size_t colon = entry.rfind(':');
    if (entry.empty() || colon == std::string::npos || colon == 0)
      throw ConfigError("has entry '" + entry + "', which is not of the form name:weight");
    const std::string name = entry.substr(0, colon), weight_text = entry.substr(colon + 1);
    char* end = nullptr;
    const double weight = std::strtod(weight_text.c_str(), &end);
    if (weight_text.empty() || *end != '\0')
      throw ConfigError("has entry '" + entry + "' whose weight '" + weight_text + "' is not a number");
    if (!(weight > 0)) throw ConfigError("has entry '" + entry + "' whose weight is not positive");
    for (const auto& [n, w] : mix)
      if (n == name) throw ConfigError("names dataset '" + name + "' twice");
    mix.emplace_back(name, weight);
    total += weight;
    if (comma == text.size()) break;
  }
  for (auto& [n, w] : mix) w /= total;
  return mix;
}

std::vector<std::string> validate(const Loaded& loaded) {
  const TrainArgs& a = loaded.args;
  Checker c(loaded);
  c.require(!a.name.empty(), "name", "must not be empty");
  c.require(!a.dump_dir.empty(), "dump_dir", "must be set: it is where logs, metrics and checkpoints go");
  c.at_least<int64_t>(a.steps, 1, "steps");
  c.at_least<int64_t>(a.grad_acc_steps, 1, "grad_acc_steps");
  check_model(a.model, c);
  check_data(a.data, c);
  check_optim(a.optim, c);
  check_distributed(a.distributed, c);
  c.require(a.data.packing != Packing::tokens || a.optim.loss_normalization == LossNormalization::global_tokens,
            "data.packing",
            "is tokens, which needs optim.loss_normalization: global_tokens (micro-batches hold different numbers of "
            "samples, so only the step's token mean weighs every sample alike)");
  c.at_least<int64_t>(a.checkpoint.dump.every, 1, "checkpoint.dump.every");
  c.at_least<int64_t>(a.checkpoint.dump.keep, 0, "checkpoint.dump.keep");
  c.at_least<int64_t>(a.checkpoint.eval.every, 1, "checkpoint.eval.every");
  c.at_least<int64_t>(a.checkpoint.eval.keep, 0, "checkpoint.eval.keep");
  c.at_least<int64_t>(a.logging.freq, 1, "logging.freq");
  if (a.logging.acc_freq) c.at_least<int64_t>(*a.logging.acc_freq, 1, "logging.acc_freq");
  if (const auto& p = a.profiling; p.run) {  // xformers' profiler asserts the same of its schedule
    c.at_least<int64_t>(p.mem_warmup, 0, "profiling.mem_warmup");
    c.at_least<int64_t>(p.mem_steps, 1, "profiling.mem_steps");
    c.at_least<int64_t>(p.profile_warmup, 0, "profiling.profile_warmup");
    c.at_least<int64_t>(p.profile_steps, 1, "profiling.profile_steps");
    c.require(p.mem_warmup + p.mem_steps <= p.profile_warmup || p.profile_warmup + p.profile_steps <= p.mem_warmup,
              "profiling.profile_warmup",
              "(with profile_steps) puts the trace window over the memory window (mem_warmup, mem_steps); the "
              "two may not overlap (each would distort the other, and PLM's profiler refuses it): move one");
    c.require(!p.trace_folder.empty(), "profiling.trace_folder", "must not be empty");
  }
  c.one_of(a.logging.level, "logging.level",
           {"NOTSET", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"});
  return c.errors;
}

}  // namespace plm::config
