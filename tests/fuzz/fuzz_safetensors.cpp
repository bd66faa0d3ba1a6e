// libFuzzer harness: the safetensors reader (header SAX parse, offsets, dtypes, the mapping) on any file. Every
// tensor it returns is read in full, so an offset outside the file is a finding. Anything but a CheckpointError is
// a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "plm/ckpt/safetensors.h"

namespace {
// One scratch file per process (libFuzzer runs inputs one at a time in it).
const std::string& scratch() {
  static const std::string path = "/tmp/plm_fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (FILE* f = std::fopen(scratch().c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try {
    (void)plm::ckpt::read_safetensors_metadata(scratch());
    const plm::ckpt::TensorMap tensors = plm::ckpt::read_safetensors(scratch());
    for (const auto& [name, t] : tensors) {
      const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
      volatile uint8_t sum = 0;
      for (int64_t i = 0; i < t.numel() * static_cast<int64_t>(t.element_size()); ++i) sum += bytes[i];
    }
  } catch (const plm::ckpt::CheckpointError&) {
  }
  return 0;
}
