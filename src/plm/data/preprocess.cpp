#include "plm/data/preprocess.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>

#include "plm/common/log.h"

#include "plm/media/boxes.h"
#include "plm/media/image.h"
#include "plm/media/media_error.h"
#include "plm/media/tiling.h"
#include "plm/media/video.h"
#include "plm/text/region.h"
#include "plm/text/sample_tokens.h"

namespace plm::data {
namespace {

namespace fs = std::filesystem;

// root_dir / path as os.path.join makes it (an absolute path stays itself). With `confine`, the result, symlinks
// resolved, must lie inside root_dir, or the sample is refused ("outside_root"): a dataset cannot make plm read
// /etc/shadow or another user's files through "../" or a link.
std::string join(const std::string& root, const std::string& path, bool confine) {
  const std::string joined = root.empty() ? path : (fs::path(root) / path).string();
  if (!confine || root.empty()) return joined;
  std::error_code ec;
  const fs::path real_root = fs::weakly_canonical(root, ec), real = fs::weakly_canonical(joined, ec);
  const auto [r, p] = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
  if (ec || r != real_root.end())
    throw SampleError("outside_root", "media path '" + path + "' resolves to '" + real.string() +
                                          "', outside root_dir '" + real_root.string() +
                                          "' (data.confine_media_to_root is on).");
  return joined;
}

}  // namespace

PreprocessOptions PreprocessOptions::from(const config::TrainArgs& a) {
  PreprocessOptions o;
  o.image_res = a.data.image_res.value_or(a.model.vision_model ? a.model.vision_model->image_size : 448);
  o.max_num_tiles = a.data.max_num_tiles.value_or(1);
  o.vision_input_type = a.data.vision_input_type.value_or("vanilla");
  o.max_video_frames = a.data.max_video_frames.value_or(8);
  o.patch_size = a.model.vision_model ? a.model.vision_model->patch_size : 14;
  o.pooling_ratio = a.model.pooling_ratio;
  o.seq_len = a.model.max_seqlen;
  o.conversation_format = a.data.conversation_format.value_or("plm_sft");
  o.confine_media_to_root = a.data.confine_media_to_root;
  o.max_video_decode_frames = a.data.max_video_decode_frames;
  o.skip_long_videos = a.data.long_video_policy == "skip";
  return o;
}

int64_t PreprocessOptions::tokens_per_chunk() const {
  const int64_t side = image_res / patch_size / pooling_ratio;
  return side * side;
}

Preprocessor::Preprocessor(std::shared_ptr<const text::Tokenizer> tokenizer, PreprocessOptions options)
    : tokenizer_(std::move(tokenizer)),
      options_(std::move(options)),
      image_token_(tokenizer_->special_id("<|image|>")) {
  if (image_token_ < 0) throw text::TokenizerError("the tokenizer has no <|image|> token, which PLM's templates need.");
  text::ConversationFormat::named(options_.conversation_format);  // fail early on an unknown format
}

void Preprocessor::check_video(const media::ClipPlan& p) const {
  const media::VideoInfo& v = p.info;
  const int64_t declared = v.declared_frames;
  // Edit lists may hide a frame or two from the scan: only a larger gap is a disagreement.
  const bool mismatch = declared > 0 && std::abs(declared - v.num_frames) > std::max<int64_t>(2, declared / 100);
  const int64_t bound = options_.max_video_decode_frames;
  const bool too_long = bound > 0 && p.frames_to_decode > bound;
  if (!too_long && !mismatch) return;
  const std::string what =
      too_long ? fmt::format(
                     "needs {} frames decoded to sample {} (a {}-frame video with up to {} frames between "
                     "keyframes), over data.max_video_decode_frames = {}",
                     p.frames_to_decode, p.indices.size(), v.num_frames, v.longest_gop, bound)
               : fmt::format("declares {} frames in its header but holds {}", declared, v.num_frames);
  if (options_.skip_long_videos)
    throw media::MediaError(too_long ? "too_long" : "frame_count_mismatch",
                            "'" + p.path + "' " + what + "; skipped (data.long_video_policy: skip)");
  static std::mutex mutex;
  static std::set<std::string> named;  // each file once per process
  std::lock_guard<std::mutex> lock(mutex);
  if (named.insert(p.path).second)
    log::warn("'{}' {}; decoding it now (data.long_video_policy: decode; skip would leave it out)", p.path, what);
}

SampleMedia Preprocessor::load_media(const Sample& sample, const std::string& root_dir) const {
  const int64_t s = options_.image_res;
  SampleMedia out;
  try {
    if (!sample.images.empty()) {
      std::vector<at::Tensor> chunks;
      for (const auto& path : sample.images) {
        const at::Tensor rgb = media::load_image_rgb(join(root_dir, path, options_.confine_media_to_root));
        if (sample.images.size() > 1 || options_.vision_input_type == "vanilla")
          chunks.push_back(media::vanilla(rgb, s).pixels);
        else
          chunks.push_back(media::thumb_and_tiles(rgb, options_.max_num_tiles, s).pixels);
      }
      out.pixels = chunks.size() == 1 ? chunks[0] : at::cat(chunks, 0);
      out.type = sample.images.size() > 1 ? text::MediaType::multi_image : text::MediaType::image;
    } else if (sample.video) {
      media::DecodedFrames clip = media::read_clip(join(root_dir, *sample.video, options_.confine_media_to_root),
                                                   sample.start_time, sample.end_time, options_.max_video_frames, 0,
                                                   [this](const media::ClipPlan& plan) { check_video(plan); });
      if (!sample.bbox_map.empty()) media::draw_boxes_on_sampled_frames(clip, sample.bbox_map);
      out.pixels = media::video_pixels(clip, s);
      out.type = text::MediaType::video;
      out.video = {clip.path, clip.info.num_frames, clip.frames_to_decode,
                   clip.frames_to_decode * clip.info.width * clip.info.height};
    } else {
      out.pixels = at::ones({1, 3, s, s});  // PLM's placeholder: runs through the vision tower, then dropped
    }
  } catch (const media::MediaError& e) {
    throw MediaSampleError(e.reason(), e.what());
  }
  return out;
}

ProcessedSample Preprocessor::operator()(const Sample& sample, const std::string& root_dir) const {
  std::vector<text::Turn> turns = sample.conversations;
  if (!sample.bbox.empty()) {
    std::vector<std::string> boxes;
    for (const auto& b : sample.bbox) boxes.push_back(text::format_bbox(b, *sample.width, *sample.height));
    try {
      for (auto& t : turns) t.value = text::substitute_regions(t.value, boxes);
    } catch (const std::out_of_range& e) {
      throw SampleError("bbox_error", e.what());
    }
  }
  // What costs memory is checked before it is spent: a row whose images' tokens alone cannot fit in max_seqlen is
  // rejected (as tokenize_dialog would reject it) before any image is decoded: 20,000 paths in one row decoded
  // 1.6 GB first.
  if (const auto n = static_cast<int64_t>(sample.images.size());
      n > 1 && n * options_.tokens_per_chunk() + 1 > options_.seq_len)
    throw SampleError("too_long", "the sample's " + std::to_string(n) + " images need " +
                                      std::to_string(n * options_.tokens_per_chunk()) +
                                      " image tokens, more than max_seqlen " + std::to_string(options_.seq_len) +
                                      " holds; none was decoded.");
  ProcessedSample out;
  SampleMedia media = load_media(sample, root_dir);
  out.media = std::move(media.pixels);
  out.video = std::move(media.video);
  const text::MediaType media_type = media.type;
  out.media_type = media_type == text::MediaType::multi_image ? "multi_image"
                   : media_type == text::MediaType::image     ? "image"
                   : media_type == text::MediaType::video     ? "video"
                                                              : "text";
  const int64_t tokens_per_chunk = media_type == text::MediaType::text ? 0 : options_.tokens_per_chunk();
  const int64_t chunks = media_type == text::MediaType::text ? 0 : out.media.size(0);
  std::vector<text::DialogRound> dialog;
  try {
    dialog = text::build_dialog(text::ConversationFormat::named(options_.conversation_format), std::move(turns), chunks,
                                tokens_per_chunk, media_type);
  } catch (const text::ConversationError& e) {
    const std::string what = e.what();
    throw SampleError(what.find("no human turn") != std::string::npos ? "no_answer" : "role_error", what);
  }
  text::SampleTokens tokens = text::tokenize_dialog(*tokenizer_, dialog, options_.seq_len, image_token_);
  if (!tokens.rejected.empty()) throw SampleError("too_long", "the sample is rejected: " + tokens.rejected);
  if (static_cast<int64_t>(tokens.image_pos.size()) != chunks * tokens_per_chunk)
    throw SampleError("image_tag_mismatch", "the sample has " + std::to_string(tokens.image_pos.size()) +
                                                " image tokens for " + std::to_string(chunks) + " chunks of " +
                                                std::to_string(tokens_per_chunk) +
                                                " (multi-image samples need one <image> tag per image).");
  out.ids = std::move(tokens.ids);
  out.response_pos = std::move(tokens.response_pos);
  out.image_pos = std::move(tokens.image_pos);
  out.truncated = tokens.truncated;
  return out;
}

}  // namespace plm::data
