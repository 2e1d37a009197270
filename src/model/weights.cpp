// The bridge between safetensors files and torch tensors: zero-copy views of mapped files for
// loading, contiguous CPU bytes for saving.
#include "lathe/model/weights.h"

#include <sys/mman.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstring>

#include "lathe/common/format.h"

namespace lathe {
namespace fs = std::filesystem;
namespace st = safetensors;

namespace {

struct DtypePair {
  st::Dtype file;
  torch::ScalarType torch;
};

constexpr DtypePair kDtypePairs[] = {
    {st::Dtype::F64, torch::kFloat64}, {st::Dtype::F32, torch::kFloat32},
    {st::Dtype::F16, torch::kFloat16}, {st::Dtype::BF16, torch::kBFloat16},
    {st::Dtype::I64, torch::kInt64},   {st::Dtype::I32, torch::kInt32},
    {st::Dtype::I16, torch::kInt16},   {st::Dtype::I8, torch::kInt8},
    {st::Dtype::U8, torch::kUInt8},    {st::Dtype::BOOL, torch::kBool},
};

// Tensors as the writer wants them: contiguous CPU copies kept alive while their bytes are written.
struct WritableTensors {
  std::vector<torch::Tensor> keep_alive;
  std::vector<st::TensorData> data;
};

WritableTensors writable(const fs::path& destination,
                         const std::map<std::string, torch::Tensor>& tensors) {
  WritableTensors result;
  result.keep_alive.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) fail("{}: tensor '{}' is undefined", destination.string(), name);
    const auto dtype = safetensors_dtype(tensor.scalar_type());
    if (!dtype)
      fail("{}: tensor '{}' has dtype {}, which cannot be stored (supported: float64, float32, "
           "float16, bfloat16, int64, int32, int16, int8, uint8, bool)",
           destination.string(), name, c10::toString(tensor.scalar_type()));
    torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
    const auto* bytes = static_cast<const std::byte*>(cpu.data_ptr());
    result.data.push_back({name, *dtype, cpu.sizes().vec(), {bytes, cpu.nbytes()}});
    result.keep_alive.push_back(std::move(cpu));
  }
  return result;
}

}  // namespace

namespace {

// What a view of a mapped file holds: the file, so that its pages stay mapped while the view lives.
struct MappedBytes {
  std::shared_ptr<const st::File> owner;
};

void delete_mapped_bytes(void* context) { delete static_cast<MappedBytes*>(context); }

}  // namespace

torch::ScalarType torch_dtype(st::Dtype dtype) {
  for (const auto& pair : kDtypePairs)
    if (pair.file == dtype) return pair.torch;
  throw std::logic_error("weights: unhandled safetensors Dtype");
}

std::optional<st::Dtype> safetensors_dtype(torch::ScalarType dtype) {
  for (const auto& pair : kDtypePairs)
    if (pair.torch == dtype) return pair.file;
  return std::nullopt;
}

torch::Tensor to_tensor(const st::TensorView& view, std::shared_ptr<const st::File> owner) {
  const auto options = torch::TensorOptions().dtype(torch_dtype(view.dtype));
  // Files from writers that do not pad their header can leave data off its natural alignment,
  // which vectorised kernels do not expect: those tensors are copied instead of viewed.
  if (reinterpret_cast<uintptr_t>(view.data) % st::dtype_size(view.dtype) != 0) {
    torch::Tensor copy = torch::empty(view.shape, options);
    std::memcpy(copy.data_ptr(), view.data, view.nbytes);
    return copy;
  }
  // The mapping is private copy-on-write (see File::open), so writes through this view are safe
  // and never reach the file. The view keeps the file mapped through a context whose deleter
  // marks it as a view of a mapping (release_file_pages looks for it).
  void* data = const_cast<std::byte*>(view.data);
  return at::for_blob(data, view.shape)
      .context(new MappedBytes{std::move(owner)}, &delete_mapped_bytes)
      .options(options)
      .make_tensor();
}

void release_file_pages(const torch::Tensor& tensor) {
  if (!tensor.defined() || !tensor.has_storage() || tensor.storage().data_ptr().get_deleter() != &delete_mapped_bytes)
    return;
  // Whole pages inside the tensor only: its neighbours' bytes stay as they are.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<uintptr_t>(tensor.data_ptr());
  const auto begin = (start + page - 1) / page * page, end = (start + tensor.nbytes()) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

std::map<std::string, torch::Tensor> load_tensors(const fs::path& file_or_dir) {
  const auto checkpoint = st::Checkpoint::open(file_or_dir);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& file : checkpoint.files())
    for (const auto& view : file->tensors())
      // An index may leave some of a shard's tensors out; only what it names is loaded.
      if (checkpoint.find(view.name) == &view) tensors.emplace(view.name, to_tensor(view, file));
  return tensors;
}

void save_tensors(const fs::path& file, const std::map<std::string, torch::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  const auto prepared = writable(file, tensors);
  st::write(file, prepared.data, metadata);
}

void save_tensors_sharded(const fs::path& dir, const std::map<std::string, torch::Tensor>& tensors,
                          std::size_t max_shard_bytes, std::string_view stem) {
  const auto prepared = writable(dir, tensors);
  st::write_sharded(dir, prepared.data, max_shard_bytes, stem);
}

}  // namespace lathe
