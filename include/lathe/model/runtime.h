#pragma once
// The speed settings that docs/performance.md measured as a 4x difference, applied in one place at start-up:
// passive OpenMP waiting, threads = cores (or OMP_NUM_THREADS), and a warning when libblas.so.3 is
// the reference BLAS. (The allocator, tcmalloc, is linked into the `lathe` program.)

#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Call first thing in main(). When OMP_WAIT_POLICY is unset it re-executes the program with
// OMP_WAIT_POLICY=passive, because libgomp reads it only when it is loaded.
void configure_runtime(int argc, char** argv);

// The number of threads Lathe computes with (OMP_NUM_THREADS, or the usable cores).
int compute_threads();

}  // namespace lathe

LATHE_API_END
