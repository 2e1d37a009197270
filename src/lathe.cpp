// liblathe.so: every concern's static library, linked whole (see CMakeLists.txt).
#include "lathe/version.h"

namespace lathe {
const char* version() { return LATHE_VERSION_STRING; }
}  // namespace lathe
