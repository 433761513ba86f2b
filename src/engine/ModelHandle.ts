// What the engines built over a model (rollouts, scorer, adapters) use of it. Model
// implements it; the engines depend on this interface alone, not on Model.
import type {ChatMessage} from "../format/chatMessage.js";
import type {MarkerName} from "../format/markers.js";
import type {Backend} from "./binding.js";
import type {GgufInspection} from "./inspectGguf.js";
import type {NativeErrorContext, NativeFacts, NativeModel} from "./native.js";

export type ModelFacts = NativeFacts & {
    /** Token ids of the four STILL thought/solution markers, when each is a single token. */
    markers: Record<MarkerName, number | null>,
    /** The llama.cpp variant and devices the model was loaded with. */
    backend: {variant: string, llamaRelease: string, devices: Backend["devices"], warning?: string}
};

/** Raw prompt text (special tokens parsed), token ids, or chat messages for the model's template. */
export type Prompt = string | readonly number[] | readonly ChatMessage[];

export interface ModelHandle {
    readonly path: string;
    readonly facts: ModelFacts;
    readonly gguf: GgufInspection;
    readonly backend: Backend;
    /** Context for mapping the addon's errors about this model. */
    errorContext(operation?: string): NativeErrorContext;
    tokenize(text: string, options?: {special?: boolean, addSpecial?: boolean}): number[];
    detokenizeBytes(tokens: readonly number[] | Int32Array, options?: {special?: boolean}): Uint8Array;
    tokenId(text: string): number | null;
    /** A prompt as the engines decode it: chat messages through the template, BOS as the model asks. */
    promptTokens(prompt: Prompt): number[];
    /** @internal The native model, for engines and adapters of the same model. */
    nativeModel(): NativeModel;
}
