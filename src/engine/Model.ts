// A GGUF model loaded through the native addon: facts, tokenizer, chat template.
import {z} from "zod";
import {ModelError, OptionError, StillError, parseOptions, throwIfAborted} from "../errors.js";
import type {ChatMessage} from "../format/chatMessage.js";
import {MARKERS, type MarkerName} from "../format/markers.js";
import {type Backend, getBackend, withAbortFlag} from "./binding.js";
import {Adapter, type AdapterChoice} from "./Adapter.js";
import {ChatTemplateRefusal, renderChatTemplate} from "./chatTemplate.js";
import {decodeOptionFields, defaultThreads, nativeDecodeOptions} from "./decodeOptions.js";
import {type GgufInspection, inspectGguf} from "./inspectGguf.js";
import type {ModelFacts, ModelHandle, Prompt} from "./ModelHandle.js";
import {type NativeErrorContext, type NativeFacts, type NativeModel, nativeError, nativeFactsSchema} from "./native.js";
import {probeModel} from "./probeModel.js";
import {RolloutEngine, type RolloutEngineOptions, rolloutEngineOptionsSchema} from "./Rollouts.js";
import {type PerplexityOptions, type PerplexityResult, Scorer, type ScorerOptions, perplexityOptionsSchema, scorerOptionsSchema} from "./Scorer.js";
import type {ScoreStats} from "./native.js";

export type {ChatMessage, ModelFacts, Prompt};

/** Layers to offload to the GPU (one definition for every option that takes it). */
export const gpuLayersSchema = z.union([z.number().int().min(0), z.enum(["auto", "max"])])
    .describe("Layers to offload to the GPU: a count, max for all, auto (all when a GPU is present, else none)").default("auto");

export const loadModelOptionsSchema = z.object({
    gpuLayers: gpuLayersSchema,
    useMmap: z.boolean().describe("Memory-map the file instead of reading it into memory").default(true),
    trusted: z.boolean().describe("Skip the check that runs llama.cpp's loader on the file in a child process first (it guards " +
        "against files on which llama.cpp would abort this process). Only for files already known to load").default(false),
    vocabOnly: z.boolean().describe("Load the tokenizer and facts only, no weights").default(false),
    checkTensors: z.boolean().describe("Let llama.cpp check tensor data for NaN/Inf while loading (slower)").default(false),
    variant: z.string().optional()
        .describe("llama.cpp variant to use (cpu, cuda, a source build's name); default: STILL_VARIANT or the best for this machine")
});
export type LoadModelOptions = z.input<typeof loadModelOptionsSchema> & {
    signal?: AbortSignal,
    /** Called with the loaded fraction, 0..1. */
    onProgress?: (fraction: number) => void
};

export class Model implements ModelHandle {
    /** Operations still running in native workers; dispose() waits for them. */
    private readonly pending = new Set<Promise<unknown>>();
    private readonly engines = new Set<RolloutEngine | Scorer>();
    private readonly adapters = new Set<Adapter>();
    private disposing: Promise<void> | undefined;

    private constructor(
        readonly path: string,
        readonly facts: ModelFacts,
        readonly gguf: GgufInspection,
        private readonly native: NativeModel,
        readonly backend: Backend
    ) {}

    /** Validates the file, then loads it off the event loop. */
    static async load(path: string, options: LoadModelOptions = {}): Promise<Model> {
        const {signal, onProgress, ...rest} = options;
        const opts = parseOptions(loadModelOptionsSchema, rest, "model options");
        throwIfAborted(signal, "loading the model");

        const backend = getBackend(opts.variant == null ? {} : {variant: opts.variant});
        const gguf = await inspectGguf(path, (t) => backend.binding.ggmlTypeInfo(t), {allowNoTensors: opts.vocabOnly});
        if (gguf.type === "adapter")
            throw new ModelError(path, `${path} is a LoRA adapter, not a model; load its base model and apply the adapter to it.`);

        if (!opts.trusted) {
            try {
                await probeModel(path, backend, {vocabOnly: opts.vocabOnly});
            } catch (err) {
                throw nativeError(err, {model: path, release: backend.release});
            }
            throwIfAborted(signal, "loading the model");
        }

        const gpuLayers = opts.gpuLayers === "max" ? -1
            : opts.gpuLayers === "auto" ? (backend.hasGpu ? -1 : 0)
            : opts.gpuLayers;
        let native: NativeModel;
        try {
            native = await withAbortFlag(backend, signal, (abort) => backend.binding.loadModel(path,
                {gpuLayers, useMmap: opts.useMmap, vocabOnly: opts.vocabOnly, checkTensors: opts.checkTensors},
                onProgress, abort));
        } catch (err) {
            throw nativeError(err, {model: path, release: backend.release});
        }

        const nativeFacts = nativeFactsSchema.parse(native.facts());
        if (opts.vocabOnly) fillFromMetadata(nativeFacts, gguf);
        const markers: Record<MarkerName, number | null> = {
            beginThought: native.singleToken(MARKERS.beginThought), endThought: native.singleToken(MARKERS.endThought),
            beginSolution: native.singleToken(MARKERS.beginSolution), endSolution: native.singleToken(MARKERS.endSolution)
        };
        const facts: ModelFacts = {
            ...nativeFacts,
            markers,
            backend: {
                variant: backend.variant.name,
                llamaRelease: backend.release,
                devices: backend.devices,
                ...(backend.warning == null ? {} : {warning: backend.warning})
            }
        };
        return new Model(path, facts, gguf, native, backend);
    }

    get disposed() {
        return this.disposing != null;
    }

    /** @internal */
    errorContext(operation?: string): NativeErrorContext {
        return {model: this.path, release: this.backend.release, ...(operation == null ? {} : {operation})};
    }

    /** @internal */
    nativeModel(): NativeModel {
        if (this.disposing != null) throw new StillError(`the model ${this.path} has been disposed.`);
        return this.native;
    }

    /**
     * Text to token ids. `special` parses control tokens written in the text (such as
     * "<|im_start|>"); `addSpecial` adds BOS/EOS where the model asks for them.
     */
    tokenize(text: string, options: {special?: boolean, addSpecial?: boolean} = {}): number[] {
        return Array.from(this.call(() => this.native.tokenize(text, options.addSpecial ?? false, options.special ?? false)));
    }

    /** Token ids to text; `special` renders control tokens as their text. */
    detokenize(tokens: readonly number[] | Int32Array, options: {special?: boolean} = {}): string {
        return this.call(() => this.native.detokenize(tokens, false, options.special ?? false));
    }

    /**
     * Prompt text to tokens as the engines decode it: special tokens parsed, and BOS added
     * when the model asks for it and the text (a rendered template often writes it) does
     * not start with it already.
     */
    tokenizePrompt(text: string): number[] {
        const bos = this.facts.tokens.bos;
        const bosText = bos == null ? "" : this.detokenize([bos], {special: true});
        return this.tokenize(text, {special: true, addSpecial: this.facts.addBos && !(bosText !== "" && text.startsWith(bosText))});
    }

    /** A prompt (text, token ids or chat messages for the template) as tokens; see tokenizePrompt(). */
    promptTokens(prompt: Prompt): number[] {
        if (typeof prompt === "string") return this.tokenizePrompt(prompt);
        if (isTokenIds(prompt)) return [...prompt];
        return this.tokenizePrompt(this.applyChatTemplate(prompt));
    }

    /** Token ids to their pieces laid end to end, as the engines build text (no clean-up between them): raw bytes that may end inside a UTF-8 sequence. */
    detokenizeBytes(tokens: readonly number[] | Int32Array, options: {special?: boolean} = {}): Uint8Array {
        return this.call(() => this.native.detokenizeBytes(tokens, options.special ?? false));
    }

    /**
     * The model's logits at each position from `from` on, decoding `tokens` as one
     * sequence in a fresh context: row i (n_vocab floats) predicts token from + i + 1.
     */
    async logits(tokens: readonly number[], options: {from?: number, threads?: number} = {}): Promise<Float32Array[]> {
        const from = options.from ?? 0;
        const flat = await this.track(async () => {
            try {
                return await this.native.evalLogits(tokens, from, options.threads ?? defaultThreads());
            } catch (err) {
                throw nativeError(err, this.errorContext());
            }
        });
        const n = this.facts.vocabSize;
        return Array.from({length: flat.length / n}, (_, i) => flat.subarray(i * n, (i + 1) * n));
    }

    /** The id of `text` when the vocabulary holds it as one token, else null. */
    tokenId(text: string): number | null {
        return this.call(() => this.native.singleToken(text));
    }

    private templateVariables: Record<string, unknown> = {};

    /**
     * Variables every rendering of the chat template gets from now on (prompts of the
     * engines, training examples), such as {enable_thinking: false}; replaces earlier ones.
     */
    setChatTemplateVariables(variables: Record<string, unknown>) {
        this.templateVariables = {...variables};
    }

    /** The variables set by setChatTemplateVariables. */
    get chatTemplateVariables(): Readonly<Record<string, unknown>> {
        return this.templateVariables;
    }

    /**
     * Formats chat messages with the model's chat template (or `template`). By default the
     * template is rendered as Jinja, as the model's authors wrote it; when it uses Jinja
     * features the renderer lacks, llama.cpp's built-in formatter for known template
     * families is used. `renderer` forces one of the two.
     */
    applyChatTemplate(messages: readonly ChatMessage[],
                      options: {addGenerationPrompt?: boolean, template?: string, renderer?: "auto" | "jinja" | "llama",
                          /** Template variables on top of the model's (setChatTemplateVariables). */
                          variables?: Record<string, unknown>} = {}): string {
        const template = options.template ?? this.facts.chatTemplate;
        if (template == null)
            throw new ModelError(this.path, `${this.path} has no chat template; pass one (template option) or give raw prompt text.`);
        const addGenerationPrompt = options.addGenerationPrompt ?? true;
        const renderer = options.renderer ?? "auto";
        let jinjaError: unknown;
        if (renderer !== "llama") {
            const tokenText = (id: number | null) => (id == null ? "" : this.detokenize([id], {special: true}));
            try {
                return renderChatTemplate(template, messages, {
                    addGenerationPrompt,
                    bosToken: tokenText(this.facts.tokens.bos),
                    eosToken: tokenText(this.facts.tokens.eos),
                    variables: {...this.templateVariables, ...options.variables}
                });
            } catch (err) {
                if (err instanceof ChatTemplateRefusal) throw new OptionError(err.message);
                if (renderer === "jinja") throw new ModelError(this.path, `the chat template of ${this.path} cannot be rendered: ${(err as Error).message}`);
                jinjaError = err;
            }
        }
        const out = this.call(() => this.native.applyChatTemplate(messages, addGenerationPrompt, template));
        if (out == null)
            throw new ModelError(this.path, `the chat template of ${this.path} could not be applied: llama.cpp does not recognise it` +
                (jinjaError == null ? "." : ` and the Jinja renderer failed (${(jinjaError as Error).message}).`));
        return out;
    }

    /**
     * Greedy continuation in a fresh single-sequence context, stopping at end-of-generation
     * or `maxTokens`: a check that the weights run. Rollouts use the batched engine.
     */
    async generateGreedy(prompt: string | readonly number[], options: {maxTokens?: number, threads?: number, signal?: AbortSignal} = {}) {
        const maxTokens = options.maxTokens ?? 16;
        if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new OptionError(`maxTokens must be a whole number ≥ 0, got ${maxTokens}.`);
        const tokens = typeof prompt === "string" ? this.tokenize(prompt, {special: true, addSpecial: true}) : [...prompt];
        if (tokens.length === 0) throw new OptionError("the prompt is empty.");
        throwIfAborted(options.signal, "generation");
        // Tracked as a whole, so a dispose() that comes meanwhile waits for the detokenize too.
        return this.track(async () => {
            try {
                const out = await withAbortFlag(this.backend, options.signal,
                    (abort) => this.native.generateGreedy(tokens, maxTokens, options.threads ?? defaultThreads(), abort));
                return {tokens: Array.from(out), text: this.native.detokenize(out, false, false)};
            } catch (err) {
                throw nativeError(err, this.errorContext("generation"));
            }
        });
    }

    /**
     * A rollout engine over this model: continuous batching over `parallel` slots,
     * prompts shared by their samples. See RolloutEngine.generate().
     */
    rollouts(options: RolloutEngineOptions = {}): RolloutEngine {
        const o = parseOptions(rolloutEngineOptionsSchema, options, "rollout options");
        const native = this.call(() => new this.backend.binding.Rollouts(this.nativeModel(), {
            ...nativeDecodeOptions(o),
            ...(o.contextSize == null ? {} : {contextSize: o.contextSize}),
            kvUnified: o.kvCache === "unified" ? 1 : 0
        }));
        return this.own(new RolloutEngine(this, native, o));
    }

    /**
     * A scorer over this model: teacher-forced log-probabilities of completions, and
     * llama-perplexity's text perplexity. See Scorer.score() and Scorer.perplexity().
     */
    scorer(options: ScorerOptions = {}): Scorer {
        const o = parseOptions(scorerOptionsSchema, options, "scorer options");
        const native = this.call(() => new this.backend.binding.Scorer(this.nativeModel(), {
            ...nativeDecodeOptions(o),
            ...(o.contextSize == null ? {} : {sequenceCells: o.contextSize})
        }));
        return this.own(new Scorer(this, native, o));
    }

    /**
     * Perplexity of plain text by llama-perplexity's protocol (chunks of `ctx` tokens, the
     * second half of each scored, batchSize / ctx chunks decoded together), so the two can
     * be compared on the same file.
     */
    async perplexity(text: string, options: PerplexityOptions & {batchSize?: number, threads?: number, adapters?: AdapterChoice,
        signal?: AbortSignal, onProgress?: (s: ScoreStats) => void} = {}): Promise<PerplexityResult> {
        const {ctx} = parseOptions(perplexityOptionsSchema, {ctx: options.ctx}, "perplexity options");
        const batchSize = options.batchSize ?? decodeOptionFields.batchSize.parse(undefined);
        const scorer = this.scorer({
            parallel: Math.max(1, Math.floor(batchSize / ctx)),
            contextSize: ctx,
            batchSize,
            // As llama-perplexity runs (so the numerics match it too).
            flashAttention: "auto",
            ...(options.threads == null ? {} : {threads: options.threads})
        });
        try {
            if (options.adapters != null) scorer.setAdapters(options.adapters);
            return await scorer.perplexity(text, {ctx, ...(options.chunks == null ? {} : {chunks: options.chunks}),
                ...(options.signal == null ? {} : {signal: options.signal}),
                ...(options.onProgress == null ? {} : {onProgress: options.onProgress})});
        } finally {
            scorer.dispose();
            this.engines.delete(scorer);
        }
    }

    /** Loads a LoRA adapter (llama.cpp's adapter GGUF) for this model. */
    async loadAdapter(path: string): Promise<Adapter> {
        if (this.disposing != null) throw new StillError(`the model ${this.path} has been disposed.`);
        const adapter = await this.track(() => Adapter.load(this, path));
        this.adapters.add(adapter);
        return adapter;
    }

    /** Frees the weights once running operations finish. Idempotent. */
    dispose(): Promise<void> {
        this.disposing ??= Promise.allSettled([...this.pending]).then(() => {
            for (const engine of this.engines) engine.dispose();
            for (const adapter of this.adapters) adapter.dispose();
            this.native.dispose();
        });
        return this.disposing;
    }

    async [Symbol.asyncDispose]() {
        await this.dispose();
    }

    private call<T>(fn: () => T): T {
        if (this.disposing != null) throw new StillError(`the model ${this.path} has been disposed.`);
        try {
            return fn();
        } catch (err) {
            throw nativeError(err, this.errorContext());
        }
    }

    /** An engine freed with the model. */
    private own<T extends RolloutEngine | Scorer>(engine: T): T {
        this.engines.add(engine);
        return engine;
    }

    /** Runs native async work, refused once disposing, and waited for by dispose(). */
    private track<T>(work: () => Promise<T>): Promise<T> {
        if (this.disposing != null) return Promise.reject(new StillError(`the model ${this.path} has been disposed.`));
        const promise = work();
        this.pending.add(promise);
        const done = () => this.pending.delete(promise);
        promise.then(done, done);
        return promise;
    }
}

/** Without weights llama.cpp reports no shape; take it from the file's metadata. */
function fillFromMetadata(facts: NativeFacts, gguf: GgufInspection) {
    const num = (key: string) => {
        const v = gguf.metadata[`${gguf.architecture}.${key}`];
        return typeof v === "number" ? v : 0;
    };
    facts.contextLength = num("context_length");
    facts.embeddingLength = num("embedding_length");
    facts.layerCount = num("block_count");
    facts.headCount = num("attention.head_count");
    facts.headCountKv = num("attention.head_count_kv") || facts.headCount;
    facts.parameterCount = gguf.parameterCount;
    facts.sizeBytes = gguf.tensorBytes;
}

/** Loads a GGUF model; see Model.load. */
export function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
    return Model.load(path, options);
}

function isTokenIds(prompt: readonly number[] | readonly ChatMessage[]): prompt is readonly number[] {
    return prompt.length === 0 || typeof prompt[0] === "number";
}
