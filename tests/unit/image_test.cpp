// Image decoding, Pillow-compatible resizing and PLM's tiling (docs/reference.md 4.4). Fixtures are made at test time
// by tests/parity/image_parity.py with the venv's Pillow, which also checks plm's outputs against Pillow/torchvision.
#include <sys/stat.h>
#include <algorithm>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "plm/ckpt/safetensors.h"
#include "plm/media/image.h"
#include "plm/media/media_error.h"
#include "plm/media/resample.h"
#include "plm/media/tiling.h"
#include "scratch.h"
#include "test_helpers.h"
#include "torch_catch.h"

using namespace plm::media;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

/// Runs tests/parity/image_parity.py COMMAND DIR; returns its output; `require_ok` fails the test on rc != 0.
std::string run_parity_script(const Scratch& s, const std::string& command, bool require_ok = true) {
  const PythonRun r =
      run_reference_python("tests/parity/image_parity.py", command + " '" + s.dir.string() + "'", s.path("python.log"));
  INFO(r.command << "\n" << r.output);
  if (require_ok) REQUIRE(r.ok());
  return r.output;
}

/// The MediaError `f` throws (fails the test if it throws nothing or something else).
template <typename F>
MediaError media_error_of(F&& f) {
  const std::optional<MediaError> e = thrown<MediaError>(std::forward<F>(f));
  REQUIRE(e);
  return *e;
}

/// `t` holds [thumbnail +] n_w * n_h chunks of size x size, in [-1, 1].
void require_tiles_shape(const ImageTiles& t, TileGrid grid, int64_t size = 448, bool thumbnail = true) {
  CHECK(t.grid.n_w == grid.n_w);
  CHECK(t.grid.n_h == grid.n_h);
  REQUIRE(t.pixels.sizes() == at::IntArrayRef({(thumbnail ? 1 : 0) + grid.n_w * grid.n_h, 3, size, size}));
  CHECK(t.pixels.scalar_type() == at::kFloat);
  CHECK(t.pixels.is_contiguous());
  CHECK(t.pixels.min().item<float>() >= -1.0f);
  CHECK(t.pixels.max().item<float>() <= 1.0f);
}

}  // namespace

TEST_CASE("choose_tile_grid: the worked examples of docs/reference.md 4.4", "[image][tiling]") {
  struct Example {
    int64_t w, h, max_tiles, n_w, n_h;
  };
  const Example examples[] = {{640, 427, 4, 2, 2},    {480, 640, 36, 5, 7},   {300, 800, 16, 2, 6},
                              {448, 448, 36, 6, 6},   {100, 100, 36, 6, 6},   {1920, 1147, 36, 7, 5},
                              {1920, 1147, 16, 5, 3}, {4000, 3000, 36, 4, 3}, {4000, 3000, 16, 4, 3},
                              {1280, 427, 4, 3, 1},   {5000, 500, 36, 18, 2}, {2000, 1000, 9, 4, 2},
                              {3000, 1000, 9, 3, 1}};
  for (const Example& e : examples) {
    const TileGrid g = choose_tile_grid(e.w, e.h, e.max_tiles);
    INFO(e.w << "x" << e.h << " max " << e.max_tiles << " -> " << g.n_w << "x" << g.n_h);
    CHECK(g.n_w == e.n_w);
    CHECK(g.n_h == e.n_h);
  }
  CHECK(choose_tile_grid(1000, 1000, 1).n_w == 1);
}

TEST_CASE("normalize_to_float and vanilla", "[image][tiling]") {
  const at::Tensor values = at::arange(256, at::kLong).to(at::kByte).view({1, 1, 256});
  const at::Tensor f = normalize_to_float(values);
  CHECK(f.sizes() == values.sizes());
  CHECK(f[0][0][0].item<float>() == -1.0f);
  CHECK(f[0][0][255].item<float>() == 1.0f);
  const at::Tensor rgb = at::full({30, 50, 3}, 255, at::kByte);
  const ImageTiles v = vanilla(rgb, 64);
  require_tiles_shape(v, {1, 1}, 64, false);
  CHECK(v.pixels.eq(1.0f).all().item<bool>());
  // A uniform image stays uniform through the resize, in every chunk.
  CHECK(thumb_and_tiles(rgb, 6, 32).pixels.eq(1.0f).all().item<bool>());
}

TEST_CASE("resize_bicubic_pil: identity, single axis and uniform images", "[image][resample]") {
  const at::Tensor img = at::randint(0, 256, {7, 9, 3}, at::kByte);
  CHECK(at::equal(resize_bicubic_pil(img, 9, 7), img));
  CHECK(resize_bicubic_pil(img, 4, 7).sizes() == at::IntArrayRef({7, 4, 3}));
  CHECK(resize_bicubic_pil(img, 9, 20).sizes() == at::IntArrayRef({20, 9, 3}));
  const at::Tensor grey = at::full({13, 17, 3}, 77, at::kByte);
  CHECK(resize_bicubic_pil(grey, 3, 40).eq(77).all().item<bool>());
  // A non-contiguous view gives the same result as its contiguous copy.
  const at::Tensor wide = at::randint(0, 256, {10, 20, 3}, at::kByte);
  const at::Tensor view = wide.slice(1, 3, 15);
  CHECK(at::equal(resize_bicubic_pil(view, 5, 6), resize_bicubic_pil(view.contiguous(), 5, 6)));
}

TEST_CASE("load_image_rgb: errors name the file and carry a reason", "[image][errors]") {
  Scratch s("plm_image_err");
  run_parity_script(s, "samples");
  std::string jpeg, png;
  {
    std::stringstream a, b;
    a << std::ifstream(s.path("sample.jpg"), std::ios::binary).rdbuf();
    b << std::ifstream(s.path("sample.png"), std::ios::binary).rdbuf();
    jpeg = a.str(), png = b.str();
  }
  CHECK(load_image_rgb(s.path("sample.jpg")).sizes() == at::IntArrayRef({48, 64, 3}));
  CHECK(load_image_rgb(s.path("sample.png")).sizes() == at::IntArrayRef({48, 64, 3}));
  const std::map<std::string, std::pair<std::string, std::string>> cases = {
      // file name -> (content, expected reason)
      {"empty.jpg", {"", "decode_error"}},
      {"half.jpg", {jpeg.substr(0, jpeg.size() / 2), "decode_error"}},
      {"header_only.jpg", {jpeg.substr(0, 200), "decode_error"}},
      {"half.png", {png.substr(0, png.size() / 2), "decode_error"}},
      {"header_only.png", {png.substr(0, 40), "decode_error"}},
      {"notes.jpg", {"these are my holiday notes, not a photo\n", "unsupported_format"}},
      {"image.heic",
       {std::string("\0\0\0\x18"
                    "ftypheic\0\0\0\0",
                    16),
        "unsupported_format"}},
      {"corrupt.png", {png.substr(0, 16) + std::string(200, 'x'), "decode_error"}},
  };
  for (const auto& [name, c] : cases) {
    const std::string path = s.write(name, c.first);
    const MediaError e = media_error_of([&] { load_image_rgb(path); });
    INFO(name << ": " << e.what());
    CHECK(e.reason() == c.second);
    CHECK_THAT(e.what(), Contains(path));
    // Never the file's content (a path may reach outside root_dir): neither its text nor its bytes in hex.
    if (c.first.size() >= 8) {
      CHECK_THAT(e.what(), !Contains(c.first.substr(0, 8)));
      char hex[8];
      std::snprintf(hex, sizeof hex, "%02x %02x", static_cast<unsigned char>(c.first[0]),
                    static_cast<unsigned char>(c.first[1]));
      CHECK_THAT(e.what(), !Contains(hex));
    }
  }
  const MediaError missing = media_error_of([&] { load_image_rgb(s.path("nope.jpg")); });
  CHECK(missing.reason() == "missing_file");
  CHECK_THAT(missing.what(), Contains(s.path("nope.jpg")));
  CHECK(media_error_of([&] { load_image_rgb(s.dir.string()); }).reason() == "missing_file");
  // A symlink loop says so (not "does not exist"); a FIFO is refused without being opened (it would block).
  const std::string loop = s.path("loop.png");
  std::filesystem::create_symlink(loop, loop);
  CHECK_THAT(media_error_of([&] { load_image_rgb(loop); }).what(), Contains(loop) && Contains("cannot be reached"));
  const std::string fifo = s.path("fifo.png");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THAT(media_error_of([&] { load_image_rgb(fifo); }).what(), Contains("not a regular file"));
  CHECK_THAT(media_error_of([&] { decode_image_rgb("GIF89a", "in-memory.gif"); }).what(), Contains("in-memory.gif"));
}

TEST_CASE("decode_image_rgb: every prefix of every format's magic is refused with a MediaError", "[image][errors]") {
  // The format sniffer looks at bytes past the start (WebP's "WEBP" at 8, "VP8 " at 12): a file shorter than that
  // must not match, never read past its end (a 7-byte "RIFF\x07F@" threw std::out_of_range, found by fuzz_image).
  const std::vector<std::string> magics = {"\xFF\xD8\xFF\xE0",
                                           "\x89PNG\r\n\x1A\n\0\0\0\rIHDR",
                                           "RIFF\x10\0\0\0WEBPVP8 \0\0",
                                           "GIF89a\x01\0",
                                           "BM\x3A\0\0\0",
                                           std::string("II*\0\x08\0", 6),
                                           std::string("MM\0*\0\0", 6),
                                           "qoif\0\0",
                                           std::string("\0\0\0\x0CjP  \r\n\x87\n\0", 13)};
  for (const std::string& magic : magics)
    for (size_t n = 0; n <= magic.size(); ++n) {
      INFO("prefix of " << n << " bytes of a magic starting "
                        << static_cast<int>(static_cast<unsigned char>(magic[0])));
      const MediaError e = media_error_of([&] { decode_image_rgb(std::string_view(magic.data(), n), "short.img"); });
      CHECK_THAT(e.what(), Contains("short.img"));
    }
}

TEST_CASE("thumb_and_tiles: extreme aspect ratios and a 4000x3000 photo", "[image][tiling]") {
  const at::Tensor tall = at::randint(0, 256, {10000, 1, 3}, at::kByte);  // 1 x 10000 (w x h)
  require_tiles_shape(thumb_and_tiles(tall, 36, 448), choose_tile_grid(1, 10000, 36));
  const at::Tensor wide = at::randint(0, 256, {1, 10000, 3}, at::kByte);
  require_tiles_shape(thumb_and_tiles(wide, 36, 448), choose_tile_grid(10000, 1, 36));
  Scratch s("plm_image_photo");
  run_parity_script(s, "photo");
  const at::Tensor photo = load_image_rgb(s.path("photo.jpg"));
  REQUIRE(photo.sizes() == at::IntArrayRef({3000, 4000, 3}));
  require_tiles_shape(thumb_and_tiles(photo, 36, 448), {4, 3});
  require_tiles_shape(vanilla(photo), {1, 1}, 448, false);
}

TEST_CASE("image parity with Pillow, torchvision and PLM's grid rule", "[image][parity]") {
  Scratch s("plm_image_parity");
  run_parity_script(s, "make");
  plm::ckpt::TensorMap ours;
  std::map<std::string, std::string> failures;
  std::vector<int64_t> grids;
  std::ifstream manifest(s.path("manifest.txt"));
  std::map<std::string, at::Tensor> decoded;
  const auto image = [&](const std::string& name) {
    auto it = decoded.find(name);
    return it != decoded.end() ? it->second : decoded[name] = load_image_rgb(s.path(name));
  };
  for (std::string line; std::getline(manifest, line);) {
    std::istringstream in(line);
    std::string kind, name, key = line;
    std::replace(key.begin(), key.end(), ' ', ':');
    in >> kind;
    if (kind == "decode") {
      in >> name;
      try {
        ours.insert(key, load_image_rgb(s.path(name)));
      } catch (const MediaError& e) {
        failures[key] = e.reason() + ": " + e.what();
      }
    } else if (kind == "resize") {
      int64_t w, h;
      in >> name >> w >> h;
      ours.insert(key, resize_bicubic_pil(image(name), w, h));
    } else if (kind == "tiles") {
      int64_t max_tiles, size;
      in >> name >> max_tiles >> size;
      const ImageTiles t = thumb_and_tiles(image(name), max_tiles, size);
      ours.insert(key, t.pixels);
      ours.insert("grid" + key.substr(5), at::tensor({t.grid.n_w, t.grid.n_h}, at::kLong));
    } else if (kind == "vanilla") {
      int64_t size;
      in >> name >> size;
      ours.insert(key, vanilla(image(name), size).pixels);
    } else if (kind == "grid") {
      int64_t w, h, max_tiles;
      in >> w >> h >> max_tiles;
      const TileGrid g = choose_tile_grid(w, h, max_tiles);
      grids.push_back(g.n_w), grids.push_back(g.n_h);
    } else if (kind == "normalize") {
      ours.insert("normalize", normalize_to_float(at::arange(256, at::kLong).to(at::kByte)));
    }
  }
  ours.insert("grids", at::tensor(grids, at::kLong).view({-1, 2}));
  plm::ckpt::write_safetensors(ours, s.path("ours.safetensors"), failures);
  const std::string report = run_parity_script(s, "check", false);
  std::cout << report;
  INFO(report);
  CHECK_THAT(report, Contains("\n0 failing case(s)"));
}
