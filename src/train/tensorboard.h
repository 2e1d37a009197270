#pragma once
// TensorBoard event files (`--report_to tensorboard`): the scalars of every log row, as Hugging
// Face's TensorBoardCallback writes them (train/<key>, eval/<key>), into run_dir/runs/.
#include <filesystem>
#include <fstream>
#include <string>

namespace lathe {

class TensorBoardWriter {
 public:
  // Creates run_dir/runs/events.out.tfevents.<seconds>.<host> and writes its version record.
  explicit TensorBoardWriter(const std::filesystem::path& runs_dir);
  void scalar(const std::string& tag, double value, int64_t step, double wall_time);
  void flush();
  const std::filesystem::path& file() const { return file_; }

 private:
  void write_record(const std::string& event);
  std::filesystem::path file_;
  std::ofstream out_;
};

}  // namespace lathe
