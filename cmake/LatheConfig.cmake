# The CMake package of an installed Lathe: the Lathe::lathe library and lathe_add_plugin().
include(CMakeFindDependencyMacro)
find_dependency(Torch)
find_dependency(nlohmann_json)
find_dependency(fmt)
find_dependency(Threads)
include("${CMAKE_CURRENT_LIST_DIR}/LatheTargets.cmake")

# lathe_add_plugin(name source...): a plugin library for `lathe ... --external_plugins lib<name>.so`.
function(lathe_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE Lathe::lathe)
  target_compile_features(${name} PRIVATE cxx_std_20)
  set_target_properties(${name} PROPERTIES PREFIX "")
endfunction()
