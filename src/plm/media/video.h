// Video clips as PLM's video transform sees them (docs/reference.md 4.5): metadata and frames exactly as
// torchcodec's `VideoDecoder(path, device="cpu")` (exact seek mode, the default) reports and returns them, the
// reference's frame sampling, and the 448x448 tensor the vision tower gets. FFmpeg (libav* 5.1 API) decodes.
//
// What "exactly" covers (torchcodec 0.17, src/torchcodec/_core):
// - index -> frame: the video stream's packets are scanned once (no decoding; packets flagged DISCARD by an edit
//   list are left out) and sorted by pts (dts when pts is missing); frame i is the first decoded frame whose pts
//   (pkt_dts when missing) is >= the i-th smallest packet pts. Variable frame rate needs nothing special.
// - colour: frames whose width is a multiple of 32 go through swscale with flags 0 and the frame's colourspace and
//   range (torchcodec's swscale path); other widths, and rotated videos, through swscale set up as libavfilter's
//   auto-inserted `scale` filter sets it up (torchcodec's filtergraph path: chroma sited at MPEG-2 positions for
//   yuv420p), then rotated by the stream's display matrix.
// - errors: every failure a file can cause is a MediaError naming the file (reasons "missing_file",
//   "decode_error", "unsupported_format", "empty_video", "index_out_of_range", "bad_box", "too_large"); no loop
//   is unbounded, no decode exceeds the pixel budget below.
// FFmpeg's own log is silenced (as torchcodec does) unless PLM_FFMPEG_LOG_LEVEL holds an av_log level number.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace plm::media {

/// torchcodec's exact-mode metadata of the best video stream.
struct VideoInfo {
  /// num_frames / (end - begin) seconds, with begin = min packet pts and end = max(pts + duration) of the scan;
  /// the header's r_frame_rate when that span is zero.
  double average_fps = 0;
  /// Packets of the stream found by the scan (never the header's nb_frames, which mkv/webm leave at 0).
  int64_t num_frames = 0;
  /// Frame size after the display-matrix rotation, pixels.
  int64_t width = 0, height = 0;
  /// The container header's frame count (nb_frames); 0 when it gives none (mkv, webm).
  int64_t declared_frames = 0;
  /// The most frames from one keyframe to the next (or to the end): what reaching one frame can cost.
  int64_t longest_gop = 0;
};

/// What read_clip will decode, known from the packet scan before any frame is decoded.
struct ClipPlan {
  std::string path;
  VideoInfo info;
  std::vector<int64_t> indices;  // the sampled frames, in request order
  /// Frames the forward pass decodes to reach them: from the previous wanted frame when the next one's keyframe
  /// is at or before it, else from that keyframe (decode_frames' seek rule, without its reorder slack; skipped
  /// non-reference H.264 pictures count as decoded). The decode time is about this times width x height.
  int64_t frames_to_decode = 0;
};

/// Frames of one clip, in the order they were asked for.
struct DecodedFrames {
  /// uint8 [N, 3, H, W], RGB; a channels-last view of [N, H, W, 3] storage, as torchcodec returns it.
  at::Tensor frames;
  /// The original frame index of each frame (what bbox_map keys refer to).
  std::vector<int64_t> indices;
  VideoInfo info;
  /// The file the frames came from (for error messages).
  std::string path;
  /// ClipPlan::frames_to_decode of the read (read_clip only).
  int64_t frames_to_decode = 0;
};

/// The pixel budget of a decode, checked against the stream's declared frame size before any frame is decoded
/// (the reference has none: 8 MJPEG frames of 12000x12000 in a 6.7 MB file reached 5.5 GB). Per frame, Pillow's
/// image limit (2 * 89478485); per clip, the frames asked for times width x height at most 2^29 (1.6 GB of
/// RGB): 32 frames of 5K fit, 32 of 8K do not. Above either: MediaError "too_large", naming the file.
constexpr int64_t kMaxFramePixels = 2 * 89478485;
constexpr int64_t kMaxClipPixels = int64_t{1} << 29;

/// Opens `path`, scans its best video stream and returns torchcodec's metadata. Throws MediaError: "missing_file",
/// "decode_error" (empty, not a media file, unreadable, no frame rate), "unsupported_format" (no video stream or
/// no decoder for it).
VideoInfo probe_video(const std::string& path);

/// The frames at `indices` (any order, duplicates allowed; negative i means num_frames + i, as in torchcodec),
/// uint8 [N, 3, H, W] in request order, equal to `VideoDecoder(path).get_frames_at(indices).data`. Decodes in one
/// forward pass over the sorted distinct indices, seeking forward only when the next wanted frame's keyframe lies
/// beyond the frames the decoder would produce anyway; unwanted non-reference H.264 pictures are not decoded.
/// `threads` is the FFmpeg decoder's thread count (0: FFmpeg picks, frame threading). Throws MediaError as
/// probe_video, plus "index_out_of_range" and "decode_error" (corrupt or truncated data before a wanted frame).
at::Tensor decode_frames(const std::string& path, const std::vector<int64_t>& indices, int threads = 0);

/// probe + sample_frame_indices(average_fps, num_frames, start_s, end_s, max_frames) + decode, opening the file
/// once. `before_decode`, when given, sees the plan after sampling and before the first frame is decoded, and may
/// throw (a MediaError) to refuse the clip: where long or inconsistent videos are reported and skipped. Throws
/// MediaError as decode_frames, plus "empty_video" (no frames) and "decode_error" for a frame rate the reference
/// cannot sample (at or below 0.5 fps) or unusable start/end times.
DecodedFrames read_clip(const std::string& path, std::optional<double> start_s, std::optional<double> end_s,
                        int64_t max_frames, int threads = 0,
                        const std::function<void(const ClipPlan&)>& before_decode = {});

/// torchvision `F.resize(frames, [size, size], InterpolationMode.BICUBIC, antialias=True)` on a uint8 [N, 3, H, W]
/// tensor, bit for bit: float32, ATen's antialiased bicubic (a = -0.5), clamp to [0, 255], round half to even,
/// uint8. Returns the input itself when it is already size x size (as torchvision does).
at::Tensor resize_frames_bicubic_aa(const at::Tensor& frames_u8_nchw, int64_t size);

/// The reference's `_transform_torch_tensor`: resize_frames_bicubic_aa, then float32 / 255, then (x - 0.5) / 0.5
/// per channel. float32 [N, 3, size, size].
at::Tensor video_pixels(const DecodedFrames& clip, int64_t size);

}  // namespace plm::media
