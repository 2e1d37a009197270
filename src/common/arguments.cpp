#include "lathe/common/arguments.h"

namespace lathe {

nlohmann::json Arguments::to_json() const {
  nlohmann::json json = {
      {"model", model}, {"adapters", adapters}, {"template", template_name}, {"agent_template", agent_template},
      {"system", system ? nlohmann::json(*system) : nlohmann::json()}, {"torch_dtype", torch_dtype},
      {"max_length", max_length}, {"max_new_tokens", max_new_tokens}, {"temperature", temperature},
      {"top_k", top_k}, {"top_p", top_p}, {"repetition_penalty", repetition_penalty}, {"seed", seed},
      {"stream", stream}, {"max_batch_size", max_batch_size}, {"dataset", dataset},
      {"val_dataset", val_dataset}, {"result_path", result_path},
      {"split_dataset_ratio", split_dataset_ratio}, {"truncation_strategy", truncation_strategy},
      {"packing", packing}, {"padding_free", padding_free}, {"dataset_num_proc", dataset_num_proc},
      {"strict", strict}, {"streaming", streaming}, {"loss_scale", loss_scale}, {"model_name", model_name},
      {"model_author", model_author}, {"train_type", train_type}, {"lora_rank", lora_rank},
      {"lora_alpha", lora_alpha}, {"lora_dropout", lora_dropout}, {"target_modules", target_modules},
      {"use_rslora", use_rslora}, {"use_dora", use_dora}, {"init_weights", init_weights},
      {"learning_rate", effective_learning_rate()}, {"num_train_epochs", num_train_epochs},
      {"max_steps", max_steps}, {"per_device_train_batch_size", per_device_train_batch_size},
      {"per_device_eval_batch_size", per_device_eval_batch_size},
      {"gradient_accumulation_steps", gradient_accumulation_steps}, {"max_grad_norm", max_grad_norm},
      {"weight_decay", weight_decay}, {"adam_beta1", adam_beta1}, {"adam_beta2", adam_beta2},
      {"adam_epsilon", adam_epsilon}, {"lr_scheduler_type", lr_scheduler_type},
      {"lr_scheduler_kwargs", lr_scheduler_kwargs},
      {"warmup_ratio", warmup_ratio}, {"warmup_steps", warmup_steps}, {"logging_steps", logging_steps},
      {"eval_steps", eval_steps}, {"save_steps", save_steps}, {"save_total_limit", save_total_limit},
      {"save_only_model", save_only_model}, {"output_dir", output_dir}, {"add_version", add_version},
      {"gradient_checkpointing", gradient_checkpointing},
      {"resume_from_checkpoint", resume_from_checkpoint}, {"resume_only_model", resume_only_model},
      {"loss_type", loss_type}, {"optimizer", optimizer}, {"lorap_lr_ratio", lorap_lr_ratio}, {"use_galore", use_galore}, {"galore_rank", galore_rank}, {"galore_update_proj_gap", galore_update_proj_gap}, {"galore_scale", galore_scale}, {"freeze_parameters", freeze_parameters}, {"trainable_parameters", trainable_parameters}, {"acc_strategy", acc_strategy}, {"callbacks", callbacks}, {"early_stop_interval", early_stop_interval}, {"task_type", task_type},
      {"metric_for_best_model", metric_for_best_model}, {"max_nan_steps", max_nan_steps},
      {"pretraining", pretraining}, {"plugin_args", plugin_args}};
  json.update({{"max_completion_length", max_completion_length},
               {"cosine_min_len_value_wrong", cosine_min_len_value_wrong},
               {"cosine_max_len_value_wrong", cosine_max_len_value_wrong},
               {"cosine_min_len_value_correct", cosine_min_len_value_correct},
               {"cosine_max_len_value_correct", cosine_max_len_value_correct}, {"cosine_max_len", cosine_max_len},
               {"repetition_n_grams", repetition_n_grams}, {"repetition_max_penalty", repetition_max_penalty},
               {"soft_max_length", soft_max_length}, {"soft_cache_length", soft_cache_length},
               {"prm_api_base", prm_api_base}, {"prm_api_model", prm_api_model}});  // never the API key
  json.update({{"min_p", min_p}, {"presence_penalty", presence_penalty}, {"frequency_penalty", frequency_penalty},
               {"stop", stop}, {"logprobs", logprobs}, {"top_logprobs", top_logprobs}, {"host", host}, {"port", port},
               {"served_model_name", served_model_name}, {"max_body_bytes", max_body_bytes},
               {"sampler_type", sampler_type}, {"sampler_engine", sampler_engine},
               {"engine_kwargs_base_url", engine_kwargs_base_url}, {"engine_kwargs_model", engine_kwargs_model},
               {"num_return_sequences", num_return_sequences}, {"n_best_to_keep", n_best_to_keep},
               {"orm_model", orm_model}, {"prm_model", prm_model}, {"prm_threshold", prm_threshold},
               {"data_range", data_range}, {"metric", metric}, {"predict_with_generate", predict_with_generate}});
  if (greater_is_better) json["greater_is_better"] = *greater_is_better;
  return json;
}

}  // namespace lathe
