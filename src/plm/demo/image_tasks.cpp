// Image tasks: 112x112 pictures with at most one shape per quadrant, nearly filling it, so each shape covers its
// quadrant's native tile (thumb+tile, 4 tiles: all 4 of that tile's pooled tokens) and one pooled token of the
// 56-pixel thumbnail. Five of an image's 20 tokens show each shape: the tiny decoder, trained from scratch, learns
// to read pictures that fill that much of its input in a few minutes (a shape in a quarter of a tile, 2 tokens of
// 20, was not learnt in the same time). The single-shape questions ask about one property; the binding of several
// shapes is asked by region_colour, the comparison of pictures by multi_image_mcq.
#include <algorithm>

#include "plm/demo/questions.h"
#include "plm/demo/shapes.h"

namespace plm::demo {
namespace {

// 47 to 51 pixels across, inside a 56-pixel quadrant with 2 pixels to spare: each kind looks nearly the same in
// every picture (a centre that moves by at most 3 pixels), which the tiny vision encoder learns to tell apart fast.
constexpr int kRadiusLo = 23, kRadiusHi = 25;

std::vector<std::string> colour_options() {
  std::vector<std::string> o;
  for (int c = 0; c < kNumColours; ++c) o.push_back(colour_name(static_cast<Colour>(c)));
  return o;
}

std::vector<std::string> kind_options() {
  std::vector<std::string> o;
  for (int k = 0; k < kNumKinds; ++k) o.push_back(kind_name(static_cast<ShapeKind>(k)));
  return o;
}

// n shapes in distinct random quadrants, ordered by quadrant. Colours and kinds are drawn at random, or distinct
// across the shapes when asked (n <= 4).
std::vector<Shape> scene(Rng& rng, int n, bool distinct_colours, bool distinct_kinds) {
  std::vector<int> quadrants = rng.distinct(4, n);
  std::sort(quadrants.begin(), quadrants.end());
  const std::vector<int> colours = rng.distinct(kNumColours, n), kinds = rng.distinct(kNumKinds, n);
  std::vector<Shape> shapes;
  for (int i = 0; i < n; ++i) {
    const auto colour =
        static_cast<Colour>(distinct_colours ? colours[static_cast<size_t>(i)] : rng.below(kNumColours));
    const auto kind = static_cast<ShapeKind>(distinct_kinds ? kinds[static_cast<size_t>(i)] : rng.below(kNumKinds));
    shapes.push_back(
        shape_in_quadrant(rng, kImageSize, quadrants[static_cast<size_t>(i)], kRadiusLo, kRadiusHi, colour, kind));
  }
  return shapes;
}

// Draws the shapes on a kImageSize canvas, writes it, returns its path relative to the root.
std::string write_scene(const SampleContext& ctx, const std::vector<Shape>& shapes) {
  Canvas c(kImageSize, kImageSize);
  for (const auto& s : shapes) c.draw(s);
  const std::string rel = ctx.media_path("png");
  write_png(c, ctx.absolute(rel));
  return rel;
}

Json with_image(Json j, const std::string& rel) {
  j["image"] = rel;
  return j;
}

Json caption(SampleContext& ctx) {
  const auto shapes = scene(ctx.rng, ctx.rng.between(1, 3), false, false);
  std::string text;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& s = shapes[i];
    text += (i == 0                   ? "A "
             : i + 1 == shapes.size() ? " and a "
                                      : ", a ") +
            s.name() + " at the " + quadrant_name(quadrant_of(kImageSize, s.cx, s.cy));
  }
  return with_image(caption_sample(ctx, "<image>\nDescribe the image.", text + "."), write_scene(ctx, shapes));
}

Json colour_mcq(SampleContext& ctx) {
  const auto shapes = scene(ctx.rng, 1, false, true);
  const Shape& t = shapes[0];
  const std::string q = "What colour is the " + kind_name(t.kind) + "?";
  return with_image(
      mcq_sample(ctx, "<image>\n" + mcq_prompt(q, colour_options()), colour_options(), static_cast<int>(t.colour)),
      write_scene(ctx, shapes));
}

Json shape_mcq(SampleContext& ctx) {
  const auto shapes = scene(ctx.rng, 1, true, false);
  const Shape& t = shapes[0];
  const std::string q = "What shape is the " + colour_name(t.colour) + " object?";
  return with_image(
      mcq_sample(ctx, "<image>\n" + mcq_prompt(q, kind_options()), kind_options(), static_cast<int>(t.kind)),
      write_scene(ctx, shapes));
}

Json count_short(SampleContext& ctx) {
  const auto shapes = scene(ctx.rng, ctx.rng.between(1, 4), false, false);
  return with_image(short_sample(ctx, "<image>\nHow many shapes are in the image? Answer with a number.",
                                 std::to_string(shapes.size())),
                    write_scene(ctx, shapes));
}

Json position_mcq(SampleContext& ctx) {
  const auto shapes = scene(ctx.rng, 1, true, false);
  const Shape& t = shapes[0];
  std::vector<std::string> options;
  for (int q = 0; q < 4; ++q) options.push_back(quadrant_name(q));
  return with_image(mcq_sample(ctx, "<image>\n" + mcq_prompt("Where is the " + t.name() + "?", options), options,
                               quadrant_of(kImageSize, t.cx, t.cy)),
                    write_scene(ctx, shapes));
}

// PLM's image-region form (docs/reference.md 4.1): the box is given in pixels as [x, y, w, h] and appears in the text
// as
// <|bbox0|>, which preprocessing replaces with "[x1,y1,x2,y2]" in thousandths of the image size.
Json region_colour(SampleContext& ctx) {
  const auto shapes = scene(ctx.rng, ctx.rng.between(2, 3), true, false);
  const Shape& t = shapes[static_cast<size_t>(ctx.rng.below(static_cast<int>(shapes.size())))];
  Json j = with_image(
      short_sample(ctx, "<image>\nWhat colour is the shape in <|bbox0|>? Answer with one word.", colour_name(t.colour)),
      write_scene(ctx, shapes));
  const auto b = t.box_xywh();
  j["bbox"] = Json::array({{b[0], b[1], b[2], b[3]}});
  j["width"] = kImageSize;
  j["height"] = kImageSize;
  return j;
}

// Three pictures at tile size, one shape each nearly filling it (all 4 pooled tokens), kinds distinct: two share
// a colour, the third has another. Which colour two of the pictures share is a comparison across the pictures,
// answerable from the pictures' tokens alone (which picture is which needs no ordinal).
Json multi_image_mcq(SampleContext& ctx) {
  const std::vector<int> pair_and_odd = ctx.rng.distinct(kNumColours, 2), kinds = ctx.rng.distinct(kNumKinds, 3);
  const int odd = ctx.rng.below(3);
  std::string human;
  std::vector<std::string> paths;
  for (int i = 0; i < 3; ++i) {
    Shape s;
    s.colour = static_cast<Colour>(pair_and_odd[i == odd ? 1 : 0]);
    s.kind = static_cast<ShapeKind>(kinds[static_cast<size_t>(i)]);
    s.r = ctx.rng.between(kRadiusLo, kRadiusHi);
    s.cx = ctx.rng.between(s.r + 1, kTileSize - 2 - s.r);
    s.cy = ctx.rng.between(s.r + 1, kTileSize - 2 - s.r);
    Canvas c(kTileSize, kTileSize);
    c.draw(s);
    paths.push_back(ctx.media_path("png", i));
    write_png(c, ctx.absolute(paths.back()));
    human += "Image " + std::to_string(i + 1) + ": <image>\n";
  }
  Json j = mcq_sample(ctx, human + mcq_prompt("Which colour appears in two of the images?", colour_options()),
                      colour_options(), pair_and_odd[0]);
  j["image"] = paths;
  return j;
}

}  // namespace

std::vector<TaskSpec> image_tasks() {
  // The likeliest caption has one shape: (1/3 for one shape) x (1/64 for its colour, kind and quadrant).
  // clang-format off
  return {
      {"caption", "image", "caption", 1.0 / 192, {1500, 40, 100}, true,
       "1-3 shapes; caption naming each shape's colour, kind and quadrant (stage 1 warmup data)", caption},
      {"colour_mcq", "image", "mcq", 0.25, {800, 40, 100}, false,
       "one shape; the colour of the named kind", colour_mcq},
      {"shape_mcq", "image", "mcq", 0.25, {800, 40, 100}, false,
       "one shape; the kind of the named colour", shape_mcq},
      {"count_short", "image", "short", 0.25, {800, 40, 100}, false, "1-4 shapes; how many", count_short},
      {"position_mcq", "image", "mcq", 0.25, {800, 40, 100}, false,
       "one shape; the quadrant of the named shape", position_mcq},
      {"region_colour", "image", "short", 0.25, {800, 40, 100}, false,
       "2-3 shapes of distinct colours; the colour of the shape in the given bbox", region_colour},
      {"multi_image_mcq", "multi_image", "mcq", 0.25, {800, 40, 100}, false,
       "3 pictures of one shape each, two of one colour; which colour two pictures share", multi_image_mcq},
  };
  // clang-format on
}

}  // namespace plm::demo
