// From a user's question and media to what the model reads (docs/reference.md 8 "Loading" and "Preprocessing"): the
// checkpoint's inference settings, the plm_sft generation prompt (docs/reference.md 3.2) and the training media
// preprocessing (data::Preprocessor::load_media: tiling per vision_input_type / max_num_tiles, video frames per
// max_video_frames).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plm/data/preprocess.h"
#include "plm/text/tokenizer.h"

namespace plm::infer {

/// A question and its media. `question` may place the media with "<image>" tags (docs/reference.md 3.2: exactly one per
/// media chunk puts the image tokens there; otherwise tags are stripped and the tokens go before the question).
struct Prompt {
  std::string question;
  std::vector<std::string> images;   // none, one (tiled) or several (one vanilla tile each, multi-image)
  std::optional<std::string> video;  // the whole clip, max_video_frames frames
};

/// A prompt ready for the model.
struct PreparedPrompt {
  std::vector<text::TokenId> ids;  // the generation prompt, <|image|> x (chunks x tokens per chunk) included
  at::Tensor pixels;               // float32 [chunks, 3, S, S] normalised; undefined for a text-only prompt
};

/// What a checkpoint says about inference besides the model.
struct CheckpointSettings {
  std::string tokenizer_path;  // "" when the checkpoint names none
  data::PreprocessOptions preprocess;
};

/// For a checkpoint folder or a file in one: params.json's `data` section (tokenizer_path, vision_input_type,
/// max_num_tiles, max_video_frames, image_res) with `model`'s patch size and pooling ratio, as PLM's generate.py
/// uses them. The tokenizer is data.tokenizer_path if that path exists, else that path joined onto the checkpoint
/// folder (docs/reference.md 6.5); without one, the folder's tokenizer.model if present. A Hugging Face folder (no
/// params.json) gets the defaults (vanilla tiles, 8 video frames) and no tokenizer. The conversation format is always
/// plm_sft, as in PLM's generate.py. Throws ConfigError naming params.json for an unknown or mistyped data key.
CheckpointSettings read_checkpoint_settings(const std::string& ckpt_path, const config::ModelArgs& model);

/// Default TrainArgs with the `data` section of the checkpoint's params.json (if any) over them; the model section is
/// left at its defaults (ckpt::read_model_args reads it). Throws ConfigError naming params.json for a bad data key.
config::TrainArgs checkpoint_train_args(const std::string& ckpt_path);

/// Encodes prompts with a tokenizer and preprocessing options (plm_sft format).
class PromptEncoder {
 public:
  /// Throws TokenizerError when the tokenizer has no <|image|> token.
  PromptEncoder(std::shared_ptr<const text::Tokenizer> tokenizer, data::PreprocessOptions options);

  /// The prompt's media (data::Preprocessor::load_media; paths used as given). Throws data::MediaSampleError
  /// naming the file, GenerateError ("bad_prompt") for both images and a video.
  data::SampleMedia load_media(const Prompt& prompt) const;

  /// The generation prompt for `question` with already loaded `media` (so several questions can share it). Text-only
  /// media contribute no pixels (the training placeholder image is not used at inference, docs/reference.md 8).
  PreparedPrompt encode(const std::string& question, const data::SampleMedia& media) const;

  /// load_media + encode.
  PreparedPrompt operator()(const Prompt& prompt) const { return encode(prompt.question, load_media(prompt)); }

  const text::Tokenizer& tokenizer() const { return preprocessor_.tokenizer(); }
  const data::PreprocessOptions& options() const { return preprocessor_.options(); }

 private:
  data::Preprocessor preprocessor_;
};

}  // namespace plm::infer
