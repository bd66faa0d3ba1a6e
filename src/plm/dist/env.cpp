#include "plm/dist/env.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace plm::dist {
namespace {

std::string required(const EnvLookup& get, const std::string& name, const char* launcher) {
  auto v = get(name);
  if (!v || v->empty())
    throw LaunchEnvError(std::string(launcher) + " launch: environment variable " + name + " is not set");
  return *v;
}

int64_t parse_int(const std::string& name, const std::string& text, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
    throw LaunchEnvError("environment variable " + name + "='" + text + "' is not an integer in [" +
                         std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

int int_var(const EnvLookup& get, const std::string& name, const char* launcher, int64_t lo, int64_t hi) {
  return static_cast<int>(parse_int(name, required(get, name, launcher), lo, hi));
}

void check_rank(const LaunchEnv& e, const char* rank_var, const char* world_var) {
  if (e.rank >= e.world_size)
    throw LaunchEnvError(std::string("environment variable ") + rank_var + "=" + std::to_string(e.rank) +
                         " is not below " + world_var + "=" + std::to_string(e.world_size));
}

// CPython's Modules/_randommodule.c: MT19937 with init_by_array seeding.
class CPythonMT {
 public:
  explicit CPythonMT(const std::vector<uint32_t>& key) {
    init_genrand(19650218u);
    size_t i = 1, j = 0;
    for (size_t k = std::max<size_t>(N, key.size()); k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + static_cast<uint32_t>(j);
      if (++i >= N) {
        mt_[0] = mt_[N - 1];
        i = 1;
      }
      if (++j >= key.size()) j = 0;
    }
    for (size_t k = N - 1; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
      if (++i >= N) {
        mt_[0] = mt_[N - 1];
        i = 1;
      }
    }
    mt_[0] = 0x80000000u;
  }

  uint32_t next() {
    if (mti_ >= N) {
      for (size_t k = 0; k < N; ++k) {
        const uint32_t y = (mt_[k] & 0x80000000u) | (mt_[(k + 1) % N] & 0x7fffffffu);
        mt_[k] = mt_[(k + M) % N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
      }
      mti_ = 0;
    }
    uint32_t y = mt_[mti_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }

 private:
  static constexpr size_t N = 624, M = 397;
  void init_genrand(uint32_t s) {
    mt_[0] = s;
    for (size_t i = 1; i < N; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
    mti_ = N;
  }
  std::array<uint32_t, N> mt_{};
  size_t mti_ = N;
};

// One name of a hostlist (no top-level commas): expands its first bracket group, then recurses on the rest.
void expand_name(const std::string& name, const std::string& whole, std::vector<std::string>& out) {
  const size_t open = name.find('[');
  if (open == std::string::npos) {
    if (name.find(']') != std::string::npos) throw LaunchEnvError("SLURM_JOB_NODELIST='" + whole + "': unbalanced ']'");
    out.push_back(name);
    return;
  }
  const size_t close = name.find(']', open);
  if (close == std::string::npos) throw LaunchEnvError("SLURM_JOB_NODELIST='" + whole + "': unbalanced '['");
  const std::string prefix = name.substr(0, open), body = name.substr(open + 1, close - open - 1),
                    suffix = name.substr(close + 1);
  size_t start = 0;
  while (start <= body.size()) {
    size_t comma = body.find(',', start);
    if (comma == std::string::npos) comma = body.size();
    const std::string item = body.substr(start, comma - start);
    const size_t dash = item.find('-');
    const std::string lo_text = item.substr(0, dash),
                      hi_text = dash == std::string::npos ? lo_text : item.substr(dash + 1);
    const auto digits = [](const std::string& s) {
      return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(lo_text) || !digits(hi_text))
      throw LaunchEnvError("SLURM_JOB_NODELIST='" + whole + "': '" + item + "' is not a number or a range a-b");
    const long long lo = std::stoll(lo_text), hi = std::stoll(hi_text);
    if (hi < lo) throw LaunchEnvError("SLURM_JOB_NODELIST='" + whole + "': descending range '" + item + "'");
    for (long long v = lo; v <= hi; ++v) {
      std::string num = std::to_string(v);
      if (num.size() < lo_text.size()) num.insert(0, lo_text.size() - num.size(), '0');
      expand_name(prefix + num + suffix, whole, out);
    }
    start = comma + 1;
  }
}

}  // namespace

const char* launcher_name(Launcher l) {
  switch (l) {
    case Launcher::torchrun:
      return "torchrun";
    case Launcher::slurm:
      return "slurm";
    default:
      return "single";
  }
}

std::vector<std::string> expand_hostlist(const std::string& hostlist) {
  std::vector<std::string> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= hostlist.size(); ++i) {
    const char c = i < hostlist.size() ? hostlist[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) throw LaunchEnvError("SLURM_JOB_NODELIST='" + hostlist + "': unbalanced ']'");
    if (c == ',' && depth == 0) {
      const std::string name = hostlist.substr(start, i - start);
      if (name.empty()) throw LaunchEnvError("SLURM_JOB_NODELIST='" + hostlist + "': empty host name");
      expand_name(name, hostlist, out);
      start = i + 1;
    }
  }
  if (depth != 0) throw LaunchEnvError("SLURM_JOB_NODELIST='" + hostlist + "': unbalanced '['");
  return out;
}

int slurm_master_port(int64_t job_id) {
  // random.Random(n) seeds with the 32-bit little-endian words of abs(n); 0 gives the key [0].
  uint64_t n = job_id < 0 ? 0 - static_cast<uint64_t>(job_id) : static_cast<uint64_t>(job_id);
  std::vector<uint32_t> key;
  do {
    key.push_back(static_cast<uint32_t>(n & 0xffffffffu));
    n >>= 32;
  } while (n);
  CPythonMT mt(key);
  // randint(20000, 60000) = 20000 + _randbelow(40001): getrandbits(16) until below 40001.
  constexpr uint32_t width = 60000 - 20000 + 1;
  uint32_t r;
  do r = mt.next() >> 16;
  while (r >= width);
  return static_cast<int>(20000 + r);
}

LaunchEnv launch_env(const EnvLookup& get) {
  LaunchEnv e;
  if (get("LOCAL_RANK")) {
    const char* who = "torchrun";
    e.launcher = Launcher::torchrun;
    e.world_size = int_var(get, "WORLD_SIZE", who, 1, 1 << 24);
    e.rank = int_var(get, "RANK", who, 0, 1 << 24);
    e.local_rank = int_var(get, "LOCAL_RANK", who, 0, 1 << 24);
    e.master_addr = required(get, "MASTER_ADDR", who);
    e.master_port = int_var(get, "MASTER_PORT", who, 1, 65535);
    check_rank(e, "RANK", "WORLD_SIZE");
    e.agent_store = get("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  } else if (get("SLURM_JOB_ID") && get("SLURM_PROCID")) {
    const char* who = "SLURM";
    e.launcher = Launcher::slurm;
    e.world_size = int_var(get, "SLURM_NTASKS", who, 1, 1 << 24);
    e.rank = int_var(get, "SLURM_PROCID", who, 0, 1 << 24);
    e.local_rank = int_var(get, "SLURM_LOCALID", who, 0, 1 << 24);
    const std::string nodes = required(get, "SLURM_JOB_NODELIST", who);
    e.master_addr = expand_hostlist(nodes).at(0);
    e.master_port =
        slurm_master_port(parse_int("SLURM_JOB_ID", required(get, "SLURM_JOB_ID", who), INT64_MIN + 1, INT64_MAX));
    check_rank(e, "SLURM_PROCID", "SLURM_NTASKS");
  }
  return e;
}

LaunchEnv launch_env() {
  return launch_env([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
}

int find_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw std::runtime_error(std::string("cannot open a socket to find a free port: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) throw std::runtime_error(std::string("cannot bind a socket to find a free port: ") + std::strerror(err));
  return ntohs(addr.sin_port);
}

}  // namespace plm::dist
