// JS face of still::RolloutEngine. A run happens on its own thread; each finished
// sample, progress, and the end of the run reach JS through one thread-safe function,
// in that order.
#pragma once

#include <napi.h>

#include "addon_engine.h"
#include "rollout.h"

namespace still_addon {

class AddonRollouts : public AddonEngine<AddonRollouts, still::RolloutEngine> {
public:
    static Napi::Function Init(Napi::Env env);
    // new Rollouts(model, {parallel, contextSize, batchSize, ubatchSize, threads, kvUnified, flashAttn})
    explicit AddonRollouts(const Napi::CallbackInfo & info);

private:
    // run(requests, onEvent(kind, payload), abortFlag?) -> Promise<stats>
    Napi::Value Run(const Napi::CallbackInfo & info);
    // requiredCells(requests) -> number
    Napi::Value RequiredCells(const Napi::CallbackInfo & info);
};

} // namespace still_addon
