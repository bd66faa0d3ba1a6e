#include "plm/ckpt/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <c10/util/StringUtil.h>
#include <nlohmann/json.hpp>

namespace plm::ckpt {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- TensorMap ----

bool TensorMap::insert(std::string name, at::Tensor tensor) {
  if (index_.count(name)) return false;
  index_.emplace(name, entries_.size());
  entries_.emplace_back(std::move(name), std::move(tensor));
  return true;
}

const at::Tensor* TensorMap::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

const at::Tensor& TensorMap::at(const std::string& name) const {
  if (const at::Tensor* t = find(name)) return *t;
  throw std::out_of_range("no tensor named '" + name + "'");
}

// ---- shared by both formats ----

namespace detail {

namespace {
constexpr DtypeNames kDtypes[] = {{at::kDouble, "F64", "DoubleStorage"}, {at::kFloat, "F32", "FloatStorage"},
                                  {at::kHalf, "F16", "HalfStorage"},     {at::kBFloat16, "BF16", "BFloat16Storage"},
                                  {at::kLong, "I64", "LongStorage"},     {at::kInt, "I32", "IntStorage"},
                                  {at::kShort, "I16", "ShortStorage"},   {at::kChar, "I8", "CharStorage"},
                                  {at::kByte, "U8", "ByteStorage"},      {at::kBool, "BOOL", "BoolStorage"}};
}  // namespace

c10::ArrayRef<DtypeNames> dtype_names() {
  return kDtypes;
}

const DtypeNames& writable_dtype(const std::string& path, const std::string& name, const at::Tensor& t) {
  const auto bad = [&](const std::string& why) {
    return CheckpointError(c10::str("cannot write tensor '", name, "' to '", path, "': ", why, "."));
  };
  if (!t.defined()) throw bad("it is an undefined tensor");
  if (t.layout() != at::kStrided) throw bad("it is not a dense tensor");
  if (t.is_meta()) throw bad("it is a meta tensor, which has no data");
  for (const DtypeNames& d : kDtypes)
    if (d.type == t.scalar_type()) return d;
  throw bad(c10::str("dtype ", t.scalar_type(), " is not one of float64/32/16, bfloat16, int64/32/16/8, uint8, bool"));
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  int err = fd < 0 || ::fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
  void* p = nullptr;
  size_ = static_cast<uint64_t>(st.st_size);
  if (!err && size_ > 0) {
    p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) err = errno;
  }
  if (fd >= 0) ::close(fd);
  if (err) throw CheckpointError(c10::str("cannot open '", path, "': ", std::strerror(err), "."));
  map_ = std::shared_ptr<void>(p, [n = size_](void* q) {
    if (q) ::munmap(q, n);
  });
}

at::Tensor MappedFile::tensor(uint64_t offset, c10::IntArrayRef sizes, at::ScalarType dtype) const {
  const auto options = at::TensorOptions().dtype(dtype);
  if (offset % at::elementSize(dtype) == 0) {
    return at::from_blob(
        const_cast<char*>(data()) + offset, sizes, [keep = map_](void*) {}, options);
  }
  at::Tensor copy = at::empty(sizes, options);  // misaligned: ATen kernels may assume aligned elements
  std::memcpy(copy.data_ptr(), data() + offset, copy.numel() * copy.element_size());
  return copy;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw CheckpointError(c10::str("cannot create '", tmp_, "': ", std::strerror(errno), "."));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw CheckpointError(c10::str("cannot write '", tmp_, "': ", std::strerror(errno), "."));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    throw CheckpointError(c10::str("cannot flush '", tmp_, "' to disk: ", std::strerror(errno), "."));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw CheckpointError(c10::str("cannot rename '", tmp_, "' to '", path_, "': ", std::strerror(err), "."));
  }
}

}  // namespace detail

namespace {

// ---- reading ----

// The safetensors library's bounds: its MAX_HEADER_SIZE, and plm's on dimensions (LibTorch's kernels take at most
// 25; no checkpoint tensor has more than a handful).
constexpr uint64_t kMaxHeaderBytes = 100000000;
constexpr size_t kMaxDims = 64;

// One tensor as the header describes it, validated against the data area.
struct HeaderEntry {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::vector<HeaderEntry> entries;  // in the order of their data
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data area
};

// A SAX pass over the header's JSON that keeps only what the tensors need: memory is the names, shapes and
// metadata strings (a small multiple of the header's bytes), not a JSON document's ~50x. Refuses what the
// safetensors library refuses (a non-object header or __metadata__, a non-string metadata value, missing or
// ill-typed fields, a size that does not match dtype x shape) and also duplicate names, which it lets the last win.
class HeaderReader : public json::json_sax_t {
 public:
  HeaderReader(std::string path, uint64_t data_size) : path_(std::move(path)), data_size_(data_size) {}

  std::string error;  // set when a callback refused
  std::vector<HeaderEntry> entries;
  std::map<std::string, std::string> metadata;

  bool null() override { return primitive(Kind::null); }
  bool boolean(bool) override { return primitive(Kind::other); }
  bool number_integer(number_integer_t) override { return primitive(Kind::negative); }
  bool number_unsigned(number_unsigned_t v) override { return number(v); }
  bool number_float(number_float_t, const string_t&) override { return primitive(Kind::other); }
  bool binary(binary_t&) override { return primitive(Kind::other); }
  bool string(string_t& v) override {
    if (skip_ > 0 || depth_ != 2) return primitive(Kind::other);
    if (in_metadata_) {
      if (!metadata.emplace(key_, v).second) return fail("has two __metadata__ entries named '" + key_ + "'");
      return true;
    }
    if (field_ == Field::dtype) {
      dtype_name_ = v;
      const auto names = detail::dtype_names();
      const auto it = std::find_if(names.begin(), names.end(), [&](const auto& d) { return v == d.safetensors; });
      if (it == names.end())
        return fail_tensor("has dtype '" + v + "', which plm does not read (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
      entry_.dtype = it->type;
      has_dtype_ = true;
      return true;
    }
    return primitive(Kind::other);
  }
  bool start_object(std::size_t) override {
    if (skip_ > 0) return ++skip_, true;
    ++depth_;
    if (depth_ == 1) return true;
    if (depth_ == 2) {
      if (key_ == "__metadata__") return in_metadata_ = true;
      entry_ = HeaderEntry{key_, at::kFloat, {}, 0, 0};
      has_dtype_ = has_shape_ = has_offsets_ = false;
      return true;
    }
    return nested("an object");
  }
  bool end_object() override {
    if (skip_ > 0) return --skip_, true;
    if (depth_-- != 2) return true;
    if (in_metadata_) return in_metadata_ = false, true;
    return finish_entry();
  }
  bool start_array(std::size_t) override {
    if (skip_ > 0) return ++skip_, true;
    if (depth_ == 0) return fail("has a JSON header that is not an object");
    ++depth_;
    if (depth_ == 3 && !in_metadata_ && (field_ == Field::shape || field_ == Field::offsets)) {
      (field_ == Field::shape ? has_shape_ : has_offsets_) = true;
      return true;
    }
    return nested("a list");
  }
  bool end_array() override {
    if (skip_ > 0) return --skip_, true;
    --depth_;
    return true;
  }
  bool key(string_t& k) override {
    if (skip_ > 0) return true;
    if (depth_ == 1) {
      if (!names_.insert(k).second) return fail("has two entries named '" + k + "' (corrupt header)");
      key_ = k;
      return true;
    }
    if (in_metadata_) {
      key_ = k;
      return true;
    }
    field_ = k == "dtype"          ? Field::dtype
             : k == "shape"        ? Field::shape
             : k == "data_offsets" ? Field::offsets
                                   : Field::other;
    if ((field_ == Field::dtype && has_dtype_) || (field_ == Field::shape && has_shape_) ||
        (field_ == Field::offsets && has_offsets_))
      return fail_tensor("has the field '" + k + "' twice");
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    if (error.empty())
      error = c10::str("'", path_, "' has a corrupt JSON header (parse error at byte ", position, ").");
    return false;
  }

 private:
  enum class Kind { null, negative, other };
  enum class Field { dtype, shape, offsets, other };

  bool fail(const std::string& why) {
    error = c10::str("'", path_, "' ", why, ".");
    return false;
  }
  bool fail_tensor(const std::string& why) {
    error = c10::str("tensor '", entry_.name, "' in '", path_, "' ", why, ".");
    return false;
  }
  // A nested value where the format has none: metadata values are strings; unknown tensor fields are skipped.
  bool nested(const char* what) {
    if (in_metadata_) return fail("has __metadata__ entry '" + key_ + "' that is not a string");
    if (depth_ - 1 == 2 && field_ == Field::other) {  // an unknown field's value: skip it whole
      --depth_;
      skip_ = 1;
      return true;
    }
    --depth_;
    if (depth_ == 1) {  // the value of a top-level entry
      if (key_ == "__metadata__") return fail("has a __metadata__ that is not an object");
      entry_.name = key_;
      return fail_tensor(c10::str("is ", what, " instead of an object with dtype, shape, data_offsets"));
    }
    return fail_tensor(c10::str("has ", what, " where the header format has a number or string"));
  }
  bool primitive(Kind kind) {
    if (skip_ > 0) return true;
    if (depth_ == 0) return fail("has a JSON header that is not an object");
    if (depth_ == 1) {
      if (key_ == "__metadata__" && kind == Kind::null) return true;
      if (key_ == "__metadata__") return fail("has a __metadata__ that is not an object");
      entry_.name = key_;
      return fail_tensor("lacks one of the header fields dtype, shape, data_offsets");
    }
    if (in_metadata_) return fail("has __metadata__ entry '" + key_ + "' that is not a string");
    if (field_ == Field::other) return true;  // an unknown field's value
    if (field_ == Field::dtype) return fail_tensor("has a dtype that is not a string");
    if (field_ == Field::shape)
      return fail_tensor(depth_ == 2 ? "has a shape that is not a list"
                                     : "has a shape entry that is not a non-negative integer");
    return fail_tensor("has data_offsets that are not two non-negative integers");
  }
  bool number(uint64_t v) {
    if (skip_ > 0 || depth_ != 3) return primitive(Kind::other);
    if (field_ == Field::shape) {
      if (entry_.shape.size() == kMaxDims) return fail_tensor(c10::str("has more than ", kMaxDims, " dimensions"));
      if (v > uint64_t{INT64_MAX}) return fail_tensor("has an impossible shape");
      entry_.shape.push_back(static_cast<int64_t>(v));
      return true;
    }
    if (take_offset(v)) return true;
    return fail_tensor("has data_offsets that are not two non-negative integers");
  }
  bool take_offset(uint64_t v) {
    if (offsets_n_ == 0)
      entry_.begin = v;
    else if (offsets_n_ == 1)
      entry_.end = v;
    else
      return false;
    ++offsets_n_;
    return true;
  }
  bool finish_entry() {
    const size_t offsets = offsets_n_;
    offsets_n_ = 0;
    if (!has_dtype_ || !has_shape_ || !has_offsets_)
      return fail_tensor("lacks one of the header fields dtype, shape, data_offsets");
    if (offsets != 2) return fail_tensor("has data_offsets that are not two non-negative integers");
    uint64_t nbytes = at::elementSize(entry_.dtype);
    for (const int64_t n : entry_.shape)
      if (__builtin_mul_overflow(nbytes, static_cast<uint64_t>(n), &nbytes))
        return fail_tensor("has an impossible shape");
    if (entry_.begin > entry_.end || entry_.end > data_size_)
      return fail_tensor(c10::str("has data_offsets [", entry_.begin, ", ", entry_.end, "] outside the ", data_size_,
                                  "-byte data area (truncated or corrupt file)"));
    if (entry_.end - entry_.begin != nbytes)
      return fail_tensor(c10::str("has data_offsets spanning ", entry_.end - entry_.begin, " bytes but dtype ",
                                  dtype_name_, " and shape ", c10::IntArrayRef(entry_.shape), " need ", nbytes));
    entries.push_back(std::move(entry_));
    return true;
  }

  std::string path_;
  uint64_t data_size_;
  int depth_ = 0, skip_ = 0;
  bool in_metadata_ = false, has_dtype_ = false, has_shape_ = false, has_offsets_ = false;
  size_t offsets_n_ = 0;
  std::string key_, dtype_name_;
  Field field_ = Field::other;
  HeaderEntry entry_;
  std::unordered_set<std::string> names_;
};

Header read_header(const detail::MappedFile& f) {
  if (f.size() < 8) {
    throw CheckpointError(c10::str("'", f.path(), "' is not a safetensors file: it has ", f.size(),
                                   " bytes, fewer than the 8-byte header length."));
  }
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>(f.data()[i]);
  if (len > f.size() - 8) {
    throw CheckpointError(c10::str("'", f.path(), "' is truncated or not a safetensors file: its header length is ",
                                   len, " bytes but only ", f.size() - 8, " bytes follow."));
  }
  if (len > kMaxHeaderBytes)
    throw CheckpointError(c10::str("'", f.path(), "' has a ", len,
                                   "-byte header; the safetensors format allows at most ", kMaxHeaderBytes, "."));
  Header h;
  h.data_start = 8 + len;
  HeaderReader reader(f.path(), f.size() - h.data_start);
  const bool ok = json::sax_parse(f.data() + 8, f.data() + 8 + len, &reader);
  if (!ok || !reader.error.empty())
    throw CheckpointError(!reader.error.empty() ? reader.error
                                                : c10::str("'", f.path(), "' has a corrupt JSON header."));
  h.entries = std::move(reader.entries);
  h.metadata = std::move(reader.metadata);
  // As the safetensors library: sorted by offset, the tensors tile the data area from byte 0 to its end.
  std::stable_sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  uint64_t at_byte = 0;
  for (const HeaderEntry& e : h.entries) {
    if (e.begin < at_byte)  // tensors over the same bytes would alias each other
      throw CheckpointError(
          c10::str("tensor '", e.name, "' in '", f.path(), "' overlaps the tensor before it (corrupt ", "header)."));
    if (e.begin > at_byte)
      throw CheckpointError(c10::str("tensor '", e.name, "' in '", f.path(), "' starts at byte ", e.begin,
                                     " of the data area, leaving a hole after byte ", at_byte, " (corrupt header)."));
    at_byte = e.end;
  }
  if (at_byte != f.size() - h.data_start)
    throw CheckpointError(c10::str("'", f.path(), "' has ", f.size() - h.data_start - at_byte,
                                   " bytes after its last tensor that no tensor covers (corrupt header)."));
  return h;
}

}  // namespace

TensorMap read_safetensors(const std::string& path) {
  const detail::MappedFile f(path);
  const Header h = read_header(f);
  TensorMap out;
  for (const HeaderEntry& e : h.entries) out.insert(e.name, f.tensor(h.data_start + e.begin, e.shape, e.dtype));
  return out;
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  const detail::MappedFile f(path);
  return read_header(f).metadata;
}

void write_safetensors(const TensorMap& tensors, const std::string& path,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const char* dtype = detail::writable_dtype(path, name, t).safetensors;
    if (name == "__metadata__") {
      throw CheckpointError(c10::str("cannot write tensor '__metadata__' to '", path, "': the name is reserved."));
    }
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(uint64_t{text.size()} >> (8 * i));

  detail::AtomicFile out(path);
  out.write(len_bytes, 8);
  out.write(text.data(), text.size());
  for (const auto& entry : tensors) {
    const at::Tensor t = entry.second.to(at::kCPU).contiguous();
    out.write(t.data_ptr(), t.numel() * t.element_size());
  }
  out.commit();
}

TensorMap read_safetensors_dir(const std::string& dir) {
  const fs::path root(dir);
  const fs::path index_path = root / "model.safetensors.index.json";
  if (!fs::exists(index_path)) {
    if (fs::exists(root / "model.safetensors")) return read_safetensors((root / "model.safetensors").string());
    throw CheckpointError(
        c10::str("'", dir, "' holds neither model.safetensors nor model.safetensors.index.json (or is no folder)."));
  }
  const std::string index_name = index_path.string();
  json index;
  try {
    index = json::parse(std::ifstream(index_path));
  } catch (const json::exception& e) {
    throw CheckpointError(c10::str("'", index_name, "' is not valid JSON (", e.what(), ")."));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw CheckpointError(c10::str("'", index_name, "' has no \"weight_map\" object."));
  }
  std::map<std::string, std::string> shard_of;  // tensor -> shard, as the index says
  std::vector<std::string> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      throw CheckpointError(c10::str("'", index_name, "' maps tensor '", name, "' to something other than a file."));
    }
    shard_of[name] = shard.get<std::string>();
    shards.push_back(shard.get<std::string>());
  }
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  for (const std::string& shard : shards) {
    if (!fs::is_regular_file(root / shard)) {
      throw CheckpointError(
          c10::str("'", index_name, "' lists shard '", shard, "', which is missing from '", dir, "'."));
    }
  }
  TensorMap out;
  for (const std::string& shard : shards) {
    for (const auto& [name, t] : read_safetensors((root / shard).string())) {
      const auto it = shard_of.find(name);
      if (it != shard_of.end() && it->second != shard) {
        throw CheckpointError(c10::str("tensor '", name, "' is in shard '", shard, "' but '", index_name,
                                       "' places it in '", it->second, "'."));
      }
      if (!out.insert(name, t)) {
        throw CheckpointError(c10::str("tensor '", name, "' appears in more than one shard of '", dir, "'."));
      }
    }
  }
  for (const auto& [name, shard] : shard_of) {
    if (!out.contains(name)) {
      throw CheckpointError(
          c10::str("tensor '", name, "' is missing from shard '", shard, "' that '", index_name, "' places it in."));
    }
  }
  return out;
}

std::vector<std::string> write_safetensors_dir(const TensorMap& tensors, const std::string& dir,
                                               uint64_t max_shard_bytes,
                                               const std::map<std::string, std::string>& metadata) {
  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw CheckpointError(c10::str("cannot create '", dir, "': ", ec.message(), "."));
  // Shards in map order, each closed when the next tensor would take it past the limit.
  std::vector<TensorMap> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    const auto bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().insert(name, t);
    in_shard += bytes;
    total += bytes;
  }
  std::vector<std::string> written;
  const fs::path index_path = root / "model.safetensors.index.json";
  // Files of an earlier export that this one would not overwrite (another shard count, or one file vs shards).
  auto is_export_file = [](const std::string& name) {
    return name == "model.safetensors" || name == "model.safetensors.index.json" ||
           (name.rfind("model-", 0) == 0 && name.find("-of-") != std::string::npos && name.size() > 12 &&
            name.compare(name.size() - 12, 12, ".safetensors") == 0);
  };
  std::vector<std::string> names;
  if (shards.size() == 1) {
    names.push_back("model.safetensors");
  } else {
    for (size_t i = 0; i < shards.size(); ++i) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      names.emplace_back(buf);
    }
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    write_safetensors(shards[i], (root / names[i]).string(), metadata);
    written.push_back((root / names[i]).string());
    for (const auto& entry : shards[i]) weight_map[entry.first] = names[i];
  }
  if (shards.size() > 1) {
    const std::string text = json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n";
    detail::AtomicFile f(index_path.string());
    f.write(text.data(), text.size());
    f.commit();
    written.push_back(index_path.string());
  }
  // Only now, with the new export written: a failed write removes nothing it has not replaced.
  if (shards.size() > 1) names.push_back(index_path.filename().string());
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (is_export_file(name) && std::find(names.begin(), names.end(), name) == names.end()) fs::remove(e.path(), ec);
  }
  return written;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot read '" + path + "'.");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace plm::ckpt
