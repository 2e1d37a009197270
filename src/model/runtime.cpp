#include "lathe/model/runtime.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>

namespace lathe {

int compute_threads() {
  if (const char* value = std::getenv("OMP_NUM_THREADS")) {
    const int threads = std::atoi(value);
    if (threads > 0) return threads;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? static_cast<int>(cores) : 1;
}

int parallel_threads() {
  const int threads = at::get_num_threads();
  std::atomic<uint64_t> seen{0};
  // One chunk per thread; each records which thread ran it.
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { seen |= uint64_t{1} << (at::get_thread_num() % 64); });
  return __builtin_popcountll(seen.load());
}

// Debian's libtorch calls whatever libblas.so.3 points to; the reference BLAS is ~30x slower
// than OpenBLAS for fp32 GEMM (docs/performance.md).
static void warn_if_reference_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libblas.so") == std::string::npos) continue;
    if (line.find("/blas/") != std::string::npos) {
      fmt::print(stderr,
                 "lathe: warning: libblas.so.3 is the reference BLAS (slow). Run scripts/setup.sh or "
                 "select OpenBLAS: update-alternatives --config libblas.so.3-x86_64-linux-gnu\n");
    }
    return;
  }
}

void configure_runtime(int argc, char** argv) {
  (void)argc;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    // Idle threads spin briefly, then sleep: between the hundreds of parallel regions of a decoding
    // step or a training step a sleeping thread takes long to wake (passive waiting), while
    // spinning without end (active) starves the other threads on a machine of few cores.
    setenv("OMP_WAIT_POLICY", "active", 1);
    if (std::getenv("GOMP_SPINCOUNT") == nullptr) setenv("GOMP_SPINCOUNT", "10000", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then carry on as we are
  }
  at::set_num_threads(compute_threads());
  warn_if_reference_blas();
}

}  // namespace lathe
