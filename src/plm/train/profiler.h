// `profiling.*`: PLM's profiling schedule (core/profiling.py over xformers' profiler) with LibTorch's own tools.
#pragma once

#include <ATen/record_function.h>

#include <cstdint>
#include <memory>
#include <string>

#include "plm/config/args.h"

namespace plm::train {

/// Counts micro-batches as PLM's loop calls xformers.profiler.step(): the micro-batch with 0-based index i of this
/// process's run is traced when profile_warmup <= i < profile_warmup + profile_steps, and recorded in a CUDA memory
/// snapshot when mem_warmup <= i < mem_warmup + mem_steps (the two windows may not overlap; config validation
/// says so). Index 0 is the first micro-batch after start-up or resume.
/// - The trace is Kineto's (CPU ops, and on a GPU its kernels), with shapes, memory events and FLOP estimates as
///   PLM's PyTorchProfilerWandb asks for, and each micro-batch inside a "ProfilerStep#i" range. It is written when
///   the window closes to dump_dir/trace_folder/profile_CPU_CUDA_<begin, 6 digits>/rank<R>.pt.trace.json: Chrome
///   trace JSON, which chrome://tracing, Perfetto and TensorBoard read.
/// - The memory snapshot (CUDA only; a CPU run logs that it skips it) records every allocation and free of the
///   window with its stack and goes to dump_dir/trace_folder/memory_snapshot/<end, 6 digits>_rank<R>.pickle, the
///   format of torch.cuda.memory._dump_snapshot, which pytorch.org/memory_viz draws.
/// Every rank profiles (each writes its own files), as PLM's does. Not thread-safe: the training thread calls it.
class StepProfiler {
 public:
  StepProfiler(const config::ProfilerArgs& args, const std::string& dump_dir, int rank, bool cuda);
  /// Closes an open window, writing its file (a run that ends inside a window keeps what it recorded).
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  /// The micro-batch that was running is done (call the one that ends a step after the update).
  void tick();

 private:
  void update();  // opens or closes the windows for micro-batch `done_`
  void start_trace();
  void stop_trace();
  void start_memory();
  void stop_memory();

  config::ProfilerArgs args_;
  std::string dir_;
  int rank_;
  bool cuda_;
  int64_t done_ = 0;
  bool tracing_ = false, recording_memory_ = false;
  std::string range_name_;                     // outlives range_
  std::unique_ptr<at::RecordFunction> range_;  // "ProfilerStep#i" while tracing
};

}  // namespace plm::train
