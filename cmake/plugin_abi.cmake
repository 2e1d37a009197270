# The plugin ABI identity: a hash of every public header, the compiler and the libtorch version,
# computed at configure time, so that a plugin built against another Lathe is refused on load
# without anybody bumping a number. Configuring again follows any change to a public header.
file(GLOB_RECURSE lathe_public_headers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/include/lathe/*.h)
list(SORT lathe_public_headers)
set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${lathe_public_headers})
set(abi_text "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}\nlibtorch ${Torch_VERSION}\n")
foreach(header ${lathe_public_headers})
  file(RELATIVE_PATH name ${CMAKE_SOURCE_DIR}/include ${header})
  file(READ ${header} content)
  string(APPEND abi_text "${name}\n${content}\n")
endforeach()
string(SHA256 abi_hash "${abi_text}")
string(SUBSTRING "${abi_hash}" 0 16 LATHE_PLUGIN_ABI)
set(LATHE_GENERATED_INCLUDE_DIR ${CMAKE_BINARY_DIR}/generated/include)
file(CONFIGURE OUTPUT ${LATHE_GENERATED_INCLUDE_DIR}/lathe/abi.h CONTENT
"#pragma once
// Generated at configure time: the identity of this Lathe's plugin ABI, a hash of its public
// headers, its compiler (@CMAKE_CXX_COMPILER_ID@ @CMAKE_CXX_COMPILER_VERSION@) and libtorch @Torch_VERSION@.
#define LATHE_PLUGIN_ABI \"@LATHE_PLUGIN_ABI@\"
" @ONLY)
message(STATUS "Lathe plugin ABI: ${LATHE_PLUGIN_ABI}")
