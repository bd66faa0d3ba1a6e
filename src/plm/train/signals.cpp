#include "plm/train/signals.h"

#include <atomic>
#include <csignal>

namespace plm::train {
namespace {

std::atomic<int> received{0};

extern "C" void on_stop_signal(int signal) {
  received.store(signal);
}

}  // namespace

void install_stop_signals() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (const int s : {SIGTERM, SIGUSR1, SIGUSR2}) sigaction(s, &action, nullptr);
}

int stop_signal() {
  return received.load();
}

}  // namespace plm::train
