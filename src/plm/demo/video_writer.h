// Writing the demo's videos: MPEG-4 Part 2 in an .mp4 file through FFmpeg's libavcodec/libavformat. The MPEG-4
// encoder is part of every FFmpeg build (libx264 is optional), and with FFmpeg's bitexact flags and one thread
// the file's bytes depend only on the frames.
#pragma once

#include <string>
#include <vector>

#include "plm/demo/shapes.h"

namespace plm::demo {

/// Encodes `frames` (all the same even width and height) at `fps` frames per second: one keyframe, then P-frames
/// (no B-frames, so decode order is display order), near-lossless quantiser 2, BT.601
/// limited-range yuv420p converted with integer arithmetic. Throws DemoError naming `path` when FFmpeg
/// refuses (no MPEG-4 encoder, unwritable file).
void write_video(const std::vector<Canvas>& frames, int fps, const std::string& path);

}  // namespace plm::demo
