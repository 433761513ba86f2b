// Teacher-forced scoring on servers that give prompt log-probs (vLLM's `prompt_logprobs`):
// each record's prompt and completion sent as one token-id prompt with one token to
// generate, and the completion's log-probs read from the prompt's. llama-server gives no
// prompt log-probs; a server without them is refused with one sentence.
import {z} from "zod";
import {type EndpointOptions, RequestError, runRequests} from "./RemoteRollouts.js";

export type RemoteScoreItem = {id: string, prompt: readonly number[], completion: readonly number[]};
export type RemoteScore = {id: string, logprobs: number[], sum: number, mean: number, perplexity: number};

const promptLogprobsSchema = z.object({
    choices: z.array(z.object({
        prompt_logprobs: z.array(z.record(z.string(), z.object({logprob: z.number()}).loose()).nullable()).nullable().optional()
    }).loose()).min(1)
}).loose();

/** The completion's log-probs of every item, in order. */
export async function scoreRemote(items: readonly RemoteScoreItem[], options: EndpointOptions,
                                  hooks: {signal?: AbortSignal, onLog?: (line: string) => void, onProgress?: (done: number, total: number) => void} = {}): Promise<RemoteScore[]> {
    const out: (RemoteScore | undefined)[] = new Array(items.length);
    let done = 0;
    const jobs = items.map((item, i) => ({id: `${i}`, sample: 0, item}));
    await runRequests(jobs, {...options, samplesPerRequest: 1}, {
        ...(hooks.signal == null ? {} : {signal: hooks.signal}),
        ...(hooks.onLog == null ? {} : {onLog: hooks.onLog}),
        onResult: (r: {index: number, score: RemoteScore}) => {
            out[r.index] = r.score;
            hooks.onProgress?.(++done, items.length);
        }
    }, {
        path: "/v1/completions",
        body: (unit, model) => ({
            ...(model == null ? {} : {model}),
            prompt: [...unit[0]!.item.prompt, ...unit[0]!.item.completion], max_tokens: 1, temperature: 0, prompt_logprobs: 0, stream: false
        }),
        parse: (unit, json) => {
            const {item} = unit[0]!;
            const r = promptLogprobsSchema.safeParse(json);
            if (!r.success) throw new RequestError("malformed response", true);
            const lp = r.data.choices[0]!.prompt_logprobs;
            if (lp == null) throw new RequestError("no prompt log-probs in its answer (vLLM's prompt_logprobs); score locally instead", false);
            const n = item.prompt.length + item.completion.length;
            if (lp.length !== n) throw new RequestError(`prompt log-probs for ${lp.length} tokens where ${n} were sent`, false);
            const logprobs = item.completion.map((t, k) => {
                const v = lp[item.prompt.length + k]?.[String(t)]?.logprob;
                if (v == null) throw new RequestError(`no prompt log-prob for token ${t} at position ${item.prompt.length + k}`, false);
                return v;
            });
            const sum = logprobs.reduce((a, b) => a + b, 0);
            const mean = logprobs.length === 0 ? 0 : sum / logprobs.length;
            return [{index: Number(unit[0]!.id), score: {id: item.id, logprobs, sum, mean, perplexity: Math.exp(-mean)}}];
        }
    });
    return out.map((s, i) => {
        if (s == null) throw new Error(`item ${i} was not scored`);
        return s;
    });
}
