// `plm launch`: starts N local workers the way torchrun does (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
// GROUP_RANK, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_ERROR_FILE), on one node or as node R of --nnodes (torchrun's
// static rendezvous: node R's workers are ranks R x N .. R x N + N - 1, rank 0's node hosts the store at
// --master-addr:--master-port), forwards SIGTERM/SIGINT/SIGUSR1/SIGUSR2 to them, and
// when one fails stops the others (SIGTERM and SIGCONT, then SIGKILL after --grace-s) and exits with the first
// failure's status, naming the rank to blame: the failed worker, or the ranks its error file says went silent (a
// survivor's DistError names the rank that was killed, stopped or hung). Workers write to the launcher's
// stdout/stderr directly (plm's log lines carry their rank).
// `plm dist check`: joins the job from the environment and all-reduces the rank ids (tests a launch end to end).
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>
#include <thread>

#include <ATen/ATen.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "plm/dist/env.h"
#include "plm/dist/error_file.h"
#include "plm/dist/process_group.h"

extern char** environ;

namespace plm::cli {
namespace {

struct LaunchOptions {
  int nproc = 1;
  int nnodes = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  double grace_s = 30;
  std::vector<std::string> command;
};

struct CheckOptions {
  double timeout_s = 600;
  double hold_s = 0;
};

// The workers' pids, for the signal handler (async-signal-safe: it only reads this array and calls kill).
constexpr int kMaxWorkers = 1024;
std::array<std::atomic<pid_t>, kMaxWorkers> g_workers{};
const std::array<int, 4> kForwarded = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};

void forward_signal(int sig) {
  for (auto& pid : g_workers)
    if (const pid_t p = pid.load(); p > 0) ::kill(p, sig);
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return "was killed by signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

bool failed(int status) {
  return WIFSIGNALED(status) || WEXITSTATUS(status) != 0;
}

std::string self_executable() {
  std::array<char, 4096> buf{};
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) throw std::runtime_error(std::string("cannot find the plm executable: ") + std::strerror(errno));
  return std::string(buf.data(), static_cast<size_t>(n));
}

// This process's environment without the variables a launcher sets, then `extra`.
std::vector<std::string> worker_environment(const std::vector<std::string>& extra) {
  static const char* owned[] = {"RANK=",       "LOCAL_RANK=",  "WORLD_SIZE=",  "LOCAL_WORLD_SIZE=",
                                "GROUP_RANK=", "MASTER_ADDR=", "MASTER_PORT=", "TORCHELASTIC_ERROR_FILE="};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    bool drop = false;
    for (const char* o : owned) drop = drop || std::strncmp(*e, o, std::strlen(o)) == 0;
    if (!drop) env.emplace_back(*e);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Whether `pid` is stopped (SIGSTOP, SIGTSTP, a debugger): state T or t in /proc/PID/stat.
bool is_stopped(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');  // the command name may hold spaces and parentheses
  return paren != std::string::npos && paren + 2 < line.size() && (line[paren + 2] == 'T' || line[paren + 2] == 't');
}

// A folder for the workers' error files, removed when the launch ends.
struct ErrorFiles {
  std::filesystem::path dir;
  ErrorFiles() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/plm-launch-XXXXXX";
    if (::mkdtemp(pattern.data())) dir = pattern;
  }
  ~ErrorFiles() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
  std::string of(int rank) const {
    return dir.empty() ? "" : (dir / ("rank" + std::to_string(rank) + ".json")).string();
  }
};

int launch(const LaunchOptions& o, bool after_dash) {
  if (o.nproc < 1 || o.nproc > kMaxWorkers) {
    std::cerr << "plm launch: --nproc-per-node must be in [1, " << kMaxWorkers << "], got " << o.nproc << '\n';
    return 2;
  }
  if (o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes) {
    std::cerr << "plm launch: --node-rank must be in [0, --nnodes), got node rank " << o.node_rank << " of " << o.nnodes
              << " nodes\n";
    return 2;
  }
  if (o.nnodes > 1 && o.master_port == 0) {
    std::cerr << "plm launch: --nnodes " << o.nnodes
              << " needs --master-port (and --master-addr, node 0's address): every node must meet at the same "
                 "rendezvous\n";
    return 2;
  }
  // `plm launch ... RECIPE k=v` trains; `plm launch ... -- SUBCOMMAND ...` runs any plm subcommand.
  std::vector<std::string> argv_text = {"plm"};
  if (!after_dash) argv_text.emplace_back("train");
  argv_text.insert(argv_text.end(), o.command.begin(), o.command.end());
  if (argv_text.size() < 2 || (!after_dash && o.command.empty())) {
    std::cerr << "plm launch: give a recipe (plm launch --nproc-per-node N RECIPE [k=v ...]) or a subcommand after "
                 "-- (plm launch --nproc-per-node N -- train RECIPE ...)\n";
    return 2;
  }
  const std::string exe = self_executable();
  const int port = o.master_port ? o.master_port : dist::find_free_port();
  const int first_rank = o.node_rank * o.nproc, world_size = o.nnodes * o.nproc;
  std::string shown;
  for (size_t i = 1; i < argv_text.size(); ++i) shown += " " + argv_text[i];
  std::cerr << "plm launch: " << o.nproc << " workers of `plm" << shown << "`";
  if (o.nnodes > 1)
    std::cerr << " (ranks " << first_rank << "-" << first_rank + o.nproc - 1 << " of " << world_size << ", node "
              << o.node_rank << " of " << o.nnodes << ")";
  std::cerr << ", rendezvous " << o.master_addr << ":" << port << '\n';

  // Signals are blocked while forking so that none is lost between fork and recording the pid.
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  sigset_t forwarded, previous;
  sigemptyset(&forwarded);
  for (int sig : kForwarded) {
    sigaddset(&forwarded, sig);
    ::sigaction(sig, &sa, nullptr);
  }
  ::sigprocmask(SIG_BLOCK, &forwarded, &previous);

  struct Worker {
    pid_t pid;
    bool alive;
  };
  std::vector<Worker> workers;
  const ErrorFiles error_files;
  const pid_t launcher = ::getpid();
  for (int rank = 0; rank < o.nproc; ++rank) {
    std::vector<std::string> env =
        worker_environment({"RANK=" + std::to_string(first_rank + rank), "LOCAL_RANK=" + std::to_string(rank),
                            "WORLD_SIZE=" + std::to_string(world_size), "LOCAL_WORLD_SIZE=" + std::to_string(o.nproc),
                            "GROUP_RANK=" + std::to_string(o.node_rank), "MASTER_ADDR=" + o.master_addr,
                            "MASTER_PORT=" + std::to_string(port), "TORCHELASTIC_ERROR_FILE=" + error_files.of(rank)});
    std::vector<std::string> args = argv_text;
    std::vector<char*> envp = c_strings(env), argv = c_strings(args);
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::cerr << "plm launch: fork failed: " << std::strerror(errno) << '\n';
      forward_signal(SIGKILL);
      return 1;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a worker never outlives its launcher
      if (::getppid() != launcher) ::_exit(1);
      ::sigprocmask(SIG_SETMASK, &previous, nullptr);
      ::execve(exe.c_str(), argv.data(), envp.data());
      const char msg[] = "plm launch: cannot execute the plm binary\n";
      (void)!::write(2, msg, sizeof(msg) - 1);
      ::_exit(127);
    }
    workers.push_back({pid, true});
    g_workers[rank].store(pid);
  }
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);

  using Clock = std::chrono::steady_clock;
  std::optional<std::pair<int, int>> failure;            // (rank, wait status) of the first worker to fail
  std::string blame;                                     // who the final line names
  Clock::time_point kill_at = Clock::time_point::max();  // when the stopped workers get SIGKILL
  int alive = o.nproc;
  while (alive > 0) {
    std::optional<std::pair<int, int>> first;
    for (int rank = 0; rank < o.nproc; ++rank) {
      int status = 0;
      if (!workers[rank].alive || ::waitpid(workers[rank].pid, &status, WNOHANG) != workers[rank].pid) continue;
      workers[rank].alive = false;
      g_workers[rank].store(0);
      --alive;
      // Within one poll, a killed worker is the likelier cause than a peer that exited on its DistError.
      if (failed(status) && (!first || (WIFSIGNALED(status) && !WIFSIGNALED(first->second)))) first = {rank, status};
    }
    if (first && !failure) {
      failure = first;
      const auto [rank, status] = *first;
      const int global = first_rank + rank;
      std::cerr << "plm launch: rank " << global << " (pid " << workers[rank].pid << ") " << describe(status);
      blame = "rank " + std::to_string(global) + " " + describe(status);
      // A survivor that names the ranks that went silent shifts the blame to them (global ranks: on another node,
      // they are named with their node).
      std::vector<int> silent;
      if (const auto error = dist::read_error_file(error_files.of(rank)))
        for (int r : error->silent_ranks)
          if (r >= 0 && r < world_size && r != global) silent.push_back(r);
      for (size_t i = 0; i < silent.size(); ++i) {
        const int r = silent[i], local = r - first_rank;
        std::string named;
        if (local < 0 || local >= o.nproc) {
          named = "rank " + std::to_string(r) + " (node " + std::to_string(r / o.nproc) + ") was lost";
        } else {
          const Worker& w = workers[local];
          const std::string state = w.alive && is_stopped(w.pid) ? " is stopped (SIGSTOP or a debugger)"
                                    : w.alive                    ? " stopped answering"
                                                                 : " ended";
          named = "rank " + std::to_string(r) + " (pid " + std::to_string(w.pid) + ")" + state;
        }
        std::cerr << (i ? "; " : ": ") << named;
        blame = (i ? blame + "; " : "") + named;
      }
      if (!silent.empty())
        blame += " (reported by rank " + std::to_string(global) + ", which " + describe(status) + ")";
      std::cerr << (alive ? "; stopping the other workers" : "") << '\n';
      forward_signal(SIGTERM);
      forward_signal(SIGCONT);  // a stopped worker takes its SIGTERM only once continued
      kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.grace_s));
    }
    if (Clock::now() >= kill_at && alive > 0) {
      std::cerr << "plm launch: " << alive << " workers still running " << o.grace_s << " s after SIGTERM: SIGKILL\n";
      forward_signal(SIGKILL);
      kill_at = Clock::time_point::max();
    }
    if (alive > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int sig : kForwarded) ::signal(sig, SIG_DFL);
  if (!failure) return 0;
  const int status = failure->second;
  std::cerr << "plm launch: failed: " << blame << '\n';
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int check(const CheckOptions& o) {
  try {
    const dist::LaunchEnv env = dist::launch_env();
    dist::WorldOptions wo;
    wo.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
    dist::World world(env, wo);
    std::cout << "[rank " << world.rank() << "] rank " << world.rank() << " of " << world.size() << ", local rank "
              << world.local_rank() << ", pid " << ::getpid() << ", " << dist::launcher_name(env.launcher) << " launch"
              << std::endl;
    const int64_t want = int64_t{world.size()} * (world.size() - 1) / 2;
    for (int round = 0; round < (o.hold_s > 0 ? 2 : 1); ++round) {
      if (round) std::this_thread::sleep_for(std::chrono::duration<double>(o.hold_s));
      const at::Tensor sum = at::full({1}, world.rank(), at::kLong);
      world.all_reduce(sum);
      if (sum.item<int64_t>() != want) {
        std::cerr << "[rank " << world.rank() << "] all_reduce of the rank ids gave " << sum.item<int64_t>()
                  << ", wanted " << want << '\n';
        return 1;
      }
    }
    world.barrier();
    std::cout << "[rank " << world.rank() << "] all_reduce ok: sum of ranks " << want << std::endl;
    return 0;
  } catch (const dist::LaunchEnvError& e) {
    std::cerr << e.what() << '\n';
    dist::write_error_file({e.what(), {}});
    return 2;
  } catch (const dist::DistError& e) {
    std::cerr << e.what() << '\n';
    dist::write_error_file({e.what(), e.ranks()});
    return 3;
  }
}

}  // namespace

void add_launch_command(CLI::App& app, int& exit_code) {
  static LaunchOptions lo;
  auto* cmd = app.add_subcommand(
      "launch",
      "Start N local workers of `plm train RECIPE [k=v ...]` (or, after --, of any plm subcommand) as torchrun does");
  cmd->add_option("--nproc-per-node", lo.nproc, "number of worker processes")->required();
  cmd->add_option("--nnodes", lo.nnodes, "number of nodes, each running its own plm launch (default 1)");
  cmd->add_option("--node-rank", lo.node_rank, "this node's index in [0, --nnodes) (default 0)");
  cmd->add_option("--master-addr", lo.master_addr, "node 0's address, where the rendezvous store runs")
      ->capture_default_str();
  cmd->add_option("--master-port", lo.master_port,
                  "rendezvous port (default on one node: a free port; required with --nnodes > 1)");
  cmd->add_option("--grace-s", lo.grace_s, "seconds between SIGTERM and SIGKILL when stopping workers")
      ->capture_default_str();
  cmd->add_option("command", lo.command, "RECIPE [key=value ...], or after --: SUBCOMMAND [ARGS ...]");
  cmd->allow_extras();  // records the "--" that selects the subcommand form
  cmd->callback([cmd, &exit_code] {
    bool after_dash = false;
    for (const auto& extra : cmd->remaining()) {
      if (extra == "--") {
        after_dash = true;
        continue;
      }
      std::cerr << "plm launch: unknown option " << extra << " (put the worker's options after --)\n";
      exit_code = 2;
      return;
    }
    exit_code = launch(lo, after_dash);
  });

  static CheckOptions co;
  auto* dist_cmd = app.add_subcommand("dist", "Distributed set-up checks");
  dist_cmd->require_subcommand(1);
  auto* chk = dist_cmd->add_subcommand(
      "check", "Join the job described by the environment (torchrun, SLURM, plm launch) and all-reduce the rank ids");
  chk->add_option("--timeout-s", co.timeout_s, "seconds to wait for the other ranks")->capture_default_str();
  chk->add_option("--hold-s", co.hold_s, "stay connected this long, then all-reduce again (tests failure handling)");
  chk->callback([&exit_code] { exit_code = check(co); });
}

}  // namespace plm::cli
