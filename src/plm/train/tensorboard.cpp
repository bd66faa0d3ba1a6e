#include "plm/train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

#include "plm/common/log.h"
#include "tensorboard_event.pb.h"

namespace plm::train {
namespace fs = std::filesystem;

namespace {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // the reflected Castagnoli polynomial
    t[i] = c;
  }
  return t;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

uint32_t crc32c(const char* data, size_t n) {
  static const std::array<uint32_t, 256> table = crc32c_table();
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ static_cast<uint8_t>(data[i])) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const char* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  fs::create_directories(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = (fs::path(dir) / fmt::format("events.out.tfevents.{}.{}.{}", static_cast<int64_t>(unix_seconds()), host,
                                       static_cast<int64_t>(getpid())))
              .string();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw std::runtime_error("cannot open '" + path_ + "' for TensorBoard events.");
  tensorboard::Event version;
  version.set_wall_time(unix_seconds());
  version.set_file_version("brain.Event:2");
  write_event(version.SerializeAsString());
}

void TensorBoardWriter::write(const nlohmann::json& record) {
  tensorboard::Event event;
  event.set_wall_time(unix_seconds());
  event.set_step(record.value("global_step", int64_t{0}));
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [key, value] : record.items()) {
    if (!value.is_number() || key == "global_step") continue;
    tensorboard::SummaryValue* v = summary->add_value();
    v->set_tag(key);
    v->set_simple_value(value.get<float>());
  }
  write_event(event.SerializeAsString());
}

void TensorBoardWriter::write_event(const std::string& data) {
  std::string header;
  put_le(header, data.size(), 8);
  std::string frame = header;
  put_le(frame, masked_crc32c(header.data(), header.size()), 4);
  frame += data;
  put_le(frame, masked_crc32c(data.data(), data.size()), 4);
  out_.write(frame.data(), static_cast<std::streamsize>(frame.size()));
  out_.flush();
  if (!out_) log::warn("could not write to '{}'", path_);
}

}  // namespace plm::train
