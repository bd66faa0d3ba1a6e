#include "plm/ckpt/checkpoint_store.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "plm/ckpt/lora_base.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/sharded.h"
#include "plm/ckpt/torch_pickle.h"
#include "plm/common/log.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace plm::ckpt {
namespace {

constexpr const char* kFormat = "plm-checkpoint-1";
constexpr const char* kManifest = "manifest.json";
constexpr const char* kTmpPrefix = ".tmp-";
// Files every checkpoint has; extra.safetensors is optional.
constexpr const char* kRequired[] = {"model.safetensors", "optimizer.safetensors", "params.json", "train_state.json"};

[[noreturn]] void fail(const std::string& what, const fs::path& path, int err) {
  throw CheckpointError(what + " '" + path.string() + "': " + std::strerror(err) + ".");
}

// A directory's entries (creations, renames) reach the disk only when the directory itself is fsynced.
void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open folder", dir, errno);
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0) fail("cannot flush folder", dir, err);
}

struct FileSum {
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

// Reads the file with read(2) rather than mapping it: a file truncated while mapped would kill us with SIGBUS.
FileSum checksum_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open", path, errno);
  std::vector<unsigned char> buf(size_t{4} << 20);
  FileSum sum{0, static_cast<uint32_t>(::crc32_z(0, nullptr, 0))};
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      fail("cannot read", path, err);
    }
    sum.crc32 = static_cast<uint32_t>(::crc32_z(sum.crc32, buf.data(), static_cast<size_t>(n)));
    sum.bytes += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return sum;
}

FileSum write_text(const fs::path& path, const std::string& text) {
  detail::AtomicFile out(path.string());
  out.write(text.data(), text.size());
  out.commit();
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  return {text.size(), static_cast<uint32_t>(::crc32_z(::crc32_z(0, nullptr, 0), bytes, text.size()))};
}

// "0000000500" -> 500; anything that is not all digits -> -1.
int64_t step_of(const std::string& name) {
  if (name.empty() || name.size() > 18 ||
      !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(name);
}

// The step folders under `root`, oldest first.
std::vector<std::pair<int64_t, fs::path>> step_folders(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const int64_t step = step_of(e.path().filename().string());
    if (step >= 0 && e.is_directory()) out.emplace_back(step, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_tmp(const fs::path& p) {
  return p.filename().string().rfind(kTmpPrefix, 0) == 0;
}

// Writes the manifest of `files` into `tmp` last (a folder with one has every file it lists, complete and flushed)
// and renames `tmp` onto `final_dir`. rename(2) cannot replace a non-empty folder: an existing one is moved aside to
// `old` first (the caller removes it). A crash in between leaves both under .tmp-* names, which the next run
// removes; it then resumes from an older step.
void finish_folder(int64_t step, const json& files, const fs::path& tmp, const fs::path& final_dir, const fs::path& old,
                   const fs::path& root) {
  write_text(tmp / kManifest, json{{"format", kFormat}, {"step", step}, {"files", files}}.dump(2) + "\n");
  fsync_dir(tmp);
  std::error_code ec;
  if (fs::exists(final_dir)) {
    fs::remove_all(old, ec);
    if (::rename(final_dir.c_str(), old.c_str()) != 0) fail("cannot move aside", final_dir, errno);
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) fail("cannot rename '" + tmp.string() + "' to", final_dir, errno);
  fsync_dir(root);
}

}  // namespace

CheckpointStore::CheckpointStore(std::string root, config::SaveEvery dump, config::SaveEvery eval)
    : root_(std::move(root)), dump_(dump), eval_(eval) {
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec) throw CheckpointError("cannot create checkpoint folder '" + root_ + "': " + ec.message() + ".");
}

std::string CheckpointStore::step_dir(int64_t step) const {
  return (fs::path(root_) / fmt::format("{:010d}", step)).string();
}

std::string CheckpointStore::save(int64_t step, const CheckpointContents& contents) const {
  const fs::path root(root_), final_dir(step_dir(step));
  const fs::path tmp = root / fmt::format("{}{}-{}", kTmpPrefix, step, ::getpid());
  const fs::path old = fs::path(tmp.string() + ".old");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) && ec)
    throw CheckpointError("cannot create '" + tmp.string() + "': " + ec.message() + ".");
  try {
    json files = json::object();
    auto add_tensors = [&](const char* name, const TensorMap& tensors) {
      write_safetensors(tensors, (tmp / name).string());
      const FileSum s = checksum_file(tmp / name);  // the bytes as the disk gives them back
      files[name] = {{"bytes", s.bytes}, {"crc32", s.crc32}};
    };
    auto add_text = [&](const char* name, const std::string& text) {
      const FileSum s = write_text(tmp / name, text);
      files[name] = {{"bytes", s.bytes}, {"crc32", s.crc32}};
    };
    add_tensors("model.safetensors", contents.model);
    add_tensors("optimizer.safetensors", contents.optimizer);
    if (!contents.extra.empty()) add_tensors("extra.safetensors", contents.extra);
    add_text("params.json", contents.params_json);
    add_text("train_state.json", contents.train_state_json);
    for (const auto& [name, text] : contents.texts) add_text(name.c_str(), text);
    finish_folder(step, files, tmp, final_dir, old, root);
  } catch (...) {
    fs::remove_all(tmp, ec);
    if (fs::exists(old, ec) && !fs::exists(final_dir, ec)) ::rename(old.c_str(), final_dir.c_str());  // put back
    throw;
  }
  fs::remove_all(old, ec);
  return final_dir.string();
}

std::string CheckpointStore::save_sharded(int64_t step, const RankFiles& mine, dist::World& world) const {
  const fs::path root(root_), final_dir(step_dir(step));
  const fs::path tmp = root / fmt::format("{}{}-sharded", kTmpPrefix, step);
  const fs::path old = fs::path(tmp.string() + ".old");
  const bool leader = world.rank() == 0;
  std::error_code ec;
  // Every rank learns whether any rank failed, so that none waits for a folder that will not come.
  auto agree = [&](const std::string& error, const char* stage) {
    const at::Tensor failed = at::full({1}, error.empty() ? 0 : 1, at::kInt);
    world.all_reduce(failed, dist::ReduceOp::max);
    if (failed.item<int>() == 0) return;
    if (leader) fs::remove_all(tmp, ec);
    throw CheckpointError(
        !error.empty() ? error
                       : fmt::format("another rank could not {} checkpoint step {} in '{}'.", stage, step, root_));
  };
  std::string error;
  if (leader) {
    fs::remove_all(tmp, ec);
    if (!fs::create_directory(tmp, ec) && ec) error = "cannot create '" + tmp.string() + "': " + ec.message() + ".";
  }
  agree(error, "create the folder of");
  try {
    json part = json::object();
    for (const auto& [name, tensors] : mine.tensors) {
      write_safetensors(tensors, (tmp / name).string());
      const FileSum sum = checksum_file(tmp / name);
      part[name] = {{"bytes", sum.bytes}, {"crc32", sum.crc32}};
    }
    for (const auto& [name, text] : mine.texts) {
      const FileSum sum = write_text(tmp / name, text);
      part[name] = {{"bytes", sum.bytes}, {"crc32", sum.crc32}};
    }
    write_text(tmp / fmt::format("manifest.part-{}", world.rank()), part.dump());
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error, "write its part of");
  if (leader) {
    try {
      json files = json::object();
      for (int r = 0; r < world.size(); ++r) {
        const fs::path part = tmp / fmt::format("manifest.part-{}", r);
        files.update(json::parse(read_text(part.string())));
        fs::remove(part);
      }
      finish_folder(step, files, tmp, final_dir, old, root);
      fs::remove_all(old, ec);
    } catch (const std::exception& e) {
      error = e.what();
      if (fs::exists(old, ec) && !fs::exists(final_dir, ec)) ::rename(old.c_str(), final_dir.c_str());
    }
  }
  agree(error, "finish");
  return final_dir.string();
}

bool CheckpointStore::is_step_folder(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::exists(fs::path(dir) / "train_state.json", ec);
}

void CheckpointStore::verify(const std::string& dir, bool weights_only) {
  const fs::path d(dir), manifest_path = d / kManifest;
  if (!fs::is_directory(d)) throw CheckpointError("checkpoint folder '" + dir + "' does not exist.");
  if (!fs::exists(manifest_path)) throw CheckpointError("'" + dir + "' has no manifest.json: its save did not finish.");
  json files;
  try {
    const json m = json::parse(read_text(manifest_path.string()));
    if (m.value("format", std::string()) != kFormat)
      throw CheckpointError("'" + manifest_path.string() + "' is not a \"" + kFormat + "\" manifest.");
    files = m.at("files");
    const bool sharded = files.contains("shards.json");
    for (const char* name : kRequired)
      if (!files.contains(name) && !(sharded && std::string(name).find(".safetensors") != std::string::npos))
        throw CheckpointError("'" + manifest_path.string() + "' does not list " + name + ".");
    for (const auto& [name, entry] : files.items()) {
      const fs::path file = d / name;
      if (weights_only && (name.rfind("optimizer", 0) == 0 || name.rfind("extra", 0) == 0)) continue;
      if (name.find('/') != std::string::npos || !fs::exists(file))
        throw CheckpointError("'" + file.string() + "' is missing (listed in the manifest).");
      const auto bytes = entry.at("bytes").get<uint64_t>();
      const auto crc = entry.at("crc32").get<uint32_t>();
      const FileSum s = checksum_file(file);
      if (s.bytes != bytes)
        throw CheckpointError(
            fmt::format("'{}' has {} bytes, the manifest says {}: it is truncated or was "
                        "overwritten.",
                        file.string(), s.bytes, bytes));
      if (s.crc32 != crc)
        throw CheckpointError(
            fmt::format("'{}' fails its checksum (CRC-32 {:08x}, the manifest says {:08x}): "
                        "it is corrupt.",
                        file.string(), s.crc32, crc));
    }
  } catch (const json::exception& e) {
    throw CheckpointError("'" + manifest_path.string() + "' is not a valid manifest (" + e.what() + ").");
  }
}

std::optional<std::string> CheckpointStore::newest_complete(bool start_over) const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    if (!is_tmp(e.path())) continue;
    log::info("removing '{}', left by an interrupted save", e.path().string());
    std::error_code rm;
    fs::remove_all(e.path(), rm);
  }
  const auto steps = step_folders(root_);
  std::vector<fs::path> damaged;
  std::optional<std::string> found;
  std::string newest_reason;
  for (auto it = steps.rbegin(); it != steps.rend() && !found; ++it) {
    try {
      verify(it->second.string());
      found = it->second.string();
    } catch (const CheckpointError& e) {
      log::warn("skipping checkpoint '{}': {}", it->second.string(), e.what());
      damaged.push_back(it->second);
      if (newest_reason.empty()) newest_reason = e.what();
    }
  }
  if (!found && !damaged.empty() && !start_over)
    throw CheckpointError(fmt::format(
        "none of the {} step folders in '{}' ({} to {}) verifies (the newest: {}); refusing to start from step 0 "
        "over them: repair or move them, or set checkpoint.restart_when_damaged=true to start afresh with them moved "
        "aside.",
        damaged.size(), root_, damaged.back().filename().string(), damaged.front().filename().string(), newest_reason));
  for (const fs::path& dir : damaged) {  // kept for inspection, out of the way of saves and retention
    fs::path aside = dir.string() + ".damaged";
    std::error_code exists;
    for (int n = 2; fs::exists(aside, exists); ++n) aside = dir.string() + ".damaged." + std::to_string(n);
    if (::rename(dir.c_str(), aside.c_str()) == 0)
      log::warn("moved the damaged checkpoint '{}' aside to '{}'", dir.string(), aside.string());
    else
      log::warn("cannot move the damaged checkpoint '{}' aside: {}", dir.string(), std::strerror(errno));
  }
  return found;
}

void CheckpointStore::clean_up(const std::string& protect) const {
  const auto steps = step_folders(root_);
  // Core/checkpoint.py clean_up: the newest `keep` multiples of each rule survive, the union of the rules is kept.
  std::vector<bool> keep(steps.size(), false), ruled(steps.size(), false);
  for (const config::SaveEvery& rule : {dump_, eval_}) {
    if (rule.every <= 0) continue;
    int64_t kept = 0;
    for (size_t i = steps.size(); i-- > 0;) {
      if (steps[i].first % rule.every != 0) continue;
      ruled[i] = true;
      if (rule.keep == 0 || kept++ < rule.keep) keep[i] = true;
    }
  }
  std::error_code ec;
  const fs::path protected_dir = fs::weakly_canonical(protect, ec);
  for (size_t i = 0; i < steps.size(); ++i) {
    if (keep[i] || !ruled[i] || fs::weakly_canonical(steps[i].second, ec) == protected_dir) continue;
    log::info("removing old checkpoint '{}'", steps[i].second.string());
    std::error_code rm;
    fs::remove_all(steps[i].second, rm);
    if (rm) log::warn("cannot remove old checkpoint '{}': {}", steps[i].second.string(), rm.message());
  }
}

CheckpointContents CheckpointStore::load(const std::string& dir) {
  const fs::path d(dir);
  CheckpointContents c;
  if (fs::exists(d / "model.safetensors")) {  // else sharded: ShardedCheckpointReader reads the shards
    c.model = read_safetensors((d / "model.safetensors").string());
    c.optimizer = read_safetensors((d / "optimizer.safetensors").string());
  }
  if (fs::exists(d / "extra.safetensors")) c.extra = read_safetensors((d / "extra.safetensors").string());
  c.params_json = read_text((d / "params.json").string());
  c.train_state_json = read_text((d / "train_state.json").string());
  if (fs::exists(d / kLoraBaseFile)) c.texts[kLoraBaseFile] = read_text((d / kLoraBaseFile).string());
  return c;
}

std::vector<std::string> consolidate(const std::string& step_dir) {
  CheckpointStore::verify(step_dir);
  const fs::path d(step_dir);
  const config::ModelArgs args = read_model_args(step_dir);
  TensorMap master;
  if (read_lora_base(step_dir)) {  // adapters only: with their base's weights
    for (const auto& [name, t] : read_native_weights(step_dir, args).tensors) master.insert(name, t);
  } else {
    master =
        is_sharded_checkpoint(step_dir) ? unflatten(step_dir) : read_safetensors((d / "model.safetensors").string());
  }
  TensorMap out;
  for (const auto& [name, t] : master) {
    if (name == "output.tied_module.weight" || (args.weight_tying && name == "output.weight")) continue;
    out.insert(name, t.is_floating_point() ? t.to(at::kFloat) : t);
  }
  const std::string st = (d / "consolidated.safetensors").string(), pth = (d / "consolidated.pth").string();
  // safetensors refuses shared tensors (the Python library raises on them): the tied duplicate goes only in the .pth.
  write_safetensors(out, st);
  if (args.weight_tying) {
    const at::Tensor* emb = out.find("tok_embeddings.weight");
    if (!emb)
      throw CheckpointError("'" + (d / "model.safetensors").string() +
                            "' has no tok_embeddings.weight, but params.json ties the output to it.");
    // PLM's TiedLinear: state_dict() lists the embedding again as output.tied_module.weight (same storage).
    out.insert("output.tied_module.weight", *emb);
  }
  save_torch_state_dict(out, pth);
  fsync_dir(d);
  return {st, pth};
}

}  // namespace plm::ckpt
