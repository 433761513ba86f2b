#include "backend.h"

#include <mutex>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"
#include "log.h"
#include "q8_gemm.h"

namespace still {

static bool has_gpu_device() {
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        const enum ggml_backend_dev_type t = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
    }
    return false;
}

std::string backend_init(const std::string & lib_dir, const std::vector<std::string> & fallback_dirs, const std::string & cpu_backend) {
    static std::once_flag once;
    static std::string error;
    std::call_once(once, [&] {
        log_install();
        // Builds with GGML_BACKEND_DL (the prebuilt packages) register nothing until
        // their backend modules are loaded; static builds come with their backends.
        if (!cpu_backend.empty()) {
            if (ggml_backend_reg_count() != 0) {
                error = "this build has its CPU backend built in; a CPU backend module (" + cpu_backend + ") cannot be chosen";
                return;
            }
            // that module alone: a CPU variant has no other backends to load
            if (ggml_backend_load(cpu_backend.c_str()) == nullptr) {
                error = "ggml's CPU backend " + cpu_backend + " did not load (this CPU lacks its instructions, or the file is not a ggml backend)";
                return;
            }
        } else if (ggml_backend_reg_count() == 0 && !lib_dir.empty()) {
            ggml_backend_load_all_from_path(lib_dir.c_str());
            for (const std::string & dir : fallback_dirs) {
                if (has_gpu_device()) break;
                ggml_backend_load_all_from_path(dir.c_str());
            }
        }
        llama_backend_init();
        // GPU builds keep llama.cpp's own placement: weights there live on the device.
        if (!has_gpu_device()) q8_gemm_register();
    });
    return error;
}

std::vector<DeviceInfo> backend_devices() {
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo info;
        info.name = ggml_backend_dev_name(dev);
        info.description = ggml_backend_dev_description(dev);
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU: info.type = "cpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_GPU: info.type = "gpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU: info.type = "igpu"; break;
            default: info.type = "accel"; break;
        }
        ggml_backend_dev_memory(dev, &info.memory_free, &info.memory_total);
        out.push_back(info);
    }
    return out;
}

bool backend_has_gpu() { return has_gpu_device(); }

std::string backend_system_info() { return llama_print_system_info(); }

TypeInfo ggml_type_info(int32_t type) {
    TypeInfo info;
    if (type < 0 || type >= GGML_TYPE_COUNT) return info;
    const enum ggml_type t = static_cast<enum ggml_type>(type);
    // Retired type ids keep their slot with a zero size.
    if (ggml_type_size(t) == 0 || ggml_blck_size(t) == 0) return info;
    info.known = true;
    info.name = ggml_type_name(t);
    info.block_size = ggml_blck_size(t);
    info.type_size = ggml_type_size(t);
    return info;
}

} // namespace still
