// PyTorch's torch.save zip format (the default since PyTorch 1.6), as used by PLM's consolidated.pth, Meta's Llama
// consolidated.00.pth and Perception Encoder .pt files: a zip with <archive>/data.pkl (a pickle whose tensors
// refer to storages by persistent id), <archive>/data/<key> (each storage's raw little-endian bytes),
// <archive>/byteorder and <archive>/version. Zip records are read and written by LibTorch's
// caffe2::serialize::PyTorchStream{Reader,Writer}; the pickle is our own (LibTorch's TorchScript unpickler
// rejects collections.OrderedDict state dicts and its pickler's output is refused by weights_only loading).
#pragma once

#include <string>

#include "plm/ckpt/safetensors.h"

namespace plm::ckpt {

/// Loads the tensors of a torch.save file. The pickle may be a dict or OrderedDict of tensors and parameters,
/// possibly nested: nested dicts are flattened with '.'-joined keys and non-tensor values (ints, strings,
/// lists, other objects) are skipped. A top-level dict whose only entry holding tensors is a dict named
/// "model", "state_dict" or "weights" is unwrapped to that entry (PE checkpoints, PLM's {"model": ...}).
/// Tensors that shared a storage in the file share it here (tied weights, views), with their saved offsets and
/// strides; they are CPU tensors in the file's dtypes and do not require grad. Storages are views of a private,
/// copy-on-write mapping of the file, like read_safetensors()'s tensors (same benefits, same caveat about
/// rewriting the file in place); a compressed zip record (never written by torch.save) is read into a copy.
/// Throws CheckpointError for a missing, truncated or corrupt file, the legacy (pre-1.6) format, an unsupported
/// pickle opcode or storage type, or a tensor kind that cannot be rebuilt (quantized, sparse, subclasses).
/// Bounded on any pickle: nothing recurses on the pickle's nesting except the dict walk, which stops at 100 levels;
/// values live in one arena freed flat (no stack overflow on 5 million nested lists, no leak on cycles); REDUCE
/// needs a tuple of arguments and follows _rebuild_from_type_v2 at most 4 times; dicts shared through the memo
/// are looked into once and may not multiply into more names than 4x the pickle's values. Memory: at most 150
/// bytes per data.pkl byte plus a constant (measured up to 68x, lists of small ints; 40x for many tensors;
/// tests/tooling/parser_memory.py checks it); the storages are mapped, not read.
TensorMap load_torch_state_dict(const std::string& path);

/// Writes `tensors` so that Python's torch.load(path, weights_only=True) returns a collections.OrderedDict of
/// the same names, dtypes, shapes and values (CPU tensors). Tensors sharing a CPU storage are saved once as that
/// whole storage, as torch.save does; tensors on other devices are copied to the CPU one at a time while they are
/// written. Dtypes: float64/32/16, bfloat16, int64/32/16/8, uint8, bool. The file appears atomically (written to
/// path + ".tmp", flushed, renamed). Throws CheckpointError (nothing is written) for an unsupported dtype, a
/// sparse or meta tensor, or tensors of different dtypes sharing one storage; and on I/O errors.
void save_torch_state_dict(const TensorMap& tensors, const std::string& path);

}  // namespace plm::ckpt
