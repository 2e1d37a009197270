#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include "lathe/common/format.h"
#include "lathe/data/training_data.h"

namespace lathe {

namespace {
// Thrown inside for_each_row's callback to stop reading when the stream is destroyed.
struct StopReading {};
}  // namespace

struct ExampleStream::State {
  std::vector<std::string> specs;
  const ExampleEncoder* encoder;
  bool strict;
  ConversationEdit prepare;
  std::size_t buffer_size;
  std::mt19937_64 rng;

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Example> ready;  // shuffled, waiting for the trainer
  std::exception_ptr error;
  bool stopping = false;
  int64_t bad_rows = 0;
  std::thread reader;

  static constexpr std::size_t kReadyLimit = 256;

  void push(Example example) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return stopping || ready.size() < kReadyLimit; });
    if (stopping) throw StopReading{};
    ready.push_back(std::move(example));
    changed.notify_all();
  }

  void count_bad_row() {
    std::lock_guard lock(mutex);
    ++bad_rows;
  }

  // One pass over every file: rows enter a shuffle buffer; a random one leaves for each arrival
  // once it is full; the rest leave at the end of the pass.
  void read_epoch() {
    std::vector<Example> buffer;
    auto emit_random = [&] {
      std::uniform_int_distribution<std::size_t> pick(0, buffer.size() - 1);
      const auto index = pick(rng);
      std::swap(buffer[index], buffer.back());
      push(std::move(buffer.back()));
      buffer.pop_back();
    };
    bool any = false;
    for (const auto& text : specs) {
      for_each_row(DatasetSpec::parse(text).path, [&](const nlohmann::json& row, const RowLocation& where) {
        std::optional<Example> example;
        try {
          example = encoder->encode_row(row, where, prepare);
        } catch (const Error&) {
          if (strict) throw;
          count_bad_row();
          return;
        } catch (const nlohmann::json::exception& error) {
          if (strict) fail("{}: {}", where.describe(), error.what());
          count_bad_row();
          return;
        }
        if (!example) return;
        any = true;
        buffer.push_back(std::move(*example));
        if (buffer.size() >= buffer_size) emit_random();
      });
    }
    while (!buffer.empty()) emit_random();
    if (!any) fail("--streaming: the datasets gave no trainable rows");
  }

  void run() {
    try {
      while (true) read_epoch();
    } catch (const StopReading&) {
    } catch (...) {
      std::lock_guard lock(mutex);
      error = std::current_exception();
      changed.notify_all();
    }
  }
};

ExampleStream::ExampleStream(std::vector<std::string> specs, const ExampleEncoder& encoder, bool strict,
                             ConversationEdit prepare, uint64_t seed, std::size_t shuffle_buffer)
    : state_(std::make_unique<State>()) {
  for (const auto& text : specs) {
    if (DatasetSpec::parse(text).sample) fail("--streaming: '{}': path#N sampling needs the whole file; drop the #N", text);
  }
  state_->specs = std::move(specs);
  state_->encoder = &encoder;
  state_->strict = strict;
  state_->prepare = std::move(prepare);
  state_->buffer_size = std::max<std::size_t>(1, shuffle_buffer);
  state_->rng.seed(seed);
  state_->reader = std::thread([state = state_.get()] { state->run(); });
}

ExampleStream::~ExampleStream() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->changed.notify_all();
  state_->reader.join();
}

Example ExampleStream::next() {
  std::unique_lock lock(state_->mutex);
  state_->changed.wait(lock, [&] { return !state_->ready.empty() || state_->error; });
  if (state_->ready.empty()) std::rethrow_exception(state_->error);
  Example example = std::move(state_->ready.front());
  state_->ready.pop_front();
  state_->changed.notify_all();
  return example;
}

int64_t ExampleStream::bad_rows() const {
  std::lock_guard lock(state_->mutex);
  return state_->bad_rows;
}

}  // namespace lathe
