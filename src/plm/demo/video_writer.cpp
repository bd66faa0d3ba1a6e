#include "plm/demo/video_writer.h"

#include "plm/demo/demo_error.h"

#include <memory>
#include <stdexcept>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
}

namespace plm::demo {
namespace {

struct Resources {
  AVFormatContext* format = nullptr;
  AVCodecContext* codec = nullptr;
  AVFrame* frame = nullptr;
  AVPacket* packet = nullptr;
  ~Resources() {
    av_packet_free(&packet);
    av_frame_free(&frame);
    avcodec_free_context(&codec);
    if (format) {
      if (format->pb) avio_closep(&format->pb);
      avformat_free_context(format);
    }
  }
};

void check(int rc, const std::string& what, const std::string& path) {
  if (rc >= 0) return;
  char msg[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(rc, msg, sizeof(msg));
  throw DemoError("cannot write the video '" + path + "': " + what + " failed (" + msg + ").");
}

// BT.601 limited range, the integer formulas of ITU-R BT.601 / the JFIF-style 8-bit approximation.
void to_yuv420p(const Canvas& c, AVFrame* f) {
  for (int y = 0; y < c.height; ++y)
    for (int x = 0; x < c.width; ++x) {
      const uint8_t* p = &c.rgb[(static_cast<size_t>(y) * static_cast<size_t>(c.width) + static_cast<size_t>(x)) * 3];
      f->data[0][y * f->linesize[0] + x] = static_cast<uint8_t>(((66 * p[0] + 129 * p[1] + 25 * p[2] + 128) >> 8) + 16);
    }
  for (int y = 0; y < c.height / 2; ++y)
    for (int x = 0; x < c.width / 2; ++x) {
      int r = 0, g = 0, b = 0;
      for (int dy = 0; dy < 2; ++dy)
        for (int dx = 0; dx < 2; ++dx) {
          const size_t i = (static_cast<size_t>(2 * y + dy) * static_cast<size_t>(c.width) + 2 * x + dx) * 3;
          r += c.rgb[i];
          g += c.rgb[i + 1];
          b += c.rgb[i + 2];
        }
      r = (r + 2) / 4, g = (g + 2) / 4, b = (b + 2) / 4;
      f->data[1][y * f->linesize[1] + x] = static_cast<uint8_t>(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
      f->data[2][y * f->linesize[2] + x] = static_cast<uint8_t>(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
    }
}

void drain(Resources& res, AVStream* stream, const std::string& path) {
  for (;;) {
    const int rc = avcodec_receive_packet(res.codec, res.packet);
    if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
    check(rc, "encoding", path);
    // Without a duration the muxer's edit list ends at the last packet's start, and demuxers discard that frame.
    res.packet->duration = 1;
    av_packet_rescale_ts(res.packet, res.codec->time_base, stream->time_base);
    res.packet->stream_index = stream->index;
    check(av_interleaved_write_frame(res.format, res.packet), "writing a packet", path);
  }
}

}  // namespace

void write_video(const std::vector<Canvas>& frames, int fps, const std::string& path) {
  if (frames.empty() || frames[0].width % 2 || frames[0].height % 2)
    throw std::invalid_argument("write_video needs frames of even width and height: '" + path + "'.");
  Resources res;
  check(avformat_alloc_output_context2(&res.format, nullptr, "mp4", path.c_str()), "opening the muxer", path);
  res.format->flags |= AVFMT_FLAG_BITEXACT;
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
  if (!codec) throw DemoError("cannot write the video '" + path + "': this FFmpeg has no MPEG-4 encoder.");
  AVStream* stream = avformat_new_stream(res.format, nullptr);
  res.codec = avcodec_alloc_context3(codec);
  if (!stream || !res.codec) throw std::bad_alloc();
  AVCodecContext* c = res.codec;
  c->width = frames[0].width;
  c->height = frames[0].height;
  c->time_base = {1, fps};
  c->framerate = {fps, 1};
  c->pix_fmt = AV_PIX_FMT_YUV420P;
  c->colorspace = AVCOL_SPC_SMPTE170M;
  c->color_range = AVCOL_RANGE_MPEG;
  c->gop_size = static_cast<int>(frames.size());
  c->max_b_frames = 0;
  c->thread_count = 1;
  c->flags |= AV_CODEC_FLAG_BITEXACT | AV_CODEC_FLAG_QSCALE;
  c->global_quality = FF_QP2LAMBDA * 2;
  if (res.format->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  check(avcodec_open2(c, codec, nullptr), "opening the MPEG-4 encoder", path);
  check(avcodec_parameters_from_context(stream->codecpar, c), "setting the stream parameters", path);
  stream->time_base = c->time_base;
  check(avio_open(&res.format->pb, path.c_str(), AVIO_FLAG_WRITE), "opening the file", path);
  check(avformat_write_header(res.format, nullptr), "writing the header", path);

  res.frame = av_frame_alloc();
  res.packet = av_packet_alloc();
  if (!res.frame || !res.packet) throw std::bad_alloc();
  res.frame->format = c->pix_fmt;
  res.frame->width = c->width;
  res.frame->height = c->height;
  check(av_frame_get_buffer(res.frame, 0), "allocating a frame", path);
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].width != c->width || frames[i].height != c->height)
      throw std::invalid_argument("write_video got frames of different sizes: '" + path + "'.");
    check(av_frame_make_writable(res.frame), "allocating a frame", path);
    to_yuv420p(frames[i], res.frame);
    res.frame->pts = static_cast<int64_t>(i);
    res.frame->quality = c->global_quality;
    check(avcodec_send_frame(c, res.frame), "encoding", path);
    drain(res, stream, path);
  }
  check(avcodec_send_frame(c, nullptr), "flushing the encoder", path);
  drain(res, stream, path);
  check(av_write_trailer(res.format), "writing the trailer", path);
}

}  // namespace plm::demo
