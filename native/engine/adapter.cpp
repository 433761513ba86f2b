#include "adapter.h"

#include "log.h"

namespace still {

std::shared_ptr<Adapter> Adapter::load(std::shared_ptr<Model> model, const std::string & path) {
    LogCapture capture;
    llama_adapter_lora * adapter = llama_adapter_lora_init(model->raw(), path.c_str());
    if (adapter == nullptr) {
        std::string reason = capture.summary();
        throw EngineError("load_failed", reason.empty() ? "llama.cpp could not load the adapter" : reason);
    }
    return std::shared_ptr<Adapter>(new Adapter(std::move(model), adapter));
}

Adapter::~Adapter() { llama_adapter_lora_free(adapter_); }

void apply_adapters(llama_context * ctx, const AdapterList & adapters) {
    std::vector<llama_adapter_lora *> ptrs;
    std::vector<float> scales;
    for (const auto & a : adapters) {
        ptrs.push_back(a.first->raw());
        scales.push_back(a.second);
    }
    if (llama_set_adapters_lora(ctx, ptrs.data(), ptrs.size(), scales.data()) != 0)
        throw EngineError("invalid_argument", "llama.cpp refused the LoRA adapters for this model");
}

} // namespace still
