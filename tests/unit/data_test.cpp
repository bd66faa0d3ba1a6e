// The data pipeline without media decoding: sample schema, registry and datamix, JSONL rows, the global stream,
// collation, and the loader's determinism, resume and skipping.
#include "torch_catch.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "plm/config/source.h"
#include "plm/data/loader.h"
#include "plm/data/packing.h"
#include "plm/media/tiling.h"
#include "plm/text/tokenizer.h"
#include "scratch.h"
#include "test_helpers.h"

using namespace plm;
using namespace plm::data;
namespace fs = std::filesystem;

namespace {

std::string reason_of(const std::string& line) {
  try {
    parse_sample(line);
  } catch (const SampleError& e) {
    return e.reason();
  }
  return "";
}

std::shared_ptr<const text::Tokenizer> llama3_ptr() {
  static const std::shared_ptr<const text::Tokenizer> tok =
      text::load_tokenizer(PLM_SOURCE_DIR "/tests/fixtures/llama3/tokenizer.model");
  return tok;
}
const text::Tokenizer& llama3() {
  return *llama3_ptr();
}

std::shared_ptr<const Preprocessor> text_preprocessor(int64_t seq_len = 96) {
  PreprocessOptions o;
  o.image_res = 28;  // the text placeholder image stays tiny
  o.patch_size = 14;
  o.seq_len = seq_len;
  return std::make_shared<Preprocessor>(llama3_ptr(), o);
}

// A text-only dataset whose answers say which dataset and row they came from.
std::string write_dataset(const Scratch& s, const std::string& name, int rows, const std::string& extra = "") {
  std::string text;
  for (int i = 0; i < rows; ++i)
    text += nlohmann::json{{"conversations",
                            {{{"from", "human"}, {"value", "Which row?"}},
                             {{"from", "assistant"}, {"value", name + " " + std::to_string(i)}}}}}
                .dump() +
            "\n";
  return s.write(name + ".jsonl", text + extra);
}

// Each row of a batch as "dataset row", read back from the labels.
std::vector<std::string> answers(const Batch& b) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < b.labels.size(0); ++i) {
    std::vector<text::TokenId> ids;
    for (int64_t j = 0; j < b.labels.size(1); ++j)
      if (b.loss_mask[i][j].item<bool>()) ids.push_back(static_cast<text::TokenId>(b.labels[i][j].item<int64_t>()));
    std::string t = llama3().decode(ids);
    const auto start = t.find("\n\n"), end = t.find("<|eot_id|>");
    out.push_back(t.substr(start + 2, end - start - 2));
  }
  return out;
}

std::vector<MixEntry> mix3(const Scratch& s, int rows = 50) {
  return {{{"a", write_dataset(s, "a", rows), ""}, 0.1},
          {{"b", write_dataset(s, "b", rows), ""}, 0.2},
          {{"c", write_dataset(s, "c", rows), ""}, 0.7}};
}

}  // namespace

TEST_CASE("sample schema: the forms PLM reads") {
  const auto s = parse_sample(
      R"({"image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image><image>Same?"},
         {"from": "assistant", "value": 5}, {"from": "human", "value": "x"}, {"from": "assistant", "value": 1e-05},
         {"from": "human", "value": "y"}, {"from": "assistant", "value": true}]})");
  CHECK(s.images == std::vector<std::string>{"a.jpg", "b.jpg"});
  CHECK(s.conversations[1].value == "5");      // Python str(5)
  CHECK(s.conversations[3].value == "1e-05");  // Python str(1e-05)
  CHECK(s.conversations[5].value == "True");
  const auto cap = parse_sample(R"({"image": "x.png", "text": "A cat."})");
  REQUIRE(cap.conversations.size() == 2);
  CHECK(cap.conversations[0].from == "human");
  CHECK(cap.conversations[0].value.empty());
  CHECK(cap.conversations[1].value == "A cat.");
  const auto v = parse_sample(
      R"({"video": "v.mp4", "start_time": 1.5, "end_time": null, "bbox_map": {"30": [1, 2, 3, 4]}, "text": "t"})");
  CHECK(*v.video == "v.mp4");
  CHECK(*v.start_time == 1.5);
  CHECK_FALSE(v.end_time.has_value());
  CHECK(v.bbox_map.at(30)[3] == 4.0);
  CHECK(v.bbox_map_ignored == 0);
  // Entries the reference never draws (bbox_map[str(p)] is None, or a key no str(p) can equal) are left out and
  // counted; the sample stays usable.
  const auto partial = parse_sample(R"({"video": "v.mp4", "text": "t", "bbox_map": {"3": [1, 2, 3, 4], "4": null,
      "x": [1, 2, 3, 4], "07": [5, 6, 7, 8], "-1": [1, 1, 2, 2], "12": [9, 9, 10, 10], " 5": [1, 2, 3, 4]}})");
  CHECK(partial.bbox_map.size() == 3);  // "3", "12" and "-1" (a frame index that is never sampled)
  CHECK(partial.bbox_map.at(12)[0] == 9.0);
  CHECK_FALSE(partial.bbox_map.count(7));
  CHECK(partial.bbox_map_ignored == 4);
  const auto r = parse_sample(R"({"image": "i.jpg", "bbox": [[1, 2, 3, 4]], "width": 10, "height": 20, "text": "t"})");
  CHECK(r.bbox.size() == 1);
  CHECK(*r.width == 10);
}

TEST_CASE("sample schema: each broken form has its reason and names the line") {
  CHECK(reason_of("{not json") == "bad_json");
  CHECK(reason_of("{\"text\": \"\xc3\"}") == "bad_encoding");
  CHECK(reason_of("[1, 2]") == "bad_json");
  CHECK(reason_of(R"({"image": "a.jpg"})") == "bad_schema");
  CHECK(reason_of(R"({"conversations": [{"from": "human", "value": 3}]})") == "bad_schema");
  CHECK(reason_of(R"({"conversations": [{"value": "x"}]})") == "bad_schema");
  CHECK(reason_of(R"({"text": "t", "bbox": [[1, 2, 3, 4]]})") == "bad_schema");
  CHECK(reason_of(R"({"video": "v.mp4", "text": "t", "bbox_map": [1, 2, 3, 4]})") == "bad_schema");
  CHECK(reason_of(R"({"video": "v.mp4", "text": "t", "bbox_map": {"3": [1, 2, 3]}})") == "bad_schema");
  CHECK(reason_of(R"({"image": [], "text": "t"})") == "bad_schema");
  // A NUL would cut the path short where the OS reads it (a.jpg instead of a.jpg<NUL>../../secret); empty paths.
  CHECK(reason_of(R"({"image": "a.jpg\u0000../../secret", "text": "t"})") == "bad_schema");
  CHECK(reason_of(R"({"image": ["ok.jpg", "b\u0000.jpg"], "text": "t"})") == "bad_schema");
  CHECK(reason_of(R"({"video": "v\u0000.mp4", "text": "t"})") == "bad_schema");
  CHECK(reason_of(R"({"image": "", "text": "t"})") == "bad_schema");
}

TEST_CASE("registry and datamix: names, paths, unknown names with a suggestion") {
  Scratch s("plm_data_registry");
  const auto reg_path =
      s.write("datasets.yaml", "alpha:\n  annotation: a.jsonl\n  root_dir: imgs\nbeta:\n  annotation: b\n");
  const auto reg = load_registry(reg_path);
  REQUIRE(reg.size() == 2);
  CHECK(reg.at("alpha").root_dir == "imgs");
  CHECK(reg.at("beta").root_dir.empty());
  const auto file = write_dataset(s, "own", 3);
  const auto mix = resolve_datamix("alpha:1, " + file + ":3", reg, reg_path);
  REQUIRE(mix.size() == 2);
  CHECK(mix[0].weight == 0.25);
  CHECK(mix[1].dataset.root_dir == s.dir.string());
  CHECK_THROWS_WITH(resolve_datamix("alpah:1", reg, reg_path), Catch::Contains("did you mean 'alpha'"));
  CHECK_THROWS_WITH(resolve_datamix("alpha", reg, reg_path), Catch::Contains("name:weight"));
  CHECK_THROWS_WITH(load_registry(s.write("bad.yaml", "x:\n  root_dir: y\n")), Catch::Contains("bad.yaml:1"));
  CHECK_THROWS_WITH(load_registry(s.path("none.yaml")), Catch::Contains("none.yaml"));
  // The registry has a recipe's bounds: no device or FIFO (which would be read forever), no alias bomb.
  CHECK_THROWS_WITH(load_registry("/dev/zero"), Catch::Contains("/dev/zero") && Catch::Contains("not a regular file"));
  std::string bomb = "a0: &a0 {annotation: x}\n";
  for (int i = 1; i <= 30; ++i)
    bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" + std::to_string(i - 1) + ", *a" +
            std::to_string(i - 1) + "]\n";
  CHECK_THROWS_WITH(load_registry(s.write("bomb.yaml", bomb)),
                    Catch::Contains("bomb.yaml") && Catch::Contains("aliases"));
}

TEST_CASE("JSONL rows: empty lines skipped, index cached and rebuilt when the file changes, chunk folders") {
  Scratch s("plm_data_jsonl");
  const auto path = s.write("d.jsonl", "{\"a\": 1}\n\n  \n{\"a\": 2}\r\n{\"a\": 3}");
  JsonlSource src(path);
  REQUIRE(src.size() == 3);
  CHECK(src.row(1) == "{\"a\": 2}");
  CHECK(src.row(2) == "{\"a\": 3}");
  CHECK(src.origin(1) == path + ":4");
  CHECK(fs::exists(path + ".plmidx"));
  CHECK(index_jsonl_file(path) == index_jsonl_file(path, false));
  s.write("d.jsonl", "{\"b\": 1}\n{\"b\": 2}\n");  // a new size: the cache must not be trusted
  CHECK(JsonlSource(path).size() == 2);
  s.write("chunks/x.chunk.01.jsonl", "{\"c\": 2}\n");
  s.write("chunks/x.chunk.00.jsonl", "{\"c\": 0}\n{\"c\": 1}\n");
  s.write("chunks/notes.txt", "ignored\n");
  JsonlSource dir(s.path("chunks"));
  REQUIRE(dir.size() == 3);
  CHECK(dir.row(0) == "{\"c\": 0}");
  CHECK(dir.row(2) == "{\"c\": 2}");
  CHECK_THROWS_AS(JsonlSource(s.path("absent.jsonl")), config::ConfigError);
  // A symlink loop among the chunks is not a chunk (it aborted the listing); a FIFO is not an annotation file.
  fs::create_symlink(s.path("chunks/y.chunk.02.jsonl"), s.path("chunks/y.chunk.02.jsonl"));
  CHECK(JsonlSource(s.path("chunks")).size() == 3);
  REQUIRE(::mkfifo(s.path("fifo.jsonl").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(JsonlSource(s.path("fifo.jsonl")), Catch::Contains("not a regular file"));
  fs::create_symlink(s.path("self.jsonl"), s.path("self.jsonl"));
  CHECK_THROWS_WITH(JsonlSource(s.path("self.jsonl")), Catch::Contains("cannot be reached"));
}

TEST_CASE("a stale JSONL index whose stamp matches but whose offsets do not fit the file is rebuilt") {
  Scratch s("plm_data_stale_index");
  const auto path = s.write("d.jsonl", "{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n");
  REQUIRE(JsonlSource(path).size() == 3);
  const std::string index = path + ".plmidx";
  for (const std::vector<uint64_t>& bad : {std::vector<uint64_t>{0, 20, 9}, {0, 9, 1000000}, {0, 0, 9}}) {
    {  // same magic, size, mtime and count (bytes 0-31); offsets replaced
      std::fstream f(index, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(32);
      f.write(reinterpret_cast<const char*>(bad.data()), static_cast<std::streamsize>(bad.size() * 8));
    }
    const JsonlSource src(path);  // before: a row read underflowed (end < begin) and aborted on the allocation
    REQUIRE(src.size() == 3);
    CHECK(src.row(0) == "{\"a\": 1}");
    CHECK(src.row(1) == "{\"a\": 2}");
    CHECK(src.row(2) == "{\"a\": 3}");
  }
}

TEST_CASE("a row longer than kMaxRowBytes is refused as too_long before it is read whole or parsed") {
  Scratch s("plm_data_long_row");
  const std::string ok = R"({"text": "short"})";
  std::string huge = R"({"text": ")" + std::string(kMaxRowBytes, 'a') + R"("})";
  // A row at the limit exactly, followed by blank lines that are no part of it, is read and parsed.
  std::string at_limit = R"({"text": ")" + std::string(kMaxRowBytes - 12, 'b') + R"("})";
  REQUIRE(at_limit.size() == kMaxRowBytes);
  const auto path = s.write("d.jsonl", ok + "\n" + huge + "\n" + at_limit + "\n" + std::string(100, '\n') + ok + "\n");
  const JsonlSource src(path);
  REQUIRE(src.size() == 4);
  const auto e = thrown<SampleError>([&] { src.row(1); });
  REQUIRE(e);
  CHECK(e->reason() == "too_long");
  CHECK_THAT(e->what(), Catch::Contains(path + ":2") && Catch::Contains(std::to_string(kMaxRowBytes)));
  CHECK(src.row(2) == at_limit);
  CHECK(parse_sample(src.row(2)).conversations.size() == 2);
  CHECK(src.row(3) == ok);
  huge.resize(kMaxRowBytes + 1);  // parse_sample refuses by size alone, before the JSON
  const auto p = thrown<SampleError>([&] { parse_sample(huge); });
  REQUIRE(p);
  CHECK(p->reason() == "too_long");
}

TEST_CASE("the global stream: weights 1:2:7 within 2% over 10k, file order per dataset, resumable state") {
  SampleStream stream({1, 2, 7}, {5, 5, 1000}, 42);
  std::vector<int> counts(3);
  std::vector<int64_t> expected_row(3);
  bool in_order = true;
  for (int i = 0; i < 10000; ++i) {
    const Candidate c = stream.next();
    ++counts[c.dataset];
    in_order &= c.row == expected_row[c.dataset] % (c.dataset == 2 ? 1000 : 5);
    ++expected_row[c.dataset];
  }
  CHECK(in_order);
  CHECK(std::abs(counts[0] / 10000.0 - 0.1) < 0.02);
  CHECK(std::abs(counts[1] / 10000.0 - 0.2) < 0.02);
  CHECK(std::abs(counts[2] / 10000.0 - 0.7) < 0.02);
  const StreamState saved = StreamState::from_json(stream.state().to_json());
  SampleStream resumed({1, 2, 7}, {5, 5, 1000}, 42, saved);
  for (int i = 0; i < 100; ++i) {
    const Candidate a = stream.next(), b = resumed.next();
    CHECK((a.dataset == b.dataset && a.row == b.row));
  }
  const Candidate s1 = stream.spare(7, 1), s2 = resumed.spare(7, 1);
  CHECK((s1.dataset == s2.dataset && s1.row == s2.row));
  SampleStream other_seed({1, 2, 7}, {5, 5, 1000}, 43);
  int same = 0;
  SampleStream fresh({1, 2, 7}, {5, 5, 1000}, 42);
  for (int i = 0; i < 100; ++i) same += fresh.next().dataset == other_seed.next().dataset;
  CHECK(same < 90);
}

TEST_CASE("collation: shifted labels on response positions, pad id, image positions, pad to longest") {
  ProcessedSample a, b;
  a.ids = {10, 11, 12, 13, 14};
  a.response_pos = {3, 4};
  a.image_pos = {1, 2};
  a.media = at::zeros({2, 3, 4, 4});
  a.media_type = "image";
  b.ids = {20, 21, 22};
  b.response_pos = {2};
  b.media = at::ones({1, 3, 4, 4});
  b.media_type = "text";
  const Batch batch = collate({a, b}, 8, 128001, false);
  CHECK(batch.input_ids.sizes() == at::IntArrayRef({2, 8}));
  CHECK(
      at::equal(batch.input_ids[0], at::tensor(std::vector<int64_t>{10, 11, 12, 13, 128001, 128001, 128001, 128001})));
  CHECK(at::equal(batch.labels[0],
                  at::tensor(std::vector<int64_t>{128001, 128001, 13, 14, 128001, 128001, 128001, 128001})));
  CHECK(at::equal(batch.loss_mask[0].to(at::kLong), at::tensor(std::vector<int64_t>{0, 0, 1, 1, 0, 0, 0, 0})));
  CHECK(at::equal(batch.image_pos_index[0], at::tensor(std::vector<int64_t>{-1, 0, 1, -1, -1, -1, -1, -1})));
  CHECK(at::equal(batch.labels[1].slice(0, 0, 3), at::tensor(std::vector<int64_t>{128001, 22, 128001})));
  CHECK(batch.images.size(0) == 3);
  CHECK(at::equal(batch.chunk_has_text.to(at::kLong), at::tensor(std::vector<int64_t>{0, 0, 1})));
  CHECK(batch.num_chunks == std::vector<int64_t>{2, 1});
  CHECK(collate({a, b}, 8, 128001, true).input_ids.size(1) == 4);
}

TEST_CASE("loader: the same batches with 1, 2 and 4 workers") {
  Scratch s("plm_data_workers");
  const auto mix = mix3(s);
  std::vector<std::vector<std::string>> reference;
  for (int64_t workers : {1, 2, 4}) {
    LoaderOptions o;
    o.batch_size = 3;
    o.num_workers = workers;
    DataLoader loader(mix, text_preprocessor(), o);
    std::vector<std::vector<std::string>> got;
    for (int i = 0; i < 6; ++i) got.push_back(answers(loader.next()));
    if (reference.empty()) reference = got;
    CHECK(got == reference);
  }
}

TEST_CASE("loader: stopped at batch k and resumed gives the batches of an uninterrupted run, also on other ranks") {
  Scratch s("plm_data_resume");
  const auto mix = mix3(s);
  LoaderOptions o;
  o.batch_size = 4;
  DataLoader whole(mix, text_preprocessor(), o);
  std::vector<std::vector<std::string>> uninterrupted;
  for (int i = 0; i < 6; ++i) uninterrupted.push_back(answers(whole.next()));

  std::string state;
  {
    DataLoader first(mix, text_preprocessor(), o);
    for (int i = 0; i < 3; ++i) first.next();
    state = first.state_json();
  }  // the run stops; a new process resumes from the saved state
  DataLoader resumed(mix, text_preprocessor(), o, state);
  for (int i = 3; i < 6; ++i) CHECK(answers(resumed.next()) == uninterrupted[i]);

  // Two ranks of 2 from the same state: their slices, side by side, are the single rank's batches.
  LoaderOptions r0 = o, r1 = o;
  r0.batch_size = r1.batch_size = 2;
  r0.world_size = r1.world_size = 2;
  r1.rank = 1;
  DataLoader rank0(mix, text_preprocessor(), r0, state), rank1(mix, text_preprocessor(), r1, state);
  for (int i = 3; i < 6; ++i) {
    auto a = answers(rank0.next()), b = answers(rank1.next());
    a.insert(a.end(), b.begin(), b.end());
    CHECK(a == uninterrupted[i]);
  }
  CHECK(rank0.state_json() == rank1.state_json());
}

TEST_CASE("loader: broken rows are skipped and counted, never fatal unless strict") {
  Scratch s("plm_data_broken");
  const std::string broken =
      "{not json\n"
      "{\"image\": \"missing.jpg\"}\n"
      "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}\n"
      "{\"conversations\": [{\"from\": \"human\", \"value\": \"only a question\"}]}\n"
      "{\"text\": \"\xff\xfe not UTF-8: skipped, as Python fails to read it\"}\n";
  const auto path = write_dataset(s, "mixed", 4, broken);
  LoaderOptions o;
  o.batch_size = 9;
  DataLoader loader({{{"mixed", path, ""}, 1.0}}, text_preprocessor(), o);
  const Batch b = loader.next();
  CHECK(b.input_ids.size(0) == 9);
  const auto skips = loader.skipped().at("mixed");
  CHECK_THROWS_WITH(DataLoader({{{"mixed", path, ""}, 1.0}}, text_preprocessor(),
                               [&] {
                                 LoaderOptions so = o;
                                 so.strict = true;
                                 return so;
                               }())
                        .next(),
                    Catch::Contains(path + ":"));  // the message names the file and line
  CHECK(skips.at("bad_json") >= 1);
  CHECK(skips.at("bad_schema") >= 1);
  CHECK(skips.at("role_error") >= 1);
  CHECK(skips.at("no_answer") >= 1);
  CHECK(skips.at("bad_encoding") >= 1);
  LoaderOptions strict = o;
  strict.strict = true;
  DataLoader fatal({{{"mixed", path, ""}, 1.0}}, text_preprocessor(), strict);
  CHECK_THROWS_AS(fatal.next(), SampleError);
  // a sample too long for max_seqlen is rejected as too_long; when nothing fits, the loader says so
  DataLoader tiny({{{"mixed", path, ""}, 1.0}}, text_preprocessor(8), o);
  CHECK_THROWS_WITH(tiny.next(), Catch::Contains("in a row could not be used"));
  CHECK(tiny.skipped().at("mixed").at("too_long") > 0);
}

TEST_CASE("loader with media: image tiles, multi-image, video with a box, regions, and broken media skipped") {
  Scratch s("plm_data_media");
  const std::string py = PLM_SOURCE_DIR "/.venv/bin/python";
  if (!fs::exists(py)) FAIL("run scripts/setup.sh: the test makes its images with the venv's Pillow");
  const std::string make = py +
                           " -c \"from PIL import Image; import numpy as np; r = np.random.default_rng(0); "
                           "Image.fromarray(r.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save('" +
                           s.path("wide.png") +
                           "'); Image.fromarray(r.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save('" +
                           s.path("tall.jpg") + "')\"";
  REQUIRE(std::system(make.c_str()) == 0);
  REQUIRE(
      std::system(("ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=64x48:rate=10:duration=3 -pix_fmt yuv420p " +
                   s.path("clip.mp4"))
                      .c_str()) == 0);
  s.write("fake.mp4", "this is not a video\n");
  const std::string rows =
      R"({"image": "wide.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "assistant", "value": "Noise."}]})"
      "\n"
      R"({"image": ["wide.png", "tall.jpg"], "conversations": [{"from": "human", "value": "<image> vs <image>"}, {"from": "assistant", "value": "Two."}]})"
      "\n"
      R"({"video": "clip.mp4", "bbox_map": {"0": [1, 1, 20, 20]}, "conversations": [{"from": "human", "value": "<video>Describe."}, {"from": "assistant", "value": "A test pattern."}]})"
      "\n"
      R"({"image": "tall.jpg", "bbox": [[3, 4, 10, 10]], "width": 30, "height": 40, "conversations": [{"from": "human", "value": "What is at <|bbox0|>?"}, {"from": "assistant", "value": "Pixels."}]})"
      "\n"
      R"({"image": "gone.png", "text": "missing"})"
      "\n"
      R"({"video": "fake.mp4", "text": "not a video"})"
      "\n";
  const auto path = s.write("media.jsonl", rows);
  PreprocessOptions po;
  po.image_res = 28;
  po.patch_size = 14;
  po.pooling_ratio = 1;  // 4 tokens per chunk
  po.max_num_tiles = 4;
  po.vision_input_type = "thumb+tile";
  po.max_video_frames = 4;
  po.seq_len = 512;
  auto pre = std::make_shared<Preprocessor>(llama3_ptr(), po);
  // each row on its own, in file order
  const JsonlSource src(path);
  const auto image = (*pre)(parse_sample(src.row(0)), s.dir.string());
  CHECK(image.media_type == "image");
  const auto grid = media::choose_tile_grid(90, 60, 4, 28);  // 90x60 fits no canvas of <= 4 tiles: closest aspect
  CHECK(grid.n_w * grid.n_h == 4);
  CHECK(image.media.size(0) == 1 + 4);
  CHECK(image.image_pos.size() == 5 * 4);
  const auto multi = (*pre)(parse_sample(src.row(1)), s.dir.string());
  CHECK(multi.media_type == "multi_image");
  CHECK(multi.media.size(0) == 2);
  CHECK(multi.image_pos.size() == 2 * 4);
  const auto video = (*pre)(parse_sample(src.row(2)), s.dir.string());
  CHECK(video.media_type == "video");
  // 3 s at 10 fps gives 3 one-per-second candidates, fewer than 4: the reference then samples 4 of all 30 frames
  CHECK(video.media.sizes() == at::IntArrayRef({4, 3, 28, 28}));
  CHECK(video.video.file == s.path("clip.mp4"));
  CHECK(video.video.frames == 30);
  CHECK(video.video.frames_decoded >= 4);  // one keyframe (ffmpeg's default GOP is longer than the clip)
  CHECK(video.video.frames_decoded <= 30);
  CHECK(video.video.pixels_decoded == video.video.frames_decoded * 64 * 48);
  // Over data.max_video_decode_frames: skipped by name under "too_long" (policy skip), else decoded.
  for (const bool skip : {true, false}) {
    PreprocessOptions bounded = po;
    bounded.max_video_decode_frames = video.video.frames_decoded - 1;
    bounded.skip_long_videos = skip;
    const Preprocessor strict_pre(llama3_ptr(), bounded);
    if (skip) {
      try {
        strict_pre(parse_sample(src.row(2)), s.dir.string());
        FAIL("a video over the decode bound was not skipped");
      } catch (const SampleError& e) {
        CHECK(e.reason() == "too_long");
        CHECK_THAT(e.what(), Catch::Contains("clip.mp4") && Catch::Contains("data.max_video_decode_frames"));
      }
    } else {
      CHECK(strict_pre(parse_sample(src.row(2)), s.dir.string()).media.equal(video.media));
    }
  }
  const auto region = (*pre)(parse_sample(src.row(3)), s.dir.string());
  CHECK_THAT(llama3().decode(region.ids), Catch::Contains("What is at [100,100,433,350]?"));
  // the loader skips the two broken rows with their reasons
  LoaderOptions o;
  o.batch_size = 6;
  DataLoader loader({{{"media", path, s.dir.string()}, 1.0}}, pre, o);
  const Batch b = loader.next();
  CHECK(b.input_ids.size(0) == 6);
  int64_t chunks = 0;
  for (auto n : b.num_chunks) chunks += n;
  CHECK(b.images.size(0) == chunks);
  CHECK((b.image_pos_index >= 0).sum().item<int64_t>() > 0);
  const auto skips = loader.skipped().at("media");
  CHECK(skips.at("missing_file") >= 1);
  CHECK(skips.at("decode_error") + (skips.count("unsupported_format") ? skips.at("unsupported_format") : 0) >= 1);
}

TEST_CASE("data.confine_media_to_root refuses media paths that resolve outside root_dir, links included") {
  Scratch s("plm_data_confine");
  fs::create_directories(s.path("root/sub"));
  s.write("secret.png", "not for the dataset");
  fs::create_symlink(s.path("secret.png"), s.path("root/link.png"));
  fs::create_symlink(s.path("root/sub"), s.path("root/dirlink"));
  PreprocessOptions po;
  po.image_res = 28;
  po.patch_size = 14;
  po.vision_input_type = "vanilla";
  po.seq_len = 512;
  const auto reason = [&](bool confine, const std::string& image) {
    po.confine_media_to_root = confine;
    const Preprocessor pre(llama3_ptr(), po);
    const std::string row = R"({"image": ")" + image +
                            R"(", "conversations": [{"from": "human", "value": "<image>"},)"
                            R"( {"from": "assistant", "value": "x"}]})";
    try {
      (void)pre(parse_sample(row), s.path("root"));
      return std::string("accepted");
    } catch (const ReasonedError& e) {
      return std::string(e.reason());
    }
  };
  for (const std::string& outside :
       std::vector<std::string>{"../secret.png", "link.png", s.path("secret.png"), "sub/../../secret.png"}) {
    INFO(outside);
    CHECK(reason(true, outside) == "outside_root");
    CHECK(reason(false, outside) != "outside_root");  // off (PLM's behaviour): the file is opened
  }
  for (const std::string inside : {"sub/missing.png", "dirlink/missing.png", "./missing.png"}) {
    INFO(inside);
    CHECK(reason(true, inside) == "missing_file");  // inside the root: looked up, not refused
  }
}

TEST_CASE("a row whose images cannot fit in max_seqlen is rejected before any image is read") {
  PreprocessOptions po;
  po.image_res = 28;
  po.patch_size = 14;
  po.pooling_ratio = 1;  // 4 tokens per image
  po.vision_input_type = "vanilla";
  po.seq_len = 512;
  const Preprocessor pre(llama3_ptr(), po);
  for (const int n : {128, 20000}) {  // 128 x 4 = 512 tokens: no room left; 20,000 paths that do not even exist
    std::string images, tags;
    for (int i = 0; i < n; ++i) images += std::string(i ? "," : "") + "\"missing" + std::to_string(i) + ".png\"";
    for (int i = 0; i < n; ++i) tags += "<image>";
    const std::string row = R"({"image": [)" + images + R"(], "conversations": [{"from": "human", "value": ")" + tags +
                            R"("}, {"from": "assistant", "value": "Many."}]})";
    try {
      (void)pre(parse_sample(row), "/nonexistent");
      FAIL("accepted");
    } catch (const SampleError& e) {
      CHECK(e.reason() == "too_long");  // not missing_file: no image was opened
      CHECK_THAT(e.what(), Catch::Contains(std::to_string(n) + " images"));
    }
  }
}

namespace {

/// The samples of a packed batch in order with their token counts (segments list them row by row).
std::vector<std::pair<int64_t, int64_t>> slots_and_lengths(const Batch& b) {
  std::vector<std::pair<int64_t, int64_t>> out;
  size_t k = 0;
  for (const auto& row : b.segments)
    for (const int64_t n : row) out.emplace_back(b.slots[k++], n);
  return out;
}

}  // namespace

TEST_CASE("loader: packing tokens fills batches to the row budget from this rank's slots and resumes exactly") {
  Scratch s("plm_data_tokens");
  const auto mix = mix3(s);
  for (const int64_t world : {1, 2}) {
    CAPTURE(world);
    std::vector<std::vector<Batch>> uninterrupted(static_cast<size_t>(world));
    std::vector<StreamState> after3;
    for (int64_t rank = 0; rank < world; ++rank) {
      LoaderOptions o;
      o.batch_size = 2;  // rows of 96 tokens per batch
      o.packing = config::Packing::tokens;
      o.rank = rank;
      o.world_size = world;
      DataLoader loader(mix, text_preprocessor(), o);
      int64_t next_slot = rank;
      for (int i = 0; i < 8; ++i) {
        uninterrupted[static_cast<size_t>(rank)].push_back(loader.next());
        if (i == 2) after3.push_back(StreamState::from_json(loader.state_json()));
      }
      for (size_t i = 0; i < 8; ++i) {
        const Batch& b = uninterrupted[static_cast<size_t>(rank)][i];
        REQUIRE(b.packed());
        CHECK(b.input_ids.size(0) <= o.batch_size);
        // This rank's slots, each once and in order: rank, rank + world, ...
        std::vector<int64_t> lengths;
        std::vector<int64_t> slots;
        for (const auto& [slot, n] : slots_and_lengths(b)) slots.push_back(slot), lengths.push_back(n);
        std::sort(slots.begin(), slots.end());
        for (const int64_t slot : slots) {
          CHECK(slot == next_slot);
          next_slot += world;
        }
        // Full: the next batch's first sample would have needed a third row.
        if (i + 1 < 8) {
          const auto next = slots_and_lengths(uninterrupted[static_cast<size_t>(rank)][i + 1]);
          const auto first = std::min_element(next.begin(), next.end());
          lengths.push_back(first->second);
          CHECK(static_cast<int64_t>(first_fit_decreasing(lengths, 96).size()) > o.batch_size);
        }
      }
    }
    // Every rank resumed from the run's state after batch 3 continues with its uninterrupted batches 4..8.
    const std::string run_state = ranks_state_json(after3);
    for (int64_t rank = 0; rank < world; ++rank) {
      LoaderOptions o;
      o.batch_size = 2;
      o.packing = config::Packing::tokens;
      o.rank = rank;
      o.world_size = world;
      DataLoader resumed(mix, text_preprocessor(), o, run_state);
      for (size_t i = 3; i < 8; ++i) {
        const Batch b = resumed.next();
        const Batch& want = uninterrupted[static_cast<size_t>(rank)][i];
        CHECK(b.sample_ids == want.sample_ids);
        CHECK(at::equal(b.input_ids, want.input_ids));
      }
      // Another number of ranks, or another packing mode, is refused with a sentence naming both.
      o.world_size = world + 1;
      CHECK_THROWS_WITH(DataLoader(mix, text_preprocessor(), o, run_state),
                        Catch::Contains("on " + std::to_string(world) + (world == 1 ? " rank" : " ranks")) &&
                            Catch::Contains("this run has " + std::to_string(world + 1) + " ranks"));
      o.world_size = world;
      o.packing = config::Packing::samples;
      CHECK_THROWS_WITH(DataLoader(mix, text_preprocessor(), o, run_state), Catch::Contains("data.packing=tokens"));
    }
  }
  // From another mode's single position every rank starts at its first slot at or after it.
  LoaderOptions o;
  o.batch_size = 2;
  o.packing = config::Packing::tokens;
  o.rank = 1;
  o.world_size = 2;
  StreamState at5;
  {
    LoaderOptions plain;
    plain.batch_size = 5;
    DataLoader first(mix, text_preprocessor(), plain);
    first.next();
    at5 = StreamState::from_json(first.state_json());
  }
  REQUIRE(at5.slot == 5);
  DataLoader from_plain(mix, text_preprocessor(), o, at5.to_json());
  const auto got = slots_and_lengths(from_plain.next());
  CHECK(std::min_element(got.begin(), got.end())->first == 5);
}
