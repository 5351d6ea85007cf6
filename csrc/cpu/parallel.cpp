#include "cpu/parallel.h"

#include <chrono>
#include <cstdio>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__linux__)
#include <dirent.h>
#include <unistd.h>

#include <cstring>
#endif

namespace pst::cpu {

namespace {

constexpr int64_t kRefreshNs = 10000000;  // how long one reading of the load is trusted (10 ms)

int64_t online_cpus() {
#if defined(__linux__)
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
#else
  return at::get_num_threads();
#endif
}

// Runnable tasks on the machine now (the 4th field of /proc/loadavg, "running/total"), or -1.
int64_t runnable_tasks() {
#if defined(__linux__)
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return -1;
  double l1, l5, l15;
  long running = -1, total = 0;
  const int got = std::fscanf(f, "%lf %lf %lf %ld/%ld", &l1, &l5, &l15, &running, &total);
  std::fclose(f);
  return got == 5 ? running : -1;
#else
  return -1;
#endif
}

// This process's threads that are running or runnable now (state R in /proc/self/task/*/stat):
// the caller, and torch's workers while they spin after a parallel region.
int64_t own_runnable_threads() {
#if defined(__linux__)
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return 1;
  int64_t n = 0;
  char path[300], buf[512];
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
    std::FILE* f = std::fopen(path, "r");
    if (!f) continue;
    const size_t len = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[len] = 0;
    const char* close = std::strrchr(buf, ')');  // the state follows the command name in parentheses
    if (close && close[1] == ' ' && close[2] == 'R') ++n;
  }
  closedir(dir);
  return std::max<int64_t>(1, n);
#else
  return 1;
#endif
}

}  // namespace

int64_t idle_cores() {
  static std::atomic<int64_t> stamp{-kRefreshNs - 1};
  static std::atomic<int64_t> cached{1};
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  if (now - stamp.load(std::memory_order_relaxed) > kRefreshNs) {
    const int64_t cpus = online_cpus();
    const int64_t running = runnable_tasks();
    int64_t idle = cpus;
    if (running > 0) {
      idle = cpus - (running - 1);  // as if the caller were this process's only runnable thread
      // at most torch's team counts as this process's own (the caller and its workers, which spin
      // for a while after a region); other busy threads of this process are load like any other
      const int64_t team = at::get_num_threads();
      if (idle < team) idle = cpus - std::max<int64_t>(0, running - std::min(own_runnable_threads(), team));
    }
    cached.store(std::max<int64_t>(1, idle), std::memory_order_relaxed);
    stamp.store(now, std::memory_order_relaxed);
  }
  return cached.load(std::memory_order_relaxed);
}

}  // namespace pst::cpu

// For Python (pst/_threads.py, through ctypes): torch's kernels called by this thread run on it
// alone while the machine has at most one idle core. Returns the thread count to restore with
// pst_thread_cap_end, or 0 when nothing changed (one thread already, inside a parallel region,
// idle cores enough, or torch without OpenMP). omp_set_num_threads changes only the calling
// thread's setting, in torch's OpenMP runtime.
extern "C" __attribute__((visibility("default"))) int pst_thread_cap_begin() {
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
  if (threads <= 1 || omp_in_parallel() || pst::cpu::idle_cores() > 1) return 0;
  omp_set_num_threads(1);
  return threads;
#else
  return 0;
#endif
}

extern "C" __attribute__((visibility("default"))) void pst_thread_cap_end(int threads) {
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}
