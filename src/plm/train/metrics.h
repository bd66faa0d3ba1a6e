// What the trainer measures and reports (docs/reference.md 5.5 plus MFU): the FLOP model, the device's peak, memory,
// and the dump_dir/metrics.jsonl writer.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "plm/model/perception_lm.h"

namespace plm::train {

/// Model FLOPs of one training step, counted from the shapes that were computed:
/// - decoder, per token: m * N_blocks + m * 2 * L * H * hd * S, where N_blocks counts the blocks' and final norm's
///   weights (the embedding is a lookup), S = the row length, and the attention term is torchtitan's
///   12 * L * H * hd * S at m = 6;
/// - output layer: m * V * dim per loss token (plm applies it only where the loss is taken);
/// - vision tower, per tile of T tokens (patches + CLS): m * N_vis * T + m * 2 * L_v * width * T^2 (bidirectional
///   attention, as torchtitan counts it);
/// - projector, per tile: 6 * N_proj * T' (both linears run on every patch token T', before pooling).
/// m = 6 for a trained part, 4 for a frozen part that gradients pass through (the decoder at stage 1: the projector
/// below it trains), 2 for a frozen part with nothing trainable below it (the vision tower at stage 1). PLM's own
/// `speed/FLOPS` uses 6 * (N - V * dim) + 3.5 * (4 * L * S * dim // 2) per token for every part; we report both.
class FlopCounter {
 public:
  explicit FlopCounter(const model::PerceptionLMImpl& model);
  /// FLOPs of a micro-batch that computed `tokens` decoder positions in sequences whose lengths squared sum to
  /// `attended_pairs` (rows of length L: tokens x L; data::Batch::useful_tokens and attended_pairs), `loss_tokens`
  /// output positions and `tiles` vision tiles.
  double step_flops(int64_t tokens, int64_t attended_pairs, int64_t loss_tokens, int64_t tiles) const;
  /// PLM's flops_per_token (docs/reference.md 5.5) for rows of `seq_len`.
  double plm_flops_per_token(int64_t seq_len) const;

 private:
  double decoder_weights_ = 0, decoder_m_ = 6, attention_per_len_ = 0;
  double vision_per_tile_ = 0, all_params_ = 0, vocab_dim_ = 0, layers_dim_ = 0;
};

/// The peak FLOP/s MFU divides by: logging.peak_tflops when set, else measured at start-up in at most 1 s (GPU:
/// 2 s), announced in the log: the best rate of square matrix products in `dtype` (on a CPU also in fp32, which may
/// be what its 16-bit products run on) at sizes doubling up to 2048 (GPU: 8192) while the time allows. An
/// achievable rate, not a datasheet number; the trainer raises it to any higher rate the model reaches, so MFU
/// never exceeds 1. `source` says which.
double peak_flops(const std::optional<double>& configured_tflops, at::ScalarType dtype, at::Device device,
                  std::string* source);

/// PLM's memory fields, GiB. On a GPU: the CUDA caching allocator's peak active and reserved bytes since the
/// previous call (peaks are reset, as PLM does per logging window), the device's memory, allocation retries and
/// OOMs. On the CPU: the process's peak resident set as both active and reserved, for the whole run (RSS peaks
/// cannot be reset), and the machine's memory.
struct MemoryStats {
  double max_active_gib = 0, max_reserved_gib = 0, total_gib = 0;
  int64_t alloc_retries = 0, ooms = 0;
};
MemoryStats memory_stats(at::Device device);

/// What one metrics.jsonl record is computed from. The keys that bear the reference's names mean what its mean
/// (per GPU, rank 0's last micro-batch: docs/metrics.md defines every key); plm's own figures have their own names.
/// "Window" = since the previous record; rank 0 = the rank that writes the record.
struct MetricsInputs {
  int64_t step = 0, acc_step = 0, world_size = 1;
  double window_seconds = 0;
  int64_t rank0_tokens = 0;                          // decoder positions rank 0 computed in the window (padding too)
  int64_t tokens = 0, loss_tokens = 0, samples = 0;  // the window's, summed over ranks
  int64_t rows = 0, sample_tokens = 0;               // rows computed and the samples' tokens in them, all ranks
  double model_flops_per_device = 0;                 // the window's model FLOPs over all ranks / world_size
  double plm_flops_per_token = 0;                    // FlopCounter::plm_flops_per_token(max_seqlen)
  double window_data_seconds = 0;                    // rank 0's wait for batches in the window
  double last_micro_batch_seconds = 0;  // rank 0's last micro-batch: forward, backward and (at a step's end) update
  double last_micro_batch_data_seconds = 0;  // rank 0's wait for the last micro-batch
  // Rank 0's optimizer step that this record ends: compute, and the wait for its batches (none: the record is inside
  // an accumulation window, logging.acc_freq).
  std::optional<double> step_seconds, step_data_seconds;
  double grad_norm = 0, lr = 0;    // of the step this record ends; inside a window -1 (PLM's) and the next step's lr
  std::optional<double> loss_out;  // the last micro-batch's token-mean loss, averaged over the ranks that had loss
                                   // tokens in it (none: null)
  std::optional<double> loss_token_mean;   // the last step's loss, token-weighted over its micro-batches and ranks
                                           // (none: no loss tokens, or inside a window)
  int64_t micro_batches_done = 0;          // grad_acc_steps x step + acc_step
  int64_t batch_size = 0, max_seqlen = 0;  // per rank (data.batch_size), model.max_seqlen
  double peak_flops = 0;                   // 0: unknown (mfu null)
  MemoryStats memory;
};

/// The record of `in`: global_step, acc_step, speed/*, optim/*, memory/*, loss/* (without data/skipped/* and
/// created_at, which the trainer adds).
nlohmann::json metrics_record(const MetricsInputs& in);

class TensorBoardWriter;

/// Appends one JSON object per line to dump_dir/metrics.jsonl, flushed after each line (rank 0 only), and, given a
/// `tensorboard_dir`, the same record as a TensorBoard event there.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path, const std::string& tensorboard_dir = "");
  ~MetricsWriter();
  void write(nlohmann::json record);

 private:
  std::ofstream out_;
  std::string path_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

/// "2026-11-26T08:15:32.123456+00:00", as Python's datetime.now(timezone.utc).isoformat().
std::string utc_timestamp();

}  // namespace plm::train
