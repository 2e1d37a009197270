#pragma once
// Every `lathe <command>` is a function taking the arguments after the command name.
#include <string>
#include <vector>

namespace lathe::cli {

using Args = std::vector<std::string>;

int run_tokenize(const Args& args);
int run_infer(const Args& args);
int run_sft(const Args& args);
int run_pt(const Args& args);
int run_rlhf(const Args& args);
int run_plugins(const Args& args);
int run_export(const Args& args);
int run_eval(const Args& args);
int run_deploy(const Args& args);
int run_sample(const Args& args);

}  // namespace lathe::cli
