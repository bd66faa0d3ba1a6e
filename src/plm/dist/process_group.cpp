#include "plm/dist/process_group.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>  // USE_C10D_GLOO: set for this file in CMakeLists.txt
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef PLM_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>  // USE_C10D_NCCL: set for this file in CMakeLists.txt
#endif

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "plm/common/log.h"

namespace plm::dist {
namespace {

using Clock = std::chrono::steady_clock;

std::string heartbeat_key(int rank) {
  return "plm/heartbeat/" + std::to_string(rank);
}

std::string seconds(std::chrono::duration<double> d) {
  std::ostringstream s;
  s.precision(d.count() < 10 ? 2 : 0);
  s << std::fixed << d.count() << " s";
  return s.str();
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// The backend's own words, without a C++ backtrace, on one line.
std::string cause(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10 ? c10->what_without_backtrace() : e.what();
  s = s.substr(0, s.find('\n'));
  return s.size() > 300 ? s.substr(0, 300) + "..." : s;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0;
}

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::avg:
      return c10d::ReduceOp::AVG;
    case ReduceOp::max:
      return c10d::ReduceOp::MAX;
    default:
      return c10d::ReduceOp::SUM;
  }
}

void check_dense(const at::Tensor& t, const char* op, const char* what) {
  TORCH_CHECK(t.defined() && t.is_contiguous(), op, ": the ", what, " must be a defined, contiguous tensor");
}

}  // namespace

struct World::Impl {
  LaunchEnv env;
  WorldOptions options;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo, nccl;
  // The heartbeat: a counter in the store that this rank bumps every `beat` until stopped.
  std::chrono::milliseconds beat{1000};
  std::thread heart;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;

  void start_heartbeat() {
    beat = std::clamp(options.timeout / 4, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
    store->add(heartbeat_key(env.rank), 1);  // before the backends' rendezvous: every key exists after it
    heart = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, beat, [this] { return stopping; })) {
        lock.unlock();
        try {
          store->add(heartbeat_key(env.rank), 1);
        } catch (const std::exception&) {
          return;  // the store is gone (rank 0 ended): nothing left to tell
        }
        lock.lock();
      }
    });
  }

  void stop_heartbeat() {
    if (!heart.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_all();
    heart.join();
  }

  // Rank 0 hosts the store: it waits (briefly) until every rank has left, so that no rank's last store request meets
  // a closed socket (TCPStore logs that with a backtrace, which would look like a failure).
  void leave() {
    try {
      store->add("plm/left", 1);
      if (env.rank != 0 || env.agent_store) return;
      const auto until = Clock::now() + std::min<Clock::duration>(options.timeout, std::chrono::seconds(10));
      while (store->add("plm/left", 0) < env.world_size && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } catch (const std::exception&) {
      // the store is gone already: nothing to wait for
    }
  }

  // The other ranks whose heartbeat stood still for 2.5 beats; {0} when the store (on rank 0) is unreachable, {}
  // when it is torchrun's agent's.
  std::vector<int> silent_ranks(bool& store_lost) {
    store_lost = false;
    std::vector<std::string> keys;
    for (int r = 0; r < env.world_size; ++r) keys.push_back(heartbeat_key(r));
    try {
      const auto before = store->multiGet(keys);
      std::this_thread::sleep_for(beat * 5 / 2);
      const auto after = store->multiGet(keys);
      std::vector<int> silent;
      for (int r = 0; r < env.world_size; ++r)
        if (r != env.rank && before[r] == after[r]) silent.push_back(r);
      return silent;
    } catch (const std::exception&) {
      store_lost = true;
      return env.agent_store ? std::vector<int>{} : std::vector<int>{0};
    }
  }

  DistError diagnose(const std::string& op, Clock::duration elapsed, const std::exception& e) {
    bool store_lost = false;
    const std::vector<int> silent = silent_ranks(store_lost);
    const std::string seen = " (seen from rank " + std::to_string(env.rank) + "; backend: " + cause(e) + ")";
    const std::string they = silent.size() == 1 ? "it may have died" : "they may have died";
    std::string what;
    if (store_lost && env.agent_store)
      what = "the rendezvous store (torchrun's agent) stopped answering during the " + op;
    else if (store_lost)
      what = "rank 0, which hosts the rendezvous store, stopped answering during the " + op + ": it may have died";
    else if (silent.empty())
      what = "the " + op + " failed after " + seconds(elapsed) +
             " although every rank is alive: one may be stuck, or running a different collective";
    else if (elapsed >= options.timeout * 9 / 10)
      what = rank_list(silent) + " did not answer the " + op + " within " + seconds(options.timeout) + ": " + they;
    else
      what = rank_list(silent) + " dropped out of the " + op + " after " + seconds(elapsed) + ": " + they;
    return DistError(op, silent, what + seen);
  }

  c10d::Backend& backend_for(const at::Tensor& t, const char* op) {
    if (t.is_cuda()) {
      TORCH_CHECK(nccl, op, ": a CUDA tensor needs a World created with WorldOptions::cuda (PLM_CUDA builds)");
      return *nccl;
    }
    return *gloo;
  }

  // Runs one collective: errors while enqueueing are the caller's (sizes, dtypes), errors while waiting are the
  // job's (a peer died or did not answer) and become a DistError.
  void run(const std::string& op, const std::function<c10::intrusive_ptr<c10d::Work>()>& enqueue) {
    start(op, enqueue).wait();
  }

  Pending start(const std::string& op, const std::function<c10::intrusive_ptr<c10d::Work>()>& enqueue) {
    const auto started = Clock::now();
    c10::intrusive_ptr<c10d::Work> work = enqueue();
    return Pending([this, op, started, work] {
      try {
        work->wait(options.timeout);
      } catch (const std::exception& e) {
        throw diagnose(op, Clock::now() - started, e);
      }
    });
  }
};

World::World(const LaunchEnv& env, const WorldOptions& options) : impl_(std::make_unique<Impl>()) {
  // A write to a peer that has died raises SIGPIPE, whose default action kills this rank silently before it can
  // say which peer went away (seen as a survivor dying of signal 13 when rank 0 exited). Python, and so every
  // torch.distributed program, ignores SIGPIPE; c10d and Gloo then report EPIPE as an error, which diagnose() names.
  std::signal(SIGPIPE, SIG_IGN);
  Impl& m = *impl_;
  m.env = env;
  m.options = options;
#ifndef PLM_CUDA
  if (options.cuda) throw std::invalid_argument("WorldOptions::cuda needs a CUDA build of plm (-DPLM_CUDA=ON)");
#endif
  TORCH_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "World: rank ", env.rank,
              " is not in a world of ", env.world_size);
  if (env.world_size == 1) return;

  const auto start = Clock::now();
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = env.world_size;
    so.waitWorkers = true;
    so.timeout = options.timeout;
    m.store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    m.start_heartbeat();

    auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {  // torch's variable, comma-separated
      std::stringstream names(ifname);
      for (std::string name; std::getline(names, name, ',');)
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
    } else if (is_loopback(env.master_addr)) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    m.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", m.store),
                                                         env.rank, env.world_size, gloo_options);
#ifdef PLM_CUDA
    if (options.cuda) {
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout;
      m.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", m.store),
                                                           env.rank, env.world_size, nccl_options);
    }
#endif
  } catch (const std::exception& e) {
    m.stop_heartbeat();
    throw DistError("rendezvous", {},
                    "rank " + std::to_string(env.rank) + " could not meet the other " +
                        std::to_string(env.world_size - 1) + " ranks at " + where + " within " +
                        seconds(options.timeout) + " (after " + seconds(Clock::now() - start) +
                        "): check that every rank was started, with the same MASTER_ADDR, MASTER_PORT and "
                        "WORLD_SIZE (backend: " +
                        cause(e) + ")");
  }
  log::debug("rank {} of {} joined at {} ({} launch)", env.rank, env.world_size, where, launcher_name(env.launcher));
}

World::~World() {
  impl_->stop_heartbeat();
  if (impl_->store) impl_->leave();
  impl_->nccl.reset();
  impl_->gloo.reset();
  impl_->store.reset();
}

int World::rank() const {
  return impl_->env.rank;
}
int World::size() const {
  return impl_->env.world_size;
}
int World::local_rank() const {
  return impl_->env.local_rank;
}
std::chrono::milliseconds World::timeout() const {
  return impl_->options.timeout;
}

void World::all_reduce(const at::Tensor& t, ReduceOp op) {
  check_dense(t, "all_reduce", "tensor");
  if (size() == 1) return;
  impl_->run("all_reduce", [&] {
    std::vector<at::Tensor> ts{t};
    c10d::AllreduceOptions o;
    o.reduceOp = to_c10d(op);
    o.timeout = impl_->options.timeout;
    return impl_->backend_for(t, "all_reduce").allreduce(ts, o);
  });
}

Pending& Pending::operator=(Pending&& other) noexcept {
  if (this != &other) {
    if (wait_) {
      try {
        wait();
      } catch (...) {
      }
    }
    wait_ = std::move(other.wait_);
    other.wait_ = nullptr;
  }
  return *this;
}

Pending::~Pending() {
  if (!wait_) return;
  try {
    wait();
  } catch (...) {
  }
}

void Pending::wait() {
  if (!wait_) return;
  const std::function<void()> w = std::move(wait_);
  wait_ = nullptr;
  w();
}

void World::all_gather_into_tensor(const at::Tensor& output, const at::Tensor& input) {
  all_gather_into_tensor_async(output, input).wait();
}

void World::reduce_scatter_tensor(const at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  reduce_scatter_tensor_async(output, input, op).wait();
}

Pending World::all_gather_into_tensor_async(const at::Tensor& output, const at::Tensor& input) {
  check_dense(output, "all_gather_into_tensor", "output");
  check_dense(input, "all_gather_into_tensor", "input");
  TORCH_CHECK(
      output.numel() == size() * input.numel() && output.dtype() == input.dtype() && output.device() == input.device(),
      "all_gather_into_tensor: the output must hold ", size(), " x ", input.numel(), " elements of the input's ",
      "dtype and device; got ", output.numel(), " ", output.dtype(), " on ", output.device());
  if (size() == 1) {
    output.view(-1).copy_(input.view(-1));
    return {};
  }
  return impl_->start("all_gather_into_tensor", [&] {
    at::Tensor out = output, in = input;
    c10d::AllgatherOptions o;
    o.timeout = impl_->options.timeout;
    return impl_->backend_for(input, "all_gather_into_tensor")._allgather_base(out, in, o);
  });
}

Pending World::reduce_scatter_tensor_async(const at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  check_dense(output, "reduce_scatter_tensor", "output");
  check_dense(input, "reduce_scatter_tensor", "input");
  TORCH_CHECK(
      input.numel() == size() * output.numel() && output.dtype() == input.dtype() && output.device() == input.device(),
      "reduce_scatter_tensor: the input must hold ", size(), " x ", output.numel(), " elements of the output's ",
      "dtype and device; got ", input.numel(), " ", input.dtype(), " on ", input.device());
  if (size() == 1) {
    output.view(-1).copy_(input.view(-1));
    return {};
  }
  return impl_->start("reduce_scatter_tensor", [&] {
    at::Tensor out = output, in = input;
    c10d::ReduceScatterOptions o;
    o.reduceOp = to_c10d(op);
    o.timeout = impl_->options.timeout;
    return impl_->backend_for(input, "reduce_scatter_tensor")._reduce_scatter_base(out, in, o);
  });
}

void World::broadcast(const at::Tensor& t, int root) {
  check_dense(t, "broadcast", "tensor");
  TORCH_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " is not a rank of a world of ", size());
  if (size() == 1) return;
  impl_->run("broadcast", [&] {
    std::vector<at::Tensor> ts{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = impl_->options.timeout;
    return impl_->backend_for(t, "broadcast").broadcast(ts, o);
  });
}

void World::barrier() {
  if (size() == 1) return;
  impl_->run("barrier", [&] {
    c10d::BarrierOptions o;
    o.timeout = impl_->options.timeout;
    return impl_->gloo->barrier(o);
  });
}

int64_t shard_numel(int64_t numel, int world_size) {
  TORCH_CHECK(numel >= 0 && world_size >= 1, "shard_numel: bad numel ", numel, " or world size ", world_size);
  return (numel + world_size - 1) / world_size;
}

}  // namespace plm::dist
