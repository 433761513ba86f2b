// The loop: imitate → (explore → select → improve)×rounds, evaluating after every phase.
// Each step is recorded in the run folder's state.json when it is done, with a typed record
// (records.ts); a resumed run skips done steps, and a step cut short redoes itself from
// what it left (sampling in whole chunks, training from its checkpoint), so the results
// match an uninterrupted run.
import fs from "node:fs";
import path from "node:path";
import {z} from "zod";
import {CodeVerifier} from "../code/verifyCode.js";
import {loadLongFormThoughts} from "../data/loadLongFormThoughts.js";
import {loadMathProblems} from "../data/loadMathProblems.js";
import type {Problem} from "../data/problemSchema.js";
import type {ThoughtExample} from "../data/thoughtExampleSchema.js";
import type {Adapter} from "../engine/Adapter.js";
import {loadModel, type Model} from "../engine/Model.js";
import {DataError, throwIfAborted} from "../errors.js";
import {byDomain, type EvalSet, evaluate, share} from "../evaluate/evaluate.js";
import {loadEvalSet} from "../evaluate/loadEvalSet.js";
import {type GradedSample, type SampleAndGradeOptions, sampleAndGrade} from "../explore/sampleAndGrade.js";
import {problemQuestion} from "../format/buildChatMessages.js";
import {resolveSystemPrompt} from "../format/systemPrompt.js";
import {formatStops, templateVariables} from "../format/thinking.js";
import {readJsonlFile, writeJsonAtomic, writeJsonlAtomic} from "../io/jsonl.js";
import {select} from "../select/select.js";
import {dpo} from "../train/dpo.js";
import type {TrainerEvent} from "../train/runTrainer.js";
import type {RunHooks, TrainResult} from "../train/runTraining.js";
import {sft} from "../train/sft.js";
import type {TrainingOptions} from "../train/trainingOptions.js";
import type {RunConfig, TrainConfig} from "./config.js";
import {type GrpoStepMetrics, grpo} from "../rl/grpo.js";
import {type PhaseSummary, evalStepSchema, exploreStepSchema, grpoStepSchema, phaseSummary, selectStepSchema, type TrainStep, trainStepSchema} from "./records.js";
import {writeReport} from "./report.js";
import {RunDir} from "./RunDir.js";
import type {EndpointOptions} from "../remote/RemoteRollouts.js";
import {serveAdapter, unloadAdapter} from "../remote/serveAdapter.js";
import {shuffle} from "./seeded.js";

export type {PhaseSummary};

export type LoopEvent =
    | {type: "step", step: string, status: "start" | "skip" | "done", message?: string}
    | {type: "progress", step: string, done: number, total: number, detail?: string}
    /** A remote client's line: a server leaving or rejoining the rotation, an adapter loaded on one. */
    | {type: "log", step: string, message: string};

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
    for (const e of config.data.eval) evalSets.push(await loadEvalSet(e, {seed: config.seed, signal}));
    const thoughts = config.data.thoughts != null && config.imitate.enabled ? (await loadLongFormThoughts(config.data.thoughts, strict)).items : [];
    const p = config.prompt;
    const systemPrompt = await resolveSystemPrompt({system: p.system === undefined && p.format === "think" ? null : p.system, systemFile: p.systemFile});
    return {problems, evalSets, thoughts, systemPrompt};
}

export async function runLoop(config: RunConfig, options: LoopOptions = {}, inputs?: LoopInputs): Promise<LoopSummary> {
    const started = performance.now();
    const data = inputs ?? await loadInputs(config, options.signal);
    // code problems are checked in the sandbox: a machine that cannot stops here, before any work
    const languages = [...data.problems, ...data.evalSets.flatMap((s) => s.problems)].flatMap((p) => p.code == null ? [] : [p.code.language ?? "python"]);
    const verifier = languages.length === 0 ? undefined : new CodeVerifier({
        testTimeoutMs: config.code.testTimeoutMs, problemTimeoutMs: config.code.problemTimeoutMs,
        unsafe: config.code.unsafeRunWithoutSandbox, ...(config.code.workers == null ? {} : {concurrency: config.code.workers})
    });
    await verifier?.ready(languages);
    // the model is checked and loaded before the run folder is made: a bad file stops here
    const model = await loadModel(config.model.path, {gpuLayers: config.model.gpuLayers, ...(options.signal == null ? {} : {signal: options.signal})});
    // prompts of sampling and training alike render the template with the run's thinking switch
    model.setChatTemplateVariables(templateVariables(config.prompt.format, config.prompt.thinking));
    let run: RunDir;
    try {
        run = await RunDir.start(config);
    } catch (err) {
        await model.dispose();
        throw err;
    }
    const loop = new Loop(config, data, model, run, options, verifier);
    try {
        await loop.run();
        return {name: config.name, dir: run.dir, phases: loop.phases, seconds: (performance.now() - started) / 1000};
    } finally {
        await loop.dispose();
    }
}

/** A grpo round's metrics.jsonl read back (when the round was done before this process). */
const grpoMetricsRowSchema = z.object({step: z.number().int()}).passthrough();

/** The rows of selected.jsonl and pairs.jsonl that training reads back. */
const selectedRowSchema = z.object({question: z.string(), response: z.string()});
const pairRowSchema = z.object({question: z.string(), chosen: z.string(), rejected: z.string()});

/** One run of the loop: its phases in order, each a method. */
class Loop {
    readonly phases: PhaseSummary[] = [];
    private adapter: Adapter | undefined;
    private adapterPath: string | undefined;
    /** Problems every sample solved in an earlier round (dropSolved). */
    private readonly solved = new Set<string>();

    constructor(private readonly config: RunConfig, private readonly data: LoopInputs, private readonly model: Model,
                private readonly runDir: RunDir, private readonly options: LoopOptions,
                private readonly verifier: CodeVerifier | undefined) {}

    async run() {
        await this.evaluatePhase("base");
        if (this.data.thoughts.length > 0) {
            await this.imitate();
            await this.evaluatePhase("imitate");
        }
        for (const [i, round] of this.config.rounds.entries()) {
            const name = `round-${i + 1}`;
            if (round.method === "grpo") {
                await this.improveByGrpo(name, i, round);
                await this.evaluatePhase(name);
                continue;
            }
            const pool = this.roundProblems(i);
            if (pool.length === 0) {
                this.emit({type: "step", step: name, status: "skip", message: "every problem is solved: the pool is exhausted"});
                break;
            }
            const samples = await this.explore(name, i, pool);
            await this.select(name, i, pool, samples, round.dpo.maxPairsPerProblem);
            if (round.method === "sft") await this.improveBySft(name, i, round);
            else await this.improveByDpo(name, round);
            await this.evaluatePhase(name);
        }
    }

    async dispose() {
        this.adapter?.dispose();
        await this.model.dispose();
    }

    // --- steps ---------------------------------------------------------------------

    /** A step of the run, announced as it starts, is skipped, or ends. */
    private async step<S extends z.ZodType<Record<string, unknown>>>(name: string, schema: S, work: () => Promise<z.output<S>>): Promise<z.output<S>> {
        if (!this.runDir.isDone(name)) {
            throwIfAborted(this.options.signal, name);
            this.emit({type: "step", step: name, status: "start"});
        }
        const {record, ran} = await this.runDir.step(name, schema, work);
        this.emit({type: "step", step: name, status: ran ? "done" : "skip"});
        return record;
    }

    private emit(e: LoopEvent) {
        this.options.onEvent?.(e);
    }

    private progress(step: string) {
        return (done: number, total: number, detail?: string) =>
            this.emit({type: "progress", step, done, total, ...(detail == null ? {} : {detail})});
    }

    private log(step: string) {
        return (message: string) => this.emit({type: "log", step, message});
    }

    /** The servers' options for `use`, or undefined where it runs locally. */
    private endpoints(use: "explore" | "select" | "evaluate" | "grpo"): EndpointOptions | undefined {
        const s = this.config.servers;
        if (s == null || !s.phases.includes(use)) return undefined;
        // the client's own options (the base model's name is added per phase)
        const {model: _base, adapters: _adapters, phases: _phases, ...endpoints} = s;
        return endpoints;
    }

    /** `adapter` loaded on the servers (named after the phase that trained it); its name and PEFT folder. */
    private serve(endpoints: EndpointOptions, adapter: string, step: string) {
        return serveAdapter({adapter, baseModel: this.config.model.path, label: `${this.config.name}-${path.basename(path.dirname(adapter))}`, endpoints, onLog: this.log(step)});
    }

    /**
     * Where a phase samples: on config.servers (a function that loads the current adapter there
     * when sampling is needed), or undefined for the local engine (also where adapters stay local and there is one).
     */
    private remote(use: "explore" | "select" | "evaluate", step: string): (() => Promise<EndpointOptions>) | undefined {
        const endpoints = this.endpoints(use);
        const adapter = this.adapterPath;
        if (endpoints == null || adapter != null && this.config.servers!.adapters === "none") return undefined;
        return async () => ({...endpoints, model: adapter == null ? this.config.servers!.model : (await this.serve(endpoints, adapter, step)).name});
    }

    /** For a grpo round: every step's adapter loaded on the servers, the one before unloaded. */
    private remoteSteps(step: string): ((adapter: string | undefined) => Promise<EndpointOptions>) | undefined {
        const endpoints = this.endpoints("grpo");
        if (endpoints == null || this.config.servers!.adapters === "none") return undefined;
        let previous: {name: string, dir: string} | undefined;
        return async (adapter) => {
            if (adapter == null) return {...endpoints, model: this.config.servers!.model};
            const served = await this.serve(endpoints, adapter, step);
            if (previous != null && previous.name !== served.name) {
                await unloadAdapter(previous.name, endpoints);
                // and its PEFT folder (one per step would pile up)
                await fs.promises.rm(previous.dir, {recursive: true, force: true});
            }
            previous = served;
            return {...endpoints, model: served.name};
        };
    }

    // --- phases --------------------------------------------------------------------

    /** Evaluation of the current model on every evaluation set; then summary.json and the report. */
    private async evaluatePhase(phase: string) {
        const name = `eval/${phase}`;
        const {metrics} = await this.step(name, evalStepSchema, async () => ({
            metrics: await evaluate({
                model: this.model, adapter: this.adapter, sets: this.data.evalSets, config: this.config.evaluate, format: this.config.prompt.format,
                systemPrompt: this.data.systemPrompt, seed: this.config.seed, threads: this.config.model.threads,
                dir: this.runDir.path("eval", phase), signal: this.options.signal, verifier: this.verifier,
                remote: this.remote("evaluate", name), onLog: this.log(name),
                onProgress: (set, done, total) => this.progress(name)(done, total, set)
            })
        }));
        await this.runDir.metricsOnce(name, metrics.map((m) => ({kind: "eval" as const, phase, ...m})));
        this.phases.push(phaseSummary(phase, metrics));
        await writeJsonAtomic(this.runDir.path("summary.json"), {name: this.config.name, phases: this.phases, completed: this.runDir.completed});
        await writeReport(this.runDir.dir, `still run ${this.config.name}`);
    }

    /** Imitation: LoRA SFT on the long-form thoughts. */
    private async imitate() {
        await this.train("imitate", "sft", this.config.imitate.train, (common) => sft({
            ...common, mask: this.config.imitate.mask, data: this.thoughtExamples()
        }));
    }

    /** The problems a round samples: those not solved before, a seeded subset of them when asked (shared out by domain weights). */
    private roundProblems(round: number): Problem[] {
        const weights = this.config.explore.domainWeights;
        const pool = this.data.problems.filter((p) => !this.solved.has(p.id) && (weights == null || (weights[p.domain] ?? 0) > 0));
        const n = this.config.explore.problemsPerRound;
        if (n == null) return pool;
        const shuffled = shuffle(pool, this.config.seed * 1000 + round);
        if (weights == null) return shuffled.slice(0, n);
        return shareOut(shuffled, weights, n);
    }

    /** Exploration: samples of every problem, graded. A done step reads its chunk files back. */
    private async explore(name: string, round: number, pool: readonly Problem[]): Promise<GradedSample[]> {
        const e = this.config.explore;
        const threads = this.config.model.threads;
        const exploring: SampleAndGradeOptions = {
            model: this.model, adapter: this.adapter, problems: pool, systemPrompt: this.data.systemPrompt,
            sampling: {samples: e.samples, temperature: e.temperature, topK: e.topK, topP: e.topP, maxTokens: e.maxTokens, seed: this.config.seed + round,
                stopAfter: formatStops(this.config.prompt.format)},
            format: this.config.prompt.format,
            engine: {parallel: e.parallel, ...(threads == null ? {} : {threads})},
            dir: this.runDir.path(name, "explore"), chunk: e.chunk, signal: this.options.signal, onProgress: this.progress(`${name}/explore`),
            verifier: this.verifier, remote: this.remote("explore", `${name}/explore`), onLog: this.log(`${name}/explore`)
        };
        let sampled: GradedSample[] | undefined;
        const explored = await this.step(`${name}/explore`, exploreStepSchema, async () => {
            const all = sampled = await sampleAndGrade(exploring);
            const solvedByAll = pool.filter((p) => {
                const mine = all.filter((s) => s.id === p.id);
                return mine.length > 0 && mine.every((s) => s.correct);
            }).map((p) => p.id);
            return {problems: pool.map((p) => p.id), samples: all.length, correct: all.filter((s) => s.correct).length, solvedByAll};
        });
        const samples = sampled ?? await sampleAndGrade({...exploring, onProgress: undefined});
        if (e.dropSolved) for (const id of explored.solvedByAll) this.solved.add(id);
        await this.runDir.metricsOnce(`${name}/explore`, [{
            kind: "explore", round: round + 1, problems: pool.length, samples: samples.length,
            correctShare: samples.length === 0 ? 0 : explored.correct / samples.length, solvedByAll: explored.solvedByAll.length,
            domains: byDomain(pool, samples).map((d) => ({
                domain: d.domain, problems: d.problems.length, samples: d.samples.length, correctShare: share(d.samples, (s) => s.correct)
            }))
        }]);
        return samples;
    }

    /** Selection: perplexity of the candidates under the current model; selected.jsonl and pairs.jsonl. */
    private async select(name: string, round: number, pool: readonly Problem[], samples: readonly GradedSample[], maxPairsPerProblem: number) {
        const chosen = await this.step(`${name}/select`, selectStepSchema, async () => {
            const selection = await select({
                model: this.model, adapter: this.adapter, problems: pool, samples, systemPrompt: this.data.systemPrompt,
                config: this.config.select, maxPairsPerProblem, threads: this.config.model.threads, signal: this.options.signal,
                remote: this.remote("select", `${name}/select`), onLog: this.log(`${name}/select`)
            });
            // what the model was asked: training prompts are the sampling prompts
            const question = new Map(pool.map((p) => [p.id, problemQuestion(p)]));
            await writeJsonlAtomic(this.runDir.path(name, "selected.jsonl"), selection.selected.map((s) => ({
                id: s.id, sample: s.sample, question: question.get(s.id)!, response: s.text, perplexity: s.perplexity
            })));
            await writeJsonlAtomic(this.runDir.path(name, "pairs.jsonl"), selection.pairs.map((p) => ({
                id: p.id, question: question.get(p.id)!, chosen: p.chosen.text, rejected: p.rejected.text,
                chosen_perplexity: p.chosen.perplexity, rejected_perplexity: p.rejected.perplexity
            })));
            return {selected: selection.selected.length, pairs: selection.pairs.length, perplexities: selection.scored.filter((x) => x.correct).map((x) => x.perplexity)};
        });
        await this.runDir.metricsOnce(`${name}/select`, [{kind: "select", round: round + 1, ...chosen}]);
    }

    /** Self-improvement by SFT on every round's selected trajectories so far (and the thoughts again, when asked). */
    private async improveBySft(name: string, round: number, r: RunConfig["rounds"][number]) {
        const selected: z.infer<typeof selectedRowSchema>[] = [];
        for (let k = 1; k <= round + 1; k++) selected.push(...await readJsonlFile(this.runDir.path(`round-${k}`, "selected.jsonl"), selectedRowSchema));
        const examples = [...selected.map((s) => ({question: s.question, response: s.response})), ...(r.keepImitationData ? this.thoughtExamples() : [])];
        if (examples.length === 0) return this.skipTraining(name, "no correct trajectory to train on: exploration found none");
        const previous = this.adapterPath;
        await this.train(name, "sft", r.train, (common) => sft({
            ...common, mask: this.config.imitate.mask, data: examples, ...(previous == null ? {} : {adapter: previous})
        }));
    }

    /** Self-improvement by DPO on the round's correct/incorrect pairs. */
    private async improveByDpo(name: string, r: RunConfig["rounds"][number]) {
        const pairs = await readJsonlFile(this.runDir.path(name, "pairs.jsonl"), pairRowSchema);
        if (pairs.length === 0) return this.skipTraining(name, "no preference pair: no problem had both a correct and an incorrect sample");
        const previous = this.adapterPath;
        await this.train(name, "dpo", r.train, (common) => dpo({
            ...common, beta: r.dpo.beta, alpha: r.dpo.alpha, align: r.dpo.align, pairs, ...(previous == null ? {} : {adapter: previous})
        }));
    }

    /** Self-improvement by online RL: samples, rewards and updates of its own (resumable inside; see rl/grpo.ts). */
    private async improveByGrpo(name: string, round: number, r: RunConfig["rounds"][number]) {
        const pool = this.roundProblems(round);
        if (pool.length === 0) return this.skipTraining(name, "every problem is solved: the pool is exhausted");
        const threads = this.config.model.threads;
        const step = `${name}/grpo`;
        let steps: GrpoStepMetrics[] = [];
        const record = await this.step(step, grpoStepSchema, async () => {
            const result = await grpo({
                model: this.model, problems: pool, systemPrompt: this.data.systemPrompt, dir: this.runDir.path(name, "grpo"),
                config: r.grpo, adapter: this.adapterPath, seed: this.config.seed + round, threads, signal: this.options.signal, verifier: this.verifier,
                evaluate: (adapter, at) => this.evaluateDuring(name, adapter, at), remote: this.remoteSteps(step),
                onEvent: (e) => {
                    if (e.type === "progress") this.progress(step)(e.step - 1 + (e.total > 0 ? e.done / e.total : 0), e.steps, e.phase);
                    if (e.type === "step") this.progress(step)(e.metrics.step, r.grpo.steps ?? e.metrics.step,
                        `reward ${e.metrics.reward.toFixed(3)}, accuracy ${(100 * e.metrics.accuracy).toFixed(1)}%`);
                }
            });
            steps = result.steps;
            return {adapter: result.adapter, steps: result.steps.length, problems: result.problems, seconds: result.seconds,
                firstReward: result.steps[0]?.reward ?? null, lastReward: result.steps.at(-1)?.reward ?? null};
        });
        if (steps.length === 0) steps = await readJsonlFile(this.runDir.path(name, "grpo", "metrics.jsonl"), grpoMetricsRowSchema) as GrpoStepMetrics[];
        await this.runDir.metricsOnce(step, steps.map((m) => ({
            kind: "grpo" as const, round: round + 1, step: m.step, reward: m.reward, rewardStd: m.reward_std, accuracy: m.accuracy,
            unfinished: m.unfinished, meanLength: m["completions/mean_length"], maxLength: m["completions/max_length"],
            clippedRatio: m["completions/clipped_ratio"], kl: m.trainer?.kl ?? null, entropy: m.trainer?.entropy ?? null, seconds: m.seconds.step
        })));
        this.adapter?.dispose();
        this.adapter = await this.model.loadAdapter(record.adapter);
        this.adapterPath = record.adapter;
    }

    /** Evaluation inside a grpo round (evalEvery): accuracy per set, into that step's metrics. */
    private async evaluateDuring(name: string, adapter: Adapter, at: number): Promise<Record<string, number>> {
        const metrics = await evaluate({
            model: this.model, adapter, sets: this.data.evalSets, config: this.config.evaluate, format: this.config.prompt.format, systemPrompt: this.data.systemPrompt,
            seed: this.config.seed, threads: this.config.model.threads, dir: this.runDir.path(name, "grpo", "eval", `step-${at}`),
            signal: this.options.signal, verifier: this.verifier
        });
        return Object.fromEntries(metrics.map((m) => [`${m.set}/accuracy`, m.accuracy]));
    }

    // --- training --------------------------------------------------------------------

    private thoughtExamples() {
        return this.data.thoughts.map((t) => ({question: t.question, response: t.response}));
    }

    /** A round with nothing to learn from keeps the adapter it has and says why. */
    private async skipTraining(name: string, reason: string) {
        await this.runDir.step(`${name}/train`, trainStepSchema, async () => ({skipped: reason}));
        this.emit({type: "step", step: `${name}/train`, status: "skip", message: reason});
    }

    /** A training step of `phase` with the shared options from its train config; the adapter it writes is used from then on. */
    private async train(phase: string, method: "sft" | "dpo", t: TrainConfig, go: (common: TrainingOptions & RunHooks) => Promise<TrainResult>) {
        const threads = this.config.model.threads;
        const signal = this.options.signal;
        const record: TrainStep = await this.step(`${phase}/train`, trainStepSchema, async () => {
            const r = await go({
                model: this.config.model.path, out: this.runDir.path(phase, "adapter.gguf"), workDir: this.runDir.path(phase, "train"),
                resume: true, seed: this.config.seed, epochs: t.epochs, ctx: t.context, recompute: t.recompute, gradAccum: Math.max(1, Math.round(t.batchTokens / t.context)),
                saveEvery: t.saveEvery, lora: t.lora, optimizer: {lr: t.learningRate, warmupRatio: t.warmup, weightDecay: t.weightDecay},
                systemPrompt: this.data.systemPrompt, overflow: "truncate",
                ...(threads == null ? {} : {threads}),
                ...(signal == null ? {} : {signal}),
                onProgress: (e: TrainerEvent) => {
                    if (e.type === "step") this.progress(`${phase}/train`)(e.step, e.steps, `loss ${e.loss.toFixed(4)}`);
                }
            });
            return {
                adapter: r.out, records: r.records, steps: r.steps, seconds: r.seconds, ...await lossCurve(path.join(r.workDir, "metrics.jsonl")),
                tokensPerSecond: r.done.seconds > 0 ? r.done.tokens / r.done.seconds : null
            };
        });
        if ("skipped" in record) return;
        await this.runDir.metricsOnce(`${phase}/train`, [{kind: "train", phase, method, ...record}]);
        this.adapter?.dispose();
        this.adapter = await this.model.loadAdapter(record.adapter);
        this.adapterPath = record.adapter;
    }
}

/** `n` problems shared out by domain weight (largest remainders), each domain's in `shuffled` order. */
function shareOut(shuffled: readonly Problem[], weights: Readonly<Record<string, number>>, n: number): Problem[] {
    const domains = Object.entries(weights).filter(([, w]) => w > 0);
    const total = domains.reduce((t, [, w]) => t + w, 0);
    const quota = domains.map(([d, w]) => ({d, exact: (n * w) / total, take: Math.floor((n * w) / total)}));
    let left = n - quota.reduce((t, q) => t + q.take, 0);
    for (const q of [...quota].sort((a, b) => (b.exact - b.take) - (a.exact - a.take) || a.d.localeCompare(b.d))) {
        if (left <= 0) break;
        q.take++;
        left--;
    }
    const want = new Map(quota.map((q) => [q.d, q.take]));
    return shuffled.filter((p) => {
        const k = want.get(p.domain) ?? 0;
        if (k <= 0) return false;
        want.set(p.domain, k - 1);
        return true;
    });
}

/** Points of a loss curve kept for the report. */
const CURVE_POINTS = 200;

/** The first and last logged loss of a training run (all its steps, also across a resume), and its curve in at most CURVE_POINTS means. */
async function lossCurve(metricsFile: string): Promise<{firstLoss: number | null, lastLoss: number | null, losses: number[]}> {
    const steps = fs.existsSync(metricsFile) ? await readJsonlFile(metricsFile, z.object({loss: z.number()})) : [];
    const per = Math.max(1, Math.ceil(steps.length / CURVE_POINTS));
    const losses: number[] = [];
    for (let i = 0; i < steps.length; i += per) {
        const bucket = steps.slice(i, i + per);
        losses.push(bucket.reduce((t, s) => t + s.loss, 0) / bucket.length);
    }
    return {firstLoss: steps[0]?.loss ?? null, lastLoss: steps.at(-1)?.loss ?? null, losses};
}
