#include "lathe/model/runtime.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

namespace lathe {
namespace {

// Lathe's own kernels (the 16-bit matrix-vector product, LoRA's dropout) split their work with
// at::parallel_for, which runs serially in a unit compiled without OpenMP.
TEST(Runtime, LibraryKernelsRunOnEveryThread) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_EQ(parallel_threads(), 2);
  at::set_num_threads(1);
  EXPECT_EQ(parallel_threads(), 1);
  at::set_num_threads(before);
}

}  // namespace
}  // namespace lathe
