// JS face of still::Adapter: a LoRA adapter loaded for one model.
#pragma once

#include <napi.h>

#include <memory>

#include "adapter.h"

namespace still_addon {

class AddonAdapter : public Napi::ObjectWrap<AddonAdapter> {
public:
    static Napi::Function Init(Napi::Env env);
    explicit AddonAdapter(const Napi::CallbackInfo & info);

    // loadAdapter(model, path) -> Promise<Adapter>
    static Napi::Value Load(const Napi::CallbackInfo & info);

    // The adapter, or a JS error once disposed.
    std::shared_ptr<still::Adapter> Get(Napi::Env env) const;
    std::shared_ptr<still::Adapter> adapter;

private:
    Napi::Value Dispose(const Napi::CallbackInfo & info);
};

// [[adapter, scale], ...] from JS.
still::AdapterList adapter_list(Napi::Env env, const Napi::Value & value);

} // namespace still_addon
