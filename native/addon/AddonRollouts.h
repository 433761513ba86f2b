// JS face of still::RolloutEngine. A run happens on its own thread; each finished
// sample, progress, and the end of the run reach JS through one thread-safe function,
// in that order.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "rollout.h"

namespace still_addon {

class AddonRollouts : public Napi::ObjectWrap<AddonRollouts> {
public:
    static Napi::Function Init(Napi::Env env);
    // new Rollouts(model, {parallel, contextSize, batchSize, ubatchSize, threads, kvUnified, flashAttn})
    explicit AddonRollouts(const Napi::CallbackInfo & info);

private:
    // run(requests, onEvent(kind, payload), abortFlag?) -> Promise<stats>
    Napi::Value Run(const Napi::CallbackInfo & info);
    // setAdapters([[adapter, scale], ...])
    Napi::Value SetAdapters(const Napi::CallbackInfo & info);
    // requiredCells(requests) -> number
    Napi::Value RequiredCells(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);

    std::shared_ptr<still::RolloutEngine> Get(Napi::Env env) const;

    std::shared_ptr<still::RolloutEngine> engine_;
    std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};

} // namespace still_addon
