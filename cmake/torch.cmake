# Locates LibTorch and defines the target plm::torch.
#
# Where from: CMAKE_PREFIX_PATH (an official LibTorch zip, or a torch wheel's share/cmake), else the
# torch wheel in the project's .venv (scripts/setup.sh installs it).
# CPU builds link only libtorch_cpu and libc10, so they need neither the CUDA toolkit nor the
# wheel's CUDA libraries; PLM_CUDA=ON goes through LibTorch's own TorchConfig (CUDA, cuDNN, NCCL).

set(_plm_torch_hints ${CMAKE_PREFIX_PATH})
if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  execute_process(
    COMMAND "${PROJECT_SOURCE_DIR}/.venv/bin/python" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _plm_wheel_cmake OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_plm_wheel_cmake)
    list(APPEND _plm_torch_hints "${_plm_wheel_cmake}")
  endif()
endif()

set(_plm_torch_roots)
foreach(h IN LISTS _plm_torch_hints)
  list(APPEND _plm_torch_roots "${h}" "${h}/../..")   # a LibTorch root, or its share/cmake
endforeach()
find_path(PLM_TORCH_ROOT include/ATen/ATen.h HINTS ${_plm_torch_roots} NO_DEFAULT_PATH)
if(NOT PLM_TORCH_ROOT)
  message(FATAL_ERROR "LibTorch not found: run scripts/setup.sh (it installs the torch wheel into .venv), "
                      "or pass -DCMAKE_PREFIX_PATH=/path/to/libtorch for an official LibTorch zip.")
endif()
get_filename_component(PLM_TORCH_ROOT "${PLM_TORCH_ROOT}" REALPATH)
set(_vh "${PLM_TORCH_ROOT}/include/torch/headeronly/version.h")    # 2.9+
if(NOT EXISTS "${_vh}")
  set(_vh "${PLM_TORCH_ROOT}/include/torch/csrc/api/include/torch/version.h")
endif()
foreach(part MAJOR MINOR PATCH)
  file(STRINGS "${_vh}" _v REGEX "define TORCH_VERSION_${part} ")
  string(REGEX REPLACE ".* ([0-9]+).*" "\\1" _v_${part} "${_v}")
endforeach()
set(PLM_TORCH_VERSION "${_v_MAJOR}.${_v_MINOR}.${_v_PATCH}")
message(STATUS "LibTorch ${PLM_TORCH_VERSION} at ${PLM_TORCH_ROOT}")

add_library(plm_torch INTERFACE)
add_library(plm::torch ALIAS plm_torch)
if(PLM_CUDA)
  list(APPEND CMAKE_PREFIX_PATH "${PLM_TORCH_ROOT}/share/cmake")
  find_package(Torch REQUIRED)
  target_link_libraries(plm_torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(plm_torch INTERFACE PLM_CUDA)
  # c10d's ProcessGroupNCCL.hpp includes <nccl.h>: the wheel's nvidia-nccl package, else the system's.
  find_path(PLM_NCCL_INCLUDE nccl.h HINTS "${PLM_TORCH_ROOT}/../nvidia/nccl/include" /usr/include /usr/local/cuda/include)
  if(NOT PLM_NCCL_INCLUDE)
    message(FATAL_ERROR "nccl.h not found: install the nvidia-nccl wheel beside torch or libnccl-dev")
  endif()
  target_include_directories(plm_torch SYSTEM INTERFACE "${PLM_NCCL_INCLUDE}")
else()
  find_library(PLM_TORCH_CPU torch_cpu PATHS "${PLM_TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(PLM_C10 c10 PATHS "${PLM_TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  target_include_directories(plm_torch SYSTEM INTERFACE "${PLM_TORCH_ROOT}/include"
                                                        "${PLM_TORCH_ROOT}/include/torch/csrc/api/include")
  target_link_libraries(plm_torch INTERFACE "${PLM_TORCH_CPU}" "${PLM_C10}")
  # The PyPI wheels and the cxx11-ABI LibTorch zips use the new libstdc++ ABI (GCC's default).
  target_compile_definitions(plm_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
endif()
