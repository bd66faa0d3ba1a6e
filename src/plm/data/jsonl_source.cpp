#include "plm/data/jsonl_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "plm/config/source.h"
#include "plm/data/sample.h"

namespace fs = std::filesystem;

namespace plm::data {
namespace {

constexpr char kMagic[8] = {'P', 'L', 'M', 'I', 'D', 'X', '1', '\n'};

struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

FileStamp stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw config::ConfigError("cannot read annotation file '" + path + "': " + std::strerror(errno) + ".");
  return {static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

std::vector<uint64_t> scan(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw config::ConfigError("cannot read annotation file '" + path + "': " + std::strerror(errno) + ".");
  std::vector<uint64_t> offsets;
  std::vector<char> buf(1 << 20);
  uint64_t pos = 0, line_start = 0;
  bool line_has_content = false;
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      ::close(fd);
      throw config::ConfigError("error reading annotation file '" + path + "': " + std::strerror(errno) + ".");
    }
    if (n == 0) break;
    for (ssize_t k = 0; k < n; ++k) {
      const char c = buf[k];
      if (c == '\n') {
        if (line_has_content) offsets.push_back(line_start);
        line_start = pos + k + 1;
        line_has_content = false;
      } else if (c != '\r' && c != ' ' && c != '\t') {
        line_has_content = true;
      }
    }
    pos += static_cast<uint64_t>(n);
  }
  if (line_has_content) offsets.push_back(line_start);
  ::close(fd);
  return offsets;
}

bool read_cache(const std::string& cache, const FileStamp& s, std::vector<uint64_t>& offsets) {
  std::ifstream in(cache, std::ios::binary);
  char magic[8];
  FileStamp cached;
  uint64_t count = 0;
  if (!in.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) return false;
  in.read(reinterpret_cast<char*>(&cached.size), 8).read(reinterpret_cast<char*>(&cached.mtime_ns), 8);
  in.read(reinterpret_cast<char*>(&count), 8);
  if (!in || cached.size != s.size || cached.mtime_ns != s.mtime_ns || count > s.size) return false;
  offsets.resize(count);
  if (!in.read(reinterpret_cast<char*>(offsets.data()), static_cast<std::streamsize>(count * 8))) return false;
  // An index whose stamp matches but whose offsets do not fit the file (copied from elsewhere, edited, or a file
  // rewritten within the same mtime tick) is rebuilt, never trusted: rows are read between consecutive offsets.
  for (size_t k = 0; k < offsets.size(); ++k)
    if (offsets[k] >= s.size || (k > 0 && offsets[k] <= offsets[k - 1])) return false;
  return true;
}

void write_cache(const std::string& cache, const FileStamp& s, const std::vector<uint64_t>& offsets) {
  const std::string tmp = cache + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) return;  // read-only folder: keep the index in memory only
    const uint64_t count = offsets.size();
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&s.size), 8).write(reinterpret_cast<const char*>(&s.mtime_ns), 8);
    out.write(reinterpret_cast<const char*>(&count), 8);
    out.write(reinterpret_cast<const char*>(offsets.data()), static_cast<std::streamsize>(count * 8));
    if (!out) {
      fs::remove(tmp);
      return;
    }
  }
  std::error_code ec;
  fs::rename(tmp, cache, ec);  // atomic: concurrent ranks building the same index is harmless
  if (ec) fs::remove(tmp, ec);
}

}  // namespace

std::vector<uint64_t> index_jsonl_file(const std::string& path, bool use_cache) {
  const FileStamp s = stamp(path);
  const std::string cache = path + ".plmidx";
  std::vector<uint64_t> offsets;
  if (use_cache && read_cache(cache, s, offsets)) return offsets;
  offsets = scan(path);
  if (use_cache) write_cache(cache, s, offsets);
  return offsets;
}

JsonlSource::JsonlSource(const std::string& annotation) {
  std::error_code ec;
  const fs::file_status st = fs::status(annotation, ec);
  if (!fs::exists(st))
    throw config::ConfigError("annotation '" + annotation + "' " +
                              (ec && ec != std::errc::no_such_file_or_directory
                                   ? "cannot be reached (" + ec.message() + ")."
                                   : std::string("does not exist.")));
  if (fs::is_directory(st)) {
    static const std::regex chunk(R"(.*chunk\.\d+.*\.jsonl)");
    for (fs::directory_iterator it(annotation, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code entry_ec;  // an entry that cannot be resolved (a symlink loop) is not a chunk file
      if (it->is_regular_file(entry_ec) && std::regex_match(it->path().filename().string(), chunk))
        files_.push_back(it->path().string());
    }
    if (ec) throw config::ConfigError("cannot list annotation folder '" + annotation + "': " + ec.message() + ".");
    std::sort(files_.begin(), files_.end());
    if (files_.empty())
      throw config::ConfigError("annotation folder '" + annotation + "' has no files named like '*chunk.N*.jsonl'.");
  } else if (fs::is_regular_file(st)) {
    files_.push_back(annotation);
  } else {
    throw config::ConfigError("annotation '" + annotation + "' is not a regular file (a FIFO, device or socket).");
  }
  for (const auto& f : files_) {
    File file{f, index_jsonl_file(f), stamp(f).size};
    first_row_.push_back(total_);
    total_ += static_cast<int64_t>(file.offsets.size());
    index_.push_back(std::move(file));
  }
}

size_t JsonlSource::file_of(int64_t i) const {
  return static_cast<size_t>(std::upper_bound(first_row_.begin(), first_row_.end(), i) - first_row_.begin() - 1);
}

std::string JsonlSource::row(int64_t i) const {
  const size_t f = file_of(i);
  const File& file = index_[f];
  const auto r = static_cast<size_t>(i - first_row_[f]);
  const uint64_t begin = file.offsets[r];
  const uint64_t end = r + 1 < file.offsets.size() ? file.offsets[r + 1] : file.size;
  // The row and the blank lines after it, of which at most one byte more than the longest row is read.
  std::string line(std::min(end - begin, kMaxRowBytes + 1), '\0');
  const int fd = ::open(file.path.c_str(), O_RDONLY);
  if (fd < 0)
    throw config::ConfigError("cannot read annotation file '" + file.path + "': " + std::strerror(errno) + ".");
  const ssize_t n = ::pread(fd, line.data(), line.size(), static_cast<off_t>(begin));
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size()))
    throw config::ConfigError("annotation file '" + file.path + "' changed while being read; rebuild its index.");
  // Up to the first line end (blank lines between rows belong to the gap).
  const auto nl = line.find('\n');
  if (nl != std::string::npos) line.resize(nl);
  if (line.size() > kMaxRowBytes) throw SampleError("too_long", origin(i) + ": " + row_too_long());
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::string JsonlSource::origin(int64_t i) const {
  const File& file = index_[file_of(i)];
  uint64_t left = file.offsets[static_cast<size_t>(i - first_row_[file_of(i)])];
  std::ifstream in(file.path, std::ios::binary);
  int64_t line_no = 1;
  std::vector<char> buf(1 << 16);
  while (left > 0 && in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(left, buf.size())))) {
    line_no += std::count(buf.begin(), buf.begin() + in.gcount(), '\n');
    left -= static_cast<uint64_t>(in.gcount());
  }
  return file.path + ":" + std::to_string(line_no);
}

}  // namespace plm::data
