// JS face of still::Scorer: teacher-forced log-probabilities, streamed per record.
#pragma once

#include <napi.h>

#include "addon_engine.h"
#include "scorer.h"

namespace still_addon {

class AddonScorer : public AddonEngine<AddonScorer, still::Scorer> {
public:
    static Napi::Function Init(Napi::Env env);
    // new Scorer(model, {parallel, sequenceCells, batchSize, ubatchSize, threads, flashAttn})
    explicit AddonScorer(const Napi::CallbackInfo & info);

private:
    // run([{prompt, completion, decodeLast?}], onEvent(kind, payload), abortFlag?) -> Promise<stats>
    Napi::Value Run(const Napi::CallbackInfo & info);
};

} // namespace still_addon
