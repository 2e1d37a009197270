// TensorBoard's on-disk format is TFRecord framing (length, masked CRC-32C of the length, the
// record, masked CRC-32C of the record) around tensorflow.Event protocol-buffer messages. The
// messages are encoded with protobuf's CodedOutputStream (Lathe has no generated classes for
// TensorFlow's .proto files; the few fields used are listed below) and the checksums come from
// Boost.CRC's CRC-32C (Castagnoli) parameters.
#include "train/tensorboard.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <unistd.h>

#include <boost/crc.hpp>
#include <chrono>
#include <cstring>

#include "lathe/common/format.h"

namespace lathe {
namespace fs = std::filesystem;
namespace {

using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;

// Field numbers and wire types of tensorflow.Event, Summary and Summary.Value.
constexpr uint32_t kEventWallTime = (1 << 3) | 1;     // double
constexpr uint32_t kEventStep = (2 << 3) | 0;         // int64
constexpr uint32_t kEventFileVersion = (3 << 3) | 2;  // string
constexpr uint32_t kEventSummary = (5 << 3) | 2;      // Summary
constexpr uint32_t kSummaryValue = (1 << 3) | 2;      // repeated Value
constexpr uint32_t kValueTag = (1 << 3) | 2;          // string
constexpr uint32_t kValueSimpleValue = (2 << 3) | 5;  // float

uint32_t masked_crc32c(const std::string& data) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  const uint32_t value = crc.checksum();
  return ((value >> 15) | (value << 17)) + 0xa282ead8U;  // TFRecord's mask
}

template <class Fill>
std::string encoded(Fill&& fill) {
  std::string bytes;
  {
    StringOutputStream stream(&bytes);
    CodedOutputStream coded(&stream);
    fill(coded);
  }
  return bytes;
}

void write_bytes_field(CodedOutputStream& out, uint32_t tag, const std::string& bytes) {
  out.WriteTag(tag);
  out.WriteVarint32(static_cast<uint32_t>(bytes.size()));
  out.WriteString(bytes);
}

std::string event_header(double wall_time, int64_t step) {
  return encoded([&](CodedOutputStream& out) {
    uint64_t bits = 0;
    std::memcpy(&bits, &wall_time, sizeof bits);
    out.WriteTag(kEventWallTime);
    out.WriteLittleEndian64(bits);
    out.WriteTag(kEventStep);
    out.WriteVarint64(static_cast<uint64_t>(step));
  });
}

std::string host_name() {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("localhost");
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const fs::path& runs_dir) {
  fs::create_directories(runs_dir);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  file_ = runs_dir / fmt::format("events.out.tfevents.{}.{}", seconds, host_name());
  out_.open(file_, std::ios::binary | std::ios::trunc);
  if (!out_) fail("{}: cannot write the TensorBoard event file", file_.string());
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  write_record(event_header(now, 0) + encoded([](CodedOutputStream& out) {
                 write_bytes_field(out, kEventFileVersion, "brain.Event:2");
               }));
  flush();
}

void TensorBoardWriter::scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  const auto summary_value = encoded([&](CodedOutputStream& out) {
    write_bytes_field(out, kValueTag, tag);
    const auto single = static_cast<float>(value);
    uint32_t bits = 0;
    std::memcpy(&bits, &single, sizeof bits);
    out.WriteTag(kValueSimpleValue);
    out.WriteLittleEndian32(bits);
  });
  const auto summary = encoded([&](CodedOutputStream& out) { write_bytes_field(out, kSummaryValue, summary_value); });
  write_record(event_header(wall_time, step) + encoded([&](CodedOutputStream& out) {
                 write_bytes_field(out, kEventSummary, summary);
               }));
}

void TensorBoardWriter::write_record(const std::string& event) {
  std::string length(8, '\0');
  const uint64_t size = event.size();
  for (int i = 0; i < 8; ++i) length[static_cast<std::size_t>(i)] = static_cast<char>((size >> (8 * i)) & 0xff);
  auto little_endian = [](uint32_t value) {
    std::string bytes(4, '\0');
    for (int i = 0; i < 4; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((value >> (8 * i)) & 0xff);
    return bytes;
  };
  out_ << length << little_endian(masked_crc32c(length)) << event << little_endian(masked_crc32c(event));
  if (!out_) fail("{}: writing the TensorBoard event file failed", file_.string());
}

void TensorBoardWriter::flush() { out_.flush(); }

}  // namespace lathe
