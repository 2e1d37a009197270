// Reading dataset files row by row: jsonl, json (array of objects) and csv (header row names the
// columns; parsed with libcsv, which handles quoting and embedded newlines).
#include <csv.h>

#include <fstream>

#include "lathe/common/format.h"
#include "lathe/data/dataset.h"
#include "lathe/common/files.h"

namespace lathe {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void for_each_jsonl_row(const fs::path& file, const std::function<void(const json&, const RowLocation&)>& visit) {
  std::ifstream in(file);
  if (!in) fail("{}: cannot open dataset file ({})", file.string(), std::strerror(errno));
  std::string line;
  RowLocation where{file.string(), 0};
  while (std::getline(in, line)) {
    ++where.line;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json row = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded()) fail("{}: not valid JSON", where.describe());
    visit(row, where);
  }
}

void for_each_json_row(const fs::path& file, const std::function<void(const json&, const RowLocation&)>& visit) {
  json rows = json::parse(read_file(file), nullptr, false);
  if (rows.is_discarded()) fail("{}: not valid JSON", file.string());
  if (!rows.is_array()) fail("{}: expected a JSON array of rows, got {}", file.string(), rows.type_name());
  RowLocation where{file.string(), 0};
  for (const auto& row : rows) {
    ++where.line;  // for .json files "line" is the row number
    visit(row, where);
  }
}

struct CsvState {
  std::vector<std::string> header;
  std::vector<std::string> fields;
  std::vector<std::vector<std::string>> records;
};

void for_each_csv_row(const fs::path& file, const std::function<void(const json&, const RowLocation&)>& visit) {
  const std::string content = read_file(file);
  csv_parser parser;
  if (csv_init(&parser, CSV_APPEND_NULL) != 0) fail("{}: cannot initialise the CSV parser", file.string());
  CsvState state;
  auto on_field = [](void* data, size_t size, void* user) {
    static_cast<CsvState*>(user)->fields.emplace_back(static_cast<const char*>(data), size);
  };
  auto on_record = [](int, void* user) {
    auto* s = static_cast<CsvState*>(user);
    s->records.push_back(std::move(s->fields));
    s->fields.clear();
  };
  const bool parsed = csv_parse(&parser, content.data(), content.size(), on_field, on_record, &state) == content.size() &&
                      csv_fini(&parser, on_field, on_record, &state) == 0;
  const std::string error = csv_strerror(csv_error(&parser));
  csv_free(&parser);
  if (!parsed) fail("{}: malformed CSV ({})", file.string(), error);
  if (state.records.empty()) return;
  const auto& header = state.records.front();
  RowLocation where{file.string(), 1};
  for (std::size_t r = 1; r < state.records.size(); ++r) {
    ++where.line;
    const auto& record = state.records[r];
    if (record.size() != header.size()) {
      fail("{}: {} fields, but the header has {}", where.describe(), record.size(), header.size());
    }
    json row = json::object();
    for (std::size_t c = 0; c < header.size(); ++c) row[header[c]] = record[c];
    visit(row, where);
  }
}

}  // namespace

void for_each_row(const fs::path& file, const std::function<void(const json&, const RowLocation&)>& visit) {
  std::error_code ec;
  if (!fs::exists(file, ec)) fail_not_local("dataset file", file.string());
  const auto extension = file.extension().string();
  if (extension == ".jsonl") return for_each_jsonl_row(file, visit);
  if (extension == ".json") return for_each_json_row(file, visit);
  if (extension == ".csv") return for_each_csv_row(file, visit);
  fail("{}: unsupported dataset file type '{}' (expected .jsonl, .json or .csv)", file.string(), extension);
}

std::vector<json> read_rows(const fs::path& file) {
  std::vector<json> rows;
  for_each_row(file, [&](const json& row, const RowLocation&) { rows.push_back(row); });
  return rows;
}

}  // namespace lathe
