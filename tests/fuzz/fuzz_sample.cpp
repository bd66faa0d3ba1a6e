// libFuzzer harness: the JSONL sample parser (one annotation row). Anything but a SampleError is a finding.
#include <cstdint>
#include <string>

#include "plm/data/sample.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)plm::data::parse_sample(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const plm::data::SampleError&) {
  }
  return 0;
}
