// The ranks of one job and the collectives between them (docs/ARCHITECTURE.md "Distributed").
// A World joins the rendezvous described by a LaunchEnv (c10d TCPStore on MASTER_ADDR:MASTER_PORT, hosted by rank 0)
// and runs collectives through c10d: Gloo for CPU tensors, NCCL for CUDA tensors (PLM_CUDA builds).
//
// Every rank must issue the same collectives, with the same sizes, in the same order (docs/ARCHITECTURE.md, sharding
// pitfall 9: Gloo aborts the process on a size mismatch and same-sized collectives silently swap data).
//
// Failure contract: a rank whose peer died or went silent (killed, SIGSTOPped, hung) ends within `timeout`. Each
// collective's backend wait is `timeout` minus a diagnosis budget of 4 heartbeats (at most 1/2 of `timeout`); when it
// fails, the call throws DistError naming the operation and the ranks that stopped sending heartbeats, e.g.
// "rank 1 did not answer the all_reduce within 30 s: it may have died". Each rank of a World > 1 bumps a counter in
// the store every timeout/8 (at most 1 s) from a background thread with a store client of its own; a rank whose
// counter stands still is reported silent, and a store that does not answer names rank 0, its host. No store call
// that a failure path waits for is unbounded: a call that passes its deadline is abandoned on its thread, never
// joined. After the first failure every later wait rethrows it at once, and the destructor leaves the backends'
// threads to the process's exit rather than join them.
// With NCCL, a collective that times out on the GPU is also caught by ProcessGroupNCCL's watchdog, which tears the
// process down (TORCH_NCCL_ASYNC_ERROR_HANDLING=1, PLM's setting); `plm launch` or srun then reports the rank.
//
// A World of size 1 creates no store and no backend: its collectives are local copies (or nothing).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "plm/dist/env.h"

namespace plm::dist {

/// A collective or the rendezvous failed. `operation()` is "all_reduce", "rendezvous", ...; `ranks()` the ranks
/// seen to have stopped (empty when none could be named).
class DistError : public std::runtime_error {
 public:
  DistError(std::string operation, std::vector<int> ranks, const std::string& what)
      : std::runtime_error(what), operation_(std::move(operation)), ranks_(std::move(ranks)) {}
  const std::string& operation() const { return operation_; }
  const std::vector<int>& ranks() const { return ranks_; }

 private:
  std::string operation_;
  std::vector<int> ranks_;
};

enum class ReduceOp { sum, avg, max };

/// A collective in flight (World's *_async calls). wait() finishes it with the synchronous calls' failure contract
/// (DistError naming the silent ranks); a Pending that was never waited for is waited for by its destructor, which
/// swallows errors (wait explicitly to see them). With NCCL, wait() makes the current CUDA stream wait for the
/// collective's stream; the host does not block.
class Pending {
 public:
  Pending() = default;
  explicit Pending(std::function<void()> wait) : wait_(std::move(wait)) {}
  Pending(Pending&& other) noexcept : wait_(std::move(other.wait_)) { other.wait_ = nullptr; }
  Pending& operator=(Pending&& other) noexcept;
  ~Pending();
  void wait();
  bool active() const { return static_cast<bool>(wait_); }

 private:
  std::function<void()> wait_;
};

struct WorldOptions {
  /// How long the rendezvous and each collective may wait for the other ranks, the diagnosis of a failure included
  /// (config `distributed.timeout_s`).
  std::chrono::milliseconds timeout = std::chrono::seconds(600);
  /// Also create an NCCL backend for CUDA tensors. Only in PLM_CUDA builds (else World throws
  /// std::invalid_argument); the caller selects the GPU (local_rank) before the first CUDA collective.
  bool cuda = false;
};

/// This process's membership in the job. Not copyable or movable; destroy it before the process exits normally:
/// the destructor stops the heartbeat, and rank 0, which hosts the store, waits up to min(timeout, 10 s) for the
/// other ranks to leave before closing it (after a failure, only for the ranks not found silent, at most 6 beats).
class World {
 public:
  /// Joins the job: for world_size > 1 connects to (rank 0: hosts) the TCPStore at master_addr:master_port and
  /// creates the backends. Throws DistError("rendezvous") when not every rank arrives within the timeout.
  explicit World(const LaunchEnv& env, const WorldOptions& options = {});
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const;
  int size() const;
  int local_rank() const;
  std::chrono::milliseconds timeout() const;

  /// In place over all ranks. `t`: contiguous, any dtype the backend supports (Gloo: float, bf16, half, ints).
  void all_reduce(const at::Tensor& t, ReduceOp op = ReduceOp::sum);

  /// output = cat(input of rank 0, ..., input of rank size-1). Both contiguous, same dtype and device;
  /// output.numel() == size() * input.numel() (pad the input to make ragged sizes equal, see shard_numel).
  void all_gather_into_tensor(const at::Tensor& output, const at::Tensor& input);

  /// output = chunk `rank()` of reduce(input over ranks); input.numel() == size() * output.numel().
  void reduce_scatter_tensor(const at::Tensor& output, const at::Tensor& input, ReduceOp op = ReduceOp::sum);

  /// The same two, started and returned in flight: `output` (and `input`) must stay alive until wait(). Every rank
  /// must start the same collectives in the same order, as for the synchronous calls; several may be in flight.
  [[nodiscard]] Pending all_gather_into_tensor_async(const at::Tensor& output, const at::Tensor& input);
  [[nodiscard]] Pending reduce_scatter_tensor_async(const at::Tensor& output, const at::Tensor& input,
                                                    ReduceOp op = ReduceOp::sum);

  /// In place: every rank's `t` becomes root's.
  void broadcast(const at::Tensor& t, int root = 0);

  /// Returns once every rank has called it.
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The shard length of a flat buffer of `numel` elements zero-padded to a multiple of `world_size`:
/// ceil(numel / world_size). The padding is world_size * shard_numel - numel (docs/ARCHITECTURE.md, sharding pitfall
/// 10).
int64_t shard_numel(int64_t numel, int world_size);

}  // namespace plm::dist
