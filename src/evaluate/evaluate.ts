// Evaluation of the current model (base + adapter) on the configured sets: greedy pass@1,
// optionally maj@k / pass@k over k samples, format adherence and response length.
import path from "node:path";
import {z} from "zod";
import type {Problem} from "../data/problemSchema.js";
import type {Adapter} from "../engine/Adapter.js";
import type {Model} from "../engine/Model.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import {majAtK, meanPassAtK} from "./metrics.js";
import type {RunConfig} from "../loop/config.js";
import {type GradedSample, sampleAndGrade} from "../explore/sampleAndGrade.js";
import {parseThought} from "../format/parseThought.js";
import {problemQuestion} from "../format/buildChatMessages.js";

export type EvalSet = {name: string, problems: readonly Problem[]};

/** What an evaluation reports of a group of problems (a set, or one domain of it). */
const figuresSchema = z.object({
    problems: z.number().int(),
    /** Greedy pass@1 (the sampled mean@1 when greedy is off). */
    accuracy: z.number(),
    /** Share of those responses in the thought format. */
    formatAdherence: z.number(),
    /** Mean response length, in tokens. */
    meanTokens: z.number(),
    /** Share of responses cut by the length limit. */
    truncated: z.number()
});

/** One domain's figures within a set (math, code, physics, …: the problems' `domain`). */
export const domainMetricsSchema = figuresSchema.extend({domain: z.string()});
export type DomainMetrics = z.infer<typeof domainMetricsSchema>;

/** A response shown in the report: its problem, the verdict, and its thought and solution apart. */
export const evalExampleSchema = z.object({
    id: z.string(),
    question: z.string(),
    answer: z.string(),
    correct: z.boolean(),
    extracted: z.string().nullable(),
    finish: z.enum(["stop", "length"]),
    tokens: z.number().int(),
    /** The thought and the solution when the response has the markers; else null, and the whole text in `text`. */
    thought: z.string().nullable(),
    solution: z.string().nullable(),
    text: z.string().nullable()
});
export type EvalExample = z.infer<typeof evalExampleSchema>;

export const evalMetricsSchema = figuresSchema.extend({
    set: z.string(),
    /** Each response's length in tokens, in problem order. */
    lengths: z.array(z.number().int()),
    /** The same figures per domain, in order of first appearance. */
    domains: z.array(domainMetricsSchema).default([]),
    /** The first correct and the first incorrect response, in problem order (fewer when there is none). */
    examples: z.array(evalExampleSchema).default([]),
    k: z.number().int().optional(),
    majAtK: z.number().optional(),
    passAtK: z.number().optional()
});
export type EvalMetrics = z.infer<typeof evalMetricsSchema>;

export async function evaluate(o: {
    model: Model,
    adapter?: Adapter | undefined,
    sets: readonly EvalSet[],
    config: RunConfig["evaluate"],
    systemPrompt: string | null,
    seed: number,
    threads?: number | undefined,
    /** Runs the checks of code problems (needed when there are any). */
    verifier?: CodeVerifier | undefined,
    /** Folder for this evaluation's chunk files (a set per subfolder). */
    dir: string,
    signal?: AbortSignal | undefined,
    onProgress?: ((set: string, done: number, total: number) => void) | undefined
}): Promise<EvalMetrics[]> {
    const out: EvalMetrics[] = [];
    const engine = {parallel: o.config.parallel, ...(o.threads == null ? {} : {threads: o.threads})};
    for (const set of o.sets) {
        const run = (kind: string, sampling: Parameters<typeof sampleAndGrade>[0]["sampling"]) => sampleAndGrade({
            model: o.model, adapter: o.adapter, problems: set.problems, systemPrompt: o.systemPrompt, sampling, engine,
            dir: path.join(o.dir, set.name, kind), chunk: 64, signal: o.signal, verifier: o.verifier,
            onProgress: (done, total) => o.onProgress?.(`${set.name} (${kind})`, done, total)
        });
        const base = {maxTokens: o.config.maxTokens, seed: o.seed};
        const greedy = o.config.greedy ? await run("greedy", {...base, samples: 1, temperature: 0, topK: 0}) : null;
        const k = o.config.samples;
        const sampled = k > 0 ? await run("sampled", {
            ...base, samples: k, temperature: o.config.temperature, topK: o.config.topK, topP: o.config.topP
        }) : null;
        const responses = greedy ?? sampled!.filter((s) => s.sample === 0);
        const metrics: EvalMetrics = {
            set: set.name,
            problems: set.problems.length,
            ...figures(responses),
            lengths: responses.map((s) => s.tokens.length),
            domains: byDomain(set.problems, responses).map(({domain, problems, samples}) => ({domain, problems: problems.length, ...figures(samples)})),
            examples: examples(set.problems, responses)
        };
        if (sampled != null) {
            const perProblem = set.problems.map((p) => sampled.filter((s) => s.id === p.id).sort((a, b) => a.sample - b.sample));
            metrics.k = k;
            metrics.majAtK = majAtK(perProblem, k);
            metrics.passAtK = meanPassAtK(perProblem.map((s) => s.map((x) => x.correct)), k);
        }
        out.push(metrics);
    }
    return out;
}

/** Longest thought or text kept in an example (the head and the tail of a longer one). */
const EXAMPLE_CHARS = 6000;

function clip(text: string): string {
    if (text.length <= EXAMPLE_CHARS) return text;
    const half = EXAMPLE_CHARS / 2;
    return `${text.slice(0, half)}\n… (${text.length - EXAMPLE_CHARS} characters left out) …\n${text.slice(-half)}`;
}

/** One correct and one incorrect response, the first of each in problem order. */
function examples(problems: readonly Problem[], responses: readonly GradedSample[]): EvalExample[] {
    const byId = new Map(problems.map((p) => [p.id, p]));
    return [true, false].flatMap((correct) => {
        const s = responses.find((r) => r.correct === correct && byId.has(r.id));
        if (s == null) return [];
        const p = byId.get(s.id)!;
        const parsed = parseThought(s.text);
        const split = parsed.thought != null && parsed.solution != null;
        return [{
            id: s.id, question: clip(problemQuestion(p)), answer: p.answer, correct, extracted: s.extracted, finish: s.finish, tokens: s.tokens.length,
            thought: split ? clip(parsed.thought!) : null, solution: split ? clip(parsed.solution!) : null, text: split ? null : clip(s.text)
        }];
    });
}

/** The share of `samples` that pass `test` (0 of none). */
export function share(samples: readonly GradedSample[], test: (s: GradedSample) => boolean) {
    return samples.length === 0 ? 0 : samples.filter(test).length / samples.length;
}

function figures(responses: readonly GradedSample[]) {
    return {
        accuracy: share(responses, (s) => s.correct),
        formatAdherence: share(responses, (s) => s.wellFormed),
        meanTokens: responses.length === 0 ? 0 : responses.reduce((n, s) => n + s.tokens.length, 0) / responses.length,
        truncated: share(responses, (s) => s.finish === "length")
    };
}

/** Problems and their samples grouped by the problems' domain, in order of first appearance. */
export function byDomain(problems: readonly Problem[], samples: readonly GradedSample[]): {domain: string, problems: Problem[], samples: GradedSample[]}[] {
    const domainOf = new Map(problems.map((p) => [p.id, p.domain]));
    const groups = new Map<string, {domain: string, problems: Problem[], samples: GradedSample[]}>();
    for (const p of problems) {
        if (!groups.has(p.domain)) groups.set(p.domain, {domain: p.domain, problems: [], samples: []});
        groups.get(p.domain)!.problems.push(p);
    }
    for (const s of samples) groups.get(domainOf.get(s.id) ?? "")?.samples.push(s);
    return [...groups.values()];
}
