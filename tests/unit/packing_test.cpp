// Sequence packing (data/packing.h, data.packing: samples): first-fit decreasing, the packed collation, and the model
// on packed rows, which must give the unpacked batch's loss and gradients and keep every sample to itself. Inputs are
// random; the seed is printed on failure and PLM_TEST_SEED repeats it.
#include "torch_catch.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>

#include "plm/config/load.h"
#include "plm/data/collate.h"
#include "plm/data/packing.h"
#include "plm/model/init.h"
#include "plm/model/model_inputs.h"
#include "plm/model/perception_lm.h"

using namespace plm;

namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("PLM_TEST_SEED")) return std::stoull(s);
  return std::random_device{}();
}

int64_t draw(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // uniform in [lo, hi]
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

constexpr int64_t kPad = 999, kImage = 998, kImageRes = 56;

/// A random sample of the kinds training sees: an image (1 chunk), several images (2), a video (3 frames) or text
/// (PLM's one placeholder chunk, no image tokens), with `tokens_per_chunk` <|image|> tokens per chunk at a random
/// place, a random dialog around them and random loss positions; `slot` and `id` as the loader sets them.
data::ProcessedSample random_sample(std::mt19937_64& rng, int64_t tokens_per_chunk, int64_t max_tokens, int64_t slot) {
  static const char* kinds[] = {"image", "multi_image", "video", "text"};
  const std::string kind = kinds[draw(rng, 0, 3)];
  const int64_t chunks = kind == "image" ? 1 : kind == "multi_image" ? 2 : kind == "video" ? 3 : 1;
  const int64_t image_tokens = kind == "text" ? 0 : chunks * tokens_per_chunk;
  const int64_t n = std::min(max_tokens, image_tokens + draw(rng, 3, max_tokens / 2));
  data::ProcessedSample s;
  const int64_t image_at = draw(rng, 0, std::max<int64_t>(0, n - image_tokens - 2));
  for (int64_t p = 0; p < n; ++p) {
    const bool image = p >= image_at && p < image_at + image_tokens;
    s.ids.push_back(image ? kImage : static_cast<text::TokenId>(draw(rng, 0, 997)));
    if (image) s.image_pos.push_back(p);
    if (!image && p > image_at + image_tokens && draw(rng, 0, 2) == 0) s.response_pos.push_back(p);
  }
  if (s.response_pos.empty()) s.response_pos.push_back(n - 1);
  s.media = at::randn({chunks, 3, kImageRes, kImageRes});
  if (kind == "text") s.media = at::ones({1, 3, kImageRes, kImageRes});
  s.media_type = kind;
  s.slot = slot;
  s.id = "random#" + std::to_string(slot);
  return s;
}

config::ModelArgs tiny_model() {
  return config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml", {"model.vocab_size=1000"}).args.model;
}

/// The row and offset of each sample id in `b` (per-sample fields list samples row by row).
std::map<std::string, std::pair<int64_t, int64_t>> places(const data::Batch& b) {
  std::map<std::string, std::pair<int64_t, int64_t>> out;
  size_t k = 0;
  for (int64_t r = 0; r < b.input_ids.size(0); ++r) {
    int64_t offset = 0;
    const std::vector<int64_t> one{b.input_ids.size(1)};
    for (const int64_t n : b.packed() ? b.segments[static_cast<size_t>(r)] : one) {
      out[b.sample_ids[k++]] = {r, offset};
      offset += n;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("packing: first-fit decreasing places every sample once, within its row, at most one row half empty") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 500; ++trial) {
    const int64_t row = draw(rng, 1, 300);
    std::vector<int64_t> lengths(static_cast<size_t>(draw(rng, 0, 40)));
    for (auto& n : lengths) n = draw(rng, 0, row);
    CAPTURE(trial, row, lengths);
    const auto rows = data::first_fit_decreasing(lengths, row);
    std::vector<size_t> seen;
    int64_t half_empty = 0;
    for (const auto& r : rows) {
      REQUIRE_FALSE(r.empty());
      CHECK(std::is_sorted(r.begin(), r.end()));
      int64_t fill = 0;
      for (const size_t i : r) fill += lengths[i], seen.push_back(i);
      CHECK(fill <= row);
      half_empty += 2 * fill <= row;
    }
    // First fit never leaves two rows at most half full: the later one's samples would have fitted the earlier.
    CHECK(half_empty <= 1);
    std::sort(seen.begin(), seen.end());
    std::vector<size_t> all(lengths.size());
    std::iota(all.begin(), all.end(), size_t{0});
    CHECK(seen == all);
    const data::PackingStats packed = data::packing_stats(lengths, row, true),
                             unpacked = data::packing_stats(lengths, row, false);
    CHECK(packed.rows == static_cast<int64_t>(rows.size()));
    CHECK(packed.rows <= unpacked.rows);
    CHECK(packed.sample_tokens == std::accumulate(lengths.begin(), lengths.end(), int64_t{0}));
  }
  CHECK_THROWS_AS(data::first_fit_decreasing({3, 11}, 10), std::invalid_argument);
}

TEST_CASE(
    "packing: packed rows hold each sample's unpacked inputs, labels, loss and image positions, from position 0") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  at::manual_seed(seed);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t len = draw(rng, 24, 120);
    std::vector<data::ProcessedSample> samples;
    for (int64_t i = 0; i < draw(rng, 1, 9); ++i) samples.push_back(random_sample(rng, 4, len + 1, i));
    const bool longest = trial % 2 == 1;
    CAPTURE(trial, len, samples.size(), longest);
    const data::Batch u = data::collate(samples, len, kPad, longest);
    const data::Batch p = data::collate(samples, len, kPad, longest, /*pack=*/true);
    REQUIRE(p.packed());
    REQUIRE_FALSE(u.packed());
    REQUIRE(p.samples() == u.samples());
    CHECK(p.sample_tokens == u.sample_tokens);
    CHECK(p.useful_tokens() == p.sample_tokens);
    CHECK(u.useful_tokens() == u.input_ids.numel());
    CHECK(p.input_ids.size(0) <= u.input_ids.size(0));
    CHECK(p.loss_mask.sum().item<int64_t>() == u.loss_mask.sum().item<int64_t>());
    const auto up = places(u), pp = places(p);
    std::map<std::string, size_t> unpacked_index;
    for (size_t i = 0; i < u.sample_ids.size(); ++i) unpacked_index[u.sample_ids[i]] = i;
    at::Tensor covered = at::zeros_like(p.loss_mask);
    std::vector<at::Tensor> chunks_in_packed_order;
    std::vector<int64_t> first(u.num_chunks.size() + 1, 0);
    for (size_t i = 0; i < u.num_chunks.size(); ++i) first[i + 1] = first[i] + u.num_chunks[i];
    int64_t attended = 0;
    for (size_t k = 0; k < p.sample_ids.size(); ++k) {
      const std::string& id = p.sample_ids[k];
      const size_t i = unpacked_index.at(id);
      const int64_t n = static_cast<int64_t>(samples[static_cast<size_t>(u.slots[i])].ids.size()) - 1;
      attended += n * n;
      const auto [r, offset] = pp.at(id);
      const int64_t ur = up.at(id).first;
      CAPTURE(id, r, offset, n);
      for (at::Tensor data::Batch::*field :
           {&data::Batch::input_ids, &data::Batch::labels, &data::Batch::loss_mask, &data::Batch::image_pos_index})
        CHECK(at::equal((p.*field)[r].narrow(0, offset, n), (u.*field)[ur].narrow(0, 0, n)));
      CHECK(at::equal(p.positions[r].narrow(0, offset, n), at::arange(n, at::kLong)));
      covered[r].narrow(0, offset, n).fill_(true);
      CHECK(p.media_type[k] == u.media_type[i]);
      CHECK(p.num_chunks[k] == u.num_chunks[i]);
      CHECK(p.slots[k] == u.slots[i]);
      chunks_in_packed_order.push_back(u.images.narrow(0, first[i], u.num_chunks[i]));
    }
    CHECK(p.attended_pairs() == attended);
    // The media follow the packed order, which is the row-major order of the image positions.
    CHECK(at::equal(p.images, at::cat(chunks_in_packed_order, 0)));
    // The rest of each row is padding: no loss, no image slot, the pad id.
    const at::Tensor rest = covered.logical_not();
    CHECK_FALSE(p.loss_mask.index({rest}).any().item<bool>());
    CHECK(bool((p.image_pos_index.index({rest}) == -1).all().item<bool>()));
    CHECK(bool((p.input_ids.index({rest}) == kPad).all().item<bool>()));
    if (longest) CHECK(bool(covered.select(1, covered.size(1) - 1).any().item<bool>()));
  }
}

TEST_CASE("packing: the model on packed rows gives the unpacked loss and gradients where a leaky mask would not") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  at::manual_seed(seed);
  model::PerceptionLM m(tiny_model());
  model::init_all(*m);
  {
    // At init the decoder's attention adds little to the residual stream; made stronger, reading a neighbour's tokens
    // moves the loss well beyond the equality bound, so the leak check below cannot pass by accident.
    at::NoGradGuard no_grad;
    for (auto& p : m->named_parameters())
      if (p.key().find(".attention.wv.") != std::string::npos || p.key().find(".attention.wo.") != std::string::npos)
        p.value().mul_(8);
  }
  m->train();
  m->apply_freezing();
  const auto& v = *m->args.vision_model;
  const int64_t per_chunk =
      (v.image_size / v.patch_size / m->args.pooling_ratio) * (v.image_size / v.patch_size / m->args.pooling_ratio);
  const int64_t len = 96;
  std::vector<data::ProcessedSample> samples;
  for (int64_t i = 0; i < 7; ++i) samples.push_back(random_sample(rng, per_chunk, 60, i));
  const data::Batch u = data::collate(samples, len, kPad, false);
  const data::Batch p = data::collate(samples, len, kPad, false, /*pack=*/true);
  REQUIRE(p.input_ids.size(0) < u.input_ids.size(0));  // samples of at most 59 tokens: at least one row holds two
  const auto loss_and_grads = [&](const data::Batch& b, bool leak) {
    m->zero_grad();
    model::ModelInputs in = model::model_inputs(*m, b, at::kCPU);
    if (leak) in.segments.clear();  // plain causal attention over the row, positions kept: samples see each other
    const at::Tensor loss = m->loss(in, b.labels, b.loss_mask);
    loss.backward();
    std::vector<at::Tensor> grads;
    for (const auto& param : m->parameters())
      if (param.grad().defined()) grads.push_back(param.grad().clone());
    return std::make_pair(loss.item<double>(), grads);
  };
  const auto [want, want_grads] = loss_and_grads(u, false);
  const auto [got, got_grads] = loss_and_grads(p, false);
  CHECK(std::abs(got - want) <= 1e-5 * std::abs(want));
  REQUIRE(got_grads.size() == want_grads.size());
  for (size_t i = 0; i < got_grads.size(); ++i) {
    const double err = (got_grads[i] - want_grads[i]).norm().item<double>();
    const double scale = want_grads[i].norm().item<double>();
    CAPTURE(i, err, scale);
    CHECK(err <= 1e-5 * scale + 1e-9);
  }
  // The test would catch attention across samples: the leaky layout moves the loss far beyond the bound above.
  const double leaky = loss_and_grads(p, true).first;
  CAPTURE(want, got, leaky);
  CHECK(std::abs(leaky - want) > 1e-4 * std::abs(want));  // ten times the bound the packed loss meets

  // A packed sample's logits depend on its own tokens only: change every other sample of its row and they stay;
  // under the leaky layout they move.
  m->eval();
  at::NoGradGuard no_grad;
  const auto pl = places(p);
  size_t target = 0;  // a sample that shares its row and is not the row's first: it would read a neighbour
  for (size_t k = 1; k < p.sample_ids.size(); ++k)
    if (pl.at(p.sample_ids[k]).first == pl.at(p.sample_ids[k - 1]).first) target = k;
  REQUIRE(target > 0);
  const auto [row, offset] = pl.at(p.sample_ids[target]);
  const int64_t n = static_cast<int64_t>(samples[static_cast<size_t>(p.slots[target])].ids.size()) - 1;
  data::Batch changed = p;
  changed.input_ids = p.input_ids.clone();
  const at::Tensor others = at::ones({len}, at::kBool);
  others.narrow(0, offset, n).fill_(false);
  const at::Tensor text = (p.image_pos_index[row] < 0) & others;  // other samples' text tokens (images keep slots)
  changed.input_ids[row].masked_fill_(text, 7);
  for (const bool leak : {false, true}) {
    model::ModelInputs a = model::model_inputs(*m, p, at::kCPU), b = model::model_inputs(*m, changed, at::kCPU);
    if (leak) a.segments.clear(), b.segments.clear();
    const at::Tensor before = m->forward(a)[row].narrow(0, offset, n), after = m->forward(b)[row].narrow(0, offset, n);
    CAPTURE(leak, row, offset, n);
    if (leak)
      CHECK_FALSE(at::allclose(before, after, 1e-4, 1e-5));
    else
      CHECK(at::allclose(before, after, 1e-6, 1e-6));
  }
}
