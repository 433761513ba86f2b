#include "AddonAbortFlag.h"

#include "addon.h"

namespace still_addon {

Napi::Function AddonAbortFlag::Init(Napi::Env env) {
    return DefineClass(env, "AbortFlag", {
        InstanceMethod("abort", &AddonAbortFlag::Abort),
        InstanceAccessor("aborted", &AddonAbortFlag::Aborted, nullptr),
    });
}

AddonAbortFlag::AddonAbortFlag(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonAbortFlag>(info) {}

Napi::Value AddonAbortFlag::Abort(const Napi::CallbackInfo & info) {
    flag->store(true);
    return info.Env().Undefined();
}

Napi::Value AddonAbortFlag::Aborted(const Napi::CallbackInfo & info) {
    return Napi::Boolean::New(info.Env(), flag->load());
}

std::shared_ptr<std::atomic<bool>> AddonAbortFlag::From(Napi::Env env, const Napi::Value & value) {
    if (value.IsUndefined() || value.IsNull()) return nullptr;
    if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(addon_data(env).abort_flag_constructor.Value()))
        throw Napi::TypeError::New(env, "expected an AbortFlag");
    return Unwrap(value.As<Napi::Object>())->flag;
}

} // namespace still_addon
