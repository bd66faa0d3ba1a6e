// Process-level runtime facts and set-up: LibTorch version, threads, BLAS, CUDA.
#pragma once

#include <string>

namespace plm::runtime {

/// "2.11.0" (the LibTorch the binary was built against).
std::string torch_version();

/// True when plm was built with -DPLM_CUDA=ON.
bool cuda_compiled();

/// Number of visible CUDA devices (0 on CPU builds or machines without GPUs).
int cuda_device_count();

/// Makes CUDA device `index` the current one (PLM_CUDA builds; elsewhere throws std::runtime_error).
void set_cuda_device(int index);

/// The CUDA caching allocator's peaks on `device` since the last reset, and the device's memory, in bytes.
struct CudaMemory {
  int64_t peak_active = 0, peak_reserved = 0, total = 0, alloc_retries = 0, ooms = 0;
};
/// Reads them and, when `reset`, starts new peaks (PLM logs peaks per logging window). PLM_CUDA builds only.
CudaMemory cuda_memory(int device, bool reset);

/// The BLAS LibTorch uses, from its build configuration (e.g. "mkl", "open").
std::string blas_name();

/// Sets ATen's intra-op threads: `requested` if > 0, else $OMP_NUM_THREADS if set, else all cores.
/// Returns the number in use.
int configure_threads(int requested = 0);

/// Logs the facts above, once, at start-up.
void log_summary();

}  // namespace plm::runtime
