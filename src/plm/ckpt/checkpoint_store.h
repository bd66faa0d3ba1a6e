// Training checkpoints on disk (docs/reference.md 6): one folder per optimizer step,
// `{checkpoint.path}/{step:010d}/`, written under a temporary name and renamed into place, with a manifest of
// checksums written last, so a folder either verifies completely or is passed over with a reason.
//
// Folder contents (single process, or every rank of a no_shard run; a full_shard run writes per-rank files
// instead of the three .safetensors, see ckpt/sharded.h):
//   model.safetensors      fp32 master weights, PLM's parameter names (docs/reference.md 1.6)
//   optimizer.safetensors  AdamW state ("<name>.exp_avg", "<name>.exp_avg_sq", "<name>.step")
//   extra.safetensors      whatever else resumes exactly: partially accumulated gradients (optional)
//   params.json            the whole resolved TrainArgs, as PLM writes it
//   train_state.json       step, acc_step, scheduler, data-loader state, ... (the trainer's JSON, kept verbatim)
//   manifest.json          {"format": "plm-checkpoint-1", "step": N, "files": {name: {"bytes": n, "crc32": c}}}
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "plm/ckpt/safetensors.h"
#include "plm/config/args.h"
#include "plm/dist/process_group.h"

namespace plm::ckpt {

/// What one checkpoint holds.
struct CheckpointContents {
  TensorMap model;
  TensorMap optimizer;
  TensorMap extra;                           // may be empty (then no extra.safetensors is written)
  std::string params_json;                   // the whole TrainArgs
  std::string train_state_json;              // the trainer's state
  std::map<std::string, std::string> texts;  // further text files by name (a LoRA run's lora_base.json)
};

/// What one rank of a sharded run puts into a checkpoint folder.
struct RankFiles {
  std::vector<std::pair<std::string, TensorMap>> tensors;  // file name -> tensors (this rank's shards)
  std::vector<std::pair<std::string, std::string>> texts;  // file name -> text (rank 0: the shared files)
};

/// The training checkpoints of one run under `checkpoint.path`: writes step folders atomically (a temporary folder,
/// fsynced files, the manifest last, a rename), finds the newest one that verifies, and applies the retention rules.
/// It holds only the root and the rules; the folders are the state.
class CheckpointStore {
 public:
  /// `root` = checkpoint.path (created if missing). `dump` and `eval` give the retention rules of clean_up().
  CheckpointStore(std::string root, config::SaveEvery dump, config::SaveEvery eval);

  /// The folder of `step`: root/0000000500.
  std::string step_dir(int64_t step) const;

  /// Writes every file into root/.tmp-<step>-<pid>/, fsyncs them, writes manifest.json last (byte sizes and CRC-32
  /// of every other file), renames the folder onto step_dir(step) (replacing an existing folder of that step) and
  /// returns it. Throws CheckpointError naming the path on I/O errors; the temporary folder is removed.
  /// The checksums are computed by reading each file back after it was flushed. An existing folder is first
  /// renamed aside (to .tmp-<step>-<pid>.old) and removed after the new one is in place: a crash in between leaves
  /// no folder for `step`, and the next run resumes from an older one.
  std::string save(int64_t step, const CheckpointContents& contents) const;

  /// The same for a sharded run, called by every rank of `world` with its own files (a collective): rank 0 creates
  /// root/.tmp-<step>-sharded, every rank writes and checksums its files, rank 0 writes the manifest of all of them
  /// and renames the folder. Throws CheckpointError on every rank when any rank failed.
  std::string save_sharded(int64_t step, const RankFiles& files, dist::World& world) const;

  /// The newest step folder that verifies, or nullopt when there is no step folder. Every newer folder that does
  /// not verify is reported with plm::log::warn, naming it and saying why (missing manifest, missing file, size or
  /// checksum mismatch), and moved aside to `<step>.damaged` (`.damaged.2`, ... when taken): a later save of that
  /// step or clean_up() never replaces or removes it. When step folders exist and none verifies, throws
  /// CheckpointError naming them and leaves them in place, unless `start_over` (checkpoint.restart_when_damaged):
  /// then all are moved aside and nullopt is returned. Leftover temporary folders (`.tmp-*`) are ignored and
  /// removed; other non-numeric entries are left alone. Verifying reads every byte of each folder it tries.
  std::optional<std::string> newest_complete(bool start_over = false) const;

  /// Applies the retention rules after a save: among the step folders, those with step % dump.every == 0 keep the
  /// newest dump.keep (0 = all), those with step % eval.every == 0 keep the newest eval.keep (0 = all), others are
  /// kept; a folder survives if any rule keeps it. `protect` (the folder just written) always survives. A rule
  /// with every <= 0 matches nothing. Damaged folders count like any other. A folder that cannot be removed is
  /// reported with plm::log::warn (clean_up does not throw for it).
  void clean_up(const std::string& protect) const;

  /// Throws CheckpointError saying why `dir` is not a complete checkpoint (see newest_complete()). With
  /// `weights_only`, the files that hold optimizer state and partial gradients (optimizer*, extra*) are not read
  /// (the manifest must still exist, be valid and list them): what a reader of the model needs, in a fraction of
  /// the time.
  static void verify(const std::string& dir, bool weights_only = false);

  /// Whether `dir` is a training step folder (it holds train_state.json, which only step folders have). Every
  /// reader of a model (ckpt/model_checkpoint.h) verifies such a folder, weights only, before it reads it.
  static bool is_step_folder(const std::string& dir);

  /// Reads a verified folder (verify() first). Tensors are memory-mapped (read_safetensors).
  static CheckpointContents load(const std::string& dir);

  const std::string& root() const { return root_; }

 private:
  std::string root_;
  config::SaveEvery dump_, eval_;
};

/// `plm consolidate STEP_DIR`: writes STEP_DIR/consolidated.safetensors and STEP_DIR/consolidated.pth, flat fp32
/// state dicts with PLM's names taken from STEP_DIR/model.safetensors (docs/reference.md 6.2), and keeps params.json
/// beside them. When params.json ties the weights, the .pth also holds PLM's duplicate `output.tied_module.weight`
/// (sharing tok_embeddings.weight's storage, saved once) so PLM's Python tools load it strictly; the .safetensors
/// leaves it out (the safetensors library refuses shared tensors; read_native_weights skips it anyway).
/// load_model(STEP_DIR) then loads the model (it prefers model.safetensors, the same tensors, while that is
/// there); params.json + consolidated.pth alone is PLM's release layout. The manifest is left as it is (it does
/// not list the consolidated files). Returns the paths written. Throws CheckpointError when the folder does
/// not verify, and ConfigError when params.json's model section does not load.
std::vector<std::string> consolidate(const std::string& step_dir);

}  // namespace plm::ckpt
