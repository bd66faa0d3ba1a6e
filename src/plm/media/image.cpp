// Still-image decoding with Pillow's pixels (see image.h). Pillow behaviours reproduced here, from its sources
// (JpegDecode.c, JpegImagePlugin.py, PngImagePlugin.py, _webp.c, Convert.c, Unpack.c) and checked by
// tests/parity/image_parity.py: libjpeg defaults (JDCT_ISLOW, fancy upsampling) with RGB, greyscale or CMYK output;
// CMYK read as "CMYK;I" (inverted) then Convert.c's cmyk2rgb; a JPEG that needs bytes beyond the end of the file
// before its last scanline is "truncated"; PNG modes by (bit depth, colour type) as Pillow's _MODES table, 16-bit
// samples keep their high byte except 16-bit grey ("I;16", clipped); WebP through WebPAnimDecoder in RGBA.
#include "plm/media/image.h"

#include <png.h>
#include <sys/mman.h>

#include <algorithm>
#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include <jpeglib.h>
#include <webp/demux.h>
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include "plm/media/media_error.h"

namespace plm::media {
namespace {

[[noreturn]] void fail(const char* reason, const std::string& origin, const std::string& why) {
  throw MediaError(reason, "cannot decode image '" + origin + "': " + why + ".");
}

/// An empty RGB image, after the size checks Pillow makes before decoding.
at::Tensor new_rgb(int64_t width, int64_t height, const std::string& origin) {
  constexpr int64_t kMaxPixels = 2 * 89478485;  // 2 * PIL.Image.MAX_IMAGE_PIXELS: DecompressionBombError above
  if (width <= 0 || height <= 0) fail("decode_error", origin, "it declares an empty size");
  if (width * height > kMaxPixels) {
    throw MediaError("too_large", "image '" + origin + "' has " + std::to_string(width) + "x" + std::to_string(height) +
                                      " pixels, more than Pillow's limit of " + std::to_string(kMaxPixels) +
                                      " (which it refuses as a decompression bomb).");
  }
  return empty_pixels({height, width, 3}, at::kByte);
}

// ---- JPEG (libjpeg-turbo). The functions that call setjmp hold no C++ objects, so libjpeg may longjmp out.

struct JpegDecoder {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr errors{};
  jpeg_source_mgr source{};
  std::jmp_buf jump{};
  char message[JMSG_LENGTH_MAX] = "";
  bool past_end = false;  // the decoder asked for bytes beyond the end of the data
  bool created = false;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

JpegDecoder& decoder_of(j_common_ptr cinfo) {
  return *static_cast<JpegDecoder*>(cinfo->client_data);
}

void jpeg_fail(j_common_ptr cinfo) {
  cinfo->err->format_message(cinfo, decoder_of(cinfo).message);
  std::longjmp(decoder_of(cinfo).jump, 1);
}
void jpeg_ignore_message(j_common_ptr, int) {}  // warnings (corrupt data, extra bytes) do not stop Pillow either
void jpeg_no_op(j_decompress_ptr) {}

/// At the end of the data: note it and feed an EOI marker so libjpeg finishes (Pillow would stop and report the
/// file as truncated at this point).
boolean jpeg_fill(j_decompress_ptr cinfo) {
  static const JOCTET kEoi[2] = {0xFF, JPEG_EOI};
  decoder_of(reinterpret_cast<j_common_ptr>(cinfo)).past_end = true;
  cinfo->src->next_input_byte = kEoi;
  cinfo->src->bytes_in_buffer = 2;
  return TRUE;
}
void jpeg_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  if (static_cast<size_t>(n) > cinfo->src->bytes_in_buffer) {
    jpeg_fill(cinfo);
    return;
  }
  cinfo->src->next_input_byte += n;
  cinfo->src->bytes_in_buffer -= n;
}

/// Reads the header and starts decompression with Pillow's settings; false on a libjpeg error.
bool jpeg_start(JpegDecoder& d, const uint8_t* data, size_t size) {
  d.cinfo.err = jpeg_std_error(&d.errors);
  d.errors.error_exit = jpeg_fail;
  d.errors.emit_message = jpeg_ignore_message;
  d.cinfo.client_data = &d;
  if (setjmp(d.jump)) return false;
  jpeg_create_decompress(&d.cinfo);
  d.created = true;
  d.source.next_input_byte = data;
  d.source.bytes_in_buffer = size;
  d.source.init_source = jpeg_no_op;
  d.source.fill_input_buffer = jpeg_fill;
  d.source.skip_input_data = jpeg_skip;
  d.source.resync_to_restart = jpeg_resync_to_restart;
  d.source.term_source = jpeg_no_op;
  d.cinfo.src = &d.source;
  jpeg_read_header(&d.cinfo, TRUE);
  // Pillow's modes: 1 component "L", 3 "RGB", 4 "CMYK" (anything else is refused by libjpeg's conversion).
  d.cinfo.out_color_space = d.cinfo.num_components == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&d.cinfo);
  return true;
}

/// Decodes every scanline into rows of `row_bytes` at `out`, then finishes; false on a libjpeg error.
bool jpeg_read_all(JpegDecoder& d, uint8_t* out, size_t row_bytes, bool& truncated) {
  if (setjmp(d.jump)) return false;
  while (d.cinfo.output_scanline < d.cinfo.output_height) {
    JSAMPROW rows[8];
    const JDIMENSION n = std::min<JDIMENSION>(8, d.cinfo.output_height - d.cinfo.output_scanline);
    for (JDIMENSION i = 0; i < n; ++i) rows[i] = out + (d.cinfo.output_scanline + i) * row_bytes;
    jpeg_read_scanlines(&d.cinfo, rows, n);
  }
  truncated = d.past_end;  // running out while looking for EOI after the last row is fine in Pillow
  jpeg_finish_decompress(&d.cinfo);
  return true;
}

/// Pillow's "CMYK;I" unpacking (255 - x) followed by Convert.c's cmyk2rgb.
void cmyk_to_rgb(const uint8_t* cmyk, int64_t pixels, uint8_t* rgb) {
  for (int64_t i = 0; i < pixels; ++i, cmyk += 4, rgb += 3) {
    const int nk = cmyk[3];  // 255 - (255 - K)
    for (int c = 0; c < 3; ++c) {
      const int t = (255 - cmyk[c]) * nk + 128;
      const int v = nk - (((t >> 8) + t) >> 8);
      rgb[c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
    }
  }
}

at::Tensor decode_jpeg(std::string_view bytes, const std::string& origin) {
  JpegDecoder d;
  if (!jpeg_start(d, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())) {
    fail("decode_error", origin,
         d.past_end ? "the JPEG data is truncated (the file ends in its header)"
                    : std::string("invalid JPEG data (") + d.message + ")");
  }
  at::Tensor rgb = new_rgb(d.cinfo.output_width, d.cinfo.output_height, origin);
  const bool cmyk = d.cinfo.out_color_space == JCS_CMYK;
  std::vector<uint8_t> four(cmyk ? rgb.numel() / 3 * 4 : 0);
  bool truncated = false;
  if (!jpeg_read_all(d, cmyk ? four.data() : rgb.data_ptr<uint8_t>(), d.cinfo.output_width * (cmyk ? 4 : 3), truncated))
    fail("decode_error", origin, std::string("corrupt JPEG data (") + d.message + ")");
  if (truncated) fail("decode_error", origin, "the JPEG data is truncated (the file ends before the last scanline)");
  if (cmyk) cmyk_to_rgb(four.data(), rgb.numel() / 3, rgb.data_ptr<uint8_t>());
  return rgb;
}

// ---- PNG (libpng's progressive reader: like Pillow's own zlib-based reader it decodes whatever bytes there are,
// so a file that ends after the last row's data, without the end of the zlib stream, CRC or IEND, is still
// complete, and one that ends earlier is truncated). setjmp as for JPEG.

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[256] = "";
  int depth = 0;              // bits per sample in the file (png_set_packing makes libpng report 8 afterwards)
  bool have_header = false;   // the chunks before the image data have been read
  size_t unread = 0;          // bytes not yet fed once the header is read
  png_bytepp rows = nullptr;  // where each image row goes
  int64_t rows_decoded = 0;   // rows inflated and unfiltered so far, all interlace passes together
  ~PngDecoder() { png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr); }
};

PngDecoder& decoder_of(png_structp png) {
  return *static_cast<PngDecoder*>(png_get_progressive_ptr(png));
}

void png_fail(png_structp png, png_const_charp message) {
  std::snprintf(decoder_of(png).message, sizeof decoder_of(png).message, "%s", message);
  png_longjmp(png, 1);
}
void png_ignore_warning(png_structp, png_const_charp) {}

/// At the first IDAT: 1/2/4-bit samples unpacked to a byte each (unscaled), Adam7 passes combined, rows counted;
/// then feeding pauses so the caller can allocate the output.
void png_on_header(png_structp png, png_infop info) {
  PngDecoder& d = decoder_of(png);
  d.depth = png_get_bit_depth(png, info);
  png_set_packing(png);
  png_set_interlace_handling(png);
  png_set_read_user_transform_fn(png, [](png_structp p, png_row_infop, png_bytep) { ++decoder_of(p).rows_decoded; });
  png_read_update_info(png, info);
  d.have_header = true;
  d.unread = png_process_data_pause(png, 0);
}
void png_on_row(png_structp png, png_bytep row, png_uint_32 y, int) {
  if (row != nullptr) png_progressive_combine_row(png, decoder_of(png).rows[y], row);
}

bool png_feed(PngDecoder& d, const uint8_t* data, size_t size) {
  if (setjmp(png_jmpbuf(d.png))) return false;
  if (size > 0) png_process_data(d.png, d.info, const_cast<png_bytep>(data), size);
  return true;
}

/// The rows libpng decodes for a width x height image: height, or the rows of the non-empty Adam7 passes.
int64_t png_rows_in_file(png_uint_32 width, png_uint_32 height, bool interlaced) {
  if (!interlaced) return height;
  int64_t rows = 0;
  for (int pass = 0; pass < 7; ++pass) {
    if (PNG_PASS_COLS(width, pass) > 0) rows += PNG_PASS_ROWS(height, pass);
  }
  return rows;
}

/// One decoded PNG row (`channels` samples of `depth` bits per pixel, 1/2/4-bit ones unpacked to a byte each) to
/// RGB as Pillow's mode for (depth, colour type) followed by convert("RGB") produce it; alpha is dropped.
void png_row_to_rgb(const uint8_t* row, int color_type, int depth, int channels, const png_colorp palette,
                    int palette_size, int64_t width, uint8_t* out) {
  const int bytes = depth == 16 ? 2 : 1;
  const int step = channels * bytes;
  const int grey_scale = depth < 8 ? 255 / ((1 << depth) - 1) : 1;  // "1", "L;2", "L;4" unpack to 0..255
  for (int64_t x = 0; x < width; ++x, row += step, out += 3) {
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
      const png_color c = row[0] < palette_size ? palette[row[0]] : png_color{0, 0, 0};
      out[0] = c.red, out[1] = c.green, out[2] = c.blue;
    } else if (color_type & PNG_COLOR_MASK_COLOR) {
      out[0] = row[0], out[1] = row[bytes], out[2] = row[2 * bytes];  // high bytes ("RGB;16B", "RGBA;16B")
    } else {
      uint8_t grey = static_cast<uint8_t>(row[0] * grey_scale);
      if (depth == 16 && color_type == PNG_COLOR_TYPE_GRAY) grey = row[0] != 0 ? 255 : row[1];  // "I;16" clips
      out[0] = out[1] = out[2] = grey;  // 16-bit grey + alpha ("LA;16B") keeps the high byte
    }
  }
}

at::Tensor decode_png(std::string_view bytes, const std::string& origin) {
  PngDecoder d;
  d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d, png_fail, png_ignore_warning);
  if (d.png != nullptr) d.info = png_create_info_struct(d.png);
  if (d.info == nullptr) fail("decode_error", origin, "libpng could not allocate its decoder");
  png_set_progressive_read_fn(d.png, &d, png_on_header, png_on_row, nullptr);
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  if (!png_feed(d, data, bytes.size()))
    fail("decode_error", origin, std::string("invalid PNG data (") + d.message + ")");
  if (!d.have_header) fail("decode_error", origin, "the PNG data ends before its image data starts (truncated)");
  const png_uint_32 width = png_get_image_width(d.png, d.info), height = png_get_image_height(d.png, d.info);
  const int color_type = png_get_color_type(d.png, d.info);
  at::Tensor rgb = new_rgb(width, height, origin);
  // 8-bit RGB decodes straight into the result; everything else through a buffer of decoded rows.
  const bool direct = color_type == PNG_COLOR_TYPE_RGB && d.depth == 8;
  const size_t row_bytes = png_get_rowbytes(d.png, d.info);
  std::vector<uint8_t> raw(direct ? 0 : row_bytes * height);
  uint8_t* base = direct ? rgb.data_ptr<uint8_t>() : raw.data();
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = base + y * row_bytes;
  d.rows = rows.data();
  if (!png_feed(d, data + bytes.size() - d.unread, d.unread))
    fail("decode_error", origin, std::string("corrupt PNG data (") + d.message + ")");
  if (d.rows_decoded != png_rows_in_file(width, height, png_get_interlace_type(d.png, d.info) != PNG_INTERLACE_NONE))
    fail("decode_error", origin, "the PNG data is truncated (the file ends before the last row)");
  if (!direct) {
    png_colorp palette = nullptr;
    int palette_size = 0;
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_get_PLTE(d.png, d.info, &palette, &palette_size);
    const int channels = png_get_channels(d.png, d.info);
    for (png_uint_32 y = 0; y < height; ++y)
      png_row_to_rgb(rows[y], color_type, d.depth, channels, palette, palette_size, width,
                     rgb.data_ptr<uint8_t>() + int64_t{y} * width * 3);
  }
  return rgb;
}

// ---- WebP: Pillow decodes through WebPAnimDecoder (RGBA, single-threaded), then drops alpha.

at::Tensor decode_webp(std::string_view bytes, const std::string& origin) {
  WebPAnimDecoderOptions options;
  if (!WebPAnimDecoderOptionsInit(&options)) fail("decode_error", origin, "libwebp version mismatch");
  options.color_mode = MODE_RGBA;
  options.use_threads = 0;
  const WebPData data{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
  std::unique_ptr<WebPAnimDecoder, void (*)(WebPAnimDecoder*)> decoder(WebPAnimDecoderNew(&data, &options),
                                                                       WebPAnimDecoderDelete);
  WebPAnimInfo info;
  if (decoder == nullptr || !WebPAnimDecoderGetInfo(decoder.get(), &info))
    fail("decode_error", origin, "invalid or truncated WebP data");
  at::Tensor rgb = new_rgb(info.canvas_width, info.canvas_height, origin);
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(decoder.get(), &rgba, &timestamp))
    fail("decode_error", origin, "corrupt WebP data in the first frame");
  uint8_t* out = rgb.data_ptr<uint8_t>();
  for (int64_t i = 0, n = rgb.numel() / 3; i < n; ++i, rgba += 4, out += 3) std::memcpy(out, rgba, 3);
  return rgb;
}

// ---- Other formats: FFmpeg's image decoder on the whole file as one packet, swscale to RGB24.

at::Tensor decode_ffmpeg(std::string_view bytes, AVCodecID id, const std::string& origin) {
  const AVCodec* codec = avcodec_find_decoder(id);
  if (codec == nullptr)
    fail("unsupported_format", origin, std::string("this FFmpeg has no ") + avcodec_get_name(id) + " decoder");
  const auto free_context = [](AVCodecContext* c) { avcodec_free_context(&c); };
  std::unique_ptr<AVCodecContext, decltype(free_context)> ctx(avcodec_alloc_context3(codec), free_context);
  const auto free_packet = [](AVPacket* p) { av_packet_free(&p); };
  std::unique_ptr<AVPacket, decltype(free_packet)> packet(av_packet_alloc(), free_packet);
  const auto free_frame = [](AVFrame* f) { av_frame_free(&f); };
  std::unique_ptr<AVFrame, decltype(free_frame)> frame(av_frame_alloc(), free_frame);
  if (!ctx || !packet || !frame) fail("decode_error", origin, "FFmpeg could not allocate its decoder");
  ctx->thread_count = 1;
  std::vector<uint8_t> padded(bytes.size() + AV_INPUT_BUFFER_PADDING_SIZE, 0);
  std::memcpy(padded.data(), bytes.data(), bytes.size());
  packet->data = padded.data();
  packet->size = static_cast<int>(bytes.size());
  int rc = avcodec_open2(ctx.get(), codec, nullptr);
  if (rc >= 0) rc = avcodec_send_packet(ctx.get(), packet.get());
  if (rc >= 0) rc = avcodec_receive_frame(ctx.get(), frame.get());
  if (rc == AVERROR(EAGAIN) && avcodec_send_packet(ctx.get(), nullptr) >= 0)
    rc = avcodec_receive_frame(ctx.get(), frame.get());
  if (rc < 0) {
    char why[AV_ERROR_MAX_STRING_SIZE] = "";
    av_strerror(rc, why, sizeof why);
    fail("decode_error", origin, std::string("FFmpeg's ") + codec->name + " decoder failed (" + why + ")");
  }
  at::Tensor rgb = new_rgb(frame->width, frame->height, origin);
  const auto format = static_cast<AVPixelFormat>(frame->format);
  std::unique_ptr<SwsContext, void (*)(SwsContext*)> sws(
      sws_getContext(frame->width, frame->height, format, frame->width, frame->height, AV_PIX_FMT_RGB24,
                     SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr),
      sws_freeContext);
  if (!sws) fail("unsupported_format", origin, std::string("no conversion from ") + av_get_pix_fmt_name(format));
  uint8_t* planes[1] = {rgb.data_ptr<uint8_t>()};
  const int strides[1] = {static_cast<int>(frame->width * 3)};
  sws_scale(sws.get(), frame->data, frame->linesize, 0, frame->height, planes, strides);
  return rgb;
}

enum class Format { kUnknown, kJpeg, kPng, kWebp, kFfmpeg };

/// The format of `b` from its first bytes (as Pillow's _accept checks); for FFmpeg formats also the codec.
Format sniff(std::string_view b, AVCodecID& codec) {
  // substr() throws past the end: a file shorter than `at` (a 7-byte "RIFF...", found by tests/fuzz/fuzz_image.cpp)
  // simply does not match.
  const auto starts = [&](std::string_view magic, size_t at = 0) {
    return at <= b.size() && b.substr(at, magic.size()) == magic;
  };
  if (starts("\xFF\xD8\xFF")) return Format::kJpeg;
  if (starts("\x89PNG\r\n\x1A\n")) return Format::kPng;
  if (starts("RIFF") && starts("WEBP", 8) && (starts("VP8 ", 12) || starts("VP8L", 12) || starts("VP8X", 12)))
    return Format::kWebp;
  codec = AV_CODEC_ID_NONE;
  if (starts("GIF87a") || starts("GIF89a")) codec = AV_CODEC_ID_GIF;
  if (starts("BM")) codec = AV_CODEC_ID_BMP;
  if (starts(std::string_view("II*\0", 4)) || starts(std::string_view("MM\0*", 4))) codec = AV_CODEC_ID_TIFF;
  if (starts("qoif")) codec = AV_CODEC_ID_QOI;
  if (starts("\xFF\x4F\xFF\x51") || starts(std::string_view("\0\0\0\x0CjP  \r\n\x87\n", 12)))
    codec = AV_CODEC_ID_JPEG2000;
  if (b.size() > 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' && std::isspace(static_cast<unsigned char>(b[2]))) {
    static const AVCodecID kPnm[] = {AV_CODEC_ID_PBM, AV_CODEC_ID_PGM, AV_CODEC_ID_PPM, AV_CODEC_ID_PAM};
    codec = b[1] == '7' ? kPnm[3] : kPnm[(b[1] - '1') % 3];
  }
  return codec == AV_CODEC_ID_NONE ? Format::kUnknown : Format::kFfmpeg;
}

}  // namespace

at::Tensor decode_image_rgb(std::string_view bytes, const std::string& origin) {
  if (bytes.empty()) fail("decode_error", origin, "the file is empty");
  AVCodecID codec = AV_CODEC_ID_NONE;
  switch (sniff(bytes, codec)) {
    case Format::kJpeg:
      return decode_jpeg(bytes, origin);
    case Format::kPng:
      return decode_png(bytes, origin);
    case Format::kWebp:
      return decode_webp(bytes, origin);
    case Format::kFfmpeg:
      return decode_ffmpeg(bytes, codec, origin);
    case Format::kUnknown:
      break;
  }
  // The file's bytes are not quoted: a path may point outside root_dir (at /etc/shadow, say), and logs travel.
  throw MediaError("unsupported_format", "cannot decode image '" + origin + "': its " + std::to_string(bytes.size()) +
                                             " bytes start like none of JPEG, PNG, WebP, GIF, BMP, TIFF, PNM, QOI or "
                                             "JPEG 2000, whatever its name says.");
}

at::Tensor empty_pixels(at::IntArrayRef sizes, at::ScalarType dtype) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes = c10::multiply_integers(sizes) * c10::elementSize(dtype);
  if (bytes < kHugePage) return at::empty(sizes, dtype);
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* data = std::aligned_alloc(kHugePage, rounded);
  if (data == nullptr) throw std::bad_alloc();
  ::madvise(data, rounded, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
  return at::from_blob(
      data, sizes, [](void* p) { std::free(p); }, at::TensorOptions().dtype(dtype));
}

at::Tensor load_image_rgb(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status))
    throw MediaError("missing_file", "image file '" + path + "' " +
                                         (ec && ec != std::errc::no_such_file_or_directory
                                              ? "cannot be reached (" + ec.message() + ")."  // e.g. a symlink loop
                                              : std::string("does not exist.")));
  if (!std::filesystem::is_regular_file(status))
    throw MediaError("missing_file", "image path '" + path + "' is not a regular file.");
  // The file's bytes go to a per-thread buffer kept between calls (no fresh pages to fault in per image).
  thread_local std::string bytes;
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (in) {
    bytes.resize(static_cast<size_t>(in.tellg()));
    in.seekg(0);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  if (!in) throw MediaError("read_error", "image file '" + path + "' exists but cannot be read.");
  return decode_image_rgb(bytes, path);
}

}  // namespace plm::media
