// Checkpoint file formats: safetensors and torch.save zips. Round trips for every dtype, files made by Python's
// torch and safetensors (tests/unit/ckpt_fixtures.py), our files read back by Python, and every error path.
#include "torch_catch.h"

#include "scratch.h"
#include "test_helpers.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include <caffe2/serialize/inline_container.h>

#include "plm/ckpt/safetensors.h"
#include "plm/ckpt/torch_pickle.h"

namespace fs = std::filesystem;
using namespace plm::ckpt;
using Catch::Matchers::Contains;

namespace {

// Runs tests/unit/ckpt_fixtures.py with the venv's Python; returns its output, failing the test if it fails.
std::string run_python(const Scratch& s, const std::string& args) {
  const PythonRun r = run_reference_python("tests/unit/ckpt_fixtures.py", args, s.path("python.log"));
  INFO(r.command << "\n" << r.output);
  REQUIRE(r.ok());
  return r.output;
}

// The values of ckpt_fixtures.py's pattern(): the same formula, evaluated by the same ATen kernels.
at::Tensor pattern(at::ScalarType dtype, std::vector<int64_t> shape, int64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const at::Tensor i = at::arange(n, at::kLong);
  at::Tensor t;
  if (at::isFloatingType(dtype)) {
    t = at::sin(i.to(at::kDouble) * 1.7 + seed) * 1000;
  } else if (dtype == at::kBool) {
    t = at::remainder(i * 7919 + seed, 3) == 0;
  } else {
    t = i * 7919 + 31 * seed - 5000;
  }
  return t.to(dtype).reshape(shape);
}

const std::vector<std::pair<std::string, at::ScalarType>> kDtypes = {
    {"f64", at::kDouble}, {"f32", at::kFloat}, {"f16", at::kHalf}, {"bf16", at::kBFloat16}, {"i64", at::kLong},
    {"i32", at::kInt},    {"i16", at::kShort}, {"i8", at::kChar},  {"u8", at::kByte},       {"bool", at::kBool}};

// ckpt_fixtures.py's all_dtypes().
TensorMap all_dtypes() {
  TensorMap m;
  for (size_t k = 0; k < kDtypes.size(); ++k) m.insert(kDtypes[k].first, pattern(kDtypes[k].second, {2, 3, 4}, k));
  m.insert("scalar", pattern(at::kFloat, {}, 11));
  m.insert("empty", pattern(at::kFloat, {0, 5}, 12));
  return m;
}

// ckpt_fixtures.py's views_state_dict().
TensorMap views_state_dict() {
  const at::Tensor emb = pattern(at::kFloat, {6, 4}, 3);
  TensorMap m;
  m.insert("weight", pattern(at::kFloat, {3, 4}, 1));
  m.insert("bias", pattern(at::kFloat, {3}, 2));
  m.insert("tok_embeddings.weight", emb);
  m.insert("output.weight", emb);
  m.insert("slice", emb.slice(0, 2, 5).slice(1, 1, 3));
  m.insert("transposed", emb.t());
  m.insert("bf16", pattern(at::kBFloat16, {5}, 4));
  m.insert("param", pattern(at::kFloat, {2}, 5));
  return m;
}

// Same names (in the same order unless `any_order`), dtypes, shapes and values.
void check_same(const TensorMap& got, const TensorMap& want, bool any_order = false) {
  std::vector<std::string> got_names, want_names;
  for (const auto& e : got) got_names.push_back(e.first);
  for (const auto& e : want) want_names.push_back(e.first);
  if (any_order) {
    std::sort(got_names.begin(), got_names.end());
    std::sort(want_names.begin(), want_names.end());
  }
  REQUIRE(got_names == want_names);
  for (const auto& [name, w] : want) {
    INFO("tensor " << name);
    const at::Tensor& g = got.at(name);
    CHECK(g.device() == at::kCPU);
    REQUIRE(g.scalar_type() == w.scalar_type());
    REQUIRE(g.sizes() == w.sizes());
    CHECK(at::equal(g, w));
  }
}

bool share_storage(const at::Tensor& a, const at::Tensor& b) {
  return a.storage().is_alias_of(b.storage());
}

template <typename F>
std::string error_of(F&& f) {
  const std::string what = ::error_of<CheckpointError>(std::forward<F>(f));
  return what.empty() ? "(no error)" : what;
}

// A safetensors file from a literal header and `data_bytes` zero bytes.
std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  return out + header + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("TensorMap keeps insertion order and refuses duplicate names") {
  TensorMap m;
  CHECK(m.empty());
  CHECK(m.insert("b", at::ones({1})));
  CHECK(m.insert("a", at::zeros({2})));
  CHECK_FALSE(m.insert("b", at::zeros({3})));
  REQUIRE(m.size() == 2);
  CHECK(m.begin()->first == "b");
  CHECK(m.at("b").numel() == 1);
  CHECK(m.contains("a"));
  CHECK(m.find("c") == nullptr);
  CHECK_THROWS_AS(m.at("c"), std::out_of_range);
}

TEST_CASE("safetensors round trip keeps every dtype, shape, value and the metadata") {
  Scratch s;
  TensorMap in = all_dtypes();
  in.insert("transposed", pattern(at::kFloat, {3, 5}, 13).t());  // written contiguous
  const std::string path = s.path("m.safetensors");
  write_safetensors(in, path, {{"format", "pt"}, {"step", "7"}});
  CHECK_FALSE(fs::exists(path + ".tmp"));

  std::ifstream f(path, std::ios::binary);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  CHECK(len[0] % 8 == 0);  // header padded to a multiple of 8, as the Python library does

  check_same(read_safetensors(path), in);
  CHECK(read_safetensors(path).at("transposed").is_contiguous());
  const auto meta = read_safetensors_metadata(path);
  CHECK(meta == std::map<std::string, std::string>{{"format", "pt"}, {"step", "7"}});
  write_safetensors(in, path);  // overwrites; no metadata
  CHECK(read_safetensors_metadata(path).empty());
}

TEST_CASE("loaded tensors map the file copy-on-write, and misaligned ones are copied") {
  Scratch s;
  TensorMap in;
  in.insert("odd_bf16", pattern(at::kBFloat16, {3}, 1));  // puts the next tensor at byte 6 of the data
  in.insert("f32", pattern(at::kFloat, {4}, 2));
  in.insert("f64", pattern(at::kDouble, {2}, 3));
  const std::string st = s.path("m.safetensors"), pth = s.path("m.pth");
  write_safetensors(in, st);
  save_torch_state_dict(in, pth);
  for (const auto& load : {read_safetensors, load_torch_state_dict}) {
    const std::string& path = load == read_safetensors ? st : pth;
    INFO(path);
    TensorMap got = load(path);
    check_same(got, in);
    for (const auto& [name, t] : got) CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % t.element_size() == 0);
    got.at("f32").add_(1);  // writes to this process's pages only
    check_same(load(path), in);
  }
}

TEST_CASE("torch .pth round trip keeps every dtype and shared storage") {
  Scratch s;
  const std::string path = s.path("m.pth");
  save_torch_state_dict(all_dtypes(), path);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  check_same(load_torch_state_dict(path), all_dtypes());

  save_torch_state_dict(views_state_dict(), path);
  const TensorMap got = load_torch_state_dict(path);
  check_same(got, views_state_dict());
  CHECK(share_storage(got.at("tok_embeddings.weight"), got.at("output.weight")));
  CHECK(share_storage(got.at("tok_embeddings.weight"), got.at("slice")));
  CHECK(got.at("slice").storage_offset() == 9);
  CHECK(got.at("transposed").strides() == c10::IntArrayRef({1, 4}));
}

TEST_CASE("files made by Python's safetensors and torch.save load exactly") {
  Scratch s;
  run_python(s, "make '" + s.dir.string() + "'");

  // The Python library lays tensors out by dtype alignment, then name; we return them in file order.
  check_same(read_safetensors(s.path("all.safetensors")), all_dtypes(), /*any_order=*/true);
  CHECK(read_safetensors_metadata(s.path("all.safetensors")) ==
        std::map<std::string, std::string>{{"format", "pt"}, {"note", "made by python"}});
  check_same(load_torch_state_dict(s.path("all.pth")), all_dtypes());
  check_same(load_torch_state_dict(s.path("compressed.pth")), all_dtypes());

  for (const char* file : {"views.pth", "views_proto4.pth", "model_wrap.pth", "state_dict_wrap.pth"}) {
    INFO(file);
    const TensorMap got = load_torch_state_dict(s.path(file));
    check_same(got, views_state_dict());
    CHECK(share_storage(got.at("tok_embeddings.weight"), got.at("output.weight")));
    CHECK(share_storage(got.at("tok_embeddings.weight"), got.at("transposed")));
    CHECK(got.at("slice").storage_offset() == 9);
    CHECK_FALSE(got.at("param").requires_grad());
  }

  // Two dict-valued entries: nothing is unwrapped; nested dicts flatten, lists and plain values are skipped.
  const TensorMap nested = load_torch_state_dict(s.path("nested.pth"));
  TensorMap want;
  want.insert("model.a", pattern(at::kFloat, {2}, 6));
  want.insert("optim.state.0.step", pattern(at::kFloat, {}, 7));
  check_same(nested, want);

  CHECK_THAT(error_of([&] { load_torch_state_dict(s.path("cycle.pth")); }),
             Contains(s.path("cycle.pth")) && Contains("deep"));
  CHECK_THAT(error_of([&] { load_torch_state_dict(s.path("legacy.pth")); }),
             Contains(s.path("legacy.pth")) && Contains("legacy"));
  CHECK_THAT(error_of([&] { load_torch_state_dict(s.path("bad_opcode.pth")); }),
             Contains(s.path("bad_opcode.pth")) && Contains("opcode 0x49"));
}

TEST_CASE("Python reads our .pth with torch.load(weights_only=True) and our safetensors") {
  Scratch s;
  TensorMap m = all_dtypes();
  const at::Tensor emb = pattern(at::kFloat, {6, 4}, 3);
  m.insert("tied_a", emb);
  m.insert("tied_b", emb);
  m.insert("slice", emb.slice(0, 2, 5).slice(1, 1, 3));
  m.insert("transposed", emb.t());
  save_torch_state_dict(m, s.path("ours.pth"));
  run_python(s, "check_pth '" + s.path("ours.pth") + "'");
  write_safetensors(all_dtypes(), s.path("ours.safetensors"));
  run_python(s, "check_st '" + s.path("ours.safetensors") + "'");
}

TEST_CASE("Hugging Face folders: one file, or an index with shards") {
  Scratch s;
  const TensorMap all = all_dtypes();
  TensorMap first, second;
  for (const auto& [name, t] : all) (first.size() < 5 ? first : second).insert(name, t);
  write_safetensors(first, s.path("model-00001-of-00002.safetensors"));
  write_safetensors(second, s.path("model-00002-of-00002.safetensors"));
  std::string index = R"({"metadata": {"total_size": 1}, "weight_map": {)";
  for (const auto& [name, t] : all) {
    index += "\"" + name + "\": \"model-0000" + (first.contains(name) ? "1" : "2") + "-of-00002.safetensors\",";
  }
  index.back() = '}';
  s.write("model.safetensors.index.json", index + "}");
  check_same(read_safetensors_dir(s.dir.string()), all);

  SECTION("a tensor in another shard than the index says") {
    write_safetensors(second, s.path("model-00001-of-00002.safetensors"));
    write_safetensors(first, s.path("model-00002-of-00002.safetensors"));
    CHECK_THAT(error_of([&] { read_safetensors_dir(s.dir.string()); }),
               Contains("model.safetensors.index.json") && Contains("tensor '"));
  }
  SECTION("a missing shard") {
    fs::remove(s.path("model-00002-of-00002.safetensors"));
    CHECK_THAT(error_of([&] { read_safetensors_dir(s.dir.string()); }),
               Contains(s.path("model.safetensors.index.json")) && Contains("model-00002-of-00002.safetensors") &&
                   Contains("missing"));
  }
  SECTION("a single model.safetensors") {
    fs::remove(s.path("model.safetensors.index.json"));
    CHECK_THAT(error_of([&] { read_safetensors_dir(s.dir.string()); }), Contains(s.dir.string()));
    write_safetensors(all, s.path("model.safetensors"));
    check_same(read_safetensors_dir(s.dir.string()), all);
  }
}

TEST_CASE("write_safetensors_dir shards by size in map order and replaces an earlier export") {
  Scratch s;
  const TensorMap all = all_dtypes();
  uint64_t total = 0, largest = 0;
  for (const auto& [name, t] : all) {
    const auto bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    total += bytes;
    largest = std::max(largest, bytes);
  }
  // Any limit: every shard within it unless it holds one tensor, shards in map order, the folder reads back whole.
  for (const uint64_t limit : {total, largest, largest / 2 + 1, uint64_t{1}, total / 3 + 1}) {
    INFO("limit " << limit);
    const auto files = write_safetensors_dir(all, s.dir.string(), limit, {{"format", "pt"}});
    check_same(read_safetensors_dir(s.dir.string()), all);
    std::vector<std::string> order;
    for (const auto& f : files) {
      if (f.size() > 5 && f.compare(f.size() - 5, 5, ".json") == 0) continue;
      const TensorMap shard = read_safetensors(f);
      uint64_t bytes = 0;
      for (const auto& [name, t] : shard)
        bytes += static_cast<uint64_t>(t.numel()) * t.element_size(), order.push_back(name);
      CHECK((bytes <= limit || shard.size() == 1));
      CHECK(read_safetensors_metadata(f).at("format") == "pt");
    }
    std::vector<std::string> want;
    for (const auto& [name, t] : all) want.push_back(name);
    CHECK(order == want);
    // Nothing of another export is left: one file alone, or exactly the listed shards and the index.
    size_t on_disk = 0;
    for (const auto& e : fs::directory_iterator(s.dir)) on_disk += e.path().extension() != ".log";
    CHECK(on_disk == files.size());
    CHECK(fs::exists(s.path("model.safetensors")) == (files.size() == 1));
  }
}

TEST_CASE("safetensors errors name the file and the tensor") {
  Scratch s;
  const auto error = [&](const std::string& bytes) {
    const std::string path = s.write("bad.safetensors", bytes);
    return error_of([&] { read_safetensors(path); });
  };
  const std::string path = s.path("bad.safetensors");
  CHECK_THAT(error_of([&] { read_safetensors(s.path("none.safetensors")); }), Contains(s.path("none.safetensors")));
  CHECK_THAT(error("short"), Contains(path) && Contains("8-byte"));
  CHECK_THAT(error(safetensors_bytes("{}", 0).substr(0, 9)), Contains(path) && Contains("header length is 2"));
  CHECK_THAT(error(safetensors_bytes("{not json}", 0)), Contains(path) && Contains("JSON"));
  CHECK_THAT(error(safetensors_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}})", 8)),
             Contains(path) && Contains("'w'") && Contains("outside the 8-byte data area"));
  CHECK_THAT(error(safetensors_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 8)),
             Contains(path) && Contains("'w'") && Contains("need 8"));
  CHECK_THAT(error(safetensors_bytes(R"({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}})", 8)),
             Contains(path) && Contains("'w'") && Contains("C64"));
  CHECK_THAT(error(safetensors_bytes(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}})", 8)),
             Contains(path) && Contains("'w'"));
  CHECK_THAT(error(safetensors_bytes(R"({"w": {"dtype": "F32"}})", 8)), Contains(path) && Contains("'w'"));
  CHECK_THAT(error(safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                                     8)),
             Contains(path) && Contains("'b'") && Contains("overlaps"));

  // A real file cut inside its data: the last tensor's offsets fall outside the data area.
  write_safetensors(all_dtypes(), path);
  fs::resize_file(path, fs::file_size(path) - 30);
  CHECK_THAT(error_of([&] { read_safetensors(path); }), Contains(path) && Contains("'bool'"));
}

TEST_CASE("torch .pth errors name the file") {
  Scratch s;
  const auto error = [&](const std::string& bytes) {
    const std::string path = s.write("bad.pth", bytes);
    return error_of([&] { load_torch_state_dict(path); });
  };
  const std::string path = s.path("bad.pth");
  CHECK_THAT(error_of([&] { load_torch_state_dict(s.path("none.pth")); }), Contains(s.path("none.pth")));
  CHECK_THAT(error("not a zip at all"), Contains(path) && Contains("zip"));
  CHECK_THAT(error(""), Contains(path) && Contains("zip"));
  CHECK_THAT(error("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"), Contains(path) && Contains("legacy"));

  save_torch_state_dict(all_dtypes(), path);
  fs::resize_file(path, fs::file_size(path) / 2);
  CHECK_THAT(error_of([&] { load_torch_state_dict(path); }), Contains(path) && Contains("torch.save zip"));
}

TEST_CASE("writers refuse tensors they cannot store and leave no file behind") {
  Scratch s;
  TensorMap m = all_dtypes();
  m.insert("complex", at::zeros({2}, at::kComplexFloat));
  const std::string st = s.path("x.safetensors"), pth = s.path("x.pth");
  CHECK_THAT(error_of([&] { write_safetensors(m, st); }), Contains(st) && Contains("'complex'"));
  CHECK_THAT(error_of([&] { save_torch_state_dict(m, pth); }), Contains(pth) && Contains("'complex'"));

  TensorMap sparse;
  sparse.insert("sparse", at::eye(3).to_sparse());
  CHECK_THAT(error_of([&] { write_safetensors(sparse, st); }), Contains(st) && Contains("'sparse'"));
  CHECK_THAT(error_of([&] { save_torch_state_dict(sparse, pth); }), Contains(pth) && Contains("'sparse'"));
  CHECK(fs::is_empty(s.dir));

  CHECK_THAT(error_of([&] { write_safetensors(all_dtypes(), s.path("no/such/dir/x.safetensors")); }),
             Contains("no/such/dir/x.safetensors"));
}

TEST_CASE("the safetensors reader refuses what the reference library refuses / and duplicate names / in bounded time") {
  Scratch s;
  const std::string path = s.path("hostile.safetensors");
  const auto error = [&](const std::string& header, size_t data_bytes) {
    s.write("hostile.safetensors", safetensors_bytes(header, data_bytes));
    return error_of([&] { read_safetensors(path); });
  };
  const auto metadata_error = [&](const std::string& header, size_t data_bytes) {
    s.write("hostile.safetensors", safetensors_bytes(header, data_bytes));
    return error_of([&] { read_safetensors_metadata(path); });
  };
  const std::string w = R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  // Duplicate names (a JSON library would keep the last), also inside __metadata__ and within one tensor.
  CHECK_THAT(error("{" + w + ", " + w + "}", 8), Contains(path) && Contains("two entries named 'w'"));
  CHECK_THAT(metadata_error(R"({"__metadata__": {"a": "1", "a": "2"}, )" + w + "}", 8), Contains("'a'"));
  CHECK_THAT(error(R"({"w": {"dtype": "F32", "shape": [2], "shape": [2], "data_offsets": [0, 8]}})", 8),
             Contains("'w'") && Contains("twice"));
  // Holes and uncovered bytes: the tensors must tile the data area.
  CHECK_THAT(error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
             Contains("'w'") && Contains("hole"));
  CHECK_THAT(error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                   12),
             Contains("'b'") && Contains("hole"));
  CHECK_THAT(error("{" + w + "}", 16), Contains(path) && Contains("8 bytes after its last tensor"));
  CHECK_THAT(error("{}", 4), Contains("4 bytes after"));
  // __metadata__ must be an object of strings, for every reader.
  for (const std::string m : {R"("x")", "[1]", "3", R"({"k": 1})", R"({"k": {"n": "v"}})"}) {
    INFO(m);
    CHECK_THAT(error(R"({"__metadata__": )" + m + ", " + w + "}", 8), Contains(path) && Contains("__metadata__"));
    CHECK_THAT(metadata_error(R"({"__metadata__": )" + m + ", " + w + "}", 8), Contains("__metadata__"));
  }
  // A tensor entry of the wrong kind, a shape of the wrong kind, a nested shape.
  CHECK_THAT(error(R"({"w": [1, 2]})", 0), Contains("'w'") && Contains("instead of an object"));
  CHECK_THAT(error(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 4]}})", 4),
             Contains("'w'") && Contains("not a list"));
  CHECK_THAT(error(R"({"w": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})", 4), Contains("'w'"));
  CHECK_THAT(error(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 8),
             Contains("'w'") && Contains("data_offsets"));
  CHECK_THAT(error(R"(["w"])", 0), Contains("not an object"));
  // Unknown fields are skipped whole, as the reference library does.
  s.write("hostile.safetensors",
          safetensors_bytes(
              R"({"w": {"x": {"y": [1, {"z": 2}]}, "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8));
  CHECK(read_safetensors(path).at("w").sizes() == c10::IntArrayRef{2});
  // 100,000 dimensions: refused at the 65th, not multiplied out.
  std::string dims;
  for (int i = 0; i < 100000; ++i) dims += (i ? ",1" : "1");
  CHECK_THAT(error(R"({"w": {"dtype": "F32", "shape": [)" + dims + R"(], "data_offsets": [0, 4]}})", 4),
             Contains("'w'") && Contains("more than 64 dimensions"));
  // A header over the format's 100 MB limit is refused before it is parsed (a sparse file: no disk used).
  {
    std::ofstream(path, std::ios::binary | std::ios::trunc);
    fs::resize_file(path, 100000000 + 64);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t len = 100000000 + 8;
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>((len >> (8 * i)) & 0xff));
  }
  CHECK_THAT(error_of([&] { read_safetensors(path); }), Contains(path) && Contains("at most 100000000"));
}

namespace {

// A torch.save-style zip whose data.pkl is `pkl` (the raw pickle bytes a test crafts).
std::string pth_with_pickle(const Scratch& s, const std::string& name, const std::string& pkl) {
  const std::string path = s.path(name);
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pkl.data(), pkl.size());
  w.writeEndOfFile();
  return path;
}

std::string pickle_str(const std::string& v) {  // SHORT_BINUNICODE
  return std::string("\x8c") + static_cast<char>(v.size()) + v;
}

}  // namespace

TEST_CASE(
    "the torch.save unpickler stays bounded on hostile pickles: deep nesting / self reference / shared blow-ups") {
  Scratch s;
  const std::string proto = "\x80\x02";
  const auto put = [](int i) { return std::string{'q', static_cast<char>(i)}; };  // BINPUT i
  const auto get = [](int i) { return std::string{'h', static_cast<char>(i)}; };  // BINGET i
  const auto load_error = [&](const std::string& name, const std::string& pkl) {
    return error_of([&] { load_torch_state_dict(pth_with_pickle(s, name, pkl)); });
  };
  SECTION("5 million nested lists and 1 million nested dicts: no stack overflow when built or freed") {
    const size_t n = 5000000;  // {"k": [[[...]]]}: each EMPTY_LIST pushed, then each APPEND nests the top one
    const std::string lists = proto + "}" + pickle_str("k") + "]" + std::string(n, ']') + std::string(n, 'a') + "s.";
    CHECK(load_torch_state_dict(pth_with_pickle(s, "lists.pth", lists)).empty());
    std::string dicts = proto + "}";
    for (int i = 0; i < 1000000; ++i) dicts += pickle_str("k") + "}";
    dicts += std::string(1000000, 's') + ".";
    CHECK_THAT(load_error("dicts.pth", dicts), Contains("dicts.pth") && Contains("more than 100 deep"));
  }
  SECTION("_rebuild_from_type_v2 given itself as its arguments: through a list and through 10 nested tuples") {
    const std::string fn = "ctorch._tensor\n_rebuild_from_type_v2\n";
    // L = [fn, None, L], then fn(*L): the arguments are a list (and contain themselves).
    const std::string self =
        proto + "}" + pickle_str("t") + fn + put(0) + "]" + put(1) + get(0) + "a" + "Na" + get(1) + "a" + "R" + "s.";
    CHECK_THAT(load_error("self.pth", self), Contains("self.pth") && Contains("not a tuple"));
    // args_k = (fn, None, args_{k-1}), args_0 = (): fn(*args_10) would call fn ten times over.
    std::string chain = proto + "}" + pickle_str("t") + fn + put(0);
    for (int i = 0; i < 10; ++i) chain += get(0) + "N";
    chain += ")" + std::string(10, '\x87') + "R" + "s.";
    CHECK_THAT(load_error("chain.pth", chain), Contains("chain.pth") && Contains("more than 4 deep"));
  }
  SECTION("60 levels of dicts that each hold the one below twice (2^60 names)") {
    // D_0 = {}, D_i = {"a": D_{i-1}, "b": D_{i-1}}; each level is memoized and parked in a list, then
    // {"sink": [...], "top": D_60}.
    std::string dag = proto + "}" + pickle_str("sink") + "]" + "}" + put(0) + "a";
    for (int i = 1; i <= 60; ++i)
      dag += "}(" + pickle_str("a") + get(i - 1) + pickle_str("b") + get(i - 1) + "u" + put(i) + "a";
    dag += "s" + pickle_str("top") + get(60) + "s.";
    CHECK_THAT(load_error("dag.pth", dag), Contains("dag.pth") && Contains("more names than the file has values"));
  }
}
