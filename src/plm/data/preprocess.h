// One sample from its JSON fields to token ids, loss positions and pixels (PLM's VisionPreprocessor and
// PLMTokenizer.__call__, docs/reference.md 2, 3.3, 4.1, 4.4, 4.5).
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "plm/config/args.h"
#include "plm/data/sample.h"
#include "plm/media/video.h"
#include "plm/text/tokenizer.h"

namespace plm::data {

/// A sample whose media could not be used; what() names the media file (so it can be logged once per file).
struct MediaSampleError : SampleError {
  using SampleError::SampleError;
};

/// The settings preprocessing reads, gathered from the run's config as PLM does (the patch size comes from
/// model.vision_model, the sequence length from model.max_seqlen; data.patch_size/seq_len are unused).
struct PreprocessOptions {
  int64_t image_res = 448;
  int64_t max_num_tiles = 1;
  std::string vision_input_type = "vanilla";  // or "thumb+tile"
  int64_t max_video_frames = 8;
  int64_t patch_size = 14;
  int64_t pooling_ratio = 1;
  int64_t seq_len = 1024;
  std::string conversation_format = "plm_sft";
  bool confine_media_to_root = false;       // data.confine_media_to_root: refuse paths resolving outside root_dir
  int64_t max_video_decode_frames = 10000;  // data.max_video_decode_frames (0: no bound)
  bool skip_long_videos = false;            // data.long_video_policy: skip

  static PreprocessOptions from(const config::TrainArgs& args);

  /// <|image|> tokens per media chunk (tile or frame): (image_res / patch_size / pooling_ratio)^2.
  int64_t tokens_per_chunk() const;
};

/// A video sample's file and what reading it decoded (media::ClipPlan), for plm data check and the loader's metrics.
struct VideoRead {
  std::string file;  // empty: the sample has no video
  int64_t frames = 0, frames_decoded = 0;
  int64_t pixels_decoded = 0;  // frames_decoded x width x height: about what the decode costs
};

/// A sample's pixels and what kind of media they are.
struct SampleMedia {
  at::Tensor pixels;  // float32 [chunks, 3, S, S], normalised; text-only: PLM's placeholder ones [1, 3, S, S]
  text::MediaType type = text::MediaType::text;
  VideoRead video;
};

/// A sample ready for collation.
struct ProcessedSample {
  std::vector<text::TokenId> ids;
  std::vector<int64_t> response_pos;  // indices into ids that are loss targets
  std::vector<int64_t> image_pos;     // indices into ids holding <|image|>
  at::Tensor media;                   // float32 [chunks, 3, S, S], normalised; text-only: ones [1, 3, S, S]
  std::string media_type;             // "image", "multi_image", "video" or "text"
  bool truncated = false;
  VideoRead video;
  std::string id;     // "dataset#row" (set by the loader), for messages about the sample
  int64_t slot = -1;  // the global stream slot it fills (set by the loader; data/stream.h), -1 outside training
};

/// A Sample's way into the model (PLM's VisionPreprocessor + PLMTokenizer): holds the tokenizer and the image and
/// video settings; loads and transforms the sample's media and tokenises its dialog into a ProcessedSample.
class Preprocessor {
 public:
  /// `tokenizer` must have "<|image|>" (PLM's templates write it); throws TokenizerError otherwise.
  Preprocessor(std::shared_ptr<const text::Tokenizer> tokenizer, PreprocessOptions options);

  /// Media paths are joined onto `root_dir` (an absolute path stays as it is, as Python's os.path.join).
  /// Throws SampleError (with media errors' reasons passed through) when the sample cannot be used.
  ProcessedSample operator()(const Sample& sample, const std::string& root_dir) const;

  /// The media part of operator(): images (one: `vision_input_type` tiling; several: one vanilla tile each) or
  /// the video clip's frames (regions drawn), or the text-only placeholder. Throws MediaSampleError.
  SampleMedia load_media(const Sample& sample, const std::string& root_dir) const;
  /// Before a video is decoded: names it in the log when its plan needs more than max_video_decode_frames decoded
  /// or its header's frame count disagrees with its packets, or (skip_long_videos) throws MediaError "too_long" /
  /// "frame_count_mismatch" naming it.
  void check_video(const media::ClipPlan& plan) const;

  const PreprocessOptions& options() const { return options_; }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  PreprocessOptions options_;
  text::TokenId image_token_;
};

}  // namespace plm::data
