// The demo dataset's pictures: flat, saturated shapes on a black canvas, drawn with integer arithmetic so the
// pixels (and hence the files) are the same on every machine. Large shapes and a 4-colour, 4-shape vocabulary
// keep the tasks within reach of configs/models/tiny.yaml (4 vision tokens per 56-pixel tile).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "plm/demo/rng.h"

namespace plm::demo {

enum class Colour { red, green, blue, yellow };
enum class ShapeKind { circle, square, triangle, cross };
inline constexpr int kNumColours = 4;
inline constexpr int kNumKinds = 4;

/// "red", "green", "blue", "yellow".
const std::string& colour_name(Colour c);
/// The RGB value drawn for a colour.
std::array<uint8_t, 3> colour_rgb(Colour c);
/// "circle", "square", "triangle", "cross".
const std::string& kind_name(ShapeKind k);
/// Quadrant q of a square canvas (0 top left, 1 top right, 2 bottom left, 3 bottom right): "top left", ...
const std::string& quadrant_name(int q);

/// A shape centred on pixel (cx, cy) filling the square [cx - r, cx + r] x [cy - r, cy + r]:
/// circle (dx^2 + dy^2 <= r^2), square, triangle (apex up, base at the bottom), cross (arms r/3 wide).
struct Shape {
  ShapeKind kind = ShapeKind::circle;
  Colour colour = Colour::red;
  int cx = 0, cy = 0, r = 0;

  /// "red circle".
  std::string name() const;
  /// Tight box [x, y, w, h] in pixels (PLM's image-region `bbox` form).
  std::array<int, 4> box_xywh() const { return {cx - r, cy - r, 2 * r + 1, 2 * r + 1}; }
};

/// An RGB picture, row-major uint8 [height][width][3].
struct Canvas {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;

  /// A black canvas.
  Canvas(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * static_cast<size_t>(h) * 3, 0) {}

  /// Paints `s`, clipped to the canvas.
  void draw(const Shape& s);
};

/// A shape of random kind and colour (unless given) inside quadrant q of a size x size canvas, with radius in
/// [r_lo, r_hi] and a margin of 2 pixels to the quadrant's edges.
Shape shape_in_quadrant(Rng& rng, int size, int q, int r_lo, int r_hi, Colour colour, ShapeKind kind);

/// The quadrant of a size x size canvas that holds pixel (x, y).
int quadrant_of(int size, int x, int y);

/// Writes `c` as an 8-bit RGB PNG (fixed zlib level, no time chunk: the bytes depend only on the pixels).
/// Throws DemoError naming `path` when it cannot be written.
void write_png(const Canvas& c, const std::string& path);

}  // namespace plm::demo
