// libFuzzer harness: image decoding (JPEG, PNG, WebP, GIF, BMP, ... as Pillow opens them) from bytes in memory.
// Every decoded picture is read in full. Anything but a MediaError is a finding; so is a picture whose shape is
// not [H, W, 3] uint8 within Pillow's pixel limit.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "plm/media/image.h"
#include "plm/media/media_error.h"

extern "C" {
#include <libavutil/log.h>
}

// FFmpeg's own warnings about each broken input would drown the fuzzer's output.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  av_log_set_level(AV_LOG_QUIET);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const at::Tensor rgb =
        plm::media::decode_image_rgb(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz input");
    if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != at::kByte ||
        rgb.size(0) * rgb.size(1) > 2 * 89478485)
      std::abort();
    // Every byte is read (ASan checks it is the decoder's), in uint8: a sum would first copy it as int64.
    if (rgb.numel() > 0) {
      volatile uint8_t top = rgb.max().item<uint8_t>();
      (void)top;
    }
  } catch (const plm::media::MediaError&) {
  }
  return 0;
}
