// Video clips (src/plm/media/{frame_sampling,video,boxes}.h) against the Python reference: frame indices against a
// transcription of perception_models' load_video, frames and metadata against torchcodec, boxes and resizing
// against torchvision, the whole transform against video_transform.py. Test videos are encoded at test time with
// the ffmpeg CLI by tests/parity/video_parity.py, which also does the comparisons. Missing tools fail the test.
#include "torch_catch.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "plm/ckpt/safetensors.h"
#include "plm/data/sample.h"
#include "plm/media/boxes.h"
#include "plm/media/frame_sampling.h"
#include "plm/media/media_error.h"
#include "plm/media/video.h"
#include "scratch.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace plm::media;
using Indices = std::vector<int64_t>;

namespace {

// Runs video_parity.py with `args`; fails the test with the script's output when it fails. Returns the output.
std::string run_script(const Scratch& s, const std::string& args) {
  if (std::system("command -v ffmpeg > /dev/null 2>&1") != 0)
    FAIL("the ffmpeg CLI is missing: install it (apt-get install ffmpeg) to encode the test videos.");
  const PythonRun r = run_reference_python("tests/parity/video_parity.py", args, s.path("python.log"));
  if (!r.ok()) FAIL("video_parity.py " << args << " failed:\n" << r.output);
  return r.output;
}

// Encodes the named videos (video_parity.py's VIDEOS) into the scratch folder; returns name -> path.
std::map<std::string, std::string> make_videos(const Scratch& s, const std::vector<std::string>& names) {
  std::string args = "make '" + s.dir.string() + "'";
  for (const auto& n : names) args += " " + n;
  run_script(s, args);
  std::map<std::string, std::string> paths;
  for (const auto& entry : fs::directory_iterator(s.dir)) {
    const std::string stem = entry.path().stem().string();
    if (std::find(names.begin(), names.end(), stem) != names.end()) paths[stem] = entry.path().string();
  }
  REQUIRE(paths.size() == names.size());
  return paths;
}

// Our outputs plus a description of each case, written to one safetensors file and checked by the script.
struct Parity {
  plm::ckpt::TensorMap tensors;
  nlohmann::json cases = nlohmann::json::array();

  void put(const std::string& name, const at::Tensor& t) { REQUIRE(tensors.insert(name, t.contiguous())); }
  void check(const Scratch& s) {
    const std::string file = s.path("ours.safetensors");
    plm::ckpt::write_safetensors(tensors, file, {{"cases", cases.dump()}});
    const std::string out = run_script(s, "check '" + file + "'");
    INFO(out);
    std::cout << out;
    SUCCEED();
  }
};

std::vector<std::string> split(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Runs `f`, which must throw MediaError with `reason` naming `path`.
template <typename F>
void expect_media_error(F&& f, const std::string& reason, const std::string& path) {
  try {
    f();
    FAIL("no MediaError for " << path);
  } catch (const MediaError& e) {
    INFO(e.what());
    CHECK(e.reason() == reason);
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("frame sampling follows the spec's examples") {
  CHECK(uniform_sample(6, 5) == Indices{0, 1, 2, 4, 5});
  CHECK(uniform_sample(5, 1) == Indices{0});
  CHECK(uniform_sample(5, 0).empty());
  CHECK_THROWS_AS(uniform_sample(3, 4), std::invalid_argument);

  const Indices a = sample_frame_indices(30.0, 300, std::nullopt, std::nullopt, 32);
  REQUIRE(a.size() == 32);
  CHECK(Indices(a.begin(), a.begin() + 4) == Indices{0, 10, 19, 29});
  CHECK(Indices(a.end() - 2, a.end()) == Indices{289, 299});

  const Indices b = sample_frame_indices(30.0, 1800, std::nullopt, std::nullopt, 32);
  REQUIRE(b.size() == 32);
  CHECK(Indices(b.begin(), b.begin() + 3) == Indices{0, 60, 120});
  CHECK(b.back() == 1770);

  Indices all20(20);
  std::iota(all20.begin(), all20.end(), 0);
  CHECK(sample_frame_indices(30.0, 20, std::nullopt, std::nullopt, 32) == all20);

  // start == end -> end = start + 1; end beyond the last frame is clamped before the swap, not after.
  CHECK(sample_frame_indices(30.0, 100, 1.0, 1.0, 32) == Indices{30, 31});
  const Indices past = sample_frame_indices(30.0, 100, 10.0, 10.0, 32);
  CHECK(past.front() == 99);
  CHECK(past.back() == 300);
  // round(0.5) == 0: a zero stride, which the reference's range() refuses.
  CHECK_THROWS_AS(sample_frame_indices(0.5, 100, std::nullopt, std::nullopt, 8), std::invalid_argument);
  CHECK(sample_frame_indices(1.5, 10, std::nullopt, std::nullopt, 3) == Indices{0, 4, 8});
  // Hostile times: the range from the last frame to 3e18 (or 3e9) is sampled without being listed (it took 1.2 GB
  // at 1e8 s and aborted at 1e17 s); the picks match the range's arithmetic.
  for (const double t : {1e8, 1e17}) {
    const Indices far = sample_frame_indices(30.0, 100, t, std::nullopt, 32);
    REQUIRE(far.size() == 32);
    CHECK(far.front() == 99);
    const auto last = static_cast<int64_t>(t * 30.0);
    const int64_t count = (last + 1 - 99 + 29) / 30;
    if (count < (int64_t{1} << 53)) CHECK(far.back() == 99 + (count - 1) * 30);  // beyond, the float stride rounds
  }
}

TEST_CASE("frame sampling equals the Python transcription of the reference on 6000 random cases") {
  Scratch s("plm_video_sampling");
  const std::string file = s.path("sampling.txt");
  run_script(s, "sampling '" + file + "' 6000 1234");
  std::ifstream in(file);
  int cases = 0, mismatches = 0, refused = 0;
  const auto number = [](const std::string& w) { return w == "None" ? std::nullopt : std::optional(std::stod(w)); };
  for (std::string line; std::getline(in, line);) {
    const auto bar = line.find('|');
    const auto args = split(line.substr(0, bar));
    const auto expected = split(line.substr(bar + 1));
    REQUIRE(args.size() == 5);
    std::string got;
    try {
      for (int64_t i : sample_frame_indices(std::stod(args[0]), std::stoll(args[1]), number(args[2]), number(args[3]),
                                            std::stoll(args[4])))
        got += (got.empty() ? "" : " ") + std::to_string(i);
    } catch (const std::invalid_argument&) {
      got = "error";
    }
    std::string want;
    for (const auto& w : expected) want += (want.empty() ? "" : " ") + w;
    ++cases;
    refused += want == "error";
    if (got != want && ++mismatches <= 5) WARN(line << "\n  plm: " << got);
  }
  std::cout << cases << " sampling cases (" << refused << " refused by the reference), " << mismatches
            << " mismatches\n";
  CHECK(cases == 6000);
  CHECK(mismatches == 0);
}

TEST_CASE("decode_frames and probe_video equal torchcodec") {
  Scratch s("plm_video_frames");
  // (MPEG-TS is left out: FFmpeg 5.1 seeks it by dts to a non-keyframe, and torchcodec raises, as plm does.)
  const std::vector<std::string> names = {"cfr30",     "ntsc322",      "vfr",      "longgop",   "shortgop",
                                          "hd720",     "odd444",       "oddmpeg4", "onesec",    "mkv",
                                          "fullrange", "fullrange330", "rotated",  "rotated180"};
  const auto videos = make_videos(s, names);
  Parity parity;
  for (const auto& [name, path] : videos) {
    const VideoInfo info = probe_video(path);
    const int64_t n = info.num_frames;
    REQUIRE(n > 20);
    std::vector<std::pair<std::string, Indices>> requests;
    Indices all(std::min<int64_t>(n, 150));
    std::iota(all.begin(), all.end(), 0);
    requests.emplace_back("all", all);
    requests.emplace_back("scattered", Indices{n - 1, 3, 17, 3, -2, n / 2, 0, n / 3, n - 1, 1, n / 2 + 1});
    for (const auto& [what, indices] : requests) {
      const std::string case_name = name + "." + what;
      const at::Tensor frames = decode_frames(path, indices, what == "all" ? 0 : 1);
      CHECK(frames.sizes() == at::IntArrayRef{static_cast<int64_t>(indices.size()), 3, info.height, info.width});
      parity.put(case_name + "/frames", frames);
      parity.put(case_name + "/info", at::tensor({info.average_fps, static_cast<double>(n),
                                                  static_cast<double>(info.width), static_cast<double>(info.height)},
                                                 at::kDouble));
      parity.cases.push_back({{"name", case_name}, {"kind", "frames"}, {"video", path}, {"indices", indices}});
    }
  }
  // The decoder's thread count changes nothing.
  const Indices some{5, 40, 41, 90, 260, 300};
  CHECK(at::equal(decode_frames(videos.at("longgop"), some, 1), decode_frames(videos.at("longgop"), some, 0)));
  parity.check(s);
}

TEST_CASE("read_clip, boxes and video_pixels equal the reference transform") {
  Scratch s("plm_video_clips");
  const auto videos = make_videos(s, {"cfr30", "longgop", "ntsc322", "onesec", "vfr", "hd720", "odd444"});
  struct ClipCase {
    std::string video;
    std::optional<double> start, end;
    int64_t max_frames;
    bool boxes, pixels;
  };
  const std::vector<ClipCase> clips = {{"cfr30", std::nullopt, std::nullopt, 8, true, true},
                                       {"longgop", 2.5, 9.0, 8, false, false},
                                       {"longgop", 9.0, 2.5, 32, true, false},
                                       {"ntsc322", 1.0, 1.0, 32, false, false},
                                       {"onesec", std::nullopt, std::nullopt, 32, false, false},
                                       {"vfr", 1.0, 6.0, 16, true, false},
                                       {"hd720", std::nullopt, 3.0, 4, true, true},
                                       {"odd444", 0.3, std::nullopt, 6, true, true}};
  Parity parity;
  int k = 0;
  for (const auto& c : clips) {
    const std::string name = "clip" + std::to_string(k++) + "." + c.video;
    DecodedFrames clip = read_clip(videos.at(c.video), c.start, c.end, c.max_frames);
    nlohmann::json desc = {
        {"name", name}, {"kind", "clip"}, {"video", videos.at(c.video)}, {"max_frames", c.max_frames}, {"size", 448}};
    if (c.start) desc["start"] = *c.start;
    if (c.end) desc["end"] = *c.end;
    if (c.boxes) {
      // A sample's bbox_map as a JSONL row writes it: boxes on the second and last sampled frames and on a frame
      // that was not sampled, a null on the third, a key that is not a frame index and one that is not in its
      // decimal form (both with boxes, which the reference never draws). Parsed by plm's sample reader, drawn,
      // and drawn by the reference from the same JSON.
      const double w = static_cast<double>(clip.info.width), h = static_cast<double>(clip.info.height);
      const std::string second = std::to_string(clip.indices.at(1)), third = std::to_string(clip.indices.at(2));
      nlohmann::json raw = {{second, {w * 0.1, h * 0.2, w * 0.6, h * 0.9}},
                            {std::to_string(clip.indices.back()), {-3.5, 2.25, w + 10.0, h * 0.5}},
                            {std::to_string(clip.indices.back() + 1), {0, 0, 10, 10}},
                            {third, nullptr},
                            {"first", {0, 0, w * 0.5, h * 0.5}},
                            {"0" + third, {1, 1, w * 0.3, h * 0.3}}};
      const plm::data::Sample sample =
          plm::data::parse_sample(nlohmann::json{{"video", "v.mp4"}, {"text", "t"}, {"bbox_map", raw}}.dump());
      CHECK(sample.bbox_map_ignored >= 2);  // "first" and "0<third>" (the null too, unless third is the last)
      draw_boxes_on_sampled_frames(clip, sample.bbox_map);
      desc["bbox_map"] = raw;
    }
    parity.put(name + "/indices", at::tensor(clip.indices, at::kLong));
    parity.put(name + "/frames", clip.frames);
    if (c.pixels) {
      const at::Tensor pixels = video_pixels(clip, 448);
      CHECK(pixels.sizes() == at::IntArrayRef{clip.frames.size(0), 3, 448, 448});
      CHECK(pixels.scalar_type() == at::kFloat);
      parity.put(name + "/pixels", pixels);
    }
    parity.cases.push_back(desc);
  }
  parity.check(s);
}

TEST_CASE("draw_box equals torchvision draw_bounding_boxes") {
  Scratch s("plm_video_boxes");
  at::manual_seed(7);
  const at::Tensor base = at::randint(0, 256, {3, 40, 50}, at::kByte);
  const std::vector<std::array<double, 4>> boxes = {{5.3, 6.9, 30.2, 25.8},    {10, 10, 12, 11},   {10, 10, 10, 10},
                                                    {10, 10, 17, 30},          {-5, -3, 60, 45},   {60, 50, 70, 60},
                                                    {-0.5, -0.7, 3.9, 2.2},    {-1e9, 5, 1e9, 20}, {0, 0, 49, 39},
                                                    {46.99, 35.5, 49.2, 39.9}, {30, 5, 10, 20},    {5, 20, 10, 19.5}};
  Parity parity;
  for (size_t i = 0; i < boxes.size(); ++i) {
    const auto& b = boxes[i];
    const std::string name = "box" + std::to_string(i);
    // Every other case draws into a channels-last view, as on decoded frames.
    at::Tensor frame = i % 2 ? base.permute({1, 2, 0}).contiguous().permute({2, 0, 1}) : base.clone();
    bool refused = false;
    try {
      draw_box(frame, b[0], b[1], b[2], b[3]);
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    parity.put(name + "/before", base);
    parity.put(name + "/after", frame);
    parity.cases.push_back({{"name", name}, {"kind", "box"}, {"box", b}, {"refused", refused}});
  }
  parity.check(s);
}

TEST_CASE("resize_frames_bicubic_aa equals torchvision's antialiased bicubic resize") {
  Scratch s("plm_video_resize");
  at::manual_seed(3);
  Parity parity;
  const std::vector<std::array<int64_t, 3>> shapes = {{2, 240, 320}, {2, 239, 321}, {1, 720, 1280},
                                                      {2, 100, 60},  {1, 448, 448}, {1, 500, 448}};
  for (const auto& [n, h, w] : shapes) {
    for (const bool channels_last : {false, true}) {
      const std::string name = "resize" + std::to_string(h) + "x" + std::to_string(w) + (channels_last ? "cl" : "");
      at::Tensor x = at::randint(0, 256, {n, 3, h, w}, at::kByte);
      if (channels_last) x = x.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
      parity.put(name + "/input", x);
      parity.put(name + "/output", resize_frames_bicubic_aa(x, 448));
      parity.cases.push_back({{"name", name}, {"kind", "resize"}, {"size", 448}});
    }
  }
  parity.check(s);
}

TEST_CASE("broken videos give MediaError with the reason and the file, without hanging") {
  Scratch s("plm_video_broken");
  const auto videos = make_videos(s, {"cfr30", "audio"});
  std::string bytes;
  {
    std::stringstream in;
    in << std::ifstream(videos.at("cfr30"), std::ios::binary).rdbuf();
    bytes = in.str();
  }
  const std::string missing = s.path("missing.mp4");
  const std::string zero = s.write("zero.mp4", "");
  const std::string text = s.write("text.mp4", "this is not a video, only text in a file called .mp4\n");
  const std::string truncated = s.write("truncated.mp4", bytes.substr(0, bytes.size() / 3));
  const std::string garbage = s.write("garbage.mp4", bytes.substr(0, 64) + std::string(20000, '\x5a'));

  expect_media_error([&] { probe_video(missing); }, "missing_file", missing);
  expect_media_error([&] { read_clip(missing, std::nullopt, std::nullopt, 8); }, "missing_file", missing);
  expect_media_error([&] { probe_video(zero); }, "decode_error", zero);
  expect_media_error([&] { probe_video(text); }, "decode_error", text);
  expect_media_error([&] { read_clip(truncated, std::nullopt, std::nullopt, 8); }, "decode_error", truncated);
  expect_media_error([&] { probe_video(garbage); }, "decode_error", garbage);
  expect_media_error([&] { probe_video(s.dir.string()); }, "decode_error", s.dir.string());
  // A FIFO would block the open forever (nobody writes to it); /dev/zero would read forever; a symlink loop.
  const std::string fifo = s.path("fifo.mp4");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  expect_media_error([&] { read_clip(fifo, std::nullopt, std::nullopt, 8); }, "decode_error", fifo);
  expect_media_error([&] { probe_video("/dev/zero"); }, "decode_error", "/dev/zero");
  const std::string loop = s.path("loop.mp4");
  std::filesystem::create_symlink(loop, loop);
  expect_media_error([&] { probe_video(loop); }, "missing_file", loop);
  expect_media_error([&] { probe_video(videos.at("audio")); }, "unsupported_format", videos.at("audio"));
  const std::string& good = videos.at("cfr30");
  expect_media_error([&] { decode_frames(good, {0, 120}); }, "index_out_of_range", good);
  expect_media_error([&] { decode_frames(good, {-121}); }, "index_out_of_range", good);
  // The reference's end = start + 1 quirk can point one past the last frame: the decode refuses it.
  expect_media_error([&] { read_clip(good, 3.99, 3.99, 8); }, "index_out_of_range", good);

  // A video whose moov comes first but whose frame data is cut short: metadata reads, late frames do not decode.
  const std::string fast = s.path("faststart.mp4");
  REQUIRE(std::system(
              ("ffmpeg -hide_banner -loglevel error -y -i '" + good + "' -c copy -movflags +faststart '" + fast + "'")
                  .c_str()) == 0);
  std::stringstream in;
  in << std::ifstream(fast, std::ios::binary).rdbuf();
  const std::string cut = s.write("cut.mp4", in.str().substr(0, in.str().size() / 2));
  CHECK(probe_video(cut).num_frames > 0);
  Indices all(probe_video(cut).num_frames);
  std::iota(all.begin(), all.end(), 0);
  expect_media_error([&] { decode_frames(cut, all); }, "decode_error", cut);

  DecodedFrames clip = read_clip(good, std::nullopt, std::nullopt, 4);
  expect_media_error(
      [&] {
        draw_boxes_on_sampled_frames(clip, {{clip.indices[0], {20, 5, 10, 30}}});
      },
      "bad_box", good);
}

TEST_CASE("a clip over the pixel budget is refused before any frame is decoded") {
  // 33 black 4096x4096 MJPEG frames in a 3 MB file: 33 x 16.8M = 554M pixels (1.6 GB as RGB), over 2^29.
  Scratch s("plm_video_budget");
  const std::string big = s.path("big.avi");
  REQUIRE(std::system(("ffmpeg -hide_banner -loglevel error -y -f lavfi -i color=c=black:s=4096x4096:r=8 -frames:v 33 "
                       "-c:v mjpeg -q:v 31 -pix_fmt yuvj420p '" +
                       big + "'")
                          .c_str()) == 0);
  Indices all(33);
  std::iota(all.begin(), all.end(), 0);
  expect_media_error([&] { decode_frames(big, all); }, "too_large", big);
  expect_media_error([&] { read_clip(big, std::nullopt, std::nullopt, 33); }, "too_large", big);
  // The budget counts the frames returned (duplicates too, each is a copy); 2 of them decode.
  expect_media_error([&] { decode_frames(big, Indices(33, 5)); }, "too_large", big);
  CHECK(read_clip(big, std::nullopt, std::nullopt, 2).frames.size(0) == 2);
  static_assert(kMaxClipPixels < 33 * 4096 * 4096 && 32 * 4096 * 4096 <= kMaxClipPixels, "the case sits on the edge");
}

TEST_CASE("a clip's plan counts the frames its decode needs from the keyframes, before any frame is decoded") {
  // 600 frames: one keyframe every 10 frames, and one keyframe in all.
  Scratch s("plm_video_plan");
  const std::string gop10 = s.path("gop10.mp4"), gop_all = s.path("gop_all.mp4");
  for (const auto& [path, keyint] : {std::pair{gop10, 10}, std::pair{gop_all, 100000}})
    REQUIRE(std::system(("ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=32x32:rate=30 -frames:v 600 "
                         "-c:v libx264 -preset ultrafast -x264-params keyint=" +
                         std::to_string(keyint) + ":min-keyint=" + std::to_string(keyint) +
                         ":scenecut=0 -pix_fmt yuv420p '" + path + "'")
                            .c_str()) == 0);
  const VideoInfo short_gops = probe_video(gop10), one_gop = probe_video(gop_all);
  CHECK(short_gops.num_frames == 600);
  CHECK(short_gops.declared_frames == 600);
  CHECK(short_gops.longest_gop == 10);
  CHECK(one_gop.longest_gop == 600);
  for (const int64_t frames : {1, 4, 16}) {
    INFO(frames << " frames");
    std::vector<ClipPlan> plans;
    const auto record = [&](const ClipPlan& p) { plans.push_back(p); };
    const DecodedFrames a = read_clip(gop10, std::nullopt, std::nullopt, frames, 0, record);
    const DecodedFrames b = read_clip(gop_all, std::nullopt, std::nullopt, frames, 0, record);
    REQUIRE(plans.size() == 2);
    CHECK(plans[0].indices == a.indices);
    CHECK(plans[0].frames_to_decode == a.frames_to_decode);
    // With a keyframe every 10 frames each wanted frame costs at most 10; with one keyframe, everything up to the
    // last wanted frame.
    const int64_t last = *std::max_element(b.indices.begin(), b.indices.end());
    CHECK(plans[1].frames_to_decode == last + 1);
    CHECK(plans[0].frames_to_decode >= static_cast<int64_t>(a.indices.size()));
    CHECK(plans[0].frames_to_decode <= 10 * static_cast<int64_t>(a.indices.size()));
    if (frames > 1) CHECK(plans[0].frames_to_decode < plans[1].frames_to_decode);
  }
  // A plan that is refused stops the read before decoding: the refusal is what the caller sees.
  CHECK_THROWS_WITH(read_clip(gop_all, std::nullopt, std::nullopt, 4, 0,
                              [](const ClipPlan& p) { throw MediaError("too_long", p.path + " is too long"); }),
                    Catch::Contains("gop_all.mp4 is too long"));
}
