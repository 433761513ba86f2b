// Batched, prefix-shared rollout generation: the TypeScript face of native/engine/rollout.
import os from "node:os";
import {z} from "zod";
import {OptionError, parseOptions} from "../errors.js";
import {chatMessageSchema} from "../format/chatMessage.js";
import {MARKERS} from "../format/markers.js";
import {BatchEngine} from "./BatchEngine.js";
import {decodeOptionFields, flashAttentionSchema} from "./decodeOptions.js";
import type {ModelHandle} from "./ModelHandle.js";
import {type NativeRolloutRequest, type NativeRollouts, type RolloutStats, eventHandler, nativeSampleSchema, rolloutStatsSchema} from "./native.js";

export type {RolloutStats};

export const rolloutEngineOptionsSchema = z.object({
    parallel: z.number().int().min(1).max(128).describe("Samples decoded together in each batch (slots of the continuous batch)").default(8),
    contextSize: z.number().int().min(256).optional()
        .describe("KV cache cells; default: sized per run as parallel × (the longest prompt + maxTokens + 1)"),
    ...decodeOptionFields,
    kvCache: z.enum(["split", "unified"]).describe(
        "split: a KV buffer per slot; a token attends to its own sequence only, and a prompt shared by samples is copied (once per " +
        "sample start). unified: one buffer; samples share their prompt's cells, but every token's attention runs over all slots' " +
        "cells (slower as sequences grow)").default("split"),
    flashAttention: flashAttentionSchema.describe(
        "llama.cpp's choice by default (on, on the CPU): faster as sequences grow. CPU flash attention accumulates in F16, so " +
        "reported log-probabilities differ from the scorer's (which has it off) by up to a few 1e-3 per token; off matches them within 1e-3").default("auto")
});
export type RolloutEngineOptions = z.input<typeof rolloutEngineOptionsSchema>;

export const samplingSchema = z.object({
    samples: z.number().int().min(1).describe("Samples per request").default(1),
    temperature: z.number().min(0).max(100).describe("Sampling temperature; 0 is greedy").default(1),
    topK: z.number().int().min(0).describe("Top-k cut; 0 is off").default(0),
    topP: z.number().gt(0).max(1).describe("Nucleus (top-p) cut; 1 is off").default(1),
    minP: z.number().min(0).max(1).describe("Min-p cut; 0 is off").default(0),
    temperedLogprobs: z.boolean().describe("Report each token's log-probability at the sampling temperature, log softmax(logits / T) over " +
        "the whole vocabulary (what an RL trainer scoring at T compares with), instead of at temperature 1").default(false),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
        .describe("Base seed; each request's samples derive theirs from it, the request's id and the sample index").default(0),
    maxTokens: z.number().int().min(0).describe("Most tokens per sample").default(512),
    stop: z.array(z.string().min(1)).describe("Stop strings, matched across token boundaries and cut from the text").default([]),
    stopAfter: z.array(z.string().min(1)).describe("Texts that end a sample and stay in its text (single tokens become stop tokens)")
        .default([MARKERS.endSolution]),
    stopAtEog: z.boolean().describe("End a sample at the model's end-of-generation tokens (not kept)").default(true)
});
export type SamplingOptions = z.input<typeof samplingSchema>;

export const rolloutRequestSchema = z.object({
    /** Your name for the request (a problem id); it also fixes the request's seeds. */
    id: z.string().optional(),
    /** Raw prompt text (special tokens parsed), token ids, or chat messages for the model's template. */
    prompt: z.union([z.string(), z.array(z.number().int().min(0)), z.array(chatMessageSchema).min(1)]),
    /** Which sample indices to run, when not 0..samples-1 (resuming a partial run). */
    sampleIndices: z.array(z.number().int().min(0)).optional()
});
export type RolloutRequest = z.input<typeof rolloutRequestSchema>;

export type RolloutSample = {
    /** Index of the request in the list given to generate(). */
    request: number,
    id: string | undefined,
    sample: number,
    text: string,
    tokens: number[],
    /** log p of each generated token under the model (temperature 1, whole vocabulary). */
    logprobs: number[],
    finish: "stop" | "length" | "aborted",
    /** The stop string or token text that ended the sample. */
    stop: string | null,
    promptTokens: number,
    completionTokens: number,
    /** Milliseconds since the run began. */
    timings: {startMs: number, firstTokenMs: number, endMs: number}
};

/** A sequence of samples as they finish, and the run's totals once it ends. */
export interface RolloutRun extends AsyncIterable<RolloutSample> {
    readonly stats: Promise<RolloutStats>;
}

export class RolloutEngine extends BatchEngine<NativeRollouts> {
    /** @internal Use Model.rollouts(). */
    constructor(model: ModelHandle, native: NativeRollouts, readonly options: z.infer<typeof rolloutEngineOptionsSchema>) {
        super(model, native, "rollout engine");
    }

    /**
     * Generates `sampling.samples` samples for every request; iterate the result to get
     * each sample as it finishes. An aborted signal stops the run within one decode;
     * samples cut short come back with finish "aborted".
     */
    generate(requests: readonly RolloutRequest[], sampling: SamplingOptions = {},
             options: {signal?: AbortSignal, onProgress?: (stats: RolloutStats) => void} = {}): RolloutRun {
        this.checkIdle(options.signal, "generation");
        const prepared = this.prepare(requests, sampling);
        return this.start(prepared.native, prepared.ids, options);
    }

    private prepare(requests: readonly RolloutRequest[], sampling: SamplingOptions) {
        const s = parseOptions(samplingSchema, sampling, "sampling options");
        const stopTokens: number[] = [];
        const keepStrings: string[] = [];
        for (const text of s.stopAfter) {
            const id = this.model.tokenId(text);
            if (id == null) keepStrings.push(text);
            else stopTokens.push(id);
        }
        const contextLength = this.model.facts.contextLength;
        const ids: (string | undefined)[] = [];
        const native: NativeRolloutRequest[] = requests.map((raw, i) => {
            const r = parseOptions(rolloutRequestSchema, raw, `request ${i}`);
            ids.push(r.id);
            const prompt = this.model.promptTokens(r.prompt);
            if (prompt.length === 0) throw new OptionError(`request ${r.id ?? i}: the prompt has no tokens.`);
            if (contextLength > 0 && prompt.length + s.maxTokens > contextLength)
                throw new OptionError(`request ${r.id ?? i}: prompt (${prompt.length} tokens) + maxTokens (${s.maxTokens}) exceeds the model's ` +
                    `training context of ${contextLength} tokens.`);
            return {
                prompt,
                samples: r.sampleIndices ?? Array.from({length: s.samples}, (_, k) => k),
                maxTokens: s.maxTokens,
                temperature: s.temperature,
                topK: s.topK,
                topP: s.topP,
                minP: s.minP,
                seed: requestSeed(s.seed, r.id ?? String(i)),
                temperedLogprobs: s.temperedLogprobs,
                stopStrings: s.stop,
                stopTokens,
                stopAtEog: s.stopAtEog,
                keepStrings
            };
        });
        this.checkMemory(native);
        return {native, ids};
    }

    /** Refuses a run whose KV cache would not fit in free memory, before allocating it, saying how many samples at once would. */
    private checkMemory(requests: NativeRolloutRequest[]) {
        const longest = Math.max(...requests.map((r) => r.prompt.length + r.maxTokens));
        const plan = kvCachePlan(this.model, {parallel: this.options.parallel, tokensPerSample: longest + 1});
        const cells = this.options.contextSize ?? this.native.requiredCells(requests);
        const bytes = cells * plan.bytesPerToken;
        if (bytes > 0.9 * plan.free) {
            throw new OptionError(`the KV cache for ${this.options.parallel} parallel samples of up to ${longest} tokens ` +
                `(${cells} cells) needs ${gib(bytes)} GiB but only ${gib(plan.free)} GiB are free; ` +
                (plan.fits > 0 ? `${plan.fits} parallel sample${plan.fits === 1 ? "" : "s"} of that length would fit: lower parallel or maxTokens.`
                    : "not even one sample of that length fits: lower maxTokens."));
        }
    }

    private start(requests: NativeRolloutRequest[], ids: (string | undefined)[], options: {signal?: AbortSignal, onProgress?: (stats: RolloutStats) => void}): RolloutRun {
        const queue: RolloutSample[] = [];
        let wake: (() => void) | undefined;
        let finished = false;
        let failure: unknown;
        const notify = () => {
            wake?.();
            wake = undefined;
        };
        const onEvent = eventHandler(nativeSampleSchema, rolloutStatsSchema, (r) => {
            queue.push({
                request: r.request,
                id: ids[r.request],
                sample: r.sample,
                text: r.text,
                tokens: Array.from(r.tokens),
                logprobs: Array.from(r.logprobs),
                finish: r.finish,
                stop: r.stop,
                promptTokens: r.promptTokens,
                completionTokens: r.tokens.length,
                timings: {startMs: r.startMs, firstTokenMs: r.firstTokenMs, endMs: r.endMs}
            });
            notify();
        }, options.onProgress);
        const stats = this.runNative("generation", options.signal, rolloutStatsSchema, (abort) => this.native.run(requests, onEvent, abort))
            .finally(() => {
                finished = true;
                notify();
            });
        stats.catch((err: unknown) => {
            failure = err;
        });

        return {
            stats,
            async* [Symbol.asyncIterator]() {
                while (true) {
                    if (queue.length > 0) {
                        yield queue.shift()!;
                        continue;
                    }
                    if (finished) break;
                    await new Promise<void>((resolve) => {
                        wake = resolve;
                    });
                }
                if (failure != null) throw failure;
            }
        };
    }
}

/** A request's seed: stable for the same base seed and request id, whatever its position. */
export function requestSeed(seed: number, id: string): number {
    let h = 0xcbf29ce484222325n;
    for (const byte of Buffer.from(`${seed}\u0000${id}`, "utf8")) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
    return Number(h & 0x1fffffffffffffn); // 53 bits survive the trip through a JS number
}

export type KvCachePlan = {
    /** KV cache bytes per token of context (F16 keys and values of every layer). */
    bytesPerToken: number,
    /** For `parallel` samples of `tokensPerSample` tokens. */
    bytes: number,
    /** Memory free where the cache would live (the GPU's when layers are offloaded). */
    free: number,
    /** How many samples of that length fit at once in 90% of it. */
    fits: number
};

/** The KV cache that `parallel` samples of up to `tokensPerSample` tokens (prompt and response) need, and how many fit. */
export function kvCachePlan(model: ModelHandle, o: {parallel: number, tokensPerSample: number}): KvCachePlan {
    const f = model.facts;
    const meta = model.gguf.metadata;
    const keyLength = Number(meta[`${f.architecture}.attention.key_length`] ?? 0) || f.embeddingLength / Math.max(1, f.headCount);
    const valueLength = Number(meta[`${f.architecture}.attention.value_length`] ?? 0) || keyLength;
    const bytesPerToken = f.layerCount * f.headCountKv * (keyLength + valueLength) * 2;
    const gpu = f.backend.devices.find((d) => d.type === "gpu" || d.type === "igpu");
    const free = gpu != null && f.gpuLayers !== 0 ? gpu.memoryFree : os.freemem();
    return {bytesPerToken, bytes: bytesPerToken * o.parallel * o.tokensPerSample, free, fits: Math.floor((0.9 * free) / (bytesPerToken * o.tokensPerSample))};
}

function gib(bytes: number) {
    return (bytes / 2 ** 30).toFixed(2);
}
