// libFuzzer harness: the torch.save unpickler. The input is the archive's data.pkl, wrapped in a well-formed
// torch.save zip with four 64-byte storages (keys "0" to "3"), so that the fuzzer spends its time in our pickle
// machine rather than in LibTorch's zip reader. Every tensor it returns is read in full. Anything but a
// CheckpointError is a finding.
#include <caffe2/serialize/inline_container.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "plm/ckpt/torch_pickle.h"

namespace {
const std::string& scratch() {
  static const std::string path = "/tmp/plm_fuzz_pickle_" + std::to_string(::getpid()) + ".pth";
  return path;
}

void write_archive(const uint8_t* pickle, size_t size) {
  caffe2::serialize::PyTorchStreamWriter writer(scratch());
  writer.writeRecord("data.pkl", pickle, size);
  const std::string bytes(64, '\x3f');
  for (int key = 0; key < 4; ++key) writer.writeRecord("data/" + std::to_string(key), bytes.data(), bytes.size());
  writer.writeRecord("byteorder", "little", 6);
  writer.writeEndOfFile();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_archive(data, size);
  try {
    const plm::ckpt::TensorMap tensors = plm::ckpt::load_torch_state_dict(scratch());
    for (const auto& [name, t] : tensors) {
      volatile double sum = t.to(at::kDouble).sum().item<double>();
      (void)sum;
    }
  } catch (const plm::ckpt::CheckpointError&) {
  }
  return 0;
}
