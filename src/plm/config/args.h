// Typed training configuration: one struct per section of PLM's TrainArgs (docs/reference.md 5),
// with PLM's defaults. Field names are PLM's YAML keys, so a PLM recipe reads unchanged.
//
// Every struct lists its fields once, in `visit(v)`; loading, printing and key suggestions are all
// generic over that list (config/load.h, config/emit.h). A field passed with a third argument is
// accepted for compatibility with PLM's YAML but not used by this build; the argument says why.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace plm::config {

/// A value kept verbatim (PLM types it as Any): accepted, printed back, never interpreted.
struct Opaque {
  YAML::Node node;  // null when unset
};

// Closed choices: a string in the YAML (PLM's spelling), an enum in the code, parsed once when the config loads
// (an unknown name is a load error naming the key and the choices). `names_of(E{})` lists the names in the
// enumerators' order; loading, printing and params.json go through it.
enum class FsdpType { no_shard, full_shard };
enum class ModelDtype { bf16, fp16, fp32 };
enum class Device { auto_, cpu, cuda };
enum class LossNormalization { reference, global_tokens };
enum class NanPolicy { abort, skip };
enum class Packing { none, samples, tokens };

inline const std::vector<const char*>& names_of(FsdpType) {
  static const std::vector<const char*> names{"no_shard", "full_shard"};
  return names;
}
inline const std::vector<const char*>& names_of(ModelDtype) {
  static const std::vector<const char*> names{"bf16", "fp16", "fp32"};
  return names;
}
inline const std::vector<const char*>& names_of(Device) {
  static const std::vector<const char*> names{"auto", "cpu", "cuda"};
  return names;
}
inline const std::vector<const char*>& names_of(LossNormalization) {
  static const std::vector<const char*> names{"reference", "global_tokens"};
  return names;
}
inline const std::vector<const char*>& names_of(NanPolicy) {
  static const std::vector<const char*> names{"abort", "skip"};
  return names;
}
inline const std::vector<const char*>& names_of(Packing) {
  static const std::vector<const char*> names{"none", "samples", "tokens"};
  return names;
}

/// The YAML spelling of a choice.
template <class E>
const char* name_of(E e) {
  return names_of(E{})[static_cast<size_t>(e)];
}

/// `model.vision_model`: the Perception Encoder's constructor arguments [core/vision_encoder/pe.py].
/// patch_size, width, layers, heads and mlp_ratio have no default there and are required here.
struct VisionModelArgs {
  int64_t image_size = 448;
  int64_t patch_size = 0;
  int64_t width = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  double mlp_ratio = 0.0;
  bool use_cls_token = false;
  bool use_abs_posemb = true;
  bool use_rope2d = true;
  bool use_ln_pre = true;
  bool use_ln_post = true;
  std::optional<double> ls_init_value;  // LayerScale init; null = no LayerScale
  double drop_path = 0.0;
  std::string pool_type = "attn";  // PLM recipes set "none"
  int64_t attn_pooler_heads = 8;

  template <class V>
  void visit(V& v) {
    v("image_size", image_size);
    v("patch_size", patch_size);
    v("width", width);
    v("layers", layers);
    v("heads", heads);
    v("mlp_ratio", mlp_ratio);
    v("use_cls_token", use_cls_token);
    v("use_abs_posemb", use_abs_posemb);
    v("use_rope2d", use_rope2d);
    v("use_ln_pre", use_ln_pre);
    v("use_ln_post", use_ln_post);
    v("ls_init_value", ls_init_value);
    v("drop_path", drop_path);
    v("pool_type", pool_type);
    v("attn_pooler_heads", attn_pooler_heads, "PLM uses pool_type none, so there is no attention pooler");
  }
};

/// `model.lora` (plm's own; PLM has no LoRA): low-rank adapters on chosen linears (model/lora.h, docs/lora.md). The
/// base weights freeze; only the adapters train. Null = off; setting any key turns it on.
struct LoraArgs {
  int64_t rank = 8;
  double alpha = 16.0;                           // scale = alpha / rank, as PEFT's lora_alpha
  double dropout = 0.0;                          // on the adapter's input, as PEFT's lora_dropout
  std::string targets = "wq,wk,wv,wo,w1,w2,w3";  // comma-separated module-name patterns (model/lora.h)
  std::string init = "peft";  // A Kaiming-uniform (a = sqrt(5)), B zero: PEFT's init_lora_weights=True

  template <class V>
  void visit(V& v) {
    v("rank", rank);
    v("alpha", alpha);
    v("dropout", dropout);
    v("targets", targets);
    v("init", init);
  }
};

/// `model.mlp_init`: projector init [core/utils.py InitArgs]. std = 1/sqrt(dim), times coeff_std when set.
struct InitArgs {
  bool use_gaussian = true;  // truncated normal (true) or uniform (false)
  std::optional<double> coeff_std;
  bool no_init = false;

  template <class V>
  void visit(V& v) {
    v("use_gaussian", use_gaussian);
    v("coeff_std", coeff_std);
    v("no_init", no_init);
  }
};

/// `model`: the Llama 3 decoder, the projector and the vision tower
/// [apps/plm/transformer.py LMTransformerArgs, core/transformer.py BaseTransformerArgs].
struct ModelArgs {
  int64_t dim = 512;
  int64_t n_layers = 8;
  std::optional<int64_t> head_dim;    // default dim / n_heads
  std::optional<int64_t> n_heads;     // default dim / head_dim
  std::optional<int64_t> n_kv_heads;  // default n_heads
  std::optional<double> ffn_dim_multiplier;
  int64_t multiple_of = 256;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  int64_t old_context_len = 8192;
  int64_t rope_scale_factor = 1;  // 1 = no Llama-3 frequency scaling
  int64_t low_freq_factor = 1;
  int64_t high_freq_factor = 32;
  std::optional<double> init_base_std;
  std::string init_std_factor = "disabled";
  int64_t max_seqlen = 1024;
  int64_t seed = 42;
  int64_t vocab_size = -1;
  bool weight_tying = false;
  std::optional<int64_t> sliding_window;
  bool freeze_language_model = false;
  bool freeze_vision_model = false;
  std::optional<VisionModelArgs> vision_model;  // null = text-only decoder
  InitArgs mlp_init;
  std::optional<LoraArgs> lora;  // null = no adapters
  int64_t pooling_ratio = 1;
  bool remove_vision_class_token = true;
  std::string attn_impl = "sdpa";

  template <class V>
  void visit(V& v) {
    v("dim", dim);
    v("n_layers", n_layers);
    v("head_dim", head_dim);
    v("n_heads", n_heads);
    v("n_kv_heads", n_kv_heads);
    v("ffn_dim_multiplier", ffn_dim_multiplier);
    v("multiple_of", multiple_of);
    v("norm_eps", norm_eps);
    v("rope_theta", rope_theta);
    v("old_context_len", old_context_len);
    v("rope_scale_factor", rope_scale_factor);
    v("low_freq_factor", low_freq_factor);
    v("high_freq_factor", high_freq_factor);
    v("init_base_std", init_base_std);
    v("init_std_factor", init_std_factor);
    v("max_seqlen", max_seqlen);
    v("seed", seed);
    v("vocab_size", vocab_size);
    v("weight_tying", weight_tying);
    v("sliding_window", sliding_window);
    v("freeze_language_model", freeze_language_model);
    v("freeze_vision_model", freeze_vision_model);
    v("vision_model", vision_model);
    v("mlp_init", mlp_init);
    v("lora", lora);
    v("pooling_ratio", pooling_ratio);
    v("remove_vision_class_token", remove_vision_class_token,
      "stored but never read by PLM's projector either: the vision tower drops the CLS row itself");
    v("attn_impl", attn_impl, "attention always runs through at::scaled_dot_product_attention");
  }
};

/// `data` [core/data/dataloader.py DataloadArgs]. Optional fields are null in PLM's defaults and are
/// set by every stage recipe.
struct DataArgs {
  std::string datamix =
      "dummy_image:1,dummy_multi_image:1,dummy_image_region:1,dummy_video:1,dummy_text:1,"
      "dummy_stc_RDCap:1,dummy_stc_RCap:1,dummy_stc_RTLoc:1";
  int64_t batch_size = 2;  // per rank
  int64_t seed = 42;
  std::optional<int64_t> image_res;
  std::optional<int64_t> max_num_tiles;
  std::optional<std::string> vision_input_type;  // "vanilla" or "thumb+tile"
  std::optional<int64_t> num_workers;
  std::optional<std::string> tokenizer_path;
  std::optional<std::string> tokenizer_name;       // "plmchat" or "llama3"
  std::optional<std::string> conversation_format;  // "plm_sft" or "warmup"
  std::optional<int64_t> patch_size;
  std::optional<int64_t> seq_len;
  std::optional<int64_t> max_video_frames;
  bool show_first_batch = false;
  // plm's additions to PLM's DataloadArgs:
  std::string registry = "configs/datasets.yaml";  // the dataset registry (PLM hard-codes its own file)
  bool pad_to_longest = false;                     // pad batches to their longest sample, not model.max_seqlen
  // samples: each training micro-batch's samples laid into as few rows of model.max_seqlen as hold them, each
  // attending only to itself (data/packing.h); the loss is the unpacked batch's. tokens: each micro-batch takes
  // this rank's next samples while they fit data.batch_size packed rows, so samples per step vary (needs
  // optim.loss_normalization: global_tokens). Validation stays unpacked.
  Packing packing = Packing::none;
  bool strict = false;           // a sample that cannot be used stops the run instead of being skipped
  int64_t prefetch_batches = 4;  // batches decoded ahead of the trainer
  // Refuse media paths that resolve (symlinks followed) outside the dataset's root_dir, e.g. "../../etc/x" or an
  // absolute path. Off by default, as in PLM: its datasets may hold absolute paths, which os.path.join keeps.
  bool confine_media_to_root = false;
  // A video whose sampled frames need more than this many frames decoded (its packets are scanned first: long
  // videos, or few keyframes), or whose container declares another frame count than it holds, is named in the log
  // before it is decoded, then decoded (long_video_policy: decode) or skipped as "too_long" / "frame_count_mismatch"
  // (skip). 0: no bound.
  int64_t max_video_decode_frames = 10000;
  // The global batch (samples per optimizer step over all ranks); when set, data.batch_size is derived from it as
  // global / (ranks x grad_acc_steps), so a run restarted on fewer or more ranks keeps its batch, data order and
  // losses. 0: off (data.batch_size is per rank, as in PLM).
  int64_t global_batch_size = 0;
  std::string long_video_policy = "decode";
  std::string val_datamix;      // held-out "name:weight,..." (data.registry) for the validation loss; "" = off
  int64_t val_max_batches = 8;  // batches per validation (every checkpoint.eval.every steps and at the end)

  template <class V>
  void visit(V& v) {
    v("datamix", datamix);
    v("batch_size", batch_size);
    v("seed", seed);
    v("image_res", image_res);
    v("max_num_tiles", max_num_tiles);
    v("vision_input_type", vision_input_type);
    v("num_workers", num_workers);
    v("tokenizer_path", tokenizer_path);
    v("tokenizer_name", tokenizer_name);  // not read: the kind comes from the tokenizer file (PLM's recipes set it)
    v("conversation_format", conversation_format);
    v("patch_size", patch_size, "unused in PLM too: the patch size comes from model.vision_model.patch_size");
    v("seq_len", seq_len, "unused in PLM too: the sequence length comes from model.max_seqlen");
    v("max_video_frames", max_video_frames);
    v("show_first_batch", show_first_batch);
    v("registry", registry);
    v("pad_to_longest", pad_to_longest);
    v("packing", packing);
    v("strict", strict);
    v("prefetch_batches", prefetch_batches);
    v("confine_media_to_root", confine_media_to_root);
    v("max_video_decode_frames", max_video_decode_frames);
    v("global_batch_size", global_batch_size);
    v("long_video_policy", long_video_policy);
    v("val_datamix", val_datamix);
    v("val_max_batches", val_max_batches);
  }
};

/// `optim` [core/optim.py OptimArgs]: AdamW plus the LR schedule.
struct OptimArgs {
  double lr = 3e-4;
  double weight_decay = 0.1;
  double epsilon = 1e-8;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double clip = 1.0;  // max global grad norm; 0 disables clipping
  std::string scheduler = "cosine";
  int64_t warmup = 2000;
  double lr_min_ratio = 0.1;
  double cycle_length = 1.0;
  double cosine_theta = 1.0;
  int64_t annealing_step = 10000;
  double decay_fraction = 0.1;
  double exp_factor = 0.5;
  // plm's additions to PLM's OptimArgs:
  // reference: per-rank token mean / grad_acc_steps (PLM); global_tokens: sum over the whole step / its loss tokens
  LossNormalization loss_normalization = LossNormalization::reference;
  bool decay_norms_and_biases = true;       // false exempts 1-D tensors (norms, biases, LayerScale) from decay
  NanPolicy nan_policy = NanPolicy::abort;  // a non-finite loss or grad norm: abort, or skip the update

  template <class V>
  void visit(V& v) {
    v("lr", lr);
    v("weight_decay", weight_decay);
    v("epsilon", epsilon);
    v("beta1", beta1);
    v("beta2", beta2);
    v("clip", clip);
    v("scheduler", scheduler);
    v("warmup", warmup);
    v("lr_min_ratio", lr_min_ratio);
    v("cycle_length", cycle_length);
    v("cosine_theta", cosine_theta);
    v("annealing_step", annealing_step, "declared but unused by PLM's schedulers too");
    v("decay_fraction", decay_fraction);
    v("exp_factor", exp_factor);
    v("loss_normalization", loss_normalization);
    v("decay_norms_and_biases", decay_norms_and_biases);
    v("nan_policy", nan_policy);
  }
};

/// `distributed` [core/distributed.py DistributedArgs].
struct DistributedArgs {
  int64_t dp_shard = 1;
  int64_t dp_replicate = 1;
  int64_t tp_size = 1;
  bool selective_activation_checkpointing = false;
  bool full_activation_checkpointing = false;
  bool compile = false;
  FsdpType fsdp_type = FsdpType::no_shard;
  ModelDtype model_dtype = ModelDtype::bf16;
  bool matmul_allow_tf32 = false;
  bool detect_anomaly = false;
  int64_t compile_cache_size_limit = 8;
  std::string spawn_method = "forkserver";
  // plm addition: seconds the rendezvous and each collective wait for the other ranks before failing with a message
  // naming the rank that stopped (PLM relies on NCCL's default timeout).
  int64_t timeout_s = 600;
  // plm addition: where training runs: auto (CUDA device LOCAL_RANK when plm is built with CUDA and a GPU is
  // visible, else the CPU), cpu or cuda.
  Device device = Device::auto_;

  template <class V>
  void visit(V& v) {
    v("dp_shard", dp_shard);
    v("dp_replicate", dp_replicate, "recomputed as world size / dp_shard, as PLM does");
    v("tp_size", tp_size);
    v("selective_activation_checkpointing", selective_activation_checkpointing,
      "not implemented: PLM's recipes use full_activation_checkpointing");
    v("full_activation_checkpointing", full_activation_checkpointing);
    v("compile", compile, "torch.compile is Python-only; plm runs eager ATen kernels");
    v("fsdp_type", fsdp_type);
    v("model_dtype", model_dtype);
    v("matmul_allow_tf32", matmul_allow_tf32);
    v("detect_anomaly", detect_anomaly);
    v("compile_cache_size_limit", compile_cache_size_limit, "torch.compile is Python-only");
    v("spawn_method", spawn_method, "plm's data workers are threads, not Python processes");
    v("timeout_s", timeout_s);
    v("device", device);
  }
};

/// `env` [core/distributed.py EnvironmentArgs]: exported before start-up unless already set.
struct EnvironmentArgs {
  std::string MKL_SERVICE_FORCE_INTEL = "GNU";
  std::string OMP_NUM_THREADS = "1";
  std::string MKL_NUM_THREADS = "1";
  std::string ENABLE_INTRA_NODE_COMM = "0";
  std::string TORCH_NCCL_AVOID_RECORD_STREAMS = "1";
  std::string NCCL_IB_TIMEOUT = "22";
  std::string NCCL_DEBUG = "WARN";
  std::string TORCH_NCCL_ASYNC_ERROR_HANDLING = "1";
  std::string PYTORCH_CUDA_ALLOC_CONF = "expandable_segments:True";

  template <class V>
  void visit(V& v) {
    v("MKL_SERVICE_FORCE_INTEL", MKL_SERVICE_FORCE_INTEL);
    v("OMP_NUM_THREADS", OMP_NUM_THREADS);
    v("MKL_NUM_THREADS", MKL_NUM_THREADS);
    v("ENABLE_INTRA_NODE_COMM", ENABLE_INTRA_NODE_COMM);
    v("TORCH_NCCL_AVOID_RECORD_STREAMS", TORCH_NCCL_AVOID_RECORD_STREAMS);
    v("NCCL_IB_TIMEOUT", NCCL_IB_TIMEOUT);
    v("NCCL_DEBUG", NCCL_DEBUG);
    v("TORCH_NCCL_ASYNC_ERROR_HANDLING", TORCH_NCCL_ASYNC_ERROR_HANDLING);
    v("PYTORCH_CUDA_ALLOC_CONF", PYTORCH_CUDA_ALLOC_CONF);
  }
};

/// `checkpoint.dump` / `checkpoint.eval` [core/checkpoint.py SaveEvery].
struct SaveEvery {
  int64_t every = 1000;  // save when step % every == 0
  int64_t keep = 0;      // keep the newest `keep` such checkpoints; 0 = keep all

  template <class V>
  void visit(V& v) {
    v("every", every);
    v("keep", keep);
  }
};

/// `checkpoint` [core/checkpoint.py CheckpointArgs].
struct CheckpointArgs {
  SaveEvery dump;
  SaveEvery eval;
  std::optional<std::string> path;  // default dump_dir/checkpoints
  std::optional<std::string> init_ckpt_path;
  std::optional<std::string> vision_model_path;
  bool is_consolidated_model = false;
  bool continue_training_from_init = false;
  // plm's addition: when step folders exist and none verifies, start from step 0 (they are moved aside, kept)
  // instead of refusing to start (ckpt/checkpoint_store.h newest_complete).
  bool restart_when_damaged = false;

  template <class V>
  void visit(V& v) {
    v("dump", dump);
    v("eval", eval);
    v("path", path);
    v("init_ckpt_path", init_ckpt_path);
    v("vision_model_path", vision_model_path);
    v("is_consolidated_model", is_consolidated_model);  // not read: the folder's files say its kind
    v("continue_training_from_init", continue_training_from_init, "declared but unused in PLM too");
    v("restart_when_damaged", restart_when_damaged);
  }
};

/// `logging` [core/metrics.py LoggingArgs].
struct LoggingArgs {
  int64_t freq = 10;  // log metrics every `freq` optimizer steps
  std::string level = "INFO";
  // Also log inside accumulation windows, every `acc_freq` micro-batches of the steps that `freq` selects
  // (PLM's every_n_steps: step % freq == 0 and acc_step % acc_freq == 0).
  std::optional<int64_t> acc_freq;
  Opaque wandb;
  // plm's addition: the peak FLOP/s per device that MFU divides by, in TFLOP/s (default: a matrix-multiply rate
  // measured at start-up).
  std::optional<double> peak_tflops;
  // plm's addition: also write the records as TensorBoard event files in dump_dir/tensorboard/ (train/tensorboard.h).
  bool tensorboard = false;

  template <class V>
  void visit(V& v) {
    v("freq", freq);
    v("level", level);
    v("acc_freq", acc_freq);
    v("wandb", wandb, "there is no wandb client; metrics go to dump_dir/metrics.jsonl");
    v("peak_tflops", peak_tflops);
    v("tensorboard", tensorboard);
  }
};

/// `profiling` [core/profiling.py ProfilerArgs]: a Kineto trace and a CUDA memory snapshot of the micro-batches
/// its two windows select (train/profiler.h says which, and where the files go).
struct ProfilerArgs {
  bool run = false;
  std::string trace_folder = "profiling";
  int64_t mem_warmup = 100;
  int64_t mem_steps = 2;
  int64_t profile_warmup = 102;
  int64_t profile_steps = 2;

  template <class V>
  void visit(V& v) {
    v("run", run);
    v("trace_folder", trace_folder);
    v("mem_warmup", mem_warmup);
    v("mem_steps", mem_steps);
    v("profile_warmup", profile_warmup);
    v("profile_steps", profile_steps);
  }
};

/// The whole run [apps/plm/train.py TrainArgs].
struct TrainArgs {
  std::string name = "plm";
  std::string dump_dir;
  int64_t seed = 42;
  int64_t grad_acc_steps = 1;
  int64_t gc_collect_freq = 1000;
  std::optional<int64_t> probe_freq;
  int64_t steps = 1000;  // optimizer steps
  DataArgs data;
  OptimArgs optim;
  ModelArgs model;
  DistributedArgs distributed;
  EnvironmentArgs env;
  CheckpointArgs checkpoint;
  ProfilerArgs profiling;
  LoggingArgs logging;
  std::optional<int64_t> async_eval_gpus;
  Opaque eval;

  template <class V>
  void visit(V& v) {
    v("name", name);
    v("dump_dir", dump_dir);
    v("seed", seed);
    v("grad_acc_steps", grad_acc_steps);
    v("gc_collect_freq", gc_collect_freq, "there is no Python garbage collector to run");
    v("probe_freq", probe_freq, "activation probes are not implemented");
    v("steps", steps);
    v("data", data);
    v("optim", optim);
    v("model", model);
    v("distributed", distributed);
    v("env", env);
    v("checkpoint", checkpoint);
    v("profiling", profiling);
    v("logging", logging);
    v("async_eval_gpus", async_eval_gpus, "unused by PLM's trainer too");
    v("eval", eval, "unused by PLM's trainer too");
  }
};

}  // namespace plm::config
