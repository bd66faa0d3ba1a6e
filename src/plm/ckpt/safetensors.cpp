#include "plm/ckpt/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

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

// One tensor as the header describes it, validated against the data area.
struct HeaderEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

struct Header {
  json doc;
  uint64_t data_start = 0;  // file offset of the data area
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
  Header h;
  h.data_start = 8 + len;
  try {
    h.doc = json::parse(f.data() + 8, f.data() + 8 + len);
  } catch (const json::parse_error& e) {
    throw CheckpointError(c10::str("'", f.path(), "' has a corrupt JSON header (parse error at byte ", e.byte, ")."));
  }
  if (!h.doc.is_object()) throw CheckpointError(c10::str("'", f.path(), "' has a JSON header that is not an object."));
  return h;
}

HeaderEntry parse_entry(const std::string& path, const std::string& name, const json& j, uint64_t data_size) {
  const auto bad = [&](const std::string& why) {
    return CheckpointError(c10::str("tensor '", name, "' in '", path, "' ", why, "."));
  };
  if (!j.is_object() || !j.contains("dtype") || !j.contains("shape") || !j.contains("data_offsets")) {
    throw bad("lacks one of the header fields dtype, shape, data_offsets");
  }
  const json& jd = j["dtype"];
  const json& js = j["shape"];
  const json& jo = j["data_offsets"];
  if (!jd.is_string()) throw bad("has a dtype that is not a string");
  const auto names = detail::dtype_names();
  const auto dtype = std::find_if(names.begin(), names.end(), [&](const auto& d) { return jd == d.safetensors; });
  if (dtype == names.end()) {
    throw bad(c10::str("has dtype '", jd.get<std::string>(),
                       "', which plm does not read (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)"));
  }
  HeaderEntry e{name, dtype->type, {}, 0, 0};
  if (!js.is_array()) throw bad("has a shape that is not a list");
  uint64_t nbytes = at::elementSize(e.dtype);
  for (const json& d : js) {
    if (!d.is_number_unsigned()) throw bad("has a shape entry that is not a non-negative integer");
    const uint64_t n = d.get<uint64_t>();
    if (n > uint64_t{INT64_MAX} || __builtin_mul_overflow(nbytes, n, &nbytes)) throw bad("has an impossible shape");
    e.shape.push_back(static_cast<int64_t>(n));
  }
  if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned()) {
    throw bad("has data_offsets that are not two non-negative integers");
  }
  e.begin = jo[0].get<uint64_t>();
  e.end = jo[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    throw bad(c10::str("has data_offsets [", e.begin, ", ", e.end, "] outside the ", data_size,
                       "-byte data area (truncated or corrupt file)"));
  }
  if (e.end - e.begin != nbytes) {
    throw bad(c10::str("has data_offsets spanning ", e.end - e.begin, " bytes but dtype ", jd.get<std::string>(),
                       " and shape ", c10::IntArrayRef(e.shape), " need ", nbytes));
  }
  return e;
}

// The header's tensors in the order of their data.
std::vector<HeaderEntry> parse_entries(const detail::MappedFile& f, const Header& h) {
  std::vector<HeaderEntry> entries;
  for (const auto& [name, j] : h.doc.items()) {
    if (name != "__metadata__") entries.push_back(parse_entry(f.path(), name, j, f.size() - h.data_start));
  }
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  for (size_t k = 1; k < entries.size(); ++k) {  // tensors over the same bytes would alias each other
    if (entries[k].begin < entries[k - 1].end) {
      throw CheckpointError(c10::str("tensor '", entries[k].name, "' in '", f.path(), "' overlaps tensor '",
                                     entries[k - 1].name, "' (corrupt header)."));
    }
  }
  return entries;
}

}  // namespace

TensorMap read_safetensors(const std::string& path) {
  const detail::MappedFile f(path);
  const Header h = read_header(f);
  TensorMap out;
  for (const HeaderEntry& e : parse_entries(f, h))
    out.insert(e.name, f.tensor(h.data_start + e.begin, e.shape, e.dtype));
  return out;
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  const detail::MappedFile f(path);
  const Header h = read_header(f);
  std::map<std::string, std::string> out;
  const auto it = h.doc.find("__metadata__");
  if (it == h.doc.end() || it->is_null()) return out;
  if (!it->is_object()) throw CheckpointError(c10::str("'", path, "' has a __metadata__ that is not an object."));
  for (const auto& [key, value] : it->items()) {
    if (!value.is_string()) {
      throw CheckpointError(c10::str("'", path, "' has __metadata__ entry '", key, "' that is not a string."));
    }
    out.emplace(key, value.get<std::string>());
  }
  return out;
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

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot read '" + path + "'.");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace plm::ckpt
