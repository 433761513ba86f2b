// Evaluation of a model (base + adapters) on problem sets: greedy pass@1, optionally
// mean@k / maj@k / pass@k over k samples, each with its standard error over problems;
// format adherence, truncation and response lengths; the same figures per domain, subject
// and level; each problem's outcome (for paired comparisons, compare.ts). `still eval` and
// the loop's evaluation after every phase both run this.
import type {EndpointOptions} from "../remote/RemoteRollouts.js";
import path from "node:path";
import {z} from "zod";
import type {Problem} from "../data/problemSchema.js";
import type {Adapter, AdapterChoice} from "../engine/Adapter.js";
import type {Model} from "../engine/Model.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import {majorityCorrect, passAtK} from "./metrics.js";
import type {RunConfig} from "../loop/config.js";
import {type GradedSample, sampleAndGrade} from "../explore/sampleAndGrade.js";
import {parseThought, type ThoughtFormat} from "../format/parseThought.js";
import {formatStops} from "../format/thinking.js";
import {OptionError} from "../errors.js";
import {problemQuestion} from "../format/buildChatMessages.js";

export type EvalSet = {name: string, problems: readonly Problem[]};

/** What an evaluation reports of a group of problems (a set, or one domain of it). */
const figuresSchema = z.object({
    problems: z.number().int(),
    /** Greedy pass@1 (the sampled mean@1 when greedy is off). */
    accuracy: z.number(),
    /** The standard error of `accuracy` over problems. */
    stderr: z.number().default(0),
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

/** One group's figures within a set: a subject, or a difficulty level. */
export const groupMetricsSchema = figuresSchema.extend({group: z.string()});
export type GroupMetrics = z.infer<typeof groupMetricsSchema>;

/** One problem's outcome: the greedy response's verdict (null without greedy) and how many of its samples were correct. */
export const problemOutcomeSchema = z.object({
    id: z.string(),
    greedy: z.boolean().nullable(),
    correct: z.number().int(),
    samples: z.number().int()
});
export type ProblemOutcome = z.infer<typeof problemOutcomeSchema>;

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
    /** Per subject and per level, where the problems have them (in order of first appearance; levels ascending). */
    subjects: z.array(groupMetricsSchema).default([]),
    levels: z.array(groupMetricsSchema).default([]),
    /** Each problem's outcome, in problem order. */
    outcomes: z.array(problemOutcomeSchema).default([]),
    /** The first correct and the first incorrect response, in problem order (fewer when there is none). */
    examples: z.array(evalExampleSchema).default([]),
    k: z.number().int().optional(),
    /** Mean over problems of the share of their k samples that are correct. */
    meanAtK: z.number().optional(),
    majAtK: z.number().optional(),
    passAtK: z.number().optional(),
    /** Standard errors over problems of meanAtK, majAtK and passAtK. */
    meanAtKStderr: z.number().optional(),
    majAtKStderr: z.number().optional(),
    passAtKStderr: z.number().optional()
});
export type EvalMetrics = z.infer<typeof evalMetricsSchema>;

export async function evaluate(o: {
    model: Model,
    adapter?: Adapter | undefined,
    /** Several adapters with their scales (instead of `adapter`). */
    adapters?: AdapterChoice | undefined,
    sets: readonly EvalSet[],
    config: RunConfig["evaluate"],
    /** The form responses should take (format adherence, stop strings); default still. */
    format?: ThoughtFormat | undefined,
    systemPrompt: string | null,
    seed: number,
    threads?: number | undefined,
    /** Runs the checks of code problems (needed when there are any). */
    verifier?: CodeVerifier | undefined,
    /** Folder for this evaluation's chunk files (a set per subfolder). */
    dir: string,
    signal?: AbortSignal | undefined,
    /** Sample on servers instead of the local engine (a function: called when sampling is needed). */
    remote?: EndpointOptions | (() => Promise<EndpointOptions>) | undefined,
    onLog?: ((line: string) => void) | undefined,
    onProgress?: ((set: string, done: number, total: number) => void) | undefined
}): Promise<EvalMetrics[]> {
    const out: EvalMetrics[] = [];
    const engine = {parallel: o.config.parallel, ...(o.threads == null ? {} : {threads: o.threads})};
    const format = o.format ?? "still";
    for (const set of o.sets) {
        const run = (kind: string, sampling: Parameters<typeof sampleAndGrade>[0]["sampling"]) => sampleAndGrade({
            model: o.model, adapter: o.adapter, adapters: o.adapters, problems: set.problems, systemPrompt: o.systemPrompt, sampling, engine,
            dir: path.join(o.dir, set.name, kind), chunk: 64, format, signal: o.signal, verifier: o.verifier, remote: o.remote, onLog: o.onLog,
            onProgress: (done, total) => o.onProgress?.(`${set.name} (${kind})`, done, total)
        });
        const base = {maxTokens: o.config.maxTokens, seed: o.seed, stopAfter: formatStops(format)};
        const greedy = o.config.greedy ? await run("greedy", {...base, samples: 1, temperature: 0, topK: 0}) : null;
        const k = o.config.samples;
        const sampled = k > 0 ? await run("sampled", {
            ...base, samples: k, temperature: o.config.temperature, topK: o.config.topK, topP: o.config.topP
        }) : null;
        if (greedy == null && sampled == null) throw new OptionError("evaluation needs greedy or samples > 0: nothing to evaluate.");
        const responses = greedy ?? sampled!.filter((s) => s.sample === 0);
        const perProblem = sampled == null ? null : samplesByProblem(set.problems, sampled);
        const greedyById = new Map(greedy?.map((s) => [s.id, s.correct]));
        const metrics: EvalMetrics = {
            set: set.name,
            problems: set.problems.length,
            ...figures(responses),
            lengths: responses.map((s) => s.tokens.length),
            domains: byDomain(set.problems, responses).map(({domain, problems, samples}) => ({domain, problems: problems.length, ...figures(samples)})),
            subjects: groupBy(set.problems, responses, (p) => p.subject).map(groupFigures),
            levels: groupBy(set.problems, responses, (p) => p.difficulty == null ? undefined : String(p.difficulty))
                .sort((a, b) => Number(a.key) - Number(b.key)).map(groupFigures),
            outcomes: set.problems.map((p, i) => ({
                id: p.id, greedy: greedyById.get(p.id) ?? null,
                correct: perProblem?.[i]!.filter((s) => s.correct).length ?? 0, samples: perProblem?.[i]!.length ?? 0
            })),
            examples: examples(set.problems, responses, format)
        };
        if (perProblem != null) {
            const mean = perProblem.map((s) => s.filter((x) => x.correct).length / Math.max(1, s.length));
            const maj = perProblem.map((s) => (majorityCorrect(s, k) ? 1 : 0));
            const pass = perProblem.map((s) => passAtK(s.length, s.filter((x) => x.correct).length, k));
            Object.assign(metrics, {
                k, meanAtK: average(mean), majAtK: average(maj), passAtK: average(pass),
                meanAtKStderr: standardError(mean), majAtKStderr: standardError(maj), passAtKStderr: standardError(pass)
            });
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
function examples(problems: readonly Problem[], responses: readonly GradedSample[], format: ThoughtFormat): EvalExample[] {
    const byId = new Map(problems.map((p) => [p.id, p]));
    return [true, false].flatMap((correct) => {
        const s = responses.find((r) => r.correct === correct && byId.has(r.id));
        if (s == null) return [];
        const p = byId.get(s.id)!;
        const parsed = parseThought(s.text, format);
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

/** Each problem's samples in sample order, in problem order. */
function samplesByProblem(problems: readonly Problem[], samples: readonly GradedSample[]): GradedSample[][] {
    const byId = new Map(problems.map((p) => [p.id, [] as GradedSample[]]));
    for (const s of samples) byId.get(s.id)?.push(s);
    return problems.map((p) => byId.get(p.id)!.sort((a, b) => a.sample - b.sample));
}

const average = (values: readonly number[]) => (values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length);

/** The standard error of the mean of `values` (sample standard deviation / √n; 0 below two values). */
export function standardError(values: readonly number[]): number {
    const n = values.length;
    if (n < 2) return 0;
    const m = average(values);
    return Math.sqrt(values.reduce((a, v) => a + (v - m) ** 2, 0) / (n - 1) / n);
}

function figures(responses: readonly GradedSample[]) {
    return {
        accuracy: share(responses, (s) => s.correct),
        stderr: standardError(responses.map((s) => (s.correct ? 1 : 0))),
        formatAdherence: share(responses, (s) => s.wellFormed),
        meanTokens: responses.length === 0 ? 0 : responses.reduce((n, s) => n + s.tokens.length, 0) / responses.length,
        truncated: share(responses, (s) => s.finish === "length")
    };
}

type Group = {key: string, problems: Problem[], samples: GradedSample[]};

/** Problems and their samples grouped by `keyOf` (problems without a key are left out), in order of first appearance. */
export function groupBy(problems: readonly Problem[], samples: readonly GradedSample[], keyOf: (p: Problem) => string | undefined): Group[] {
    const keys = new Map<string, string>();
    const groups = new Map<string, Group>();
    for (const p of problems) {
        const key = keyOf(p);
        if (key == null) continue;
        keys.set(p.id, key);
        if (!groups.has(key)) groups.set(key, {key, problems: [], samples: []});
        groups.get(key)!.problems.push(p);
    }
    for (const s of samples) {
        const key = keys.get(s.id);
        if (key != null) groups.get(key)!.samples.push(s);
    }
    return [...groups.values()];
}

const groupFigures = (g: Group): GroupMetrics => ({group: g.key, problems: g.problems.length, ...figures(g.samples)});

/** Problems and their samples grouped by the problems' domain, in order of first appearance. */
export function byDomain(problems: readonly Problem[], samples: readonly GradedSample[]): {domain: string, problems: Problem[], samples: GradedSample[]}[] {
    return groupBy(problems, samples, (p) => p.domain).map(({key, ...g}) => ({domain: key, ...g}));
}
