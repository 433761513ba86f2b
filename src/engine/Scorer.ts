// Teacher-forced scoring: log-probabilities of given completions, and llama-perplexity's
// plain-text perplexity. The TypeScript face of native/engine/scorer.
import {z} from "zod";
import {AbortError, OptionError, parseOptions} from "../errors.js";
import {chatMessageSchema} from "../format/chatMessage.js";
import {thoughtSpans} from "../format/parseThought.js";
import {BatchEngine} from "./BatchEngine.js";
import {decodeOptionFields, flashAttentionSchema} from "./decodeOptions.js";
import type {ModelHandle} from "./ModelHandle.js";
import {type NativeScoreRecord, type NativeScorer, type ScoreStats, eventHandler, nativeScoreSchema, scoreStatsSchema} from "./native.js";

export type {ScoreStats};

export const scorerOptionsSchema = z.object({
    parallel: z.number().int().min(1).max(64).describe("Sequences decoded together").default(4),
    contextSize: z.number().int().min(2).optional()
        .describe("KV cells per sequence (the longest record scored whole); default: the longest record, at most the model's training context"),
    ...decodeOptionFields,
    overflow: z.enum(["error", "truncate"]).describe(
        "A record longer than a sequence holds: error refuses the call naming the record; truncate drops prompt tokens from the " +
        "left, then completion tokens from the right, and marks the record's result truncated").default("error"),
    flashAttention: flashAttentionSchema.describe(
        "Off by default: llama.cpp's CPU flash attention accumulates in F16, so a token's log-probability would move (by up to " +
        "~2e-3) with how records are split across decodes").default("off")
});
/** llama-perplexity's protocol over plain text. */
export const perplexityOptionsSchema = z.object({
    ctx: z.number().int().min(4).describe("Chunk size in tokens, as llama-perplexity's -c; the second half of each chunk is scored").default(512),
    chunks: z.number().int().min(1).optional().describe("At most this many chunks, as llama-perplexity's --chunks")
});
export type PerplexityOptions = z.input<typeof perplexityOptionsSchema>;

export type ScorerOptions = z.input<typeof scorerOptionsSchema>;

export const scoreRecordSchema = z.object({
    id: z.string().optional(),
    /** Raw text (special tokens parsed, BOS added as the model asks), token ids, or chat messages. */
    prompt: z.union([z.string(), z.array(z.number().int().min(0)).min(1), z.array(chatMessageSchema).min(1)]),
    /** The scored part: token ids (as generated), or text tokenized on its own. */
    completion: z.union([z.string(), z.array(z.number().int().min(0))]),
    /** Named token ranges [start, end) of the completion to report on their own. */
    spans: z.array(z.object({name: z.string().min(1), start: z.number().int().min(0), end: z.number().int().min(0)})
        .refine((s) => s.end >= s.start, {message: "end must not be before start"})).optional()
});
export type ScoreRecord = z.input<typeof scoreRecordSchema>;

export type SegmentScore = {tokens: number, sum: number, mean: number, perplexity: number};

export type ScoreResult = {
    /** Position in the list given to score(). */
    index: number,
    id: string | undefined,
    /** Completion tokens scored. */
    tokens: number,
    /** log p of each scored completion token given all before it. */
    logprobs: number[],
    sum: number,
    mean: number,
    /** exp(−mean): the completion's perplexity. */
    perplexity: number,
    /** Set when the record was cut to fit (overflow "truncate"). */
    truncated: {promptTokensDropped: number, completionTokensDropped: number} | null,
    /** The thought and solution spans (by the STILL markers, when present) and the caller's spans. */
    segments: Record<string, SegmentScore>
};

export type PerplexityResult = {
    perplexity: number,
    /** Negative log-likelihood summed over the scored tokens. */
    nll: number,
    tokensScored: number,
    chunks: number,
    ctx: number,
    /** Perplexity after each chunk, as llama-perplexity prints it. */
    running: number[],
    /** All chunk tokens (scored or not) per second of scoring. */
    tokensPerSecond: number
};

export class Scorer extends BatchEngine<NativeScorer> {
    /** @internal Use Model.scorer(). */
    constructor(model: ModelHandle, native: NativeScorer, readonly options: z.infer<typeof scorerOptionsSchema>) {
        super(model, native, "scorer");
    }

    /**
     * Scores every record; results come back in input order (and to `onResult` as each
     * record finishes). Records with the same prompt decode it once.
     */
    async score(records: readonly ScoreRecord[], options: {signal?: AbortSignal, onProgress?: (s: ScoreStats) => void,
        onResult?: (r: ScoreResult) => void} = {}): Promise<ScoreResult[]> {
        const prepared = records.map((raw, i) => this.prepare(raw, i));
        const results: ScoreResult[] = new Array(records.length);
        await this.run(prepared.map((p) => ({prompt: p.prompt, completion: p.completion})), (index, logprobs) => {
            const p = prepared[index]!;
            const result = summarise(index, p.id, logprobs, p.truncated, p.spans);
            results[index] = result;
            options.onResult?.(result);
        }, options);
        if (options.signal?.aborted) throw new AbortError("scoring was cancelled");
        return results;
    }

    /**
     * Perplexity of plain text by llama-perplexity's protocol: the text's tokens (BOS added
     * as the model asks) in chunks of `ctx`, each chunk's first token replaced by BOS, and
     * only the second half of each chunk scored. Needs at least 2 × ctx tokens.
     */
    async perplexity(text: string, options: PerplexityOptions & {signal?: AbortSignal, onProgress?: (s: ScoreStats) => void} = {}): Promise<PerplexityResult> {
        const {ctx, chunks: maxChunks} = parseOptions(perplexityOptionsSchema, {ctx: options.ctx, chunks: options.chunks}, "perplexity options");
        const tokens = this.model.tokenize(text, {special: false, addSpecial: true});
        if (tokens.length < 2 * ctx)
            throw new OptionError(`perplexity with a context of ${ctx} needs at least ${2 * ctx} tokens; the text has ${tokens.length}.`);
        const bos = this.model.facts.addBos ? this.model.facts.tokens.bos : null;
        const first = Math.floor(ctx / 2);
        // At most `chunks` of them, like llama-perplexity's --chunks.
        const chunks = Math.min(Math.floor(tokens.length / ctx), maxChunks ?? Infinity);
        const records = Array.from({length: chunks}, (_, c) => {
            const chunk = tokens.slice(c * ctx, (c + 1) * ctx);
            if (bos != null) chunk[0] = bos;
            // decodeLast: the chunk's last token too, so each batch has llama-perplexity's shape
            // (and, with quantized weights, its numerics: kernels tile by the rows they get).
            return {prompt: chunk.slice(0, first + 1), completion: chunk.slice(first + 1), decodeLast: true};
        });
        const nllPerChunk: number[] = new Array(chunks).fill(0);
        const stats = await this.run(records, (index, logprobs) => {
            let nll = 0;
            for (const lp of logprobs) nll -= lp;
            nllPerChunk[index] = nll;
        }, options);
        if (options.signal?.aborted) throw new AbortError("scoring was cancelled");
        const perChunk = ctx - first - 1;
        let nll = 0;
        const running = nllPerChunk.map((v, i) => {
            nll += v;
            return Math.exp(nll / ((i + 1) * perChunk));
        });
        return {
            perplexity: Math.exp(nll / (chunks * perChunk)),
            nll,
            tokensScored: chunks * perChunk,
            chunks,
            ctx,
            running,
            tokensPerSecond: (chunks * ctx) / (stats.elapsedMs / 1000)
        };
    }

    private run(records: NativeScoreRecord[], onLogprobs: (index: number, logprobs: Float32Array) => void,
                options: {signal?: AbortSignal, onProgress?: (s: ScoreStats) => void}): Promise<ScoreStats> {
        const onEvent = eventHandler(nativeScoreSchema, scoreStatsSchema, (r) => onLogprobs(r.record, r.logprobs), options.onProgress);
        return this.runNative("scoring", options.signal, scoreStatsSchema, (abort) => this.native.run(records, onEvent, abort));
    }

    private prepare(raw: ScoreRecord, index: number) {
        const r = parseOptions(scoreRecordSchema, raw, `record ${index}`);
        let prompt = this.model.promptTokens(r.prompt);
        let completion = typeof r.completion === "string" ? this.model.tokenize(r.completion, {special: true}) : [...r.completion];
        const spans: Record<string, [number, number]> = {...this.markerSpans(completion)};
        for (const s of r.spans ?? []) {
            if (s.end > completion.length)
                throw new OptionError(`record ${r.id ?? index}: span ${s.name} ends at token ${s.end}, past the completion's ${completion.length} tokens.`);
            spans[s.name] = [s.start, s.end];
        }
        const limit = this.options.contextSize ?? this.model.facts.contextLength;
        let truncated: ScoreResult["truncated"] = null;
        if (prompt.length + completion.length > limit) {
            if (this.options.overflow === "error")
                throw new OptionError(`record ${r.id ?? index}: prompt (${prompt.length}) + completion (${completion.length}) tokens exceed the ` +
                    `${limit} a sequence holds; give a larger contextSize or overflow "truncate".`);
            const keepCompletion = Math.min(completion.length, limit - 1);
            const keepPrompt = Math.min(prompt.length, limit - keepCompletion);
            truncated = {promptTokensDropped: prompt.length - keepPrompt, completionTokensDropped: completion.length - keepCompletion};
            prompt = prompt.slice(prompt.length - keepPrompt);
            completion = completion.slice(0, keepCompletion);
            for (const [name, [start, end]] of Object.entries(spans)) spans[name] = [Math.min(start, keepCompletion), Math.min(end, keepCompletion)];
        }
        return {id: r.id, prompt, completion, spans, truncated};
    }

    /** Token spans of the thought and the solution (STILL markers or think tags excluded). */
    private markerSpans(tokens: number[]): Record<string, [number, number]> {
        const starts: number[] = [];
        let offset = 0;
        const pieces = tokens.map((t) => {
            starts.push(offset);
            const piece = Buffer.from(this.model.detokenizeBytes([t], {special: true}));
            offset += piece.length;
            return piece;
        });
        const text = Buffer.concat(pieces);
        const tokenAt = (byte: number) => {
            // the first token that starts at or after `byte`
            let lo = 0;
            let hi = starts.length;
            while (lo < hi) {
                const mid = (lo + hi) >> 1;
                if (starts[mid]! < byte) lo = mid + 1;
                else hi = mid;
            }
            return lo;
        };
        // the parts in the response's own form (STILL markers or <think> tags, all ASCII): read
        // one character per byte, so that offsets are byte offsets whatever the bytes between
        const spans = thoughtSpans(text.toString("latin1"));
        const out: Record<string, [number, number]> = {};
        for (const name of ["thought", "solution"] as const) {
            const s = spans[name];
            if (s != null) out[name] = [tokenAt(s[0]), tokenAt(s[1])];
        }
        return out;
    }

}

function segment(logprobs: ArrayLike<number>, start: number, end: number): SegmentScore {
    let sum = 0;
    for (let i = start; i < end; i++) sum += logprobs[i]!;
    const tokens = end - start;
    const mean = tokens > 0 ? sum / tokens : 0;
    return {tokens, sum, mean, perplexity: Math.exp(-mean)};
}

function summarise(index: number, id: string | undefined, logprobs: Float32Array, truncated: ScoreResult["truncated"],
                   spans: Record<string, [number, number]>): ScoreResult {
    const whole = segment(logprobs, 0, logprobs.length);
    const segments: Record<string, SegmentScore> = {};
    for (const [name, [start, end]] of Object.entries(spans)) segments[name] = segment(logprobs, start, end);
    return {
        index, id, tokens: logprobs.length, logprobs: Array.from(logprobs),
        sum: whole.sum, mean: whole.mean, perplexity: whole.perplexity, truncated, segments
    };
}
