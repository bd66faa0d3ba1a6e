// dist/: launch-environment parsing (torchrun, SLURM, single), hostlists, PLM's SLURM port, and c10d collectives
// across forked processes on CPU (Gloo), including the failure contract: a dead rank is named, nobody hangs.
#include "torch_catch.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plm/dist/env.h"
#include "plm/dist/process_group.h"
#include "test_helpers.h"

using namespace plm::dist;
using Clock = std::chrono::steady_clock;

namespace {

EnvLookup env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

std::string error_of(const std::function<void()>& f) {
  return ::error_of<LaunchEnvError>(f);
}

LaunchEnv local_env(int rank, int world, int port) {
  LaunchEnv e;
  e.launcher = Launcher::torchrun;
  e.rank = e.local_rank = rank;
  e.world_size = world;
  e.master_port = port;
  return e;
}

struct RankResult {
  int status = -1;     // waitpid status
  std::string output;  // what the rank wrote to its pipe
};

// Forks `world` processes; rank r runs body(r, port, out) and exits with its return value (1 on an exception).
// Waits for every rank to end: a rank that hangs is ended by ctest's per-test TIMEOUT, which ends this process,
// and with it the ranks (they die with their parent).
std::vector<RankResult> run_ranks(int world, const std::function<int(int, int, std::ostream&)>& body) {
  const int port = find_free_port();
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int r = 0; r < world; ++r) {
    int fd[2];
    REQUIRE(::pipe(fd) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(fd[0]);
      std::ostringstream out;
      int rc = 1;
      try {
        rc = body(r, port, out);
      } catch (const std::exception& e) {
        out << "exception: " << e.what();
      }
      const std::string s = out.str();
      (void)!::write(fd[1], s.data(), s.size());
      ::_exit(rc);
    }
    ::close(fd[1]);
    pids.push_back(pid);
    fds.push_back(fd[0]);
  }
  std::vector<RankResult> results(world);
  for (int r = 0; r < world; ++r) {
    ::waitpid(pids[r], &results[r].status, 0);
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[r], buf, sizeof(buf))) > 0;) results[r].output.append(buf, static_cast<size_t>(n));
    ::close(fds[r]);
  }
  return results;
}

bool exited_ok(const RankResult& r) {
  return WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
}

WorldOptions short_timeout(int ms) {
  WorldOptions o;
  o.timeout = std::chrono::milliseconds(ms);
  return o;
}

}  // namespace

TEST_CASE("launch_env reads torchrun variables and names a missing or bad one", "[dist]") {
  std::map<std::string, std::string> v = {
      {"LOCAL_RANK", "1"},      {"RANK", "5"},          {"WORLD_SIZE", "8"},  {"MASTER_ADDR", "10.0.0.2"},
      {"MASTER_PORT", "29501"}, {"SLURM_JOB_ID", "77"}, {"SLURM_PROCID", "0"}};
  const LaunchEnv e = launch_env(env_of(v));
  CHECK(e.launcher == Launcher::torchrun);  // LOCAL_RANK wins over SLURM, as in PLM
  CHECK(e.rank == 5);
  CHECK(e.local_rank == 1);
  CHECK(e.world_size == 8);
  CHECK(e.master_addr == "10.0.0.2");
  CHECK(e.master_port == 29501);
  CHECK_FALSE(e.agent_store);
  v["TORCHELASTIC_USE_AGENT_STORE"] = "True";  // torchrun's agent hosts the store: rank 0 must not bind the port
  CHECK(launch_env(env_of(v)).agent_store);
  v.erase("TORCHELASTIC_USE_AGENT_STORE");

  auto without = [&](const std::string& name) {
    auto w = v;
    w.erase(name);
    return error_of([&] { launch_env(env_of(w)); });
  };
  CHECK_THAT(without("MASTER_PORT"), Catch::Contains("MASTER_PORT is not set"));
  CHECK_THAT(without("WORLD_SIZE"), Catch::Contains("WORLD_SIZE"));
  CHECK_THAT(without("MASTER_ADDR"), Catch::Contains("MASTER_ADDR"));
  auto with = [&](const std::string& name, const std::string& value) {
    auto w = v;
    w[name] = value;
    return error_of([&] { launch_env(env_of(w)); });
  };
  CHECK_THAT(with("RANK", "x1"), Catch::Contains("RANK='x1'"));
  CHECK_THAT(with("RANK", "8"), Catch::Contains("RANK=8 is not below WORLD_SIZE=8"));
  CHECK_THAT(with("MASTER_PORT", "70000"), Catch::Contains("MASTER_PORT='70000'"));
  CHECK_THAT(with("WORLD_SIZE", "0"), Catch::Contains("WORLD_SIZE='0'"));
}

TEST_CASE("launch_env reads srun variables with the hostlist and PLM's port", "[dist]") {
  std::map<std::string, std::string> v = {{"SLURM_JOB_ID", "12345"},
                                          {"SLURM_PROCID", "3"},
                                          {"SLURM_NTASKS", "8"},
                                          {"SLURM_LOCALID", "1"},
                                          {"SLURM_JOB_NODELIST", "node[01-03,07],gpu5"}};
  const LaunchEnv e = launch_env(env_of(v));
  CHECK(e.launcher == Launcher::slurm);
  CHECK(e.rank == 3);
  CHECK(e.local_rank == 1);
  CHECK(e.world_size == 8);
  CHECK(e.master_addr == "node01");
  CHECK(e.master_port == 47303);  // python: random.Random(12345).randint(20000, 60000)

  for (const char* name : {"SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST"}) {
    auto w = v;
    w.erase(name);
    CHECK_THAT(error_of([&] { launch_env(env_of(w)); }), Catch::Contains(std::string(name) + " is not set"));
  }
  v["SLURM_JOB_ID"] = "12a";
  CHECK_THAT(error_of([&] { launch_env(env_of(v)); }), Catch::Contains("SLURM_JOB_ID='12a'"));
  v["SLURM_JOB_ID"] = "12345";
  v["SLURM_PROCID"] = "8";
  CHECK_THAT(error_of([&] { launch_env(env_of(v)); }), Catch::Contains("SLURM_PROCID=8 is not below SLURM_NTASKS=8"));
}

TEST_CASE("launch_env is a single process without launcher variables or inside salloc", "[dist]") {
  for (const auto& vars : {std::map<std::string, std::string>{},
                           std::map<std::string, std::string>{{"SLURM_JOB_ID", "5"}, {"SLURM_NTASKS", "4"}},
                           std::map<std::string, std::string>{{"RANK", "3"}, {"WORLD_SIZE", "4"}}}) {
    const LaunchEnv e = launch_env(env_of(vars));
    CHECK(e.launcher == Launcher::single);
    CHECK(e.rank == 0);
    CHECK(e.world_size == 1);
    CHECK(e.master_addr == "127.0.0.1");
  }
}

TEST_CASE("expand_hostlist expands as scontrol show hostnames does", "[dist]") {
  using V = std::vector<std::string>;
  CHECK(expand_hostlist("node[01-03,07],gpu5") == V{"node01", "node02", "node03", "node07", "gpu5"});
  CHECK(expand_hostlist("gpu5") == V{"gpu5"});
  CHECK(expand_hostlist("a1,b2") == V{"a1", "b2"});
  CHECK(expand_hostlist("n[8-11]") == V{"n8", "n9", "n10", "n11"});
  CHECK(expand_hostlist("n[098-101]-ib") == V{"n098-ib", "n099-ib", "n100-ib", "n101-ib"});
  CHECK(expand_hostlist("r[1-2]n[1-2]") == V{"r1n1", "r1n2", "r2n1", "r2n2"});
  CHECK(expand_hostlist("x[3],y[0-1]") == V{"x3", "y0", "y1"});
  for (const char* bad : {"node[01-03", "node01]", "node[3-1]", "node[a-b]", "a,,b", "node[]"})
    CHECK_THAT(error_of([&] { expand_hostlist(bad); }), Catch::Contains("SLURM_JOB_NODELIST"));
}

TEST_CASE("slurm_master_port is Python's random.Random(job_id).randint(20000, 60000)", "[dist]") {
  // Values printed by CPython 3.11.
  CHECK(slurm_master_port(0) == 45247);
  CHECK(slurm_master_port(1) == 28805);
  CHECK(slurm_master_port(-1) == 28805);
  CHECK(slurm_master_port(12345) == 47303);
  CHECK(slurm_master_port(4294967295LL) == 33316);
  CHECK(slurm_master_port(4294967296LL) == 27405);
  CHECK(slurm_master_port(987654321012LL) == 20795);
  CHECK(slurm_master_port(9223372036854775807LL) == 40751);

  // And against the live interpreter over many ids, when the test Python is there.
  const std::string python = PLM_PYTHON;
  if (::access(python.c_str(), X_OK) != 0) {
    WARN("no Python at " << python << ": only the recorded values were checked");
    return;
  }
  const std::string cmd = python +
                          " -c \"import random; print(' '.join(str(random.Random(j).randint(20000, 60000)) "
                          "for j in list(range(0, 3000, 7)) + [2**32 + 5, 2**40 + 3, 10**15 + 1]))\"";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string text;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) text.append(buf, n);
  REQUIRE(::pclose(p) == 0);
  std::vector<int64_t> ids;
  for (int64_t j = 0; j < 3000; j += 7) ids.push_back(j);
  ids.insert(ids.end(), {(1LL << 32) + 5, (1LL << 40) + 3, 1000000000000001LL});
  std::istringstream in(text);
  int mismatches = 0;
  size_t n = 0;
  for (int port; in >> port; ++n)
    if (n < ids.size() && port != slurm_master_port(ids[n])) ++mismatches;
  CHECK(n == ids.size());
  CHECK(mismatches == 0);
}

TEST_CASE("a World of 1 needs no store and its collectives are local", "[dist]") {
  World w(LaunchEnv{});  // master_port 0: nothing may listen or connect
  CHECK(w.size() == 1);
  CHECK(w.rank() == 0);
  const at::Tensor t = at::arange(5, at::kFloat);
  w.all_reduce(t, ReduceOp::avg);
  CHECK(at::equal(t, at::arange(5, at::kFloat)));
  const at::Tensor out = at::zeros({5});
  w.all_gather_into_tensor(out, t);
  CHECK(at::equal(out, t));
  const at::Tensor shard = at::zeros({5});
  w.reduce_scatter_tensor(shard, t);
  CHECK(at::equal(shard, t));
  w.broadcast(t);
  w.barrier();
  CHECK_THROWS(w.all_gather_into_tensor(at::zeros({4}), t));  // sizes are checked even alone
  CHECK(shard_numel(7, 3) == 3);
  CHECK(shard_numel(6, 3) == 2);
  CHECK(shard_numel(0, 2) == 0);
}

TEST_CASE("Gloo collectives across 2 and 3 processes, with padded ragged sizes", "[dist]") {
  for (const int world : {2, 3}) {
    const auto results = run_ranks(world, [world](int rank, int port, std::ostream& out) {
      World w(local_env(rank, world, port), short_timeout(30000));
      int bad = 0;
      auto expect = [&](bool ok, const std::string& what) {
        if (ok) return;
        out << "rank " << rank << ": " << what << "\n";
        ++bad;
      };
      const double W = world, R = rank;
      at::Tensor t = at::full({3}, R + 1, at::kFloat);
      w.all_reduce(t, ReduceOp::sum);
      expect(at::allclose(t, at::full({3}, W * (W + 1) / 2)), "all_reduce sum");
      t = at::full({3}, R + 1, at::kFloat);
      w.all_reduce(t, ReduceOp::avg);
      expect(at::allclose(t, at::full({3}, (W + 1) / 2)), "all_reduce avg");
      t = at::full({2}, R * 10, at::kBFloat16);
      w.all_reduce(t, ReduceOp::max);
      expect(at::equal(t, at::full({2}, (W - 1) * 10, at::kBFloat16)), "all_reduce max bf16");

      // A flat unit of 7 elements: padded to a multiple of the world size, gathered, padding dropped.
      const int64_t numel = 7, S = shard_numel(numel, world);
      const at::Tensor full = at::arange(numel, at::kFloat) * 1.5;
      const at::Tensor padded = at::cat({full, at::zeros({S * world - numel})});
      const at::Tensor shard = padded.narrow(0, rank * S, S).clone();
      const at::Tensor gathered = at::empty({S * world});
      w.all_gather_into_tensor(gathered, shard);
      expect(at::equal(gathered.narrow(0, 0, numel), full), "all_gather_into_tensor of a padded unit");
      expect(at::equal(gathered.narrow(0, numel, S * world - numel), at::zeros({S * world - numel})), "padding");

      // Reduce-scatter a padded gradient: every rank contributes (rank + 1) * padded.
      const at::Tensor grad_shard = at::empty({S});
      w.reduce_scatter_tensor(grad_shard, padded * (R + 1), ReduceOp::sum);
      expect(at::allclose(grad_shard, padded.narrow(0, rank * S, S) * (W * (W + 1) / 2)), "reduce_scatter sum");
      w.reduce_scatter_tensor(grad_shard, padded * (R + 1), ReduceOp::avg);
      expect(at::allclose(grad_shard, padded.narrow(0, rank * S, S) * ((W + 1) / 2)), "reduce_scatter avg");

      const at::Tensor b = at::full({4}, R, at::kLong);
      w.broadcast(b, world - 1);
      expect(at::equal(b, at::full({4}, world - 1, at::kLong)), "broadcast from the last rank");
      w.barrier();
      return bad;
    });
    for (int r = 0; r < world; ++r) {
      INFO("world " << world << " rank " << r << ": " << results[r].output);
      CHECK(exited_ok(results[r]));
    }
  }
}

namespace {

// Ranks 0..world-1 do one good all_reduce; then `victim` dies by `die` and the others all_reduce again, which must
// throw a DistError naming the victim (after about the 3 s timeout; the time is reported, not asserted). A survivor
// returns 0 when the contract held.
std::vector<RankResult> kill_one(int world, int victim, const std::function<void()>& die, std::ostream& log) {
  auto results = run_ranks(world, [=](int rank, int port, std::ostream& out) {
    World w(local_env(rank, world, port), short_timeout(3000));
    const at::Tensor t = at::ones({4});
    w.all_reduce(t);
    if (rank == victim) die();
    const auto start = Clock::now();
    try {
      w.all_reduce(t);
      out << "the all_reduce without rank " << victim << " returned";
      return 1;
    } catch (const DistError& e) {
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      out << e.what() << " [after " << s << " s]";
      const bool named = e.ranks() == std::vector<int>{victim} && e.operation() == "all_reduce" &&
                         std::string(e.what()).find("rank " + std::to_string(victim)) != std::string::npos;
      return named ? 0 : 1;
    }
  });
  for (int r = 0; r < world; ++r) {
    const int st = results[r].status;
    log << "rank " << r << " ("
        << (WIFEXITED(st) ? "exit " + std::to_string(WEXITSTATUS(st)) : "signal " + std::to_string(WTERMSIG(st)))
        << "): " << results[r].output << "\n";
  }
  return results;
}

}  // namespace

TEST_CASE("a SIGKILLed rank makes the others throw a DistError naming it instead of hanging", "[dist]") {
  std::ostringstream log;
  const auto results = kill_one(
      3, 2, [] { ::raise(SIGKILL); }, log);
  INFO(log.str());
  CHECK(exited_ok(results[0]));
  CHECK(exited_ok(results[1]));
  CHECK((WIFSIGNALED(results[2].status) && WTERMSIG(results[2].status) == SIGKILL));
}

TEST_CASE("rank 0 exiting, which hosts the store, is named too", "[dist]") {
  std::ostringstream log;
  const auto results = kill_one(
      3, 0, [] { ::_exit(0); }, log);
  INFO(log.str());
  CHECK(exited_ok(results[1]));
  CHECK(exited_ok(results[2]));
  CHECK_THAT(results[1].output, Catch::Contains("hosts the rendezvous store"));
}

TEST_CASE("a live rank that skips a collective gives a timeout that blames no dead rank", "[dist]") {
  // Rank 1 stays alive (heartbeating, not in the barrier) until rank 0 has its answer: an event, not a fixed time.
  const std::string done =
      (std::filesystem::temp_directory_path() / ("plm_dist_live_" + std::to_string(::getpid()))).string();
  const auto results = run_ranks(2, [&done](int rank, int port, std::ostream& out) {
    World w(local_env(rank, 2, port), short_timeout(1500));
    if (rank == 1) {
      while (!std::filesystem::exists(done)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return 0;
    }
    int rc = 1;
    try {
      w.barrier();
      out << "the barrier returned without rank 1";
    } catch (const DistError& e) {
      out << e.what();
      rc = e.ranks().empty() && std::string(e.what()).find("every rank is alive") != std::string::npos ? 0 : 1;
    }
    std::ofstream{done};
    return rc;
  });
  std::filesystem::remove(done);
  INFO("rank 0: " << results[0].output);
  CHECK(exited_ok(results[0]));
  CHECK(exited_ok(results[1]));
}

TEST_CASE("a rendezvous that a rank never joins fails at the timeout instead of waiting forever", "[dist]") {
  const auto results = run_ranks(1, [](int, int port, std::ostream& out) {
    try {
      World w(local_env(0, 2, port), short_timeout(1500));  // rank 1 is never started
    } catch (const DistError& e) {
      out << e.what();
      return e.operation() == "rendezvous" ? 0 : 1;
    }
    return 1;
  });
  INFO(results[0].output);
  CHECK(exited_ok(results[0]));
  CHECK_THAT(results[0].output, Catch::Contains("MASTER_PORT"));
}
