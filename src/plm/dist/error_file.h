// The launcher's error file (torchelastic's protocol, which torchrun and `plm launch` both speak): the launcher names
// one file per worker in TORCHELASTIC_ERROR_FILE; a worker that fails writes
//   {"message": {"message": SENTENCE, "extraInfo": {"timestamp": "UNIX_SECONDS", "silent_ranks": [R, ...]}}}
// there, and the launcher shows SENTENCE as the failure's cause (torchrun: "Root Cause"). `silent_ranks` is plm's
// addition: the ranks a DistError named, which `plm launch` blames instead of the survivor that reported them.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace plm::dist {

struct WorkerError {
  std::string message;
  std::vector<int> silent_ranks;
};

/// Writes `error` to TORCHELASTIC_ERROR_FILE when that is set (else does nothing). Never throws: a failure to write
/// it must not hide the error being reported.
void write_error_file(const WorkerError& error);

/// Reads a file written by write_error_file (or by a Python worker's torchelastic `@record`); nullopt when it is
/// missing or not that JSON. Reads at most 1 MiB.
std::optional<WorkerError> read_error_file(const std::string& path);

}  // namespace plm::dist
