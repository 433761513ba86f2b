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
import type {RolloutEngine, RolloutEngineOptions, SamplingOptions} from "../engine/Rollouts.js";
import {throwIfAborted} from "../errors.js";
import {problemMessages} from "../format/buildChatMessages.js";
import {parseThought, type ThoughtFormat} from "../format/parseThought.js";
import {codeResultSchema} from "../code/codeSpec.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import {gradeProblem} from "../grade/gradeProblem.js";
import {readJsonlFile, writeJsonlAtomic} from "../io/jsonl.js";

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
            if (engine == null) {
                engine = o.model.rollouts(o.engine);
                const adapters = o.adapters ?? (o.adapter == null ? [] : [{adapter: o.adapter}]);
                if (adapters.length > 0) engine.setAdapters(adapters);
            }
            const run = engine.generate(problems.map((p) => ({
                id: p.id,
                prompt: problemMessages(p, o.systemPrompt)
            })), o.sampling, o.signal == null ? {} : {signal: o.signal});
            for await (const s of run) {
                if (s.finish === "aborted") continue;
                const p = byId.get(s.id!)!;
                const finish = s.finish;
                // code checks run in the sandbox while sampling goes on
                const graded = gradeProblem(p, s.text, {verifier: o.verifier, signal: o.signal}).then((g): GradedSample => ({
                    id: p.id, sample: s.sample, text: s.text, tokens: s.tokens, finish,
                    correct: g.correct, extracted: g.extracted, wellFormed: parseThought(s.text, o.format ?? "auto").wellFormed,
                    ...(g.code == null ? {} : {check: {status: g.code.status, test: g.code.test, message: g.code.message}}),
                    ...(o.keepLogprobs === true ? {logprobs: s.logprobs} : {})
                }));
                graded.catch(() => { /* seen by Promise.all below */ });
                chunk.push(graded);
                o.onProgress?.(out.length + chunk.length, total);
            }
            await run.stats;
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
