// Process-wide llama.cpp set-up: backend libraries, devices, type facts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace still {

struct DeviceInfo {
    std::string name;
    std::string description;
    std::string type; // "cpu", "gpu", "igpu", "accel"
    size_t memory_free = 0;
    size_t memory_total = 0;
};

// Initialises llama.cpp once. Backends built as loadable modules are loaded from
// `lib_dir`; when that yields no GPU device, each of `fallback_dirs` is tried in turn.
// With `cpu_backend` (a file: one of ggml's CPU backend modules, e.g. an ISA variant other
// than the best this CPU runs), that module alone is loaded instead. Returns why it failed
// ("" when it did not); later calls do nothing and return the first call's answer.
std::string backend_init(const std::string & lib_dir, const std::vector<std::string> & fallback_dirs, const std::string & cpu_backend = "");

std::vector<DeviceInfo> backend_devices();
bool backend_has_gpu();
std::string backend_system_info();

struct TypeInfo {
    bool known = false;
    std::string name;
    int64_t block_size = 0; // elements per block
    size_t type_size = 0;   // bytes per block
};

// Facts about a ggml tensor type id, as stored in GGUF files.
TypeInfo ggml_type_info(int32_t type);

} // namespace still
