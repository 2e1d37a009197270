# Helpers shared by src/, tests/ and bench/.

# One precompiled <torch/torch.h> for the whole tree: a unit that includes it costs ~20 s and
# 1.2 GB to compile from scratch (docs/performance.md); with the PCH reused it is a few seconds.
add_library(lathe_torch_pch OBJECT ${CMAKE_SOURCE_DIR}/cmake/pch.cpp)
# OpenMP too: at::parallel_for is expanded in the caller's unit, and without -fopenmp it runs the
# whole range on the calling thread (Lathe's own kernels were single-threaded until this).
target_link_libraries(lathe_torch_pch PUBLIC ${TORCH_LIBRARIES} OpenMP::OpenMP_CXX)
target_compile_options(lathe_torch_pch PUBLIC ${TORCH_CXX_FLAGS_LIST})
target_precompile_headers(lathe_torch_pch PRIVATE <torch/torch.h>)

function(lathe_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM lathe_torch_pch)
  # A PCH is only used with the flags it was built with: executables would get -fPIE where the
  # PCH has -fPIC, and gcc would silently compile torch.h again for every unit.
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${target} PRIVATE -fPIC)
  endif()
  target_link_libraries(${target} PRIVATE ${TORCH_LIBRARIES} OpenMP::OpenMP_CXX)
endfunction()

set(LATHE_CONCERNS "" CACHE INTERNAL "")

# The private include folder of one concern: a folder in the build tree holding a single link,
# <name> -> src/<name>. A concern (and its tests) includes its own private headers as
# "<name>/file.h" and sees no other concern's: including one fails to compile.
function(lathe_private_root name out)
  set(root ${CMAKE_BINARY_DIR}/private/${name})
  if(NOT IS_SYMLINK ${root}/${name})
    file(MAKE_DIRECTORY ${root})
    file(CREATE_LINK ${CMAKE_SOURCE_DIR}/src/${name} ${root}/${name} SYMBOLIC)
  endif()
  set(${out} ${root} PARENT_SCOPE)
endfunction()

# lathe_concern(name [TORCH] DEPS targets...): a static library from src/<name>/*.cpp.
function(lathe_concern name)
  cmake_parse_arguments(ARG "TORCH" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/${name}/*.cpp)
  if(NOT sources)
    set(sources ${CMAKE_SOURCE_DIR}/cmake/empty.cpp)
  endif()
  add_library(lathe_${name} STATIC ${sources})
  lathe_private_root(${name} private_root)
  target_include_directories(lathe_${name}
    PUBLIC ${CMAKE_SOURCE_DIR}/include ${LATHE_GENERATED_INCLUDE_DIR}
    PRIVATE ${private_root})
  target_link_libraries(lathe_${name} PUBLIC ${ARG_DEPS})
  if(ARG_TORCH)
    lathe_use_torch_pch(lathe_${name})
    target_link_libraries(lathe_${name} PUBLIC ${TORCH_LIBRARIES})
  endif()
  set(LATHE_CONCERNS ${LATHE_CONCERNS} lathe_${name} CACHE INTERNAL "")
endfunction()

# lathe_test(concern DEPS targets...): tests/<concern>/*.cpp as one GoogleTest program.
function(lathe_test name)
  cmake_parse_arguments(ARG "TORCH" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/${name}/*.cpp)
  if(NOT sources)
    return()
  endif()
  add_executable(test_${name} ${sources})
  lathe_private_root(${name} private_root)
  target_include_directories(test_${name} PRIVATE ${private_root} ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(test_${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  if(ARG_TORCH)
    lathe_use_torch_pch(test_${name})
  endif()
  target_compile_definitions(test_${name} PRIVATE
    LATHE_SOURCE_DIR="${CMAKE_SOURCE_DIR}" LATHE_BINARY_DIR="${CMAKE_BINARY_DIR}")
  gtest_discover_tests(test_${name} DISCOVERY_TIMEOUT 60 PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive")
endfunction()
