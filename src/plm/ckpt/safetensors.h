// Tensor maps and the safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the raw little-endian tensor bytes. Also the Hugging Face folder layout (one file or an index + shards).
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "plm/common/user_error.h"

namespace plm::ckpt {

/// A checkpoint file or folder that cannot be read or written as asked (missing, truncated, corrupt, an
/// unsupported dtype or format). what() is one sentence naming the file and, where there is one, the tensor.
struct CheckpointError : UserError {
  using UserError::UserError;
};

/// The whole file at `path` as bytes (params.json, config.json, manifests). Throws CheckpointError naming it when it
/// cannot be read.
std::string read_text(const std::string& path);

/// Tensors by name, in insertion order (for a loaded file: the file's order), with constant-time lookup.
/// Holds tensor handles: entries may share storage (tied weights, views), exactly as they were loaded or put.
class TensorMap {
 public:
  using Entry = std::pair<std::string, at::Tensor>;

  /// Appends name -> tensor. Returns false and changes nothing if the name is already present.
  bool insert(std::string name, at::Tensor tensor);
  /// The tensor called `name`, or nullptr if there is none.
  const at::Tensor* find(const std::string& name) const;
  /// The tensor called `name`; throws std::out_of_range naming it if there is none.
  const at::Tensor& at(const std::string& name) const;
  /// Whether a tensor called `name` is present.
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// Number of entries.
  size_t size() const { return entries_.size(); }
  /// Whether the map has no entries.
  bool empty() const { return entries_.empty(); }
  /// Entries in insertion order; `for (const auto& [name, tensor] : map)`.
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

/// Reads every tensor of a .safetensors file, in the order of their data in the file (for files written by the
/// Python library, also the header's order). The tensors are contiguous CPU tensors over a private,
/// copy-on-write mapping of the file (detail::MappedFile), which they keep alive: loading costs no copy and
/// no memory beyond the page cache, bytes are read when first used, writing to a tensor copies only its pages.
/// Replace a mapped file by rename (as plm's writers do), never by rewriting it in place: a file truncated under
/// live tensors kills the process with SIGBUS. Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Throws
/// CheckpointError if the file is missing, truncated or corrupt (header length, JSON, offsets, sizes) or holds
/// another dtype. Refuses what the safetensors library refuses (a header over 100,000,000 bytes or not a JSON
/// object; a __metadata__ that is not an object of strings; tensors that do not tile the data area from byte 0 to
/// its end, i.e. holes, overlaps or trailing bytes; a size other than dtype x shape) and also duplicate names
/// (which it lets the last win) and shapes of more than 64 dimensions. Unknown per-tensor fields are skipped.
/// Cost: one pass over the header (a SAX parse, no JSON document); memory at most 16 bytes per header byte plus a
/// constant (names, shapes, metadata strings and one at::Tensor of ~600 bytes per entry; measured up to 11.8x on
/// one-element tensors and 64-dimension shapes, tests/tooling/parser_memory.py checks it); the data is mapped.
TensorMap read_safetensors(const std::string& path);

/// The header's "__metadata__" (string -> string), empty if absent. Reads only the header.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

/// Writes `tensors` as a safetensors file in map order, with `metadata` as "__metadata__" (omitted if empty).
/// Tensors may live on any device and be non-contiguous: each is copied to a contiguous CPU buffer one at a time
/// while it is written. The header is padded with spaces to a multiple of 8 bytes as the Python library does.
/// The file appears atomically: it is written to path + ".tmp", flushed to disk, then renamed onto `path`.
/// Throws CheckpointError (nothing is written) for an unsupported dtype, a sparse or meta tensor; and on I/O errors.
void write_safetensors(const TensorMap& tensors, const std::string& path,
                       const std::map<std::string, std::string>& metadata = {});

/// Reads a Hugging Face model folder: `model.safetensors`, or `model.safetensors.index.json` whose "weight_map"
/// {tensor: shard file} names the shards (read in file-name order; each tensor must be in the shard the index
/// says). Throws CheckpointError if neither file exists, a listed shard is missing, or the index disagrees
/// with the shards.
TensorMap read_safetensors_dir(const std::string& dir);

/// Writes `tensors` as a Hugging Face model folder, the layout read_safetensors_dir reads: one `model.safetensors`
/// when the tensors' bytes fit in `max_shard_bytes`, else shards `model-00001-of-0000N.safetensors` filled in map
/// order (a new shard starts when the next tensor would take the current one past the limit; a tensor larger than
/// the limit gets a shard of its own, as transformers' save_pretrained does) plus `model.safetensors.index.json`
/// ({"metadata": {"total_size": bytes}, "weight_map": {tensor: shard}}). Every file is written atomically, the
/// index last; each shard carries `metadata` ({"format": "pt"} is what transformers writes). `dir` is created if
/// missing; shards and an index of an earlier export that this one does not rewrite are removed after the new files
/// are written, so the folder never ends up mixing two exports. Returns the files written, index last. Throws
/// CheckpointError as write_safetensors does.
std::vector<std::string> write_safetensors_dir(const TensorMap& tensors, const std::string& dir,
                                               uint64_t max_shard_bytes,
                                               const std::map<std::string, std::string>& metadata = {});

namespace detail {

/// A dtype both formats store, with its name in each.
struct DtypeNames {
  at::ScalarType type;
  const char* safetensors;  // "F32"
  const char* storage;      // "FloatStorage", as in torch.FloatStorage
};

/// The dtypes plm reads and writes: float64/32/16, bfloat16, int64/32/16/8, uint8, bool.
c10::ArrayRef<DtypeNames> dtype_names();

/// The names of `t`'s dtype if `t` can be written (defined, dense, with data, a dtype of dtype_names());
/// otherwise throws CheckpointError "cannot write tensor '<name>' to '<path>': <why>."
const DtypeNames& writable_dtype(const std::string& path, const std::string& name, const at::Tensor& t);

/// A whole file mapped into memory, private and copy-on-write: tensors made from it read the page cache directly
/// (no copy; pages are read when first touched) and a write to them changes only this process's copy. The
/// mapping lives until the MappedFile and every tensor made from it are gone.
class MappedFile {
 public:
  /// Maps `path`; throws CheckpointError naming it if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  const char* data() const { return static_cast<const char*>(map_.get()); }

  /// A CPU tensor over bytes [offset, offset + numel * itemsize) of the file, which the caller has checked are
  /// inside it. Shares the mapping, or is a copy if `offset` is not a multiple of the dtype's size.
  at::Tensor tensor(uint64_t offset, c10::IntArrayRef sizes, at::ScalarType dtype) const;

 private:
  std::string path_;
  uint64_t size_ = 0;
  std::shared_ptr<void> map_;  // munmap on release
};

/// A file that appears at `path` only when complete: bytes go to path + ".tmp"; commit() flushes them to disk
/// and renames the file onto `path`. If destroyed without commit() the temporary file is removed.
/// All failures throw CheckpointError naming the file and the system's reason.
class AtomicFile {
 public:
  /// Creates (or truncates) path + ".tmp".
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends n bytes.
  void write(const void* data, size_t n);
  /// fsync, close and rename onto the final path.
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

}  // namespace detail
}  // namespace plm::ckpt
