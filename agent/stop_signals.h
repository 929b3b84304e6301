// The end of a command's graceful stop, shared by `agent` and `aggregator`.
#pragma once

#include <pthread.h>

#include <boost/asio/signal_set.hpp>
#include <csignal>

namespace nodemeter::agent {

// Called once the command has stopped serving and joined its other threads: from here to exit,
// SIGINT and SIGTERM are ignored. systemd, the kubelet and an impatient user may send the signal
// again while the process tears down, and asio puts back the default disposition when its
// signal_set goes; a repeated SIGTERM in those last milliseconds would turn a clean exit 0 into
// death by signal (e2e: faults). Both are blocked while the disposition changes hands, so one
// arriving in between stays pending and is then discarded as ignored.
inline void ignore_stop_signals(boost::asio::signal_set& signals) {
  sigset_t stop;
  sigset_t before;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, &before);
  signals.clear();  // back to SIG_DFL
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGTERM, SIG_IGN);
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

}  // namespace nodemeter::agent
