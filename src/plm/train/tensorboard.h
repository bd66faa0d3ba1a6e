// logging.tensorboard: the metrics records as TensorBoard event files (docs/metrics.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace plm::train {

/// Writes dump_dir/tensorboard/events.out.tfevents.<unix seconds>.<host>.<pid> (TensorBoard's naming; a resumed run
/// adds a file, TensorBoard reads them all in order). The file is TFRecord framing (length, masked CRC32C of the
/// length, the serialized Event, masked CRC32C of it) around protobuf Events encoded by the protobuf library
/// (tensorboard_event.proto). The first Event says the file version; each record becomes one Event at its
/// global_step whose values are its numeric keys as scalars under the same names (null and text keys are left out).
/// Flushed after every Event, so TensorBoard sees a live run.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& serialized);
  std::ofstream out_;
  std::string path_;
};

/// CRC-32C (Castagnoli, reflected, as TFRecord uses) of `n` bytes.
uint32_t crc32c(const char* data, size_t n);
/// TFRecord's masked CRC: rotate right by 15 and add 0xa282ead8.
uint32_t masked_crc32c(const char* data, size_t n);

}  // namespace plm::train
