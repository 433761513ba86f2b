// The one typed boundary to the native addon (native/addon): the shape of every native
// object, schemas for what comes back from C++, and the one mapping of its coded errors to
// the project's error classes. Nothing else in src/ knows the addon's raw shapes.
import {z} from "zod";
import {AbortError, ModelError, OptionError, StillError} from "../errors.js";
import type {ChatMessage} from "../format/chatMessage.js";

type Tokens = Int32Array | readonly number[];

export interface NativeAbortFlag {
    abort(): void;
    readonly aborted: boolean;
}

/** native/addon/AddonModel.cpp */
export interface NativeModel {
    facts(): unknown;
    tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
    detokenize(tokens: Tokens, removeSpecial: boolean, unparseSpecial: boolean): string;
    detokenizeBytes(tokens: Tokens, special: boolean): Uint8Array;
    singleToken(text: string): number | null;
    applyChatTemplate(messages: readonly ChatMessage[], addAssistant: boolean, template?: string): string | null;
    generateGreedy(tokens: Tokens, maxTokens: number, threads: number, abort?: NativeAbortFlag): Promise<Int32Array>;
    evalLogits(tokens: Tokens, from: number, threads: number): Promise<Float32Array>;
    dispose(): void;
    readonly disposed: boolean;
}

/** native/addon/AddonAdapter.cpp */
export interface NativeAdapter {
    dispose(): void;
}

/** Receives a run's events: "result" with one result, "progress" with running stats. */
export type NativeEventHandler = (kind: string, payload: unknown) => void;

/** The decode options both engines take (native/engine/decode.h, DecodeParams). */
export type NativeDecodeOptions = {parallel: number, batchSize: number, ubatchSize: number, threads: number, flashAttn: number};

export type NativeRolloutRequest = {
    prompt: number[], samples: number[], maxTokens: number, temperature: number, topK: number, topP: number,
    minP: number, seed: number, temperedLogprobs: boolean, stopStrings: string[], stopTokens: number[], stopAtEog: boolean, keepStrings: string[]
};

/** native/addon/AddonRollouts.cpp */
export interface NativeRollouts {
    run(requests: NativeRolloutRequest[], onEvent: NativeEventHandler, abort?: NativeAbortFlag): Promise<unknown>;
    setAdapters(adapters: [NativeAdapter, number][]): void;
    requiredCells(requests: NativeRolloutRequest[]): number;
    dispose(): void;
}

export type NativeScoreRecord = {prompt: number[], completion: number[], decodeLast?: boolean};

/** native/addon/AddonScorer.cpp */
export interface NativeScorer {
    run(records: NativeScoreRecord[], onEvent: NativeEventHandler, abort?: NativeAbortFlag): Promise<unknown>;
    setAdapters(adapters: [NativeAdapter, number][]): void;
    dispose(): void;
}

/** native/addon/addon.cpp: the module itself. */
export interface NativeBinding {
    readonly variant: string;
    readonly llamaRelease: string;
    /** cpuBackend: one of ggml's CPU backend modules, loaded alone instead of the best of libDir's (STILL_GGML_CPU). */
    init(libDir: string, fallbackDirs: string[], cpuBackend?: string): void;
    devices(): unknown;
    systemInfo(): string;
    /**
     * still's Q8_0 kernel (native/engine/q8_gemm.cpp) on CPUs with AVX-512 VNNI or AVX-VNNI (isa:
     * the one it runs; STILL_Q8_ISA picks): by default the output layer's products only (mode
     * "output"); STILL_Q8_GEMM=all for every Q8_0 product, =0 for none.
     */
    q8Kernel(): {active: boolean, mode: "off" | "output" | "all", status: string, isa: "AVX-512 VNNI" | "AVX-VNNI" | "none", products: number};
    ggmlTypeInfo(type: number): {name: string, blockSize: number, typeSize: number} | null;
    setLogLevel(level: number): void;
    quantize(inPath: string, outPath: string, ftype: number, threads: number): Promise<void>;
    probeModel(path: string, vocabOnly: boolean): Promise<void>;
    loadModel(path: string, options: {gpuLayers: number, useMmap: boolean, vocabOnly: boolean, checkTensors: boolean},
        onProgress?: (fraction: number) => void, abort?: NativeAbortFlag): Promise<NativeModel>;
    loadAdapter(model: NativeModel, path: string): Promise<NativeAdapter>;
    AbortFlag: new () => NativeAbortFlag;
    Rollouts: new (model: NativeModel, options: NativeDecodeOptions & {contextSize?: number, kvUnified: number}) => NativeRollouts;
    Scorer: new (model: NativeModel, options: NativeDecodeOptions & {sequenceCells?: number}) => NativeScorer;
}

// --- what comes back ----------------------------------------------------------------

export const deviceSchema = z.object({
    name: z.string(),
    description: z.string(),
    type: z.enum(["cpu", "gpu", "igpu", "accel"]),
    memoryFree: z.number(),
    memoryTotal: z.number()
});
export type Device = z.infer<typeof deviceSchema>;

const tokenId = z.number().int().nullable();
export const nativeFactsSchema = z.object({
    architecture: z.string(),
    name: z.string(),
    description: z.string(),
    fileType: z.string(),
    sizeBytes: z.number(),
    parameterCount: z.number(),
    contextLength: z.number().int(),
    embeddingLength: z.number().int(),
    layerCount: z.number().int(),
    headCount: z.number().int(),
    headCountKv: z.number().int(),
    vocabSize: z.number().int(),
    vocabType: z.string(),
    tokens: z.object({bos: tokenId, eos: tokenId, eot: tokenId, sep: tokenId, nl: tokenId, pad: tokenId}),
    addBos: z.boolean(),
    addEos: z.boolean(),
    eog: z.array(z.number().int()),
    specialTokens: z.array(z.object({id: z.number().int(), text: z.string(), kind: z.enum(["control", "user_defined", "unknown"])})),
    chatTemplate: z.string().nullable(),
    gpuLayers: z.number().int()
});
export type NativeFacts = z.infer<typeof nativeFactsSchema>;

export const nativeSampleSchema = z.object({
    request: z.number().int(),
    sample: z.number().int(),
    tokens: z.instanceof(Int32Array),
    logprobs: z.instanceof(Float32Array),
    text: z.string(),
    finish: z.enum(["stop", "length", "aborted"]),
    stop: z.string().nullable(),
    promptTokens: z.number().int(),
    startMs: z.number(),
    firstTokenMs: z.number(),
    endMs: z.number()
});

export const rolloutStatsSchema = z.object({
    promptTokens: z.number(),
    generatedTokens: z.number(),
    samplesDone: z.number(),
    samplesTotal: z.number(),
    promptMs: z.number(),
    /** Decoding and sampling the generated tokens. */
    generateMs: z.number(),
    /** Wall time of llama_decode (prompt and generated tokens). */
    decodeMs: z.number(),
    /** Reading the logits rows before sampling. */
    logitsMs: z.number(),
    /** The samplers (top-k, temperature, the draw and the token's log-prob). */
    sampleMs: z.number(),
    /** Taking the sampled tokens: end-of-generation and stop checks, text, bookkeeping. */
    acceptMs: z.number(),
    elapsedMs: z.number(),
    decodes: z.number()
});
export type RolloutStats = z.infer<typeof rolloutStatsSchema>;

export const nativeScoreSchema = z.object({record: z.number().int(), logprobs: z.instanceof(Float32Array)});

export const scoreStatsSchema = z.object({
    recordsDone: z.number(),
    recordsTotal: z.number(),
    tokensDecoded: z.number(),
    tokensScored: z.number(),
    decodeMs: z.number(),
    softmaxMs: z.number(),
    elapsedMs: z.number(),
    decodes: z.number()
});
export type ScoreStats = z.infer<typeof scoreStatsSchema>;

/** Routes a run's events through their schemas: results to `onResult`, progress to `onProgress`. */
export function eventHandler<R, S>(result: z.ZodType<R>, stats: z.ZodType<S>, onResult: (r: R) => void,
                                   onProgress?: (s: S) => void): NativeEventHandler {
    return (kind, payload) => {
        if (kind === "result") onResult(result.parse(payload));
        else if (kind === "progress") onProgress?.(stats.parse(payload));
    };
}

// --- errors -------------------------------------------------------------------------

export type NativeErrorContext = {
    /** The model file the call was about. */
    model: string,
    /** llama.cpp's release, for "not supported" messages. */
    release: string,
    /** What was being done ("generation", "scoring"), for cancellation and failure messages. */
    operation?: string
};

/**
 * Maps an error from the addon (an Error with a stable `code`, see native/engine/model.h)
 * to the project's error classes: cancelled → AbortError, load_failed → ModelError,
 * invalid_argument → OptionError, anything else → StillError naming the operation.
 */
export function nativeError(err: unknown, context: NativeErrorContext): StillError {
    if (err instanceof StillError) return err;
    const e = err as Error & {code?: string};
    const message = e?.message ?? String(err);
    const {model, release, operation} = context;
    switch (e?.code) {
        case "cancelled":
            return new AbortError(operation == null ? message : `${operation} was cancelled`);
        case "load_failed": {
            const arch = /unknown model architecture: '([^']*)'/.exec(message);
            if (arch != null)
                return new ModelError(model, `${model} has architecture '${arch[1]}', which llama.cpp ${release} does not support.`, {cause: err});
            return new ModelError(model, `llama.cpp could not load ${model}: ${loadFailure(message)}.`, {cause: err});
        }
        case "invalid_argument":
            return new OptionError(message, {cause: err});
        case "disposed":
            return new StillError(`${message} (${model}).`, {cause: err});
        default:
            return new StillError(operation == null ? message : `${operation} failed: ${message}`, {cause: err});
    }
}

/** llama.cpp's load errors without their function-name prefixes and the generic last line. */
function loadFailure(message: string) {
    const lines = message.split("; ")
        .map((l) => l.replace(/^((error loading model|[a-z_]+): )+/, "").trim())
        .filter((l) => l !== "" && !/^failed to load model$/.test(l));
    return (lines.join("; ") || message).replace(/[.\s]+$/, "");
}
