#pragma once
// The speed settings that docs/performance.md measured as a 4x difference, applied in one place at start-up:
// brief OpenMP spinning, threads = cores (or OMP_NUM_THREADS), and a warning when libblas.so.3 is
// the reference BLAS. (The allocator, tcmalloc, is linked into the `lathe` program.)

#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Call first thing in main(). When OMP_WAIT_POLICY is unset it re-executes the program with
// OMP_WAIT_POLICY=active and GOMP_SPINCOUNT=10000 (spin briefly, then sleep), because libgomp reads
// them only when it is loaded.
void configure_runtime(int argc, char** argv);

// The number of threads Lathe computes with (OMP_NUM_THREADS, or the usable cores).
int compute_threads();

// How many threads an at::parallel_for inside Lathe's library really runs on now (at most
// at::get_num_threads()): 1 when the library was compiled without OpenMP, whatever the setting.
int parallel_threads();

}  // namespace lathe

LATHE_API_END
