#include "plm/common/runtime.h"

#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/cuda.h>
#include <torch/version.h>
#ifdef PLM_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

#include "plm/common/log.h"

namespace plm::runtime {

std::string torch_version() {
  return TORCH_VERSION;
}

bool cuda_compiled() {
#ifdef PLM_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
  return cuda_compiled() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

void set_cuda_device(int index) {
#ifdef PLM_CUDA
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
#else
  (void)index;
  throw std::runtime_error("this plm was built without CUDA (configure with -DPLM_CUDA=ON)");
#endif
}

CudaMemory cuda_memory(int device, bool reset) {
  CudaMemory m;
#ifdef PLM_CUDA
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto stats = alloc::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  m.peak_active = stats.active_bytes[all].peak;
  m.peak_reserved = stats.reserved_bytes[all].peak;
  m.alloc_retries = stats.num_alloc_retries;
  m.ooms = stats.num_ooms;
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) m.total = static_cast<int64_t>(total_bytes);
  if (reset) alloc::resetPeakStats(static_cast<c10::DeviceIndex>(device));
#else
  (void)device;
  (void)reset;
  throw std::runtime_error("this plm was built without CUDA (configure with -DPLM_CUDA=ON)");
#endif
  return m;
}

std::string blas_name() {
  const std::string config = at::show_config();
  const auto pos = config.find("BLAS_INFO=");
  if (pos == std::string::npos) return "unknown";
  const auto start = pos + 10;
  return config.substr(start, config.find_first_of(", \n", start) - start);
}

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    if (const char* env = std::getenv("OMP_NUM_THREADS")) n = std::atoi(env);
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  return at::get_num_threads();
}

void log_summary() {
  log::info("LibTorch {} | CUDA {} ({} device(s)) | intra-op threads {} of {} cores | BLAS {}", torch_version(),
            cuda_compiled() ? "compiled in" : "not compiled in", cuda_device_count(), at::get_num_threads(),
            std::thread::hardware_concurrency(), blas_name());
}

}  // namespace plm::runtime
