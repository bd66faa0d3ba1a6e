// libFuzzer harness: opening a video as a training sample does (read_clip: probe, frame sampling, decode) on bytes
// written to one temporary regular file (FFmpeg opens videos by path). The input's first byte picks the frame
// count asked for (1 to 16); the rest is the file. Anything but a MediaError is a finding; so is a clip whose shape
// disagrees with its indices or whose pixels exceed the decode budget of video.h.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "plm/media/media_error.h"
#include "plm/media/video.h"

namespace {
std::string g_path;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("TMPDIR");
  std::string pattern = std::string(dir && *dir ? dir : "/tmp") + "/plm-fuzz-video-XXXXXX";
  const int fd = mkstemp(pattern.data());
  if (fd < 0) std::abort();
  close(fd);
  g_path = pattern;
  std::atexit([] { unlink(g_path.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t max_frames = 1 + data[0] % 16;
  const int fd = open(g_path.c_str(), O_WRONLY | O_TRUNC);
  if (fd < 0) std::abort();
  for (size_t done = 1; done < size;) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  close(fd);
  try {
    const plm::media::DecodedFrames clip = plm::media::read_clip(g_path, std::nullopt, std::nullopt, max_frames, 1);
    const at::Tensor& f = clip.frames;
    if (f.dim() != 4 || f.size(1) != 3 || f.scalar_type() != at::kByte ||
        f.size(0) != static_cast<int64_t>(clip.indices.size()) || f.size(0) > max_frames ||
        f.size(2) * f.size(3) > plm::media::kMaxFramePixels ||
        f.size(0) * f.size(2) * f.size(3) > plm::media::kMaxClipPixels)
      std::abort();
    for (const int64_t i : clip.indices)
      if (i < 0 || i >= clip.info.num_frames) std::abort();
    // Every byte is read (ASan checks it is the decoder's), in uint8: a sum would first copy it as int64.
    if (f.numel() > 0) {
      volatile uint8_t top = f.max().item<uint8_t>();
      (void)top;
    }
  } catch (const plm::media::MediaError&) {
  }
  return 0;
}
