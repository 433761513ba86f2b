// A cancellation flag shared between JS (set by an AbortSignal) and native workers.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

namespace still_addon {

class AddonAbortFlag : public Napi::ObjectWrap<AddonAbortFlag> {
public:
    static Napi::Function Init(Napi::Env env);
    explicit AddonAbortFlag(const Napi::CallbackInfo & info);

    // Null when `value` is undefined/null; throws TypeError for anything but an AbortFlag.
    static std::shared_ptr<std::atomic<bool>> From(Napi::Env env, const Napi::Value & value);

    std::shared_ptr<std::atomic<bool>> flag = std::make_shared<std::atomic<bool>>(false);

private:
    Napi::Value Abort(const Napi::CallbackInfo & info);
    Napi::Value Aborted(const Napi::CallbackInfo & info);
};

} // namespace still_addon
