// LoRA adapters (llama.cpp's adapter GGUF) loaded for a model, and setting them on a context.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model.h"

namespace still {

class Adapter {
public:
    static std::shared_ptr<Adapter> load(std::shared_ptr<Model> model, const std::string & path);
    ~Adapter();
    Adapter(const Adapter &) = delete;
    Adapter & operator=(const Adapter &) = delete;
    llama_adapter_lora * raw() const { return adapter_; }

private:
    Adapter(std::shared_ptr<Model> model, llama_adapter_lora * adapter) : model_(std::move(model)), adapter_(adapter) {}
    std::shared_ptr<Model> model_; // the adapter must not outlive its model
    llama_adapter_lora * adapter_;
};

// Adapters with their scales.
using AdapterList = std::vector<std::pair<std::shared_ptr<Adapter>, float>>;

// Sets `adapters` on a context; [] removes them.
void apply_adapters(llama_context * ctx, const AdapterList & adapters);

} // namespace still
