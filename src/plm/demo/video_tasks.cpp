// Video tasks: 16 frames of 56x56 at 8 fps (2 s), so PLM's sampler (docs/reference.md 4.5: fewer 1-fps candidates than
// max_video_frames, so all frames of the clip) keeps every frame when max_video_frames >= 16, and the frame
// numbers in questions and answers are the sampled frames' numbers, as PLM-VideoBench's are.
#include <algorithm>

#include "plm/demo/questions.h"
#include "plm/demo/shapes.h"
#include "plm/demo/video_writer.h"

namespace plm::demo {
namespace {

constexpr int kLast = kVideoFrames - 1;
// Shapes 21 to 25 pixels across, nearly filling a 28-pixel quadrant of the frame: one pooled token each, which they
// fill (region_video_mcq's drifting shapes stay smaller, so that the red box around one fits its quadrant).
constexpr int kRadiusLo = 10, kRadiusHi = 12;

// A shape moving in a straight line from (x0, y0) at frame 0 to (x1, y1) at the last frame, drawn on the frames
// first..last.
struct Track {
  Shape shape;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int first = 0, last = kLast;

  static Track still(const Shape& s, int first = 0, int last = kLast) {
    return {s, s.cx, s.cy, s.cx, s.cy, first, last};
  }
  // Centre at frame f (integer interpolation, the same on every machine).
  Shape at(int f) const {
    Shape s = shape;
    s.cx = x0 + (x1 - x0) * f / kLast;
    s.cy = y0 + (y1 - y0) * f / kLast;
    return s;
  }
};

std::string write_clip(const SampleContext& ctx, const std::vector<Track>& tracks) {
  std::vector<Canvas> frames;
  for (int f = 0; f < kVideoFrames; ++f) {
    Canvas c(kTileSize, kTileSize);
    for (const auto& t : tracks)
      if (f >= t.first && f <= t.last) c.draw(t.at(f));
    frames.push_back(std::move(c));
  }
  const std::string rel = ctx.media_path("mp4");
  write_video(frames, kVideoFps, ctx.absolute(rel));
  return rel;
}

Json with_video(Json j, const std::string& rel) {
  j["video"] = rel;
  return j;
}

Shape random_shape(Rng& rng, int q, int r_lo, int r_hi, int colour) {
  return shape_in_quadrant(rng, kTileSize, q, r_lo, r_hi,
                           static_cast<Colour>(colour < 0 ? rng.below(kNumColours) : colour),
                           static_cast<ShapeKind>(rng.below(kNumKinds)));
}

Json direction_mcq(SampleContext& ctx) {
  Shape s = random_shape(ctx.rng, 0, kRadiusLo, kRadiusHi, -1);
  const int lo = s.r + 1, hi = kTileSize - 2 - s.r, across = ctx.rng.between(lo, hi);
  const int d = ctx.rng.below(4);  // left, right, up, down
  Track t{s, 0, 0, 0, 0, 0, kLast};
  if (d < 2) {
    t.x0 = d == 0 ? hi : lo, t.x1 = d == 0 ? lo : hi, t.y0 = t.y1 = across;
  } else {
    t.y0 = d == 2 ? hi : lo, t.y1 = d == 2 ? lo : hi, t.x0 = t.x1 = across;
  }
  const std::vector<std::string> options{"left", "right", "up", "down"};
  return with_video(
      mcq_sample(ctx, "<video>\n" + mcq_prompt("Which direction does the " + s.name() + " move?", options), options, d),
      write_clip(ctx, {t}));
}

// Four shapes, one of each colour, in the four quadrants, appearing 3 frames apart (from frame 0-3 on) and staying:
// the first one is alone for 3 frames.
Json order_mcq(SampleContext& ctx) {
  const std::vector<int> quadrants = ctx.rng.distinct(4, 4);
  std::vector<int> starts = ctx.rng.distinct(4, 4);
  const int offset = ctx.rng.between(0, 3);
  for (int& s : starts) s = offset + 3 * s;
  std::vector<Track> tracks;
  std::vector<std::string> options;
  for (int c = 0; c < kNumColours; ++c) {
    const Shape s = random_shape(ctx.rng, quadrants[static_cast<size_t>(c)], kRadiusLo, kRadiusHi, c);
    tracks.push_back(Track::still(s, starts[static_cast<size_t>(c)]));
    options.push_back("the " + s.name());
  }
  const int first = static_cast<int>(std::min_element(starts.begin(), starts.end()) - starts.begin());
  return with_video(mcq_sample(ctx, "<video>\n" + mcq_prompt("Which shape appears first?", options), options, first),
                    write_clip(ctx, tracks));
}

// 1-4 shapes of distinct colours, each shown for 4-10 frames at a random time: counting across frames.
Json count_video(SampleContext& ctx) {
  const int n = ctx.rng.between(1, 4);
  const std::vector<int> quadrants = ctx.rng.distinct(4, n), colours = ctx.rng.distinct(kNumColours, n);
  std::vector<Track> tracks;
  for (int i = 0; i < n; ++i) {
    const int len = ctx.rng.between(4, 10), start = ctx.rng.between(0, kVideoFrames - len);
    tracks.push_back(Track::still(
        random_shape(ctx.rng, quadrants[static_cast<size_t>(i)], kRadiusLo, kRadiusHi, colours[static_cast<size_t>(i)]),
        start, start + len - 1));
  }
  return with_video(short_sample(ctx, "<video>\nHow many different shapes appear in the video? Answer with a number.",
                                 std::to_string(n)),
                    write_clip(ctx, tracks));
}

// PLM-VideoBench RTLoc's answer form: the named shape is visible during [start, end] only; 1-2 shapes of other
// colours stay throughout.
Json rtloc(SampleContext& ctx) {
  const int distractors = ctx.rng.between(1, 2);
  const std::vector<int> quadrants = ctx.rng.distinct(4, 1 + distractors),
                         colours = ctx.rng.distinct(kNumColours, 1 + distractors);
  const int len = ctx.rng.between(3, 10), start = ctx.rng.between(0, kVideoFrames - len), end = start + len - 1;
  const Shape target = random_shape(ctx.rng, quadrants[0], kRadiusLo, kRadiusHi, colours[0]);
  std::vector<Track> tracks{Track::still(target, start, end)};
  for (int i = 1; i <= distractors; ++i)
    tracks.push_back(Track::still(random_shape(ctx.rng, quadrants[static_cast<size_t>(i)], kRadiusLo, kRadiusHi,
                                               colours[static_cast<size_t>(i)])));
  const std::string n = std::to_string(kVideoFrames);
  const std::string human = "<video>\nDuring which frames is the " + target.name() +
                            " visible? Give the start and end frame numbers between 0 and " + std::to_string(kLast) +
                            " in this " + n + " frame video, as [start, end].";
  return with_video(rtloc_sample(ctx, human, start, end, kVideoFrames), write_clip(ctx, tracks));
}

// PLM's video-region form (docs/reference.md 4.1/4.5): `bbox_map` gives, per frame, a box that preprocessing draws in
// red on the frames. Three drifting shapes in green, blue and yellow (never red, the box's colour).
Json region_video_mcq(SampleContext& ctx) {
  const std::vector<int> quadrants = ctx.rng.distinct(4, 3), order = ctx.rng.distinct(3, 3);
  const int target = ctx.rng.below(3), pad = 5, max = kTileSize - 1;
  std::vector<Track> tracks;
  for (int i = 0; i < 3; ++i) {
    const Shape s = random_shape(ctx.rng, quadrants[static_cast<size_t>(i)], 6, 8, 1 + order[static_cast<size_t>(i)]);
    Track t = Track::still(s);
    t.x1 = s.cx + ctx.rng.between(-3, 3);
    t.y1 = s.cy + ctx.rng.between(-3, 3);
    tracks.push_back(t);
  }
  Json boxes = Json::object();
  for (int f = 0; f < kVideoFrames; ++f) {
    const Shape s = tracks[static_cast<size_t>(target)].at(f);
    boxes[std::to_string(f)] = {std::max(0, s.cx - s.r - pad), std::max(0, s.cy - s.r - pad),
                                std::min(max, s.cx + s.r + pad), std::min(max, s.cy + s.r + pad)};
  }
  const std::vector<std::string> options{"green", "blue", "yellow"};
  Json j =
      with_video(mcq_sample(ctx, "<video>\n" + mcq_prompt("What colour is the shape in the red rectangle?", options),
                            options, order[static_cast<size_t>(target)]),
                 write_clip(ctx, tracks));
  j["bbox_map"] = boxes;
  return j;
}

}  // namespace

std::vector<TaskSpec> video_tasks() {
  // 2000 training clips each: with 600, stage 3 memorised count_video (99.5% on training clips, 75% on test).
  // clang-format off
  return {
      {"direction_mcq", "video", "mcq", 0.25, {2000, 40, 100}, false,
       "one shape crossing the frame; which way it moves", direction_mcq},
      {"order_mcq", "video", "mcq", 0.25, {2000, 40, 100}, false,
       "four shapes appearing 3 frames apart; which appears first", order_mcq},
      {"count_video", "video", "short", 0.25, {2000, 40, 100}, false,
       "1-4 shapes, each shown for 4-10 frames; how many appear", count_video},
      {"rtloc", "video", "rtloc", 0, {2000, 40, 100}, false,
       "a shape visible for 3-10 frames among still ones; its [start, end] frames (PLM-VideoBench RTLoc form)", rtloc},
      {"region_video_mcq", "video", "mcq", 1.0 / 3, {2000, 40, 100}, false,
       "three drifting shapes, one boxed in red through bbox_map; the boxed shape's colour", region_video_mcq},
  };
  // clang-format on
}

}  // namespace plm::demo
