// Public API of still.
export {AbortError, DataError, ModelError, NativeError, OptionError, StillError, throwIfAborted} from "./errors.js";
export {MARKERS, type MarkerName} from "./format/markers.js";
export {getBackend, type Backend, type Device} from "./engine/binding.js";
export {Model, loadModel, type ChatMessage, type LoadModelOptions, type ModelFacts} from "./engine/Model.js";
export {inspectGguf, type GgufInspection} from "./engine/inspectGguf.js";
export {Adapter} from "./engine/Adapter.js";
export {
    RolloutEngine, type RolloutEngineOptions, type RolloutRequest, type RolloutRun, type RolloutSample, type RolloutStats,
    type SamplingOptions
} from "./engine/Rollouts.js";
export {makeModel, modelTypes, type MakeModelOptions, type MadeModel, type ModelType} from "../models/makeModel.js";
export {presets, presetNames, type Preset, type PresetName} from "../models/presets.js";
