// What the commands that sample on servers share: each sample's seed, the sampling options
// as a request carries them, and a server's answer turned into a sample as the local engine
// writes one (text, tokens, log-probs).
import type {Model} from "../engine/Model.js";
import {requestSeed, type SamplingOptions} from "../engine/Rollouts.js";
import {OptionError} from "../errors.js";
import {MARKERS} from "../format/markers.js";
import type {RemoteResult, RemoteSampling} from "./RemoteRollouts.js";

/** A sample's seed for a server: from the run's seed, the problem's id and the sample's index. */
export function remoteSeed(seed: number, id: string, sample: number): number {
    return requestSeed(seed, `${id}\u0000${sample}`) % 2 ** 31;
}

/** Strings kept at the end of a sample (stopAfter); servers get them as stops and they are put back. */
export function keptStops(sampling: SamplingOptions): string[] {
    return sampling.stopAfter ?? [MARKERS.endSolution];
}

export function remoteSampling(sampling: SamplingOptions & {maxTokens: number}): RemoteSampling {
    if (sampling.temperedLogprobs === true && (sampling.temperature ?? 1) !== 1)
        throw new OptionError("temperedLogprobs: servers report log-probabilities at temperature 1; sample locally for them at the sampling temperature.");
    return {
        maxTokens: sampling.maxTokens, temperature: sampling.temperature ?? 1, topK: sampling.topK ?? 0, topP: sampling.topP ?? 1,
        minP: sampling.minP ?? 0, stop: [...(sampling.stop ?? []), ...keptStops(sampling)]
    };
}

export type ServerSample = {
    text: string, tokens: number[], logprobs: number[], finish: "stop" | "length", stop: string | null,
    /** Where the tokens came from: the server, the local tokenizer, or nowhere (the round trip failed: left empty). */
    source: "server" | "retokenized" | "round-trip-failed"
};

/**
 * Turns answers into samples for `model`'s tokenizer. The server's sampled tokens are taken
 * where it gives them and they spell its text; else the text is tokenized here, and those
 * tokens kept only when they give it back byte for byte. Log-probs only where one per token.
 */
export function serverSampleReader(model: Model, keep: readonly string[]) {
    const bytesOf = (tokens: readonly number[]) => Buffer.from(model.detokenizeBytes(tokens, {special: true}));
    const sameBytes = (tokens: readonly number[], text: string) => Buffer.compare(bytesOf(tokens), Buffer.from(text, "utf8")) === 0;
    // A server's text cannot hold bytes that are not UTF-8 (its JSON has U+FFFD in their place, one per
    // byte or per sequence as its encoder chooses): its tokens are taken when they spell every valid
    // character of the text and every run of invalid bytes (a run of U+FFFD counts as one), and the text
    // is then rendered from them as the local engine renders its own (a cut sequence at a length cut dropped).
    const collapsed = (text: string) => text.replaceAll(/\uFFFD+/gu, "\uFFFD");
    const spells = (tokens: readonly number[], text: string) => collapsed(bytesOf(tokens).toString("utf8")) === collapsed(text);
    const rendered = (tokens: readonly number[], finish: string) => {
        const bytes = bytesOf(tokens);
        return (finish === "stop" ? bytes : dropPartialUtf8(bytes)).toString("utf8");
    };
    const eog = new Set(model.facts.eog);
    return (result: RemoteResult): ServerSample => {
        const text = result.stop != null && keep.includes(result.stop) ? result.text + result.stop : result.text;
        let serverTokens = result.tokens;
        let logprobs = result.logprobs ?? [];
        let stop = result.stop;
        // an end-of-generation token ends a sample without being part of it (as in the local engine)
        if (serverTokens != null && result.finish === "stop" && serverTokens.length > 0 && eog.has(serverTokens.at(-1)!)) {
            if (logprobs.length === serverTokens.length) logprobs = logprobs.slice(0, -1);
            stop ??= model.detokenize(serverTokens.slice(-1), {special: true});
            serverTokens = serverTokens.slice(0, -1);
        }
        const sample = (tokens: number[], written: string, source: ServerSample["source"]): ServerSample => ({
            text: written, tokens, finish: result.finish, stop, source,
            // log-probs only where they stand one per written token
            logprobs: source === "server" && logprobs.length === tokens.length ? logprobs : []
        });
        if (serverTokens != null && sameBytes(serverTokens, text)) return sample(serverTokens, text, "server");
        if (serverTokens != null && text.includes("\uFFFD") && spells(serverTokens, text))
            return sample(serverTokens, rendered(serverTokens, result.finish), "server");
        const tokens = model.tokenize(text, {special: true});
        return sameBytes(tokens, text) ? sample(tokens, text, "retokenized") : sample([], text, "round-trip-failed");
    };
}

/** Bytes without a UTF-8 sequence cut short at their end (a length cut may end inside one), as the engine drops it. */
function dropPartialUtf8(bytes: Buffer): Buffer {
    let i = bytes.length, cont = 0;
    while (i > 0 && cont < 4 && (bytes[i - 1]! & 0xC0) === 0x80) i--, cont++;
    if (i === 0) return bytes;
    const lead = bytes[i - 1]!;
    const need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    return need > cont ? bytes.subarray(0, i - 1) : bytes;
}
