// JS face of still::Model: `loadModel()` and the Model object it resolves to.
#pragma once

#include <napi.h>

#include <memory>

#include "model.h"

namespace still_addon {

class AddonModel : public Napi::ObjectWrap<AddonModel> {
public:
    static Napi::Function Init(Napi::Env env);
    explicit AddonModel(const Napi::CallbackInfo & info);

    // loadModel(path, {gpuLayers, useMmap, vocabOnly, checkTensors}, onProgress?, abortFlag?) -> Promise<Model>
    static Napi::Value Load(const Napi::CallbackInfo & info);

    // The model, or a JS error when disposed. Workers hold their own reference, so
    // dispose() while they run frees the weights only when they finish.
    std::shared_ptr<still::Model> Get(Napi::Env env) const;
    std::shared_ptr<still::Model> model;

private:
    Napi::Value Facts(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    Napi::Value SingleToken(const Napi::CallbackInfo & info);
    Napi::Value ApplyChatTemplate(const Napi::CallbackInfo & info);
    Napi::Value GenerateGreedy(const Napi::CallbackInfo & info);
    Napi::Value EvalLogits(const Napi::CallbackInfo & info);
    Napi::Value DetokenizeBytes(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    Napi::Value Disposed(const Napi::CallbackInfo & info);
};

} // namespace still_addon
