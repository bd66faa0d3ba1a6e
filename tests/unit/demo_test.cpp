// The demo dataset (src/plm/demo/): determinism, every sample through PLM's preprocessing with the demo recipes,
// decodable videos, answers that match the drawn pixels, and the tokenizer's special tokens.
#include "torch_catch.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "plm/config/load.h"
#include "plm/data/loader_factory.h"
#include "plm/demo/demo_error.h"
#include "plm/demo/make_demo.h"
#include "plm/demo/questions.h"
#include "plm/demo/shapes.h"
#include "plm/media/image.h"
#include "plm/media/video.h"
#include "plm/text/conversation.h"
#include "plm/text/tokenizer.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace plm;

namespace {

constexpr double kScale = 0.02;  // 30 captions, 16 training samples per image task, 12 per video task

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One small dataset shared by the tests that only read it.
const fs::path& dataset() {
  static Scratch scratch("plm_demo_test");
  static const bool made = [] {
    demo::MakeDemoOptions o;
    o.out = scratch.path("demo");
    o.scale = kScale;
    demo::make_demo(o);
    return true;
  }();
  static const fs::path dir = scratch.dir / "demo";
  (void)made;
  return dir;
}

std::vector<json> samples(const std::string& split, const std::string& task) {
  std::vector<json> out;
  std::ifstream in(dataset() / split / (task + ".jsonl"));
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  REQUIRE_FALSE(out.empty());
  return out;
}

// The palette colour nearest to a pixel, or -1 for background (dark) pixels.
int colour_at(const uint8_t* rgb) {
  if (rgb[0] + rgb[1] + rgb[2] < 120) return -1;
  int best = -1, best_d = 1 << 30;
  for (int c = 0; c < demo::kNumColours; ++c) {
    const auto p = demo::colour_rgb(static_cast<demo::Colour>(c));
    int d = 0;
    for (int k = 0; k < 3; ++k) d += (rgb[k] - p[static_cast<size_t>(k)]) * (rgb[k] - p[static_cast<size_t>(k)]);
    if (d < best_d) best = c, best_d = d;
  }
  return best;
}

// Pixel counts per palette colour in region [x0, x1) x [y0, y1) of an HWC uint8 image.
std::array<int, 4> colours_in(const at::Tensor& hwc, int x0, int y0, int x1, int y1) {
  std::array<int, 4> n{};
  const at::Tensor img = hwc.contiguous();
  const uint8_t* p = img.data_ptr<uint8_t>();
  const int w = static_cast<int>(img.size(1));
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x)
      if (const int c = colour_at(p + (static_cast<size_t>(y) * w + x) * 3); c >= 0) ++n[static_cast<size_t>(c)];
  return n;
}

std::set<int> present(const std::array<int, 4>& counts, int min_pixels = 12) {
  std::set<int> out;
  for (int c = 0; c < 4; ++c)
    if (counts[static_cast<size_t>(c)] >= min_pixels) out.insert(c);
  return out;
}

int colour_index(const std::string& name) {
  for (int c = 0; c < demo::kNumColours; ++c)
    if (demo::colour_name(static_cast<demo::Colour>(c)) == name) return c;
  return -1;
}

// The palette colour named in a question ("... the red circle ...").
int colour_in_text(const std::string& text) {
  for (int c = 0; c < demo::kNumColours; ++c)
    if (text.find(" " + demo::colour_name(static_cast<demo::Colour>(c)) + " ") != std::string::npos) return c;
  return -1;
}

std::string question(const json& s) {
  return s["conversations"][0]["value"].get<std::string>();
}
std::string answer_option(const json& s) {
  return s["options"][static_cast<size_t>(s["answer"].get<std::string>()[0] - 'A')].get<std::string>();
}
at::Tensor image_of(const json& s, size_t k = 0) {
  const json& im = s["image"];
  return media::load_image_rgb((dataset() / (im.is_array() ? im[k] : im).get<std::string>()).string());
}
// Frames as [N, H, W, 3].
at::Tensor frames_of(const json& s) {
  std::vector<int64_t> all(demo::kVideoFrames);
  for (int64_t i = 0; i < demo::kVideoFrames; ++i) all[static_cast<size_t>(i)] = i;
  return media::decode_frames((dataset() / s["video"].get<std::string>()).string(), all).permute({0, 2, 3, 1});
}

}  // namespace

TEST_CASE("make-demo: the same seed writes byte-identical files, on any number of threads") {
  Scratch scratch("plm_demo_determinism");
  auto make = [&](const std::string& name, uint64_t seed, int threads) {
    demo::MakeDemoOptions o;
    o.out = scratch.path(name);
    o.seed = seed;
    o.scale = 0.01;
    o.threads = threads;
    return demo::make_demo(o);
  };
  make("a", 7, 1);
  make("b", 7, 3);
  make("c", 8, 2);
  const fs::path a = scratch.dir / "a", b = scratch.dir / "b", c = scratch.dir / "c";
  int64_t files = 0, differ_c = 0;
  for (const auto& e : fs::recursive_directory_iterator(a)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), a);
    std::string x = read(e.path()), y = read(b / rel);
    if (rel == "datasets.yaml") y = text::replace_all(y, b.string(), a.string());
    INFO(rel.string());
    CHECK(x == y);
    differ_c += fs::exists(c / rel) && read(c / rel) != x;
    ++files;
  }
  CHECK(files > 100);
  CHECK(differ_c > files / 2);  // another seed draws other samples
}

TEST_CASE("make-demo: every sample of every split parses and preprocesses with the demo recipes") {
  const std::string registry = (dataset() / "datasets.yaml").string(), tok = (dataset() / "tokenizer.model").string();
  for (const std::string stage : {"1", "2", "3"}) {
    const auto args = config::load_config(std::string(PLM_SOURCE_DIR) + "/recipes/demo/stage" + stage + ".yaml",
                                          {"data.registry=" + registry, "data.tokenizer_path=" + tok})
                          .args;
    const data::LoaderFactory p = data::make_loader_factory(args);
    CHECK(args.model.vocab_size == p.tokenizer->vocab_size());
    const auto per_chunk = stage == "1" ? 16 : 4;  // 56/14 squared at pooling 1; pooled 2x2 at pooling 2
    const int64_t frames = std::min<int64_t>(demo::kVideoFrames, *args.data.max_video_frames);
    for (const auto& [name, entry] : data::load_registry(registry)) {
      const data::JsonlSource source(entry.annotation);
      for (int64_t i = 0; i < source.size(); ++i) {
        INFO(source.origin(i) << " stage " << stage);
        const auto s = (*p.preprocess)(data::parse_sample(source.row(i)), entry.root_dir);
        CHECK_FALSE(s.truncated);
        CHECK_FALSE(s.response_pos.empty());
        const int64_t expected_chunks = s.media_type == "video"         ? frames
                                        : s.media_type == "multi_image" ? 3
                                        : s.media_type == "image"       ? (stage == "1" ? 1 : 5)
                                                                        : 1;
        CHECK(s.media.size(0) == expected_chunks);
        CHECK(static_cast<int64_t>(s.image_pos.size()) == (s.media_type == "text" ? 0 : expected_chunks * per_chunk));
      }
    }
    auto loader = p.loader();
    const data::Batch b = loader->next();
    CHECK(b.loss_mask.any().item<bool>());
    CHECK(loader->skipped().empty());
  }
}

TEST_CASE("make-demo: videos have 16 frames at 8 fps that plm's decoder reads back") {
  for (const auto& s : samples("val", "rtloc")) {
    const std::string path = (dataset() / s["video"].get<std::string>()).string();
    const auto info = media::probe_video(path);
    CHECK(info.num_frames == demo::kVideoFrames);
    CHECK(info.average_fps == Approx(demo::kVideoFps));
    CHECK(info.width == demo::kTileSize);
    const auto clip = media::read_clip(path, std::nullopt, std::nullopt, 16);
    CHECK(clip.indices.size() == 16);  // every frame: questions count frames 0..15
    CHECK(clip.indices.back() == 15);
  }
}

TEST_CASE("make-demo: image answers match the drawn pixels") {
  const int half = demo::kImageSize / 2;
  auto quadrant_colours = [&](const at::Tensor& img, int q) {
    return present(colours_in(img, (q % 2) * half, (q / 2) * half, (q % 2 + 1) * half, (q / 2 + 1) * half));
  };
  for (const auto& s : samples("test", "count_short")) {
    const auto img = image_of(s);
    int shapes = 0;
    for (int q = 0; q < 4; ++q) shapes += !quadrant_colours(img, q).empty();
    CHECK(std::to_string(shapes) == s["answer"].get<std::string>());
  }
  for (const auto& s : samples("test", "region_colour")) {  // the colour at the centre of the box
    const auto& b = s["bbox"][0];
    const int cx = b[0].get<int>() + b[2].get<int>() / 2, cy = b[1].get<int>() + b[3].get<int>() / 2;
    const auto img = image_of(s);
    CHECK(colour_at(img[cy][cx].contiguous().data_ptr<uint8_t>()) == colour_index(s["answer"]));
  }
  for (const auto& s : samples("test", "position_mcq")) {  // the named colour is in the answered quadrant
    const int q = s["answer"].get<std::string>()[0] - 'A';
    CHECK(quadrant_colours(image_of(s), q).count(colour_in_text(question(s))) == 1);
  }
  for (const char* task : {"colour_mcq", "shape_mcq", "position_mcq"})  // one shape, asked about one property
    for (const auto& s : samples("test", task)) {
      const auto img = image_of(s);
      int shapes = 0;
      for (int q = 0; q < 4; ++q) shapes += !quadrant_colours(img, q).empty();
      CHECK(shapes == 1);
    }
  for (const auto& s : samples("test", "colour_mcq"))
    CHECK(present(colours_in(image_of(s), 0, 0, demo::kImageSize, demo::kImageSize))
              .count(colour_index(answer_option(s))));
  for (const auto& s : samples("test", "multi_image_mcq")) {  // exactly two pictures hold the answered colour
    const int answered = colour_index(answer_option(s));
    int holding = 0;
    for (size_t k = 0; k < 3; ++k) {
      const auto colours = present(colours_in(image_of(s, k), 0, 0, demo::kTileSize, demo::kTileSize));
      CHECK(colours.size() == 1);
      holding += static_cast<int>(colours.count(answered));
    }
    CHECK(holding == 2);
  }
}

TEST_CASE("make-demo: video answers match the decoded frames") {
  const int n = demo::kVideoFrames, size = demo::kTileSize;
  auto in_frame = [&](const at::Tensor& f) { return present(colours_in(f, 0, 0, size, size)); };
  for (const auto& s : samples("test", "rtloc")) {  // the named colour is visible exactly on [start, end]
    const auto frames = frames_of(s);
    const int c = colour_in_text(question(s));
    int first = -1, last = -1;
    for (int f = 0; f < n; ++f)
      if (in_frame(frames[f]).count(c)) last = f, first = first < 0 ? f : first;
    CHECK(json{first, last} == s["answer"]);
  }
  for (const auto& s : samples("test", "order_mcq")) {
    const auto frames = frames_of(s);
    int f = 0;
    while (f < n && in_frame(frames[f]).empty()) ++f;
    REQUIRE(f + 2 < n);
    for (int k = f; k < f + 3; ++k)  // the first shape is alone for 3 frames
      CHECK(in_frame(frames[k]) == std::set<int>{colour_in_text(" " + answer_option(s) + " ")});
  }
  for (const auto& s : samples("test", "count_video")) {
    const auto frames = frames_of(s);
    std::set<int> seen;
    for (int f = 0; f < n; ++f)
      for (const int c : in_frame(frames[f])) seen.insert(c);
    CHECK(std::to_string(seen.size()) == s["answer"].get<std::string>());
  }
  for (const auto& s : samples("test", "direction_mcq")) {  // the centre of mass moves the answered way
    const auto frames = frames_of(s);
    auto centre = [&](int f) {
      const at::Tensor mask = frames[f].to(at::kInt).sum(-1).gt(120).to(at::kFloat);
      const at::Tensor ys = at::arange(size).to(at::kFloat).unsqueeze(1), xs = at::arange(size).to(at::kFloat);
      const double m = mask.sum().item<double>();
      return std::pair<double, double>{(mask * xs).sum().item<double>() / m, (mask * ys).sum().item<double>() / m};
    };
    const auto [x0, y0] = centre(0);
    const auto [x1, y1] = centre(n - 1);
    const std::map<std::string, bool> moved{
        {"left", x1 < x0 - 10}, {"right", x1 > x0 + 10}, {"up", y1 < y0 - 10}, {"down", y1 > y0 + 10}};
    CHECK(moved.at(answer_option(s)));
  }
  for (const auto& s : samples("test", "region_video_mcq")) {  // the boxed shape has the answered colour
    const auto frames = frames_of(s);
    for (int f : {0, n - 1}) {
      const auto& b = s["bbox_map"][std::to_string(f)];
      const int cx = (b[0].get<int>() + b[2].get<int>()) / 2, cy = (b[1].get<int>() + b[3].get<int>()) / 2;
      CHECK(present(colours_in(frames[f], cx - 3, cy - 3, cx + 4, cy + 4), 4) ==
            std::set<int>{colour_index(answer_option(s))});
    }
  }
}

TEST_CASE("make-demo: text, captions and tasks.json are consistent") {
  for (const auto& s : samples("test", "addition")) {
    int a = 0, b = 0;
    REQUIRE(std::sscanf(question(s).c_str(), "What is %d plus %d?", &a, &b) == 2);
    CHECK(s["answer"] == std::to_string(a + b));
    CHECK((a >= 0 && a <= 4 && b >= 0 && b <= 4));
    CHECK_FALSE(s.contains("image"));
  }
  for (const auto& s : samples("val", "caption")) {
    const auto img = image_of(s);
    const auto counts = colours_in(img, 0, 0, demo::kImageSize, demo::kImageSize);
    for (const int c : present(counts))
      CHECK(s["answer"].get<std::string>().find(demo::colour_name(static_cast<demo::Colour>(c))) != std::string::npos);
  }
  const auto meta = json::parse(read(dataset() / "tasks.json"));
  CHECK(meta["tasks"].size() == 13);
  for (const auto& [name, t] : meta["tasks"].items()) {
    INFO(name);
    if (t["answer_type"] == "mcq" || t["answer_type"] == "short") CHECK(t["chance"].get<double>() <= 1.0 / 3 + 1e-9);
    for (const std::string split : {"train", "val", "test"}) {
      const auto rows = samples(split, name);
      CHECK(static_cast<int64_t>(rows.size()) == t[split].get<int64_t>());
      for (const auto& r : rows) CHECK(r["task"] == name);
    }
  }
  CHECK(meta["tasks"]["rtloc"]["chance"].get<double>() > 0.05);
  CHECK(meta["tasks"]["rtloc"]["chance"].get<double>() < 0.4);
}

TEST_CASE("make-demo: the rtloc chance level is a random segment's PLM-VideoBench mean recall") {
  // Of [0, 0], [0, 1] and [1, 1] only [0, 1] overlaps [0, 1] (one-frame segments have no length): 1/3.
  CHECK(demo::rtloc_random_segment_score(0, 1, 2) == Approx(1.0 / 3));
  CHECK(demo::rtloc_random_segment_score(0, 15, 16) > demo::rtloc_random_segment_score(7, 9, 16));
  CHECK(demo::rtloc_random_segment_score(7, 9, 16) > 0);
}

TEST_CASE("make-demo: the tokenizer holds PLM's specials and round-trips the templates") {
  const auto tok = text::load_tokenizer((dataset() / "tokenizer.model").string());
  CHECK(tok->vocab_size() == 512);
  for (const std::string s : {"<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|start_header_id|>",
                              "<|end_header_id|>", "<|eot_id|>"}) {
    const auto id = tok->special_id(s);
    REQUIRE(id >= 0);
    CHECK(tok->encode(s) == std::vector<text::TokenId>{id});
  }
  const auto dialog = text::build_dialog(
      text::ConversationFormat::named("plm_sft"),
      {{"human", "<image>\nWhat colour is the shape in [040,482,112,576]?"}, {"assistant", "[3, 9]"}}, 1, 4,
      text::MediaType::image);
  const std::string full = dialog[0].user + dialog[0].assistant + "caf\xC3\xA9";  // plus a byte-fallback character
  const auto ids = tok->encode(full);
  CHECK(tok->decode(ids) == full);
  CHECK(std::count(ids.begin(), ids.end(), tok->special_id("<|image|>")) == 4);
  CHECK(ids.size() < full.size() / 2);  // trained on the corpus: mostly whole words
}

TEST_CASE("make-demo: an unwritable output folder is one clear error naming it") {
  Scratch scratch("plm_demo_error");
  const std::string file = scratch.write("not_a_folder", "x");
  demo::MakeDemoOptions o;
  o.out = file + "/demo";
  CHECK_THROWS_AS(demo::make_demo(o), demo::DemoError);
  CHECK_THROWS_WITH(demo::make_demo(o), Catch::Contains("not_a_folder/demo"));
}
