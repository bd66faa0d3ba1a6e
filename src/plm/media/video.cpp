#include "plm/media/video.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include "plm/media/frame_sampling.h"
#include "plm/media/media_error.h"

namespace plm::media {
namespace {

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecFreer {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFreer {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFreer {
  void operator()(SwsContext* c) const { sws_freeContext(c); }
};
using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFreer>;

std::string av_error(int rc) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(rc, buf, sizeof(buf));
  return buf;
}

[[noreturn]] void fail(const std::string& reason, const std::string& path, const std::string& what) {
  throw MediaError(reason, "video '" + path + "' " + what + ".");
}

void quiet_ffmpeg_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* level = std::getenv("PLM_FFMPEG_LOG_LEVEL");
    av_log_set_level(level ? std::atoi(level) : AV_LOG_QUIET);
  });
}

// torchcodec's pts_to_seconds (FFMPEGCommon.cpp): multiply before dividing, in double.
double pts_to_seconds(int64_t pts, AVRational tb) {
  return static_cast<double>(pts) * tb.num / tb.den;
}
int64_t seconds_to_closest_pts(double s, AVRational tb) {
  return static_cast<int64_t>(std::round(s * tb.den / tb.num));
}
int64_t pts_or_dts(int64_t pts, int64_t dts) {
  return pts == AV_NOPTS_VALUE ? dts : pts;
}

// Quarter turns counter-clockwise that make the picture upright (torchcodec's rotation_from_degrees).
int quarter_turns(const AVStream* st) {
  size_t size = 0;
  const uint8_t* m = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
  if (!m || size < 9 * sizeof(int32_t)) return 0;
  const double deg = av_display_rotation_get(reinterpret_cast<const int32_t*>(m));
  if (std::isnan(deg)) return 0;
  const int k = static_cast<int>(std::round(deg / 90.0));
  return ((k % 4) + 4) % 4;
}

// Sets the YUV matrix `coefficients` (both ways, as torchcodec and vf_scale do) and, when the frame states one, the
// input range on `s`, keeping its other colour settings.
void set_colour(SwsContext* s, const int* coefficients, int range) {
  int *inv, *table, src_full, dst_full, brightness, contrast, saturation;
  sws_getColorspaceDetails(s, &inv, &src_full, &table, &dst_full, &brightness, &contrast, &saturation);
  if (range != AVCOL_RANGE_UNSPECIFIED) src_full = range == AVCOL_RANGE_JPEG;
  sws_setColorspaceDetails(s, coefficients, src_full, coefficients, dst_full, brightness, contrast, saturation);
}

// YUV (or any) -> RGB24 exactly as torchcodec's CPU device converts a frame (CpuDeviceInterface.cpp): swscale when
// the width is a multiple of 32 and nothing else is applied, else the filtergraph "format=rgb24[,transpose]".
class RgbConverter {
 public:
  explicit RgbConverter(int turns) : turns_(turns) {}

  /// Writes `f` as RGB24 into `dst` ([H, W, 3] after rotation, rows packed).
  void convert(const AVFrame& f, uint8_t* dst) {
    if (turns_ == 0 && f.width % 32 == 0) return convert_swscale(f, dst);
    convert_filter_like(f);
    const at::Tensor rgb = at::from_blob(rgb_->data[0], {f.height, f.width, 3}, {rgb_->linesize[0], 3, 1}, at::kByte);
    const bool swap = turns_ % 2 != 0;
    at::from_blob(dst, {swap ? f.width : f.height, swap ? f.height : f.width, 3}, at::kByte)
        .copy_(turns_ ? at::rot90(rgb, turns_, {0, 1}) : rgb);
  }

 private:
  struct Key {
    int w, h, format, colorspace, range;
    bool operator==(const Key& o) const {
      return w == o.w && h == o.h && format == o.format && colorspace == o.colorspace && range == o.range;
    }
  };

  // SwScale.cpp: sws_getContext with flags 0 (swscale's default bicubic), the frame's matrix and range, straight
  // into the output (rows of exactly 3 * width bytes, which is why torchcodec needs width % 32 == 0 here).
  void convert_swscale(const AVFrame& f, uint8_t* dst) {
    const Key key{f.width, f.height, f.format, f.colorspace, f.color_range};
    if (!sws_ || !(key == key_)) {
      sws_.reset(sws_getContext(f.width, f.height, static_cast<AVPixelFormat>(f.format), f.width, f.height,
                                AV_PIX_FMT_RGB24, 0, nullptr, nullptr, nullptr));
      TORCH_CHECK(sws_, "sws_getContext failed");
      set_colour(sws_.get(), sws_getCoefficients(f.colorspace), f.color_range);
      key_ = key;
    }
    uint8_t* planes[4] = {dst, nullptr, nullptr, nullptr};
    int strides[4] = {f.width * 3, 0, 0, 0};
    sws_scale(sws_.get(), f.data, f.linesize, 0, f.height, planes, strides);
  }

  // The scale filter libavfilter 8 inserts before "format=rgb24" (vf_scale.c config_props and scale_frame with
  // default options; one thread, as torchcodec's one-thread graph has), into the aligned frame rgb_.
  void convert_filter_like(const AVFrame& f) {
    const Key key{f.width, f.height, f.format, 0, f.color_range};
    if (!sws_ || !(key == key_)) {
      sws_.reset(sws_alloc_context());
      const std::pair<const char*, int64_t> options[] = {
          {"srcw", f.width},
          {"srch", f.height},
          {"src_format", f.format},
          {"dstw", f.width},
          {"dsth", f.height},
          {"dst_format", AV_PIX_FMT_RGB24},
          {"sws_flags", 0},
          {"param0", SWS_PARAM_DEFAULT},
          {"param1", SWS_PARAM_DEFAULT},
          {"threads", 1},
          {"src_h_chr_pos", -513},
          {"src_v_chr_pos", f.format == AV_PIX_FMT_YUV420P ? 128 : -513},  // MPEG-2 siting, yuv420p only
          {"dst_h_chr_pos", -513},
          {"dst_v_chr_pos", -513}};
      for (const auto& [name, value] : options) av_opt_set_int(sws_.get(), name, value, 0);
      if (f.color_range != AVCOL_RANGE_UNSPECIFIED)
        av_opt_set_int(sws_.get(), "src_range", f.color_range == AVCOL_RANGE_JPEG, 0);
      TORCH_CHECK(sws_init_context(sws_.get(), nullptr, nullptr) >= 0, "sws_init_context failed");
      rgb_.reset(av_frame_alloc());
      rgb_->format = AV_PIX_FMT_RGB24;
      rgb_->width = f.width;
      rgb_->height = f.height;
      TORCH_CHECK(av_frame_get_buffer(rgb_.get(), 0) >= 0, "av_frame_get_buffer failed");
      key_ = key;
    }
    // parse_yuv_type("auto", colorspace): the frame's matrix, BT.470BG where it is not a YUV matrix.
    const int cs = f.colorspace < 1 || f.colorspace > 10 || f.colorspace == 8 ? AVCOL_SPC_BT470BG : f.colorspace;
    set_colour(sws_.get(), sws_getCoefficients(cs), f.color_range);
    TORCH_CHECK(sws_scale_frame(sws_.get(), rgb_.get(), &f) >= 0, "sws_scale_frame failed");
  }

  int turns_;
  Key key_{};
  SwsPtr sws_;
  FramePtr rgb_;
};

// One opened file: the best video stream and torchcodec's scan of its packets.
class VideoFile {
 public:
  explicit VideoFile(const std::string& path) : path_(path) {
    quiet_ffmpeg_once();
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status))
      fail("missing_file", path,
           ec && ec != std::errc::no_such_file_or_directory
               ? "cannot be reached (" + ec.message() + ")"  // e.g. a symlink loop
               : std::string("does not exist"));
    // A FIFO, socket or device would block FFmpeg's open (or read forever): only regular files are media.
    if (!std::filesystem::is_regular_file(status))
      fail("decode_error", path,
           std::filesystem::is_directory(status) ? "is a folder, not a video file"
                                                 : "is not a regular file (a FIFO, device or socket)");
    if (std::filesystem::file_size(path, ec) == 0) fail("decode_error", path, "is an empty file (0 bytes)");
    AVFormatContext* raw = nullptr;
    int rc = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
    if (rc == AVERROR(ENOENT)) fail("missing_file", path, "does not exist");
    if (rc < 0) fail("decode_error", path, "cannot be opened as a media file (" + av_error(rc) + ")");
    fmt_.reset(raw);
    if ((rc = avformat_find_stream_info(fmt_.get(), nullptr)) < 0)
      fail("decode_error", path, "has unreadable stream information (" + av_error(rc) + ")");
    stream_ = av_find_best_stream(fmt_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &codec_, 0);
    if (stream_ == AVERROR_STREAM_NOT_FOUND) fail("unsupported_format", path, "has no video stream");
    if (stream_ < 0 || !codec_) fail("unsupported_format", path, "has a video codec FFmpeg cannot decode");
    st_ = fmt_->streams[stream_];
    turns_ = quarter_turns(st_);
    scan();
  }

  VideoInfo info() const {
    VideoInfo info;
    info.num_frames = static_cast<int64_t>(frames_.size());
    info.width = st_->codecpar->width;
    info.height = st_->codecpar->height;
    info.declared_frames = std::max<int64_t>(st_->nb_frames, 0);
    const auto n = static_cast<int64_t>(frames_.size());
    for (size_t k = 0; k < key_index_.size(); ++k)
      info.longest_gop =
          std::max(info.longest_gop, (k + 1 < key_index_.size() ? key_index_[k + 1] : n) - key_index_[k]);
    if (key_index_.empty() || key_index_.front() > 0)  // frames before the first keyframe decode from the start
      info.longest_gop = std::max(info.longest_gop, key_index_.empty() ? n : key_index_.front());
    if (turns_ % 2) std::swap(info.width, info.height);
    const double span = pts_to_seconds(end_pts_, st_->time_base) - pts_to_seconds(begin_pts_, st_->time_base);
    const double header_fps = av_q2d(st_->r_frame_rate);
    if (span != 0.0) {
      info.average_fps = static_cast<double>(frames_.size()) / span;
    } else if (header_fps > 0) {
      info.average_fps = header_fps;
    } else {
      fail("decode_error", path_, "has no frame rate (no frame durations and none in the header)");
    }
    return info;
  }

  at::Tensor decode(const std::vector<int64_t>& indices, int threads);

  /// ClipPlan::frames_to_decode for `indices` as decode() takes them (negative from the end; out-of-range ones, which
  /// decode() refuses, cost nothing).
  int64_t frames_to_decode(std::vector<int64_t> indices) const {
    const auto n = static_cast<int64_t>(frames_.size());
    for (int64_t& i : indices)
      if (i < 0) i += n;
    indices.erase(std::remove_if(indices.begin(), indices.end(), [n](int64_t i) { return i < 0 || i >= n; }),
                  indices.end());
    std::sort(indices.begin(), indices.end());
    indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
    int64_t last = -1, total = 0;
    for (const int64_t j : indices) {
      const auto k = std::upper_bound(key_index_.begin(), key_index_.end(), j) - key_index_.begin() - 1;
      const int64_t key = k >= 0 ? key_index_[static_cast<size_t>(k)] : 0;
      total += last >= key ? j - last : j - key + 1;
      last = j;
    }
    return total;
  }

 private:
  struct FrameInfo {
    int64_t pts = 0, next_pts = INT64_MAX;
    bool key = false;
  };

  // SingleStreamDecoder::scan_file_and_update_metadata_and_index, for the one stream we decode.
  void scan() {
    for (unsigned i = 0; i < fmt_->nb_streams; ++i)
      if (static_cast<int>(i) != stream_) fmt_->streams[i]->discard = AVDISCARD_ALL;
    std::unique_ptr<AVPacket, PacketFreer> pkt(av_packet_alloc());
    int64_t begin = INT64_MAX, end = INT64_MIN;
    while (true) {
      const int rc = av_read_frame(fmt_.get(), pkt.get());
      if (rc == AVERROR_EOF) break;
      if (rc < 0) fail("decode_error", path_, "cannot be read to the end (" + av_error(rc) + ")");
      if (pkt->stream_index == stream_ && !(pkt->flags & AV_PKT_FLAG_DISCARD)) {
        const int64_t pts = pts_or_dts(pkt->pts, pkt->dts);
        begin = std::min(begin, pts);
        end = std::max(end, pts + pkt->duration);
        frames_.push_back({pts, INT64_MAX, (pkt->flags & AV_PKT_FLAG_KEY) != 0});
      }
      av_packet_unref(pkt.get());
    }
    begin_pts_ = frames_.empty() ? 0 : begin;
    end_pts_ = frames_.empty() ? 0 : end;
    // Back to the start as torchcodec does (stream 0's timestamp 0): for formats that seek by searching
    // timestamps (MPEG-TS), the entries this search adds to the index steer later seeks, so it matters.
    if (const int rc = avformat_seek_file(fmt_.get(), 0, INT64_MIN, 0, 0, 0); rc < 0)
      fail("decode_error", path_, "cannot be seeked (" + av_error(rc) + ")");
    std::sort(frames_.begin(), frames_.end(), [](const FrameInfo& a, const FrameInfo& b) { return a.pts < b.pts; });
    for (size_t i = 0; i < frames_.size(); ++i) {
      if (i + 1 < frames_.size()) frames_[i].next_pts = frames_[i + 1].pts;
      if (frames_[i].key) {
        key_pts_.push_back(frames_[i].pts);
        key_index_.push_back(static_cast<int64_t>(i));
      }
    }
  }

  friend class Decoder;
  std::string path_;
  std::unique_ptr<AVFormatContext, FormatCloser> fmt_;
  const AVCodec* codec_ = nullptr;
  int stream_ = -1;
  AVStream* st_ = nullptr;
  int turns_ = 0;
  std::vector<FrameInfo> frames_;
  std::vector<int64_t> key_pts_, key_index_;
  int64_t begin_pts_ = 0, end_pts_ = 0;
};

// One forward pass of torchcodec's SingleStreamDecoder over a VideoFile: cursor, seek heuristic, frame filter.
class Decoder {
 public:
  Decoder(VideoFile& file, int threads) : v_(file), turns_(file.turns_), rgb_(file.turns_) {
    ctx_.reset(avcodec_alloc_context3(v_.codec_));
    TORCH_CHECK(ctx_, "avcodec_alloc_context3 failed");
    if (avcodec_parameters_to_context(ctx_.get(), v_.st_->codecpar) < 0)
      fail("unsupported_format", v_.path_, "has codec parameters FFmpeg cannot use");
    ctx_->thread_count = threads;
    ctx_->pkt_timebase = v_.st_->time_base;
    const int rc = avcodec_open2(ctx_.get(), v_.codec_, nullptr);
    if (rc < 0) fail("unsupported_format", v_.path_, "has a video stream FFmpeg cannot open (" + av_error(rc) + ")");
    // Non-reference H.264 pictures (nal_ref_idc 0) feed no other picture: skipping the unwanted ones changes
    // no wanted pixel. Other codecs' "non-reference" classes are not that strict (HEVC sub-layers), so only H.264.
    skip_nonref_ = v_.codec_->id == AV_CODEC_ID_H264;
    pkt_.reset(av_packet_alloc());
    frame_.reset(av_frame_alloc());
  }

  /// Decodes the frame with scanned index `index` (called with increasing indices) into `dst` ([H, W, 3]).
  void decode(int64_t index, uint8_t* dst, int64_t height, int64_t width) {
    if (index != last_index_ + 1) {
      cursor_ = seconds_to_closest_pts(pts_to_seconds(v_.frames_[index].pts, v_.st_->time_base), v_.st_->time_base);
      if (!can_avoid_seek()) seek();
    }
    receive_frame_at_cursor(index);
    const bool rotated = turns_ % 2 != 0;
    if ((rotated ? frame_->height : frame_->width) != width || (rotated ? frame_->width : frame_->height) != height)
      fail("decode_error", v_.path_,
           "changes frame size mid-stream (frame " + std::to_string(index) + " is " + std::to_string(frame_->width) +
               "x" + std::to_string(frame_->height) + ")");
    rgb_.convert(*frame_, dst);
    last_index_ = index;
    last_pts_ = pts_or_dts(frame_->pts, frame_->pkt_dts);
  }

  /// The pts of the frames the caller will ask for: packets with other pts may be skipped if non-reference.
  void set_wanted(std::vector<int64_t> pts) {
    wanted_ = std::move(pts);
    std::sort(wanted_.begin(), wanted_.end());
  }

 private:
  int key_frame_id(int64_t pts) const {
    const auto& k = v_.key_pts_;
    return static_cast<int>(std::upper_bound(k.begin(), k.end(), pts) - k.begin()) - 1;
  }

  // SingleStreamDecoder::can_we_avoid_seeking: seek only when the target's keyframe lies beyond the frames a
  // flush would throw away (reorder buffer + frame-threading pipeline).
  bool can_avoid_seek() const {
    if (cursor_ <= last_pts_) return false;
    const int last_key = key_frame_id(last_pts_), target_key = key_frame_id(cursor_);
    if (last_key < 0 || target_key < 0) return false;
    if (last_key == target_key) return true;
    const AVRational tb = v_.st_->time_base;
    const double last_s = pts_to_seconds(last_pts_, tb);
    const auto x = std::lower_bound(v_.frames_.begin(), v_.frames_.end(), last_s,
                                    [&](const auto& f, double s) { return pts_to_seconds(f.next_pts, tb) <= s; }) -
                   v_.frames_.begin();
    const int64_t j = v_.key_index_[target_key];
    int64_t in_flight = 0;
    if (ctx_->active_thread_type & FF_THREAD_FRAME) in_flight = std::max(ctx_->thread_count, 1) - 1;
    return j - x <= std::max(ctx_->has_b_frames, 0) + in_flight;
  }

  void seek() {
    const int key = key_frame_id(cursor_);
    const int64_t target = key >= 0 ? v_.key_pts_[key] : cursor_;
    const int rc = avformat_seek_file(v_.fmt_.get(), v_.stream_, INT64_MIN, target, target, 0);
    if (rc < 0) fail("decode_error", v_.path_, "cannot be seeked (" + av_error(rc) + ")");
    avcodec_flush_buffers(ctx_.get());
    eof_sent_ = false;
  }

  // The first decoded frame with pts >= cursor (torchcodec's decode_av_frame filter). Every turn of the loop
  // either receives a frame, reads a packet or ends the stream, and the decoder must return EOF once drained:
  // the loop ends; the cap only guards against a misbehaving decoder.
  void receive_frame_at_cursor(int64_t index) {
    const size_t cap = 4 * v_.frames_.size() + 4096;
    for (size_t turn = 0; turn < cap; ++turn) {
      int rc = avcodec_receive_frame(ctx_.get(), frame_.get());
      if (rc >= 0) {
        if (pts_or_dts(frame_->pts, frame_->pkt_dts) >= cursor_) return;
        continue;
      }
      if (rc == AVERROR_EOF) break;
      if (rc != AVERROR(EAGAIN))
        fail("decode_error", v_.path_, "has a frame FFmpeg cannot decode (" + av_error(rc) + ")");
      if (eof_sent_) break;
      rc = av_read_frame(v_.fmt_.get(), pkt_.get());
      if (rc == AVERROR_EOF) {
        avcodec_send_packet(ctx_.get(), nullptr);
        eof_sent_ = true;
        continue;
      }
      if (rc < 0) fail("decode_error", v_.path_, "cannot be read (" + av_error(rc) + ")");
      if (pkt_->stream_index == v_.stream_) {
        const int64_t pts = pts_or_dts(pkt_->pts, pkt_->dts);
        const bool wanted = std::binary_search(wanted_.begin(), wanted_.end(), pts);
        ctx_->skip_frame = skip_nonref_ && !wanted ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
        rc = avcodec_send_packet(ctx_.get(), pkt_.get());
      }
      av_packet_unref(pkt_.get());
      if (rc < 0) fail("decode_error", v_.path_, "has corrupt or truncated data (" + av_error(rc) + ")");
    }
    fail("decode_error", v_.path_, "ends before frame " + std::to_string(index) + " can be decoded");
  }

  VideoFile& v_;
  int turns_;
  RgbConverter rgb_;
  std::unique_ptr<AVCodecContext, CodecFreer> ctx_;
  std::unique_ptr<AVPacket, PacketFreer> pkt_;
  FramePtr frame_;
  std::vector<int64_t> wanted_;
  bool skip_nonref_ = false, eof_sent_ = false;
  int64_t last_index_ = INT64_MIN, last_pts_ = INT64_MIN, cursor_ = INT64_MIN;
};

at::Tensor VideoFile::decode(const std::vector<int64_t>& indices, int threads) {
  const auto n = static_cast<int64_t>(frames_.size());
  std::vector<int64_t> wanted;  // normalised, in request order
  for (int64_t i : indices) {
    const int64_t j = i < 0 ? i + n : i;
    if (j < 0 || j >= n)
      fail("index_out_of_range", path_,
           "has " + std::to_string(n) + " frames, frame " + std::to_string(i) + " was asked for");
    wanted.push_back(j);
  }
  const VideoInfo shape = info();
  std::vector<int64_t> order(wanted.begin(), wanted.end());
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  // The pixel budget, checked before any frame is decoded (video.h): the frames' declared size, not the file's.
  const auto frames = static_cast<int64_t>(wanted.size());  // the returned tensor holds every requested frame
  if (shape.width <= 0 || shape.height <= 0) fail("decode_error", path_, "declares an empty frame size");
  if (shape.width * shape.height > kMaxFramePixels || shape.width * shape.height * frames > kMaxClipPixels)
    fail("too_large", path_,
         "has " + std::to_string(shape.width) + "x" + std::to_string(shape.height) + " frames; " +
             std::to_string(frames) + " of them are " + std::to_string(shape.width * shape.height * frames) +
             " pixels, more than the limit of " + std::to_string(kMaxFramePixels) +
             " per frame (Pillow's, as for "
             "images) and " +
             std::to_string(kMaxClipPixels) + " per clip (a decompression bomb?)");
  at::Tensor unique = at::empty({static_cast<int64_t>(order.size()), shape.height, shape.width, 3}, at::kByte);
  if (!order.empty()) {
    Decoder decoder(*this, threads);
    std::vector<int64_t> pts;
    for (int64_t j : order) pts.push_back(frames_[j].pts);
    decoder.set_wanted(std::move(pts));
    const int64_t frame_bytes = shape.height * shape.width * 3;
    for (size_t k = 0; k < order.size(); ++k)
      decoder.decode(order[k], unique.data_ptr<uint8_t>() + k * frame_bytes, shape.height, shape.width);
  }
  if (order != wanted) {
    std::vector<int64_t> rows;
    for (int64_t j : wanted) rows.push_back(std::lower_bound(order.begin(), order.end(), j) - order.begin());
    unique = unique.index_select(0, at::tensor(rows, at::kLong));
  }
  return unique.permute({0, 3, 1, 2});
}

}  // namespace

VideoInfo probe_video(const std::string& path) {
  return VideoFile(path).info();
}

at::Tensor decode_frames(const std::string& path, const std::vector<int64_t>& indices, int threads) {
  return VideoFile(path).decode(indices, threads);
}

DecodedFrames read_clip(const std::string& path, std::optional<double> start_s, std::optional<double> end_s,
                        int64_t max_frames, int threads, const std::function<void(const ClipPlan&)>& before_decode) {
  VideoFile file(path);
  DecodedFrames clip;
  clip.path = path;
  clip.info = file.info();
  if (clip.info.num_frames == 0) fail("empty_video", path, "has no frames");
  try {
    clip.indices = sample_frame_indices(clip.info.average_fps, clip.info.num_frames, start_s, end_s, max_frames);
  } catch (const std::invalid_argument& e) {
    fail("decode_error", path, std::string("cannot be sampled: ") + e.what());
  }
  clip.frames_to_decode = file.frames_to_decode(clip.indices);
  if (before_decode) before_decode({path, clip.info, clip.indices, clip.frames_to_decode});
  clip.frames = file.decode(clip.indices, threads);
  return clip;
}

namespace {

// torchvision's resize of one frame ([1, 3, H, W] uint8, any strides) before its final uint8 cast: float32, ATen's
// antialiased bicubic, clamp, round; every value is an integer in [0, 255]. The kernel gives the same floats for
// contiguous and channels-last input. Frame by frame, the float copy stays in cache (a 32-frame 720p batch would
// be 350 MB): 2.7x faster than the batched call, same values.
at::Tensor resized_rounded(const at::Tensor& frame, int64_t size) {
  at::Tensor x = frame.contiguous().to(at::kFloat);
  x = at::_upsample_bicubic2d_aa(x, {size, size}, /*align_corners=*/false, std::nullopt, std::nullopt);
  return x.clamp_(0, 255).round_();
}

bool already_sized(const at::Tensor& frames, int64_t size) {
  TORCH_CHECK(frames.dim() == 4 && frames.scalar_type() == at::kByte, "video frames must be uint8 [N, C, H, W], got ",
              frames.sizes(), " ", frames.scalar_type());
  return frames.size(2) == size && frames.size(3) == size;
}

}  // namespace

at::Tensor resize_frames_bicubic_aa(const at::Tensor& frames_u8_nchw, int64_t size) {
  if (already_sized(frames_u8_nchw, size)) return frames_u8_nchw;
  at::Tensor out = at::empty({frames_u8_nchw.size(0), frames_u8_nchw.size(1), size, size}, at::kByte);
  for (int64_t i = 0; i < out.size(0); ++i) out[i].copy_(resized_rounded(frames_u8_nchw.narrow(0, i, 1), size)[0]);
  return out;
}

at::Tensor video_pixels(const DecodedFrames& clip, int64_t size) {
  const at::Tensor& frames = clip.frames;
  const bool sized = already_sized(frames, size);
  const at::Tensor half = at::full({3, 1, 1}, 0.5, at::kFloat);
  at::Tensor out = at::empty({frames.size(0), frames.size(1), size, size}, at::kFloat);
  for (int64_t i = 0; i < out.size(0); ++i) {
    const at::Tensor frame = frames.narrow(0, i, 1);
    // The reference: uint8 resize, .to(float32) / 255.0, Normalize(0.5, 0.5) = sub_(mean).div_(std).
    at::Tensor x = sized ? frame.to(at::kFloat) : resized_rounded(frame, size);
    out[i].copy_(x.div_(255.0).sub_(half).div_(half)[0]);
  }
  return out;
}

}  // namespace plm::media
