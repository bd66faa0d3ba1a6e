// The training data loader: the global sample stream (stream.h) sliced per rank, decoded by worker threads into a
// bounded prefetch, handed out as collated batches in order, with a state that resumes exactly.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "plm/config/args.h"
#include "plm/data/collate.h"
#include "plm/data/jsonl_source.h"
#include "plm/data/registry.h"
#include "plm/data/stream.h"

namespace plm::data {

struct LoaderOptions {
  int64_t batch_size = 2;  // per rank
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t num_workers = 2;  // decoding threads; the batches do not depend on it
  int64_t prefetch_batches = 4;
  int64_t pad_id = 128001;
  bool pad_to_longest = false;
  // data.packing: samples: each batch's batch_size samples packed into rows (data/packing.h); tokens: each batch
  // takes this rank's next samples while they fit batch_size packed rows of seq_len (this rank's samples: the
  // global slots j with j % world_size == rank, in order).
  config::Packing packing = config::Packing::none;
  bool strict = false;    // a sample that cannot be used throws instead of being replaced
  int max_attempts = 64;  // replacements tried for one slot before giving up
  uint64_t seed = 42;
};

/// The positions of every rank of a packing: tokens run, rank by rank: {"ranks": [state, ...]}.
std::string ranks_state_json(const std::vector<StreamState>& ranks);

/// Why samples were skipped, per dataset: counts[dataset][reason].
using SkipCounts = std::map<std::string, std::map<std::string, int64_t>>;

/// What the workers have done so far (totals since the loader started; the trainer logs their growth per window).
struct WorkTotals {
  double preprocess_seconds = 0;     // worker-seconds reading, decoding and preprocessing samples (skipped ones too)
  int64_t samples = 0;               // samples preprocessed, skipped ones included
  int64_t videos = 0;                // of them, videos read
  int64_t video_frames_decoded = 0;  // the frames their reads decoded (media::ClipPlan::frames_to_decode)
};

/// This rank's batches of the global sample stream: owns the worker threads, which read, preprocess and collate the
/// rank's slots in parallel into a bounded prefetch, and hands the batches out in stream order. Its state (the
/// position in the global stream) resumes exactly, also with another number of ranks or workers.
class DataLoader {
 public:
  /// Opens every dataset of `mix` (building row indexes) and starts the workers at `start` (a state from
  /// state_json(); empty = the beginning). The global batch is batch_size x world_size slots of the stream;
  /// this rank takes slots [rank * batch_size, (rank + 1) * batch_size) of each.
  DataLoader(std::vector<MixEntry> mix, std::shared_ptr<const Preprocessor> preprocess, LoaderOptions options,
             const std::string& start = "");
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch of this rank. Throws SampleError in strict mode (or when max_attempts samples in a row fail),
  /// naming the sample and why.
  Batch next();

  /// JSON of the stream position after the last batch returned (identical on every rank). Passing it to the
  /// constructor continues with the next batch, also with another world size or worker count.
  /// With packing: tokens each rank has its own position (this rank's next slot); the run's state is every rank's,
  /// ranks_state_json(), which the constructor reads back on the same number of ranks only (it throws
  /// config::ConfigError naming the world sizes otherwise), or a single position (another packing mode's), from
  /// which every rank starts at its first slot at or after it.
  std::string state_json() const;

  /// Skipped samples so far (this rank's).
  SkipCounts skipped() const;

  /// The workers' totals so far (this rank's).
  WorkTotals work_totals() const;

  /// Global slots per batch (batch_size x world_size).
  int64_t global_batch() const { return options_.batch_size * options_.world_size; }

 private:
  struct Impl;
  Batch next_by_tokens();
  std::unique_ptr<Impl> impl_;
  LoaderOptions options_;
};

}  // namespace plm::data
