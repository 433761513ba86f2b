// The loop: imitate → (explore → select → improve)×rounds, evaluating after every phase.
// Each step is recorded in the run folder's state.json when it is done; a resumed run
// skips done steps, and a step cut short redoes itself from what it left (sampling in
// whole chunks, training from its checkpoint), so the results match an uninterrupted run.
import fs from "node:fs";
import path from "node:path";
import {z} from "zod";
import {loadGpqa} from "../data/loadGpqa.js";
import {loadLongFormThoughts} from "../data/loadLongFormThoughts.js";
import {loadMathProblems} from "../data/loadMathProblems.js";
import type {Problem} from "../data/problemSchema.js";
import type {ThoughtExample} from "../data/thoughtExampleSchema.js";
import type {Adapter} from "../engine/Adapter.js";
import {loadModel, type Model} from "../engine/Model.js";
import {DataError, throwIfAborted} from "../errors.js";
import {DEFAULT_SYSTEM_PROMPT, loadSystemPrompt} from "../format/systemPrompt.js";
import {dpo} from "../train/dpo.js";
import type {TrainerEvent} from "../train/runTrainer.js";
import type {RunHooks, TrainResult} from "../train/runTraining.js";
import type {TrainingOptions} from "../train/trainingOptions.js";
import {sft} from "../train/sft.js";
import type {RunConfig, TrainConfig} from "./config.js";
import {type EvalMetrics, type EvalSet, evaluate} from "../evaluate/evaluate.js";
import {writeReport} from "./report.js";
import {readJsonlFile, writeJsonAtomic, writeJsonlAtomic} from "../io/jsonl.js";
import {RunDir} from "./RunDir.js";
import {type GradedSample, gradedSampleSchema, sampleAndGrade} from "../explore/sampleAndGrade.js";
import {select} from "../select/select.js";
import {shuffle} from "./seeded.js";

export type LoopEvent =
    | {type: "step", step: string, status: "start" | "skip" | "done", message?: string}
    | {type: "progress", step: string, done: number, total: number, detail?: string};

export type PhaseSummary = {name: string, accuracy: number, format_adherence: number, mean_tokens: number, sets: EvalMetrics[]};

export type LoopSummary = {name: string, dir: string, phases: PhaseSummary[], seconds: number};

export type LoopOptions = {
    signal?: AbortSignal | undefined,
    onEvent?: ((e: LoopEvent) => void) | undefined
};

/** Everything a run reads, loaded and checked before any work starts. */
export type LoopInputs = {problems: Problem[], evalSets: EvalSet[], thoughts: ThoughtExample[], systemPrompt: string | null};

export async function loadInputs(config: RunConfig, signal?: AbortSignal): Promise<LoopInputs> {
    for (const [field, file] of [["model.path", config.model.path], ["data.problems", config.data.problems],
        ...(config.data.thoughts == null ? [] : [["data.thoughts", config.data.thoughts]]),
        ...config.data.eval.map((e, i) => [`data.eval.${i}.path`, e.path])] as [string, string][])
        if (!fs.existsSync(file)) throw new DataError(file, "does not exist", undefined, field);
    const strict = {policy: "strict" as const, ...(signal == null ? {} : {signal})};
    const problems = (await loadMathProblems(config.data.problems, strict)).items;
    if (problems.length === 0) throw new DataError(config.data.problems, "holds no problems");
    const evalSets: EvalSet[] = [];
    for (const e of config.data.eval) {
        const loaded = e.format === "gpqa" ? await loadGpqa(e.path, {...strict, seed: config.seed}) : await loadMathProblems(e.path, strict);
        evalSets.push({name: e.name, problems: loaded.items.slice(0, e.limit ?? Infinity)});
    }
    const thoughts = config.data.thoughts != null && config.imitate.enabled ? (await loadLongFormThoughts(config.data.thoughts, strict)).items : [];
    const systemPrompt = config.prompt.systemFile != null ? await loadSystemPrompt(config.prompt.systemFile)
        : config.prompt.system === undefined ? DEFAULT_SYSTEM_PROMPT : config.prompt.system;
    return {problems, evalSets, thoughts, systemPrompt};
}

export async function runLoop(config: RunConfig, options: LoopOptions = {}, inputs?: LoopInputs): Promise<LoopSummary> {
    const started = performance.now();
    const {signal, onEvent} = options;
    const data = inputs ?? await loadInputs(config, signal);
    const threads = config.model.threads;
    // the model is checked and loaded before the run folder is made: a bad file stops here
    const model = await loadModel(config.model.path, {gpuLayers: config.model.gpuLayers, ...(signal == null ? {} : {signal})});
    let run: RunDir;
    try {
        run = await RunDir.start(config);
    } catch (err) {
        await model.dispose();
        throw err;
    }
    let adapter: Adapter | undefined;
    let adapterPath: string | undefined;
    const phases: PhaseSummary[] = [];

    const step = async <T>(name: string, work: () => Promise<T>,
                           info: (result: T) => Record<string, unknown> | Promise<Record<string, unknown>>): Promise<Record<string, unknown>> => {
        if (run.isDone(name)) {
            onEvent?.({type: "step", step: name, status: "skip"});
            return run.info(name) ?? {};
        }
        throwIfAborted(signal, name);
        onEvent?.({type: "step", step: name, status: "start"});
        const result = await work();
        const record = await info(result);
        await run.markDone(name, record);
        onEvent?.({type: "step", step: name, status: "done"});
        return record;
    };
    const progress = (name: string) => (done: number, total: number, detail?: string) =>
        onEvent?.({type: "progress", step: name, done, total, ...(detail == null ? {} : {detail})});
    const useAdapter = async (file: string) => {
        adapter?.dispose();
        adapter = await model.loadAdapter(file);
        adapterPath = file;
    };

    const evalPhase = async (phase: string) => {
        const info = await step(`eval/${phase}`, () => evaluate({
            model, adapter, sets: data.evalSets, config: config.evaluate, systemPrompt: data.systemPrompt, seed: config.seed, threads,
            dir: run.path("eval", phase), signal, onProgress: (set, done, total) => progress(`eval/${phase}`)(done, total, set)
        }), (metrics) => ({metrics}));
        const metrics = info.metrics as EvalMetrics[];
        await run.metricsOnce(`eval/${phase}`, () => Promise.all(metrics.map(async (m) => {
            const lengths = await greedyLengths(run.path("eval", phase, m.set, "greedy"));
            return {kind: "eval", phase, ...m, ...(lengths.length > 0 ? {lengths} : {})};
        })));
        const first = metrics[0];
        phases.push({name: phase, accuracy: first?.accuracy ?? 0, format_adherence: first?.formatAdherence ?? 0, mean_tokens: first?.meanTokens ?? 0, sets: metrics});
        await writeSummary();
    };
    const writeSummary = async () => {
        await writeJsonAtomic(run.path("summary.json"), {name: config.name, phases, completed: run.completed});
        await writeReport(run.dir, `still run ${config.name}`);
    };
    const train = async (phase: string, method: "sft" | "dpo", t: TrainConfig, go: (common: TrainingOptions & RunHooks) => Promise<TrainResult>) => {
        const out = run.path(phase, "adapter.gguf");
        const info = await step(`${phase}/train`, () => go({
            model: config.model.path, out, workDir: run.path(phase, "train"), resume: true, seed: config.seed,
            epochs: t.epochs, ctx: t.context, gradAccum: Math.max(1, Math.round(t.batchTokens / t.context)),
            saveEvery: t.saveEvery, lora: t.lora, optimizer: {lr: t.learningRate, warmupRatio: t.warmup, weightDecay: t.weightDecay},
            systemPrompt: data.systemPrompt, overflow: "truncate" as const,
            ...(threads == null ? {} : {threads}),
            ...(signal == null ? {} : {signal}),
            onProgress: (e: TrainerEvent) => {
                if (e.type === "step") progress(`${phase}/train`)(e.step, e.steps, `loss ${e.loss.toFixed(4)}`);
            }
        }), async (r) => ({
            adapter: r.out, records: r.records, steps: r.steps, seconds: r.seconds,
            ...await lossEnds(path.join(r.workDir, "metrics.jsonl")),
            tokensPerSecond: r.done.seconds > 0 ? r.done.tokens / r.done.seconds : null
        }));
        await run.metricsOnce(`${phase}/train`, async () => [{kind: "train", phase, method, ...info}]);
        await useAdapter(info.adapter as string);
    };

    try {
        await evalPhase("base");

        if (data.thoughts.length > 0) {
            await train("imitate", "sft", config.imitate.train, (common) => sft({
                ...common, mask: config.imitate.mask,
                data: data.thoughts.map((t) => ({question: t.question, response: t.response}))
            }));
            await evalPhase("imitate");
        }

        const dropped = new Set<string>();
        for (const [i, round] of config.rounds.entries()) {
            const name = `round-${i + 1}`;
            let pool = data.problems.filter((p) => !dropped.has(p.id));
            if (pool.length === 0) {
                onEvent?.({type: "step", step: name, status: "skip", message: "every problem is solved: the pool is exhausted"});
                break;
            }
            if (config.explore.problemsPerRound != null) pool = shuffle(pool, config.seed * 1000 + i).slice(0, config.explore.problemsPerRound);

            const e = config.explore;
            const exploring = {
                model, adapter, problems: pool, systemPrompt: data.systemPrompt,
                sampling: {samples: e.samples, temperature: e.temperature, topK: e.topK, topP: e.topP, maxTokens: e.maxTokens, seed: config.seed + i},
                engine: {parallel: e.parallel, ...(threads == null ? {} : {threads})},
                dir: run.path(name, "explore"), chunk: e.chunk, signal, onProgress: progress(`${name}/explore`)
            };
            let sampled: GradedSample[] | undefined;
            const explored = await step(`${name}/explore`, async () => (sampled = await sampleAndGrade(exploring)), (all) => {
                const solvedByAll = pool.filter((p) => {
                    const mine = all.filter((s) => s.id === p.id);
                    return mine.length > 0 && mine.every((s) => s.correct);
                }).map((p) => p.id);
                return {problems: pool.map((p) => p.id), samples: all.length, correct: all.filter((s) => s.correct).length, solvedByAll};
            });
            // a step done before: its chunk files, read back (no sampling)
            const samples = sampled ?? await sampleAndGrade({...exploring, onProgress: undefined});
            if (e.dropSolved) for (const id of explored.solvedByAll as string[]) dropped.add(id);
            await run.metricsOnce(`${name}/explore`, async () => [{kind: "explore", round: i + 1, problems: pool.length, samples: samples.length,
                correctShare: samples.length === 0 ? 0 : (explored.correct as number) / samples.length, solvedByAll: (explored.solvedByAll as string[]).length}]);

            const chosen = await step(`${name}/select`, async () => {
                const selection = await select({
                    model, adapter, problems: pool, samples, systemPrompt: data.systemPrompt, config: config.select,
                    maxPairsPerProblem: round.dpo.maxPairsPerProblem, threads, signal
                });
                const byId = new Map(pool.map((p) => [p.id, p]));
                await writeJsonlAtomic(run.path(name, "selected.jsonl"), selection.selected.map((s) => ({
                    id: s.id, sample: s.sample, question: byId.get(s.id)!.question, response: s.text, perplexity: s.perplexity
                })));
                await writeJsonlAtomic(run.path(name, "pairs.jsonl"), selection.pairs.map((p) => ({
                    id: p.id, question: byId.get(p.id)!.question, chosen: p.chosen.text, rejected: p.rejected.text,
                    chosen_perplexity: p.chosen.perplexity, rejected_perplexity: p.rejected.perplexity
                })));
                return selection;
            }, (s) => ({selected: s.selected.length, pairs: s.pairs.length, perplexities: s.scored.filter((x) => x.correct).map((x) => x.perplexity)}));
            await run.metricsOnce(`${name}/select`, async () => [{kind: "select", round: i + 1, selected: chosen.selected, pairs: chosen.pairs, perplexities: chosen.perplexities}]);

            const previous = adapterPath;
            // a round with nothing to learn from keeps the adapter it has and says why
            const skipTraining = async (reason: string) => {
                await step(`${name}/train`, async () => reason, (r) => ({skipped: r}));
                onEvent?.({type: "step", step: `${name}/train`, status: "skip", message: reason});
            };
            if (round.method === "sft") {
                // the accumulated data: every round's selected trajectories so far, and the original thoughts
                const selected: z.infer<typeof selectedRowSchema>[] = [];
                for (let r = 1; r <= i + 1; r++) selected.push(...await readJsonlFile(run.path(`round-${r}`, "selected.jsonl"), selectedRowSchema));
                const examples = [
                    ...selected.map((s) => ({question: s.question, response: s.response})),
                    ...(round.keepImitationData ? data.thoughts.map((t) => ({question: t.question, response: t.response})) : [])
                ];
                if (examples.length === 0) await skipTraining("no correct trajectory to train on: exploration found none");
                else await train(name, "sft", round.train, (common) => sft({
                    ...common, mask: config.imitate.mask, data: examples, ...(previous == null ? {} : {adapter: previous})
                }));
            } else {
                const pairs = await readJsonlFile(run.path(name, "pairs.jsonl"), pairRowSchema);
                if (pairs.length === 0) await skipTraining("no preference pair: no problem had both a correct and an incorrect sample");
                else await train(name, "dpo", round.train, (common) => dpo({
                    ...common, beta: round.dpo.beta, alpha: round.dpo.alpha, align: round.dpo.align,
                    pairs,
                    ...(previous == null ? {} : {adapter: previous})
                }));
            }
            await evalPhase(name);
        }
        return {name: config.name, dir: run.dir, phases, seconds: (performance.now() - started) / 1000};
    } finally {
        adapter?.dispose();
        await model.dispose();
    }
}

/** The fields of selected.jsonl and pairs.jsonl that training reads back. */
const selectedRowSchema = z.object({question: z.string(), response: z.string()});
const pairRowSchema = z.object({question: z.string(), chosen: z.string(), rejected: z.string()});

/** Token lengths of the greedy responses of one evaluation (its chunk files). */
async function greedyLengths(dir: string): Promise<number[]> {
    if (!fs.existsSync(dir)) return [];
    const out: number[] = [];
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".jsonl")).sort())
        for (const row of await readJsonlFile(path.join(dir, f), gradedSampleSchema)) out.push(row.tokens.length);
    return out;
}

/** The first and last logged loss of a training run (all its steps, also across a resume). */
async function lossEnds(metricsFile: string): Promise<{firstLoss: number | null, lastLoss: number | null}> {
    const steps = fs.existsSync(metricsFile) ? await readJsonlFile(metricsFile, z.object({loss: z.number()})) : [];
    return {firstLoss: steps[0]?.loss ?? null, lastLoss: steps.at(-1)?.loss ?? null};
}
