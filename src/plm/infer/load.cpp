#include "plm/infer/load.h"

#include "plm/ckpt/model_checkpoint.h"
#include "plm/common/runtime.h"
#include "plm/infer/infer_error.h"

namespace plm::infer {

LoadedCheckpoint load_for_inference(const std::string& ckpt, const std::string& tokenizer, const std::string& device,
                                    const std::string& dtype) {
  LoadedCheckpoint out;
  out.cuda = device == "cuda" || (device == "auto" && runtime::cuda_device_count() > 0);
  out.dtype = dtype.empty() ? (out.cuda ? "bf16" : "fp32") : dtype;
  out.model = ckpt::load_model(ckpt);
  out.model->eval();
  out.model->to(out.cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU),
                out.dtype == "bf16" ? at::kBFloat16 : at::kFloat);
  out.settings = read_checkpoint_settings(ckpt, out.model->args);
  out.tokenizer_path = tokenizer.empty() ? out.settings.tokenizer_path : tokenizer;
  if (out.tokenizer_path.empty())
    throw GenerateError("no_tokenizer", "the checkpoint '" + ckpt +
                                            "' names no tokenizer (params.json data.tokenizer_path); pass "
                                            "--tokenizer PATH.");
  out.tokenizer = text::load_tokenizer(out.tokenizer_path);
  return out;
}

}  // namespace plm::infer
