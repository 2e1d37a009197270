#pragma once
// liblathe.so is compiled with symbols hidden by default, so that it exports its public API and
// nothing else: what a public header declares between LATHE_API_BEGIN and LATHE_API_END. Private
// helpers under src/ stay inside the library, free to change without breaking a plugin.
#define LATHE_API_BEGIN _Pragma("GCC visibility push(default)")
#define LATHE_API_END _Pragma("GCC visibility pop")
