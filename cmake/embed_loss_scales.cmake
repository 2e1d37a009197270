# Generates a .cpp holding every src/plugin/loss_scale/*.json as a string, so the program does not
# depend on where the sources are. Run at configure time; CONFIGURE_DEPENDS globs re-run it.
file(GLOB configs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/plugin/loss_scale/*.json)
set(entries "")
foreach(config ${configs})
  get_filename_component(name ${config} NAME_WE)
  file(READ ${config} text)
  string(APPEND entries "    {\"${name}\", R\"lathe_json(${text})lathe_json\"},\n")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${config})
endforeach()
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/generated/loss_scale_configs.cpp CONTENT
"// Generated from src/plugin/loss_scale/*.json by cmake/embed_loss_scales.cmake.
#include \"plugin/loss_scale_configs.h\"

#include <map>

#include \"lathe/common/error.h\"

namespace lathe {
std::string builtin_loss_scale_config(const std::string& name) {
  static const std::map<std::string, std::string> configs{
@entries@  };
  auto found = configs.find(name);
  if (found == configs.end()) throw Error(\"no built-in loss-scale config '\" + name + \"'\");
  return found->second;
}
}  // namespace lathe
" @ONLY)
