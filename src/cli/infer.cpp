#include "cli/commands.h"
#include "lathe/error.h"

namespace lathe::cli {
int run_infer(const Args&) { throw Error("not implemented yet"); }
}  // namespace lathe::cli
