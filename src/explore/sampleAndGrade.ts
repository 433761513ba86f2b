// Samples responses to problems and grades them, in chunks of problems that are each
// written whole (temporary file, then rename). A killed run redoes only the chunk it was
// in, from scratch, so its samples come out exactly as in an uninterrupted run: the batch
// a sample shares with others moves its logits slightly, so a partial chunk would not.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import type {Problem} from "../data/problemSchema.js";
import type {Adapter, AdapterChoice} from "../engine/Adapter.js";
import type {Model} from "../engine/Model.js";
import {type RolloutEngine, type RolloutEngineOptions, type SamplingOptions, samplingSchema} from "../engine/Rollouts.js";
import {throwIfAborted} from "../errors.js";
import {problemMessages} from "../format/buildChatMessages.js";
import {parseThought, type ThoughtFormat} from "../format/parseThought.js";
import {codeResultSchema} from "../code/codeSpec.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import {gradeProblem} from "../grade/gradeProblem.js";
import {readJsonlFile, writeJsonlAtomic} from "../io/jsonl.js";
import {type EndpointOptions, runRemote} from "../remote/RemoteRollouts.js";
import {keptStops, remoteSampling, remoteSeed, serverSampleReader} from "../remote/remoteSamples.js";

export const gradedSampleSchema = z.object({
    id: z.string(),
    sample: z.number().int(),
    text: z.string(),
    tokens: z.array(z.number().int()),
    finish: z.enum(["stop", "length"]),
    correct: z.boolean(),
    extracted: z.string().nullable(),
    /** The response follows the thought format. */
    wellFormed: z.boolean(),
    /** For code problems: how the sandboxed check ended. */
    check: codeResultSchema.pick({status: true, test: true, message: true}).optional(),
    /** The sampler's log p of each token (with keepLogprobs). */
    logprobs: z.array(z.number().nullable().transform((v) => v ?? Number.NaN)).optional()
});
export type GradedSample = z.infer<typeof gradedSampleSchema>;

export type SampleAndGradeOptions = {
    model: Model,
    adapter?: Adapter | undefined,
    /** Several adapters with their scales (instead of `adapter`). */
    adapters?: AdapterChoice | undefined,
    problems: readonly Problem[],
    systemPrompt: string | null,
    sampling: SamplingOptions,
    engine: RolloutEngineOptions,
    /** An engine to sample with as it is (its adapters set), instead of one made from `engine` and `adapter`. */
    rollouts?: RolloutEngine | undefined,
    /**
     * Sample on OpenAI-compatible servers instead of the local engine (which is then not made;
     * the model's tokenizer and template still render the prompts). The adapter is the server's
     * business (name it as the endpoints' model). A function is called once, when the first
     * chunk to sample is found (a finished step's chunks are read back without it).
     */
    remote?: EndpointOptions | (() => Promise<EndpointOptions>) | undefined,
    /** Called with each log line of the remote client (endpoints leaving and rejoining the rotation). */
    onLog?: ((line: string) => void) | undefined,
    /** Runs the checks of code problems (needed when there are any). */
    verifier?: CodeVerifier | undefined,
    /** The form responses should take, for `wellFormed` (default: whichever form each is written in). */
    format?: ThoughtFormat | undefined,
    /** Keep each token's log-prob in the samples. */
    keepLogprobs?: boolean | undefined,
    /** Folder for the chunk files. */
    dir: string,
    chunk: number,
    signal?: AbortSignal | undefined,
    onProgress?: ((done: number, total: number) => void) | undefined
};

/** All samples of all problems, graded, in problem order then sample order. */
export async function sampleAndGrade(o: SampleAndGradeOptions): Promise<GradedSample[]> {
    await fsp.mkdir(o.dir, {recursive: true});
    // made when a chunk is missing: reading back a finished step allocates no context
    let engine: RolloutEngine | undefined = o.rollouts;
    let remote: EndpointOptions | undefined;
    const samples = o.sampling.samples ?? 1;
    const total = o.problems.length * samples;
    const out: GradedSample[] = [];
    try {
        for (let start = 0, k = 0; start < o.problems.length; start += o.chunk, k++) {
            throwIfAborted(o.signal, "sampling");
            const file = path.join(o.dir, `chunk-${String(k).padStart(4, "0")}.jsonl`);
            const problems = o.problems.slice(start, start + o.chunk);
            if (fs.existsSync(file)) {
                out.push(...await readJsonlFile(file, gradedSampleSchema));
                o.onProgress?.(out.length, total);
                continue;
            }
            const byId = new Map(problems.map((p) => [p.id, p]));
            const chunk: Promise<GradedSample>[] = [];
            const take = (s: {id: string, sample: number, text: string, tokens: number[], finish: "stop" | "length", logprobs: number[]}) => {
                const p = byId.get(s.id)!;
                // code checks run in the sandbox while sampling goes on
                const graded = gradeProblem(p, s.text, {verifier: o.verifier, signal: o.signal, finish: s.finish}).then((g): GradedSample => ({
                    id: p.id, sample: s.sample, text: s.text, tokens: s.tokens, finish: s.finish,
                    correct: g.correct, extracted: g.extracted, wellFormed: parseThought(s.text, o.format ?? "auto").wellFormed,
                    ...(g.code == null ? {} : {check: {status: g.code.status, test: g.code.test, message: g.code.message}}),
                    // a server may give no log-probs: unknown ones are NaN, one per token
                    ...(o.keepLogprobs === true ? {logprobs: s.logprobs.length === s.tokens.length ? s.logprobs : s.tokens.map(() => Number.NaN)} : {})
                }));
                graded.catch(() => { /* seen by Promise.all below */ });
                chunk.push(graded);
                o.onProgress?.(out.length + chunk.length, total);
            };
            if (o.remote != null) {
                remote ??= typeof o.remote === "function" ? await o.remote() : o.remote;
                await sampleOnServers(o, remote, problems, take);
            }
            else {
                if (engine == null) {
                    engine = o.model.rollouts(o.engine);
                    const adapters = o.adapters ?? (o.adapter == null ? [] : [{adapter: o.adapter}]);
                    if (adapters.length > 0) engine.setAdapters(adapters);
                }
                const run = engine.generate(problems.map((p) => ({
                    id: p.id,
                    prompt: problemMessages(p, o.systemPrompt)
                })), o.sampling, o.signal == null ? {} : {signal: o.signal});
                for await (const s of run) if (s.finish !== "aborted") take({...s, id: s.id!, finish: s.finish});
                await run.stats;
            }
            const graded = await Promise.all(chunk);
            throwIfAborted(o.signal, "sampling");
            const order = new Map(problems.map((p, i) => [p.id, i]));
            graded.sort((a, b) => order.get(a.id)! - order.get(b.id)! || a.sample - b.sample);
            await writeJsonlAtomic(file, graded);
            out.push(...graded);
        }
    } finally {
        if (engine !== o.rollouts) engine?.dispose();
    }
    return out;
}

/**
 * One chunk's samples from servers: each (problem, sample) one request with its own seed, so
 * a chunk redone after a crash asks for the same samples (a server honouring seeds repeats them).
 */
async function sampleOnServers(o: SampleAndGradeOptions, remote: EndpointOptions, problems: readonly Problem[],
                               take: (s: {id: string, sample: number, text: string, tokens: number[], finish: "stop" | "length", logprobs: number[]}) => void) {
    const sampling = samplingSchema.parse(o.sampling);
    const jobs = problems.flatMap((p) => {
        const messages = problemMessages(p, o.systemPrompt);
        const prompt = o.model.applyChatTemplate(messages);
        const promptTokens = o.model.promptTokens(prompt);
        return Array.from({length: sampling.samples}, (_, k) => ({id: p.id, sample: k, prompt, promptTokens, seed: remoteSeed(sampling.seed, p.id, k)}));
    });
    const read = serverSampleReader(o.model, keptStops(sampling));
    await runRemote(jobs, remoteSampling(sampling), remote, {
        ...(o.signal == null ? {} : {signal: o.signal}),
        ...(o.onLog == null ? {} : {onLog: o.onLog}),
        onResult: (r) => take({...read(r), id: r.id, sample: r.sample})
    });
}
