#include "plm/demo/shapes.h"

#include "plm/demo/demo_error.h"

#include <png.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace plm::demo {

const std::string& colour_name(Colour c) {
  static const std::array<std::string, kNumColours> names{"red", "green", "blue", "yellow"};
  return names[static_cast<size_t>(c)];
}

std::array<uint8_t, 3> colour_rgb(Colour c) {
  static const std::array<std::array<uint8_t, 3>, kNumColours> rgb{
      {{230, 30, 30}, {30, 200, 60}, {40, 90, 250}, {245, 225, 30}}};
  return rgb[static_cast<size_t>(c)];
}

const std::string& kind_name(ShapeKind k) {
  static const std::array<std::string, kNumKinds> names{"circle", "square", "triangle", "cross"};
  return names[static_cast<size_t>(k)];
}

const std::string& quadrant_name(int q) {
  static const std::array<std::string, 4> names{"top left", "top right", "bottom left", "bottom right"};
  return names.at(static_cast<size_t>(q));
}

std::string Shape::name() const {
  return colour_name(colour) + " " + kind_name(kind);
}

namespace {

bool inside(ShapeKind k, int dx, int dy, int r) {
  const int ax = std::abs(dx), ay = std::abs(dy);
  if (ax > r || ay > r) return false;
  switch (k) {
    case ShapeKind::circle:
      return dx * dx + dy * dy <= r * r;
    case ShapeKind::square:
      return true;
    case ShapeKind::triangle:
      return 2 * ax <= dy + r;  // apex at (0, -r), base from (-r, r) to (r, r)
    case ShapeKind::cross:
      return 3 * ax <= r || 3 * ay <= r;
  }
  return false;
}

}  // namespace

void Canvas::draw(const Shape& s) {
  const auto rgb_value = colour_rgb(s.colour);
  for (int y = std::max(0, s.cy - s.r); y <= std::min(height - 1, s.cy + s.r); ++y)
    for (int x = std::max(0, s.cx - s.r); x <= std::min(width - 1, s.cx + s.r); ++x)
      if (inside(s.kind, x - s.cx, y - s.cy, s.r)) {
        uint8_t* p = &rgb[(static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3];
        p[0] = rgb_value[0];
        p[1] = rgb_value[1];
        p[2] = rgb_value[2];
      }
}

Shape shape_in_quadrant(Rng& rng, int size, int q, int r_lo, int r_hi, Colour colour, ShapeKind kind) {
  const int half = size / 2, margin = 2;
  Shape s;
  s.kind = kind;
  s.colour = colour;
  s.r = rng.between(r_lo, r_hi);
  const int x0 = (q % 2) * half, y0 = (q / 2) * half;
  const int lo = s.r + margin, hi = half - 1 - s.r - margin;
  s.cx = x0 + (hi >= lo ? rng.between(lo, hi) : half / 2);
  s.cy = y0 + (hi >= lo ? rng.between(lo, hi) : half / 2);
  return s;
}

int quadrant_of(int size, int x, int y) {
  return (y >= size / 2 ? 2 : 0) + (x >= size / 2 ? 1 : 0);
}

void write_png(const Canvas& c, const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw DemoError("cannot write the image '" + path + "'; check that its folder is writable.");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    throw DemoError("libpng failed to write the image '" + path + "'.");
  }
  png_init_io(png, f);
  png_set_compression_level(png, 6);
  png_set_IHDR(png, info, static_cast<png_uint_32>(c.width), static_cast<png_uint_32>(c.height), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < c.height; ++y)
    png_write_row(png, &c.rgb[static_cast<size_t>(y) * static_cast<size_t>(c.width) * 3]);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fclose(f) != 0) throw DemoError("cannot finish writing the image '" + path + "'.");
}

}  // namespace plm::demo
