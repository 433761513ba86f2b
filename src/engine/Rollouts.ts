// Batched, prefix-shared rollout generation: the TypeScript face of native/engine/rollout.
import os from "node:os";
import {z} from "zod";
import {AbortError, OptionError, StillError, throwIfAborted} from "../errors.js";
import {MARKERS} from "../format/markers.js";
import type {Adapter} from "./Adapter.js";
import {type Backend, withAbortFlag} from "./binding.js";
import type {ChatMessage, Model} from "./Model.js";

export const rolloutEngineOptionsSchema = z.object({
    /** Samples decoded together in each batch (slots of the continuous batch). */
    parallel: z.number().int().min(1).max(128).default(8),
    /** KV cache cells; default: sized per run as parallel × (the longest prompt + maxTokens + 1). */
    contextSize: z.number().int().min(256).optional(),
    /** Most tokens per llama_decode call (prompt chunks and one token per running sample). */
    batchSize: z.number().int().min(1).default(2048),
    /** Most tokens per compute graph inside a decode. */
    ubatchSize: z.number().int().min(1).default(512),
    /** CPU threads for llama.cpp; default: all available. */
    threads: z.number().int().min(1).optional(),
    /**
     * "split" (default): a KV buffer per slot; a token attends to its own sequence only,
     * and a prompt shared by samples is copied (once per sample start).
     * "unified": one buffer; samples share their prompt's cells, but every token's
     * attention runs over all slots' cells (slower as sequences grow).
     */
    kvCache: z.enum(["split", "unified"]).default("split"),
    /**
     * llama.cpp's choice by default (on, on the CPU): faster as sequences grow. CPU flash
     * attention accumulates in F16, so reported log-probabilities differ from the scorer's
     * (which has it off) by up to a few 1e-3 per token; "off" matches them within 1e-3.
     */
    flashAttention: z.enum(["auto", "on", "off"]).default("auto")
});
export type RolloutEngineOptions = z.input<typeof rolloutEngineOptionsSchema>;

export const samplingSchema = z.object({
    /** Samples per request. */
    samples: z.number().int().min(1).default(1),
    /** 0 is greedy. */
    temperature: z.number().min(0).max(100).default(1),
    /** 0 is off. */
    topK: z.number().int().min(0).default(0),
    /** 1 is off. */
    topP: z.number().gt(0).max(1).default(1),
    /** 0 is off. */
    minP: z.number().min(0).max(1).default(0),
    /** Base seed; each request's samples derive theirs from it, the request's id and the sample index. */
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    maxTokens: z.number().int().min(0).default(512),
    /** Stop strings, matched across token boundaries and cut from the text. */
    stop: z.array(z.string().min(1)).default([]),
    /** Texts that end a sample and stay in its text: single tokens become stop tokens. */
    stopAfter: z.array(z.string().min(1)).default([MARKERS.endSolution]),
    /** End a sample at the model's end-of-generation tokens (not kept). */
    stopAtEog: z.boolean().default(true)
});
export type SamplingOptions = z.input<typeof samplingSchema>;

const chatMessageSchema = z.object({role: z.string().min(1), content: z.string()});
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

export type RolloutStats = {
    promptTokens: number,
    generatedTokens: number,
    samplesDone: number,
    samplesTotal: number,
    promptMs: number,
    /** Decoding and sampling the generated tokens. */
    generateMs: number,
    /** Of generateMs, the part spent sampling. */
    sampleMs: number,
    elapsedMs: number,
    decodes: number
};

const nativeSampleSchema = z.object({
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
const nativeStatsSchema = z.object({
    promptTokens: z.number(), generatedTokens: z.number(), samplesDone: z.number(), samplesTotal: z.number(),
    promptMs: z.number(), generateMs: z.number(), sampleMs: z.number(), elapsedMs: z.number(), decodes: z.number()
});

interface NativeRollouts {
    run(requests: NativeRequest[], onEvent: (kind: string, payload: unknown) => void, abort?: unknown): Promise<unknown>;
    setAdapters(adapters: [unknown, number][]): void;
    requiredCells(requests: NativeRequest[]): number;
    dispose(): void;
}

type NativeRequest = {
    prompt: number[], samples: number[], maxTokens: number, temperature: number, topK: number, topP: number,
    minP: number, seed: number, stopStrings: string[], stopTokens: number[], stopAtEog: boolean, keepStrings: string[]
};

/** A sequence of samples as they finish, and the run's totals once it ends. */
export interface RolloutRun extends AsyncIterable<RolloutSample> {
    readonly stats: Promise<RolloutStats>;
}

export class RolloutEngine {
    private running = false;
    private disposed = false;

    /** @internal Use Model.rollouts(). */
    constructor(
        private readonly model: Model,
        private readonly backend: Backend,
        private readonly native: NativeRollouts,
        readonly options: z.infer<typeof rolloutEngineOptionsSchema>
    ) {}

    /** LoRA adapters (with scales) applied from the next run; [] removes them. */
    setAdapters(adapters: readonly {adapter: Adapter, scale?: number}[]) {
        if (this.running) throw new StillError("adapters cannot change while a run is in progress.");
        this.native.setAdapters(adapters.map(({adapter, scale}) => [adapter.native(this.model), scale ?? 1]));
    }

    /**
     * Generates `sampling.samples` samples for every request; iterate the result to get
     * each sample as it finishes. An aborted signal stops the run within one decode;
     * samples cut short come back with finish "aborted".
     */
    generate(requests: readonly RolloutRequest[], sampling: SamplingOptions = {},
             options: {signal?: AbortSignal, onProgress?: (stats: RolloutStats) => void} = {}): RolloutRun {
        const prepared = this.prepare(requests, sampling);
        return this.start(prepared.native, prepared.ids, options);
    }

    private prepare(requests: readonly RolloutRequest[], sampling: SamplingOptions) {
        if (this.disposed) throw new StillError("the rollout engine has been disposed.");
        const parsedSampling = samplingSchema.safeParse(sampling);
        if (!parsedSampling.success) throw new OptionError(`invalid sampling options: ${z.prettifyError(parsedSampling.error)}`);
        const s = parsedSampling.data;
        const stopTokens: number[] = [];
        const keepStrings: string[] = [];
        for (const text of s.stopAfter) {
            const id = this.model.tokenId(text);
            if (id == null) keepStrings.push(text);
            else stopTokens.push(id);
        }
        const contextLength = this.model.facts.contextLength;
        const ids: (string | undefined)[] = [];
        const native: NativeRequest[] = requests.map((raw, i) => {
            const parsed = rolloutRequestSchema.safeParse(raw);
            if (!parsed.success) throw new OptionError(`request ${i}: ${z.prettifyError(parsed.error)}`);
            const r = parsed.data;
            ids.push(r.id);
            const prompt = this.promptTokens(r.prompt);
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
                stopStrings: s.stop,
                stopTokens,
                stopAtEog: s.stopAtEog,
                keepStrings
            };
        });
        this.checkMemory(native);
        return {native, ids};
    }

    private promptTokens(prompt: string | number[] | ChatMessage[]): number[] {
        if (typeof prompt === "string") return this.model.tokenize(prompt, {special: true, addSpecial: true});
        if (prompt.length === 0) return [];
        if (typeof prompt[0] === "number") return prompt as number[];
        const text = this.model.applyChatTemplate(prompt as ChatMessage[]);
        // Templates often write the BOS token themselves; add it only if they did not.
        const bos = this.model.facts.tokens.bos;
        const bosText = bos == null ? "" : this.model.detokenize([bos], {special: true});
        const addSpecial = this.model.facts.addBos && !(bosText !== "" && text.startsWith(bosText));
        return this.model.tokenize(text, {special: true, addSpecial});
    }

    /** Refuses a run whose KV cache would not fit in free memory, before allocating it. */
    private checkMemory(requests: NativeRequest[]) {
        const cells = this.options.contextSize ?? this.native.requiredCells(requests);
        const f = this.model.facts;
        const meta = this.model.gguf.metadata;
        const keyLength = Number(meta[`${f.architecture}.attention.key_length`] ?? 0) || f.embeddingLength / Math.max(1, f.headCount);
        const valueLength = Number(meta[`${f.architecture}.attention.value_length`] ?? 0) || keyLength;
        const bytes = cells * f.layerCount * f.headCountKv * (keyLength + valueLength) * 2; // F16 K and V
        const gpu = this.backend.devices.find((d) => d.type === "gpu" || d.type === "igpu");
        const free = gpu != null && f.gpuLayers !== 0 ? gpu.memoryFree : os.freemem();
        if (bytes > 0.9 * free) {
            const longest = Math.max(...requests.map((r) => r.prompt.length + r.maxTokens));
            throw new OptionError(`the KV cache for ${this.options.parallel} parallel samples of up to ${longest} tokens ` +
                `(${cells} cells) needs ${gib(bytes)} GiB but only ${gib(free)} GiB are free; lower parallel or maxTokens.`);
        }
    }

    private start(requests: NativeRequest[], ids: (string | undefined)[], options: {signal?: AbortSignal, onProgress?: (stats: RolloutStats) => void}): RolloutRun {
        throwIfAborted(options.signal, "generation");
        if (this.running) throw new StillError("this rollout engine is already running; wait for the run to end or create another.");
        this.running = true;

        const queue: RolloutSample[] = [];
        let wake: (() => void) | undefined;
        let finished = false;
        let failure: unknown;
        const notify = () => {
            wake?.();
            wake = undefined;
        };
        const onEvent = (kind: string, payload: unknown) => {
            if (kind === "result") {
                const r = nativeSampleSchema.parse(payload);
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
            } else if (kind === "progress") {
                options.onProgress?.(nativeStatsSchema.parse(payload));
            }
        };
        const stats = withAbortFlag(this.backend, options.signal, (abort) => this.native.run(requests, onEvent, abort))
            .then((s) => nativeStatsSchema.parse(s))
            .catch((err: unknown) => {
                const e = err as {code?: string, message?: string};
                throw e?.code === "cancelled" ? new AbortError("generation was cancelled")
                    : new StillError(`generation failed: ${e?.message ?? String(err)}`, {cause: err});
            })
            .finally(() => {
                this.running = false;
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

    dispose() {
        this.disposed = true;
        this.native.dispose();
    }
}

/** A request's seed: stable for the same base seed and request id, whatever its position. */
export function requestSeed(seed: number, id: string): number {
    let h = 0xcbf29ce484222325n;
    for (const byte of Buffer.from(`${seed}\u0000${id}`, "utf8")) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
    return Number(h & 0x1fffffffffffffn); // 53 bits survive the trip through a JS number
}

function gib(bytes: number) {
    return (bytes / 2 ** 30).toFixed(2);
}
