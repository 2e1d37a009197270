#pragma once
#define LATHE_VERSION_STRING "0.1.0"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {
const char* version();
}

LATHE_API_END
