// Rollouts on OpenAI-compatible servers (llama-server, vLLM, SGLang): prompts rendered and
// tokenized locally with the model's own template, sent to /v1/completions as token ids (or
// as text), one request per (problem, sample) with that sample's seed. The sampled tokens
// and their log-probs are read from the response where the server gives them (vLLM:
// `token_ids` when asked with `return_token_ids`; llama-server: every sampled token in its
// verbose answer, log-probs in `logprobs.content`). Scheduling: every sample of one
// problem goes to the same endpoint (its prefix cache makes the group cheap); a new problem
// goes to the endpoint with the fewest requests outstanding for its concurrency. Faults:
// per-request timeouts, retries with exponential backoff and jitter (429 and 5xx, refused or
// cut connections, malformed or truncated bodies); an endpoint that fails several times in a
// row leaves the rotation, its queued and failed work goes elsewhere, and it comes back
// when its health check answers; with every endpoint gone the run stops with one sentence,
// having lost nothing already delivered. Other 4xx answers (a wrong model name, a bad
// request) stop the run at once, naming the endpoint.
import {z} from "zod";
import {AbortError, StillError} from "../errors.js";
import {HttpClient, HttpError, type HttpAnswer} from "./httpClient.js";

export const endpointOptionsSchema = z.object({
    urls: z.array(z.url({protocol: /^https?$/})).min(1).describe("Base URLs of OpenAI-compatible servers (http://host:port, without /v1)"),
    model: z.string().min(1).optional().describe("The model name sent in each request (vLLM: the served name or a LoRA adapter's name)"),
    concurrency: z.number().int().min(1).max(1024).describe("Requests in flight per endpoint").default(8),
    apiKeyEnv: z.string().min(1).optional().describe("Environment variable holding the API key (sent as a Bearer token)"),
    timeoutMs: z.number().int().min(100).describe("Longest wait for one response").default(600_000),
    maxAttempts: z.number().int().min(1).describe("Tries per sample before the run stops").default(6),
    ejectAfter: z.number().int().min(1).describe("Consecutive failures that take an endpoint out of rotation").default(3),
    backoffMs: z.number().int().min(0).describe("First retry delay (doubles each time, with jitter)").default(250),
    probeMs: z.number().int().min(10).describe("How often an endpoint out of rotation is checked").default(1000),
    giveUpMs: z.number().int().min(0).describe("How long every endpoint may be down before the run stops").default(15_000),
    prompt: z.enum(["tokens", "text"]).describe("Send the prompt as the local tokenizer's token ids (exact) or as its text").default("tokens"),
    samplesPerRequest: z.number().int().min(1).max(128).describe("Samples of one problem asked for in one request (n > 1): the request carries the first " +
        "sample's seed, and the server derives the others' (llama-server: seed + 1, seed + 2, …)").default(1),
    logprobs: z.boolean().describe("Ask for each sampled token's log-prob (llama-server then computes a softmax over the whole vocabulary per token: " +
        "a tenth of its generation speed on a 0.5B model at 32 parallel on 2 cores)").default(true)
});
export type EndpointOptions = z.input<typeof endpointOptionsSchema>;

export type RemoteJob = {id: string, sample: number, prompt: string, promptTokens?: readonly number[], seed: number};
export type RemoteSampling = {maxTokens: number, temperature: number, topK: number, topP: number, minP: number, stop: string[]};
export type RemoteResult = {
    id: string, sample: number, text: string, finish: "stop" | "length", stop: string | null,
    /** The sampled tokens as the server reports them, or null where it does not. */
    tokens: number[] | null,
    logprobs: number[] | null, promptTokens: number | null, completionTokens: number | null, endpoint: string, elapsedMs: number
};

/** A fault of one request: retryable (network, timeout, 429, 5xx, malformed body) or not. */
export class RequestError extends Error {
    constructor(message: string, readonly retryable: boolean, readonly countsAgainst = true) {
        super(message);
    }
}

const completionSchema = z.object({
    choices: z.array(z.object({
        text: z.string(),
        finish_reason: z.string().nullable().optional(),
        stop_reason: z.union([z.string(), z.number()]).nullable().optional(),
        index: z.number().int().optional(),
        // vLLM (with return_token_ids)
        token_ids: z.array(z.number().int()).nullable().optional(),
        logprobs: z.object({
            // OpenAI's legacy completions layout (vLLM, SGLang)
            token_logprobs: z.array(z.number().nullable()).optional(),
            // llama-server's: one entry per sampled token, with its id
            content: z.array(z.object({id: z.number().int(), logprob: z.number().nullable()})).optional()
        }).nullable().optional()
    })).min(1),
    usage: z.object({prompt_tokens: z.number().optional(), completion_tokens: z.number().optional()}).optional(),
    // llama-server (with verbose and return_tokens): every sampled token, those of a stop string or an
    // end-of-generation token included, and which stop ended the sample. Its logprobs.content leaves out
    // tokens that ended inside a UTF-8 sequence, so it cannot stand for the sampled tokens alone.
    __verbose: z.object({
        tokens: z.array(z.number().int()).optional(),
        stop_type: z.string().optional(),
        stopping_word: z.string().optional()
    }).nullable().optional()
});

/** Units (one request's jobs, of one problem) grouped by problem, in order. */
function byProblem<J extends {id: string}>(units: readonly J[][]): J[][][] {
    const out: J[][][] = [];
    for (const u of units) {
        const last = out.at(-1);
        if (last != null && last[0]![0]!.id === u[0]!.id) last.push(u);
        else out.push([u]);
    }
    return out;
}

const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, {once: true});
});

/** Runs every job on the endpoints; each finished sample goes to `onResult` (awaited) exactly once. */
export async function runRemote(jobs: readonly RemoteJob[], sampling: RemoteSampling, options: EndpointOptions,
                                hooks: {signal?: AbortSignal, onResult: (r: RemoteResult) => Promise<void> | void, onLog?: (line: string) => void}): Promise<void> {
    const logprobs = endpointOptionsSchema.shape.logprobs.parse(options.logprobs);
    const prompt = endpointOptionsSchema.shape.prompt.parse(options.prompt);
    await runRequests(jobs, options, hooks, {
        path: "/v1/completions",
        body: (unit, model) => ({
            ...(model == null ? {} : {model}),
            prompt: prompt === "tokens" && unit[0]!.promptTokens != null ? unit[0]!.promptTokens : unit[0]!.prompt, max_tokens: sampling.maxTokens, temperature: sampling.temperature,
            top_p: sampling.topP,
            // always sent: a server's own defaults are not neutral (llama-server cuts at top-k 40 and
            // min-p 0.05 when a request names neither); −1 turns top-k off on llama-server, vLLM and SGLang
            top_k: sampling.topK > 0 ? sampling.topK : -1, min_p: sampling.minP,
            seed: unit[0]!.seed, n: unit.length, ...(sampling.stop.length > 0 ? {stop: sampling.stop} : {}), ...(logprobs ? {logprobs: 1} : {}),
            return_token_ids: true, return_tokens: true, verbose: true, stream: false
        }),
        parse: completionResults
    });
}

/** A completion answer's choices as the unit's samples. */
function completionResults(unit: readonly RemoteJob[], json: unknown, url: string, elapsedMs: number): RemoteResult[] {
    const r = completionSchema.safeParse(json);
    if (!r.success) throw new RequestError(`malformed response (${z.prettifyError(r.error).split("\n")[0]!.slice(0, 200)})`, true);
    const parsed = r.data;
    if (parsed.choices.length !== unit.length)
        throw new RequestError(`malformed response (${parsed.choices.length} choices for n = ${unit.length})`, true);
    // choices in the order of their index where each has its own
    const indices = parsed.choices.map((c) => c.index);
    const choices = new Set(indices).size === unit.length && indices.every((i) => i != null && i >= 0 && i < unit.length)
        ? [...parsed.choices].sort((a, b) => a.index! - b.index!) : parsed.choices;
    // llama-server's verbose part is its first result's alone
    const verbose = unit.length === 1 ? parsed.__verbose : undefined;
    return choices.map((c, k) => {
        const finish = c.finish_reason === "length" ? "length" : "stop";
        const stop = typeof c.stop_reason === "string" ? c.stop_reason
            : verbose?.stop_type === "word" && verbose.stopping_word != null && verbose.stopping_word !== "" ? verbose.stopping_word : null;
        const content = c.logprobs?.content;
        const lp = content?.map((t) => t.logprob) ?? c.logprobs?.token_logprobs;
        const tokens = c.token_ids ?? verbose?.tokens ?? content?.map((t) => t.id) ?? null;
        return {
            id: unit[k]!.id, sample: unit[k]!.sample, text: c.text, finish, stop, tokens: tokens == null || tokens.length === 0 && c.text !== "" ? null : tokens,
            logprobs: lp == null ? null : lp.map((x) => x ?? Number.NaN),
            // usage counts every choice of the request
            promptTokens: parsed.usage?.prompt_tokens ?? null, completionTokens: unit.length === 1 ? parsed.usage?.completion_tokens ?? null : null,
            endpoint: url, elapsedMs
        };
    });
}

/** What one kind of request is: where it goes, its body for a unit of jobs, and its answer as the unit's results. */
export type RequestKind<J, R> = {
    path: string,
    body: (unit: readonly J[], model: string | undefined) => object,
    /** Throws RequestError for an answer that will not do (retryable or not). */
    parse: (unit: readonly J[], json: unknown, url: string, elapsedMs: number) => R[]
};

/** An endpoint's URL without trailing slashes (paths are appended to it). */
export function endpointBase(url: string): string {
    return url.replace(/\/+$/, "");
}

/** The JSON headers of every request to the endpoints, with the API key as a Bearer token; an unset key variable is refused. */
export function requestHeaders(o: {apiKeyEnv?: string | undefined}): Record<string, string> {
    const key = o.apiKeyEnv == null ? undefined : process.env[o.apiKeyEnv];
    if (o.apiKeyEnv != null && (key == null || key === "")) throw new StillError(`the API key variable ${o.apiKeyEnv} is not set.`);
    return {"content-type": "application/json", ...(key == null ? {} : {authorization: `Bearer ${key}`})};
}

/**
 * The scheduling and fault handling of every remote request: jobs of one problem (`id`) stay on
 * one endpoint, in units of up to samplesPerRequest; least-outstanding dispatch; retries with
 * backoff; endpoints out of rotation and back; each unit's results delivered once.
 */
export async function runRequests<J extends {id: string, sample: number}, R>(jobs: readonly J[], options: EndpointOptions,
                                                                            hooks: {signal?: AbortSignal, onResult: (r: R) => Promise<void> | void, onLog?: (line: string) => void},
                                                                            kind: RequestKind<J, R>): Promise<void> {
    type Unit = J[];
    type Endpoint = {url: string, outstanding: number, failures: number, alive: boolean, lastError: string, queue: Unit[], downSince: number};
    const o = endpointOptionsSchema.parse(options);
    const headers = requestHeaders(o);
    const endpoints: Endpoint[] = o.urls.map((u) => ({url: endpointBase(u), outstanding: 0, failures: 0, alive: true, lastError: "", queue: [], downSince: 0}));
    const attempts = new Map<Unit, number>();
    // problems not yet given to an endpoint, in order; each problem's samples stay together,
    // in requests of up to samplesPerRequest
    const units: Unit[] = [];
    for (const j of jobs) {
        const last = units.at(-1);
        if (last != null && last[0]!.id === j.id && last.length < o.samplesPerRequest) last.push(j);
        else units.push([j]);
    }
    const groups: Unit[][] = byProblem(units);
    let inFlight = 0;
    let fatal: Error | undefined;
    let wake: (() => void) | undefined;
    const notify = () => { wake?.(); wake = undefined; };
    /** Waits for a request to end (notify) or `ms`, whichever comes first. */
    const nap = (ms: number) => new Promise<void>((resolve) => {
        const t = setTimeout(() => { wake = undefined; resolve(); }, ms);
        wake = () => { clearTimeout(t); resolve(); };
    });
    // a connection per request in flight, and one for health checks
    const http = new HttpClient(o.concurrency + 1);

    const send = async (e: Endpoint, unit: Unit): Promise<R[]> => {
        const started = performance.now();
        let res: HttpAnswer;
        try {
            res = await http.request(`${e.url}${kind.path}`, {
                method: "POST", headers, timeoutMs: o.timeoutMs, ...(hooks.signal == null ? {} : {signal: hooks.signal}), body: JSON.stringify(kind.body(unit, o.model))
            });
        } catch (err) {
            if (hooks.signal?.aborted || err instanceof HttpError && err.kind === "aborted") throw new AbortError("sampling was cancelled");
            throw new RequestError((err as Error).message, true);
        }
        const body = res.body;
        if (res.status === 429) throw new RequestError("429 Too Many Requests", true, false);
        if (res.status >= 500) throw new RequestError(`${res.status} ${res.statusText}: ${body.slice(0, 200)}`, true);
        if (res.status >= 400) throw new RequestError(`${res.status} ${res.statusText}: ${body.slice(0, 300)}`, false);
        let json: unknown;
        try {
            json = JSON.parse(body);
        } catch (err) {
            throw new RequestError(`malformed response (${(err as Error).message.slice(0, 200)})`, true);
        }
        return kind.parse(unit, json, e.url, performance.now() - started);
    };

    const eject = (e: Endpoint, reason: string) => {
        if (!e.alive) return;
        e.alive = false;
        e.downSince = Date.now();
        hooks.onLog?.(`endpoint ${e.url} out of rotation after ${e.failures} failures in a row (${reason}); its work goes elsewhere`);
        // its queued samples go back, grouped by problem, to the front
        groups.unshift(...byProblem(e.queue));
        e.queue = [];
    };

    const dispatch = (e: Endpoint, job: Unit) => {
        e.outstanding++;
        inFlight++;
        attempts.set(job, (attempts.get(job) ?? 0) + 1);
        void send(e, job).then(async (results) => {
            e.failures = 0;
            for (const r of results) await hooks.onResult(r);
        }, async (err: unknown) => {
            if (!(err instanceof RequestError)) {
                fatal ??= err as Error;
                return;
            }
            if (!err.retryable) {
                fatal ??= new StillError(`the endpoint ${e.url} refused a request: ${err.message}`);
                return;
            }
            if (err.countsAgainst) e.failures++;
            e.lastError = err.message;
            if ((attempts.get(job) ?? 0) >= o.maxAttempts) {
                const which = job.length === 1 ? `sample ${job[0]!.sample}` : `samples ${job[0]!.sample}–${job.at(-1)!.sample}`;
                fatal ??= new StillError(`${which} of ${job[0]!.id} failed ${o.maxAttempts} times; last, at ${e.url}: ${err.message}`);
                return;
            }
            const n = attempts.get(job) ?? 1;
            await sleep(o.backoffMs * 2 ** (n - 1) * (0.5 + Math.random()), hooks.signal);
            if (e.alive && e.failures >= o.ejectAfter) eject(e, err.message);
            if (e.alive) e.queue.unshift(job);
            else groups.unshift([job]);
        }).catch((err: unknown) => { fatal ??= err as Error; }).finally(() => {
            e.outstanding--;
            inFlight--;
            notify();
        });
    };

    const probe = async (e: Endpoint) => {
        for (const p of ["/health", "/v1/models"]) {
            try {
                const r = await http.request(`${e.url}${p}`, {method: "GET", headers, timeoutMs: Math.max(500, o.probeMs)});
                if (r.status >= 200 && r.status < 300) {
                    e.alive = true;
                    e.failures = 0;
                    hooks.onLog?.(`endpoint ${e.url} answers again; back in rotation`);
                    return;
                }
            } catch { /* still down */ }
        }
    };

    let probing: Promise<void> | undefined;
    let lastProbe = 0;
    for (;;) {
        if (fatal != null) break;
        if (hooks.signal?.aborted) break;
        // fill every alive endpoint, least loaded first
        for (;;) {
            const open = endpoints.filter((e) => e.alive && e.outstanding < o.concurrency && (e.queue.length > 0 || groups.length > 0));
            if (open.length === 0) break;
            open.sort((a, b) => a.outstanding - b.outstanding || (a.queue.length > 0 ? 0 : 1) - (b.queue.length > 0 ? 0 : 1));
            const e = open[0]!;
            if (e.queue.length === 0) e.queue.push(...groups.shift()!);
            dispatch(e, e.queue.shift()!);
        }
        const pending = groups.length > 0 || endpoints.some((e) => e.queue.length > 0);
        if (!pending && inFlight === 0) break;
        const alive = endpoints.filter((e) => e.alive);
        if (alive.length === 0 && inFlight === 0) {
            const since = Math.min(...endpoints.map((e) => e.downSince));
            if (Date.now() - since > o.giveUpMs) {
                fatal = new StillError(`every endpoint failed (${endpoints.map((e) => `${e.url}: ${e.lastError}`).join("; ")}); ` +
                    "the samples finished so far are kept: rerun the same command when the servers answer again");
                break;
            }
        }
        if (endpoints.some((e) => !e.alive) && probing == null && Date.now() - lastProbe >= o.probeMs) {
            lastProbe = Date.now();
            probing = Promise.all(endpoints.filter((e) => !e.alive).map(probe)).then(() => { probing = undefined; notify(); });
        }
        await nap(Math.min(o.probeMs, 250));
    }
    // let the requests still out finish (their samples are kept) before returning or failing
    while (inFlight > 0) await nap(50);
    await probing;
    http.close();
    if (fatal != null) throw fatal;
    if (hooks.signal?.aborted) throw new AbortError("sampling was cancelled");
}
