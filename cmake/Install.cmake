# `cmake --install build --prefix P`: the lathe program, liblathe.so, the public headers and a CMake
# package, so that an out-of-tree plugin builds with
#   find_package(Lathe REQUIRED)
#   lathe_add_plugin(my_plugin my_plugin.cpp)
include(GNUInstallDirs)
set_target_properties(lathe_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS lathe EXPORT LatheTargets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS lathe_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/lathe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${LATHE_GENERATED_INCLUDE_DIR}/lathe/abi.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lathe)
install(EXPORT LatheTargets NAMESPACE Lathe:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Lathe)
install(FILES cmake/LatheConfig.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Lathe)
