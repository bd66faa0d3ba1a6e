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
#include <optional>
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

// Runs `call` on a thread of its own and waits for it at most `deadline`: nullopt when it did not finish in time.
// The thread is then left behind (detached, owning what `call` captured), never joined: a store call to a rank 0
// that was stopped (SIGSTOP, a hung host) never returns, and waiting for it would hang this rank too. Rethrows what
// `call` threw.
template <class T>
std::optional<T> within(Clock::duration deadline, std::function<T()> call) {
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::optional<T> value;
    std::exception_ptr error;
  };
  auto state = std::make_shared<State>();
  std::thread([state, call = std::move(call)] {
    std::optional<T> value;
    std::exception_ptr error;
    try {
      value = call();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(state->mu);
    state->value = std::move(value);
    state->error = error;
    state->done = true;
    state->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(state->mu);
  if (!state->cv.wait_for(lock, deadline, [&] { return state->done; })) return std::nullopt;
  if (state->error) std::rethrow_exception(state->error);
  return std::move(state->value);
}

// The heartbeat's state, shared by the World and its heartbeat thread, so that a thread abandoned inside a store call
// still owns what it touches. The heartbeat has a store client of its own: a call of its that blocks holds no lock
// any other part of the World needs.
struct Pulse {
  c10::intrusive_ptr<c10d::Store> store;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool finished = false;    // the thread has returned
  bool store_gone = false;  // a bump failed: the store's process closed its socket
};

}  // namespace

struct World::Impl {
  LaunchEnv env;
  WorldOptions options;
  c10::intrusive_ptr<c10d::Store> store;  // the rendezvous, the backends' bootstrap and leave()
  c10::intrusive_ptr<c10d::Backend> gloo, nccl;
  // The heartbeat: a counter in the store that this rank bumps every `beat` until stopped.
  std::chrono::milliseconds beat{1000};
  std::shared_ptr<Pulse> pulse;
  std::thread heart;
  // The first failure a collective ended in; every later wait rethrows it at once (the job is over).
  std::mutex failure_mu;
  std::optional<DistError> failure;

  // The time budget of one collective (docs/ARCHITECTURE.md "Distributed"): the backend waits for the peers at most
  // `timeout` minus what diagnose() may take, so that a rank whose peer went silent ends within `timeout`.
  std::chrono::milliseconds diagnosis_budget() const { return beat * 4; }
  std::chrono::milliseconds collective_timeout() const {
    return std::max(options.timeout - diagnosis_budget(), options.timeout / 2);
  }

  c10::intrusive_ptr<c10d::Store> connect_client() const {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = false;
    so.waitWorkers = false;
    so.timeout = options.timeout;
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  }

  void start_heartbeat() {
    // timeout/8: a loaded machine may delay a live rank's bump by a fraction of a second, which must not pass for
    // silence (timeout/16 did, in the 3 s unit tests beside a compiler); the diagnosis then takes at most timeout/2.
    beat = std::clamp(options.timeout / 8, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
    pulse = std::make_shared<Pulse>();
    pulse->store = connect_client();
    const std::string key = heartbeat_key(env.rank);
    pulse->store->add(key, 1);  // before the backends' rendezvous: every key exists after it
    heart = std::thread([pulse = pulse, key, beat = beat] {
      std::unique_lock<std::mutex> lock(pulse->mu);
      while (!pulse->cv.wait_for(lock, beat, [&] { return pulse->stopping; })) {
        lock.unlock();
        bool answered = true;
        try {
          pulse->store->add(key, 1);
        } catch (const std::exception&) {
          answered = false;  // the store is gone (rank 0 ended): nothing left to tell
        }
        lock.lock();
        if (!answered) {
          pulse->store_gone = true;
          break;
        }
      }
      pulse->finished = true;
      pulse->cv.notify_all();
    });
  }

  // Stops the heartbeat; a thread still blocked in a store call after two beats (after a failure: at once) is left
  // behind, not joined.
  void stop_heartbeat() {
    if (!heart.joinable()) return;
    const auto patience = failed() ? Clock::duration::zero() : Clock::duration(beat * 2);
    std::unique_lock<std::mutex> lock(pulse->mu);
    pulse->stopping = true;
    pulse->cv.notify_all();
    const bool finished = pulse->cv.wait_for(lock, patience, [&] { return pulse->finished; });
    lock.unlock();
    if (finished)
      heart.join();
    else
      heart.detach();
  }

  bool failed() {
    std::lock_guard<std::mutex> lock(failure_mu);
    return failure.has_value();
  }

  // Rank 0 hosts the store: it waits (briefly) until the other ranks have left, so that no rank's last store request
  // meets a closed socket (TCPStore logs that with a backtrace, which would look like a failure) and so that after a
  // failure the survivors can finish their own diagnosis, which reads the store. After a failure it waits only for
  // the ranks not found silent, and at most the diagnosis budget and two beats. Bounded everywhere: a store that does
  // not answer (its host stopped) is left behind.
  void leave() {
    const bool host = env.rank == 0 && !env.agent_store;
    int expected = env.world_size;
    Clock::duration wait = std::min<Clock::duration>(options.timeout, std::chrono::seconds(10));
    Clock::duration deadline = wait + beat;
    {
      std::lock_guard<std::mutex> lock(failure_mu);
      if (failure) {
        const std::vector<int>& silent = failure->ranks();
        if (std::find(silent.begin(), silent.end(), 0) != silent.end()) return;  // the store's host is gone
        expected -= static_cast<int>(silent.size());
        wait = diagnosis_budget() + beat * 2;
        deadline = host ? wait + beat : beat * 2;
      }
    }
    try {
      within<bool>(deadline, [store = store, host, expected, wait] {
        store->add("plm/left", 1);
        const auto until = Clock::now() + wait;
        while (host && store->add("plm/left", 0) < expected && Clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return true;
      });
    } catch (const std::exception&) {
      // the store is gone already: nothing to wait for
    }
  }

  // The other ranks whose heartbeat stood still for 2.5 beats; {0} when the store (on rank 0) is gone or does not
  // answer within 4 beats, {} when it is torchrun's agent's. Never blocks longer than diagnosis_budget().
  std::vector<int> silent_ranks(bool& store_lost) {
    const auto window = beat * 5 / 2;
    {
      std::lock_guard<std::mutex> lock(pulse->mu);
      store_lost = pulse->store_gone;
    }
    if (!store_lost) {
      std::vector<std::string> keys;
      for (int r = 0; r < env.world_size; ++r) keys.push_back(heartbeat_key(r));
      try {
        const std::optional<std::vector<int>> silent =
            within<std::vector<int>>(diagnosis_budget(), [store = pulse->store, keys, window, rank = env.rank] {
              const auto before = store->multiGet(keys);
              std::this_thread::sleep_for(window);
              const auto after = store->multiGet(keys);
              std::vector<int> silent;
              for (int r = 0; r < static_cast<int>(keys.size()); ++r)
                if (r != rank && before[r] == after[r]) silent.push_back(r);
              return silent;
            });
        if (silent) return *silent;
      } catch (const std::exception&) {
      }
      store_lost = true;
    }
    return env.agent_store ? std::vector<int>{} : std::vector<int>{0};
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
      what = "rank 0, which hosts the rendezvous store, stopped answering during the " + op +
             ": it may have died or been stopped";
    else if (silent.empty())
      what = "the " + op + " failed after " + seconds(elapsed) +
             " although every rank is alive: one may be stuck, or running a different collective";
    else if (elapsed >= collective_timeout() * 9 / 10)
      what = rank_list(silent) + " did not answer the " + op + " within " + seconds(options.timeout) + ": " + they;
    else
      what = rank_list(silent) + " dropped out of the " + op + " after " + seconds(elapsed) + ": " + they;
    DistError error(op, silent, what + seen);
    std::lock_guard<std::mutex> lock(failure_mu);
    if (!failure) failure = error;
    return error;
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

  // The wait's deadline counts from the start, so that collectives in flight together all end by the same time.
  // Once one collective has failed, the others' waits rethrow that failure at once: their peers are the same.
  Pending start(const std::string& op, const std::function<c10::intrusive_ptr<c10d::Work>()>& enqueue) {
    const auto started = Clock::now();
    c10::intrusive_ptr<c10d::Work> work = enqueue();
    return Pending([this, op, started, work] {
      {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (failure) throw *failure;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(started + collective_timeout() - Clock::now());
      try {
        work->wait(std::max(left, std::chrono::milliseconds(1)));  // 0 would mean "no timeout"
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
  if (impl_->failed()) {
    // The job is over: the backends' threads may be blocked on a peer that will never answer, and destroying them
    // joins those threads. They are left to the process's exit instead (never join a blocked thread).
    (void)impl_->nccl.release();
    (void)impl_->gloo.release();
    (void)impl_->store.release();
    return;
  }
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
    o.timeout = impl_->collective_timeout();
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
    o.timeout = impl_->collective_timeout();
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
    o.timeout = impl_->collective_timeout();
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
    o.timeout = impl_->collective_timeout();
    return impl_->backend_for(t, "broadcast").broadcast(ts, o);
  });
}

void World::barrier() {
  if (size() == 1) return;
  impl_->run("barrier", [&] {
    c10d::BarrierOptions o;
    o.timeout = impl_->collective_timeout();
    return impl_->gloo->barrier(o);
  });
}

int64_t shard_numel(int64_t numel, int world_size) {
  TORCH_CHECK(numel >= 0 && world_size >= 1, "shard_numel: bad numel ", numel, " or world size ", world_size);
  return (numel + world_size - 1) / world_size;
}

}  // namespace plm::dist
