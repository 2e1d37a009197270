#include "lathe/arguments.h"

namespace lathe {

nlohmann::json Arguments::to_json() const {
  return {{"model", model}, {"adapters", adapters}, {"template", template_name},
          {"system", system ? nlohmann::json(*system) : nlohmann::json()},
          {"torch_dtype", torch_dtype}, {"max_length", max_length},
          {"max_new_tokens", max_new_tokens}, {"temperature", temperature}, {"top_k", top_k},
          {"top_p", top_p}, {"repetition_penalty", repetition_penalty}, {"seed", seed},
          {"stream", stream}, {"max_batch_size", max_batch_size}, {"dataset", dataset},
          {"val_dataset", val_dataset}, {"result_path", result_path}, {"plugin_args", plugin_args}};
}

}  // namespace lathe
