#include "plm/train/profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#ifdef PLM_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/cuda/memory_snapshot.h>
#endif

#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>

#include "plm/common/log.h"

namespace plm::train {
namespace fs = std::filesystem;
namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

namespace {

bool inside(int64_t i, int64_t warmup, int64_t steps) {
  return warmup <= i && i < warmup + steps;
}

// PLM's PyTorchProfilerWandb: record_shapes, profile_memory, with_flops; no stacks (they make huge traces).
ProfilerConfig trace_config() {
  return ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true, /*profile_memory=*/true,
                        /*with_stack=*/false, /*with_flops=*/true);
}

std::set<ActivityType> activities(bool cuda) {
  std::set<ActivityType> a{ActivityType::CPU};
  if (cuda) a.insert(ActivityType::CUDA);
  return a;
}

void synchronize(bool cuda) {
#ifdef PLM_CUDA
  if (cuda) c10::cuda::device_synchronize();
#else
  (void)cuda;
#endif
}

}  // namespace

StepProfiler::StepProfiler(const config::ProfilerArgs& args, const std::string& dump_dir, int rank, bool cuda)
    : args_(args), dir_((fs::path(dump_dir) / args.trace_folder).string()), rank_(rank), cuda_(cuda) {
  fs::create_directories(dir_);
  log::info("profiling: a trace of micro-batches {}-{} and a memory snapshot of {}-{} go to {}", args_.profile_warmup,
            args_.profile_warmup + args_.profile_steps - 1, args_.mem_warmup, args_.mem_warmup + args_.mem_steps - 1,
            dir_);
  if (!cuda_ && args_.mem_steps > 0) log::info("profiling: memory snapshots need a GPU; this CPU run takes none");
  update();
}

StepProfiler::~StepProfiler() {
  try {
    if (tracing_) stop_trace();
    if (recording_memory_) stop_memory();
  } catch (const std::exception& e) {
    log::warn("profiling: could not finish: {}", e.what());
  }
}

void StepProfiler::tick() {
  ++done_;
  update();
}

void StepProfiler::update() {
  const bool trace = inside(done_, args_.profile_warmup, args_.profile_steps);
  const bool memory = cuda_ && inside(done_, args_.mem_warmup, args_.mem_steps);
  if (tracing_ && !trace) stop_trace();
  if (recording_memory_ && !memory) stop_memory();
  if (memory && !recording_memory_) start_memory();
  if (trace && !tracing_) start_trace();
  if (tracing_) {
    range_.reset();  // ends the previous micro-batch's range
    range_name_ = fmt::format("ProfilerStep#{}", done_);
    range_ = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
    if (range_->isActive()) range_->before(std::string_view(range_name_));
  }
}

void StepProfiler::start_trace() {
  synchronize(cuda_);
  kineto::prepareProfiler(trace_config(), activities(cuda_));
  kineto::enableProfiler(trace_config(), activities(cuda_));
  tracing_ = true;
  log::info("profiling: tracing from micro-batch {}", done_);
}

void StepProfiler::stop_trace() {
  range_.reset();
  synchronize(cuda_);
  const std::unique_ptr<kineto::ProfilerResult> result = kineto::disableProfiler();
  tracing_ = false;
  const fs::path folder = fs::path(dir_) / fmt::format("profile_CPU_CUDA_{:06d}", args_.profile_warmup);
  fs::create_directories(folder);
  const std::string path = (folder / fmt::format("rank{}.pt.trace.json", rank_)).string();
  result->save(path);
  log::info("profiling: wrote the trace of micro-batches {}-{} to {}", args_.profile_warmup, done_ - 1, path);
}

void StepProfiler::start_memory() {
#ifdef PLM_CUDA
  // As xformers' MemSnapshotsProfiler: keep up to 100,000 alloc/free events, each with its stack.
  torch::cuda::_record_memory_history(/*enabled=*/true, /*record_context=*/true, /*trace_alloc_max_entries=*/100000,
                                      /*trace_alloc_record_context=*/true);
  recording_memory_ = true;
  log::info("profiling: recording CUDA memory from micro-batch {}", done_);
#endif
}

void StepProfiler::stop_memory() {
#ifdef PLM_CUDA
  const std::string snapshot = torch::cuda::_memory_snapshot_pickled();
  torch::cuda::_record_memory_history(/*enabled=*/false);
  recording_memory_ = false;
  const fs::path folder = fs::path(dir_) / "memory_snapshot";
  fs::create_directories(folder);
  const std::string path = (folder / fmt::format("{:06d}_rank{}.pickle", done_, rank_)).string();
  std::ofstream out(path, std::ios::binary);
  out.write(snapshot.data(), static_cast<std::streamsize>(snapshot.size()));
  if (!out) {
    log::warn("profiling: could not write the CUDA memory snapshot to {}", path);
    return;
  }
  log::info("profiling: wrote the CUDA memory snapshot of micro-batches {}-{} to {}", args_.mem_warmup, done_ - 1,
            path);
#endif
}

}  // namespace plm::train
