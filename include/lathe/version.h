#pragma once
#define LATHE_VERSION_STRING "0.1.0"
namespace lathe {
const char* version();
}
