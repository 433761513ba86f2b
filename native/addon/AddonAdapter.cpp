#include "AddonAdapter.h"

#include "AddonModel.h"
#include "addon.h"

namespace still_addon {

Napi::Function AddonAdapter::Init(Napi::Env env) {
    return DefineClass(env, "Adapter", {InstanceMethod("dispose", &AddonAdapter::Dispose)});
}

AddonAdapter::AddonAdapter(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonAdapter>(info) {}

std::shared_ptr<still::Adapter> AddonAdapter::Get(Napi::Env env) const {
    if (!adapter) throw coded_error(env, "disposed", "the adapter has been disposed");
    return adapter;
}

Napi::Value AddonAdapter::Dispose(const Napi::CallbackInfo & info) {
    adapter.reset(); // engines that still use it keep their own reference
    return info.Env().Undefined();
}

namespace {
class LoadAdapterWorker : public PromiseWorker {
public:
    LoadAdapterWorker(Napi::Env env, std::shared_ptr<still::Model> model, std::string path)
        : PromiseWorker(env, "still.loadAdapter"), model_(std::move(model)), path_(std::move(path)) {}

protected:
    void Run() override { adapter_ = still::Adapter::load(model_, path_); }
    Napi::Value Result(Napi::Env env) override {
        Napi::Object obj = addon_data(env).adapter_constructor.New({});
        AddonAdapter::Unwrap(obj)->adapter = std::move(adapter_);
        return obj;
    }

private:
    std::shared_ptr<still::Model> model_;
    std::string path_;
    std::shared_ptr<still::Adapter> adapter_;
};
} // namespace

Napi::Value AddonAdapter::Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsString())
        throw Napi::TypeError::New(env, "loadAdapter(model, path)");
    Napi::Object model = info[0].As<Napi::Object>();
    if (!model.InstanceOf(addon_data(env).model_constructor.Value())) throw Napi::TypeError::New(env, "expected a Model");
    auto m = AddonModel::Unwrap(model)->Get(env);
    return (new LoadAdapterWorker(env, m, info[1].As<Napi::String>().Utf8Value()))->Queue_();
}

still::AdapterList adapter_list(Napi::Env env, const Napi::Value & value) {
    if (!value.IsArray()) throw Napi::TypeError::New(env, "adapters must be [[adapter, scale], ...]");
    Napi::Array arr = value.As<Napi::Array>();
    still::AdapterList adapters;
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value pair = arr.Get(i);
        if (!pair.IsArray() || pair.As<Napi::Array>().Length() != 2) throw Napi::TypeError::New(env, "each adapter entry is [adapter, scale]");
        Napi::Value a = pair.As<Napi::Array>().Get(0u);
        Napi::Value scale = pair.As<Napi::Array>().Get(1u);
        if (!a.IsObject() || !a.As<Napi::Object>().InstanceOf(addon_data(env).adapter_constructor.Value()) || !scale.IsNumber())
            throw Napi::TypeError::New(env, "each adapter entry is [adapter, scale]");
        adapters.emplace_back(AddonAdapter::Unwrap(a.As<Napi::Object>())->Get(env), scale.As<Napi::Number>().FloatValue());
    }
    return adapters;
}

} // namespace still_addon
