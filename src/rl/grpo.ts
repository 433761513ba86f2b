// Online RL with verifiable rewards (the GRPO family), STILL-3's step after STILL-2: per
// step, G samples for each of B prompts with the current adapter, graded and rewarded;
// one update (or a few) in the resident trainer; the new adapter handed to the engine
// (write, load, swap: no base reload) before the next sampling.
//
// The folder holds each step's samples (chunks of prompts, each written whole), rewards and
// batch file, metrics.jsonl (one line per step) and the trainer's checkpoint. A killed run
// resumes at the trainer's last checkpoint: steps after it are redone from the samples and
// rewards on disk (or sampled again with the same seeds and the same adapter), so it ends
// with the same adapter and metrics as an uninterrupted run.
import type {EndpointOptions} from "../remote/RemoteRollouts.js";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import type {Problem} from "../data/problemSchema.js";
import type {Adapter} from "../engine/Adapter.js";
import type {Model} from "../engine/Model.js";
import type {RolloutEngine} from "../engine/Rollouts.js";
import {OptionError, TrainerError, parseOptions, throwIfAborted} from "../errors.js";
import {type GradedSample, sampleAndGrade} from "../explore/sampleAndGrade.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import {problemMessages} from "../format/buildChatMessages.js";
import {appendJsonl, readJsonlFile, writeJsonlAtomic} from "../io/jsonl.js";
import {shuffle} from "../loop/seeded.js";
import {loraOptionsSchema, trainingOptionsSchema} from "../train/trainingOptions.js";
import {TrainingFile} from "../train/TrainingFile.js";
import {type PlanEvent, type PolicyStepEvent, ResidentTrainer, policyLossSchema} from "./ResidentTrainer.js";
import {type RewardFunction, type RewardedSample, rewardSample, rewardSchemeSchema} from "./rewards.js";

export const grpoConfigSchema = z.strictObject({
    steps: z.number().int().min(1).describe("Sampling steps (each followed by minibatches × iterations optimizer steps)").default(20),
    promptsPerStep: z.number().int().min(1).describe("Prompts (B) sampled per step").default(8),
    samplesPerPrompt: z.number().int().min(1).describe("Samples (G) per prompt: a group, whose rewards give the advantages").default(8),
    learningRate: z.number().positive().max(1).describe("AdamW learning rate (constant)").default(1e-5),
    minibatches: z.number().int().min(1).describe("Optimizer steps per sampling step: the step's samples split in this many minibatches").default(1),
    iterations: z.number().int().min(1).describe("μ: passes over each step's samples; above 1 the ratio to the old policy moves and clipping acts").default(1),
    policy: policyLossSchema.prefault({}),
    dropEqualGroups: z.boolean().optional().describe("DAPO's dynamic sampling: leave out groups whose rewards are all equal " +
        "(they carry no advantage); default: true for dapo"),
    rewards: rewardSchemeSchema.prefault({}),
    temperature: z.number().min(0).max(100).describe("Sampling temperature; the trainer scores the samples at it too (log softmax(logits / T))").default(1),
    topK: z.number().int().min(0).describe("Top-k cut (0: off)").default(0),
    topP: z.number().gt(0).max(1).describe("Nucleus cut (1: off)").default(1),
    maxTokens: z.number().int().min(1).describe("Most tokens per sample; a sample cut there is unfinished").default(1024),
    parallel: z.number().int().min(1).max(128).describe("Samples decoded together").default(16),
    chunk: z.number().int().min(1).describe("Prompts per unit of resumable sampling").default(4),
    curation: z.strictObject({
        passRate: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]).optional()
            .describe("Keep problems whose pass rate in a first sampling pass lies in [low, high] (open-r1: [0.1, 0.6])"),
        dropSolved: z.boolean().describe("STILL-2's rule: drop problems every first-pass sample solved").default(false),
        samples: z.number().int().min(1).optional().describe("Samples per problem of the first pass (default: samplesPerPrompt)")
    }).describe("Problem curation before the first step (a first sampling pass with the starting adapter)").prefault({}),
    context: z.number().int().min(16).max(1 << 17).optional()
        .describe("The trainer's longest row in tokens; default: the longest prompt + maxTokens"),
    recompute: trainingOptionsSchema.shape.recompute,
    lora: loraOptionsSchema.describe("The adapter trained when there is no starting adapter").prefault({}),
    evalEvery: z.number().int().min(0).describe("Evaluate every N steps (0: only at the end, by the caller)").default(0),
    checkpointEvery: z.number().int().min(1).describe("Checkpoint the trainer every N steps (a killed run redoes at most N − 1)").default(1)
}).describe("Online RL with verifiable rewards (GRPO family)");
export type GrpoConfig = z.input<typeof grpoConfigSchema>;
export type ResolvedGrpoConfig = z.output<typeof grpoConfigSchema>;

/** One line of metrics.jsonl, one per step (TRL's names where it has them). */
export type GrpoStepMetrics = {
    step: number,
    samples: number,
    reward: number,
    reward_std: number,
    /** Mean of each reward part (outcome, format, overlong, your functions) over the samples it applied to. */
    rewards: Record<string, number>,
    accuracy: number,
    unfinished: number,
    "completions/mean_length": number,
    "completions/max_length": number,
    "completions/clipped_ratio": number,
    "groups/dropped": number,
    frac_reward_zero_std: number,
    skipped: boolean,
    trainer: Omit<PolicyStepEvent, "type"> | null,
    seconds: {sampling: number, rewards: number, old_logps: number, ref_logps: number, gradient: number, handover: number, step: number},
    tokens_per_s: {sampling: number, training: number},
    eval?: Record<string, number>
};

export type GrpoEvent =
    | {type: "progress", step: number, steps: number, phase: "curation" | "sampling" | "training", done: number, total: number}
    | {type: "plan", plan: PlanEvent}
    | {type: "step", metrics: GrpoStepMetrics}
    | {type: "restart", reason: string, step: number};

export type GrpoOptions = {
    /** The base model, loaded: it samples; its file is what the trainer loads. */
    model: Model,
    problems: readonly Problem[],
    systemPrompt: string | null,
    /** The run's folder. */
    dir: string,
    config?: GrpoConfig,
    /** The starting adapter: the policy's start and the KL reference. Without it, a fresh LoRA (B = 0: the base model). */
    adapter?: string | undefined,
    seed?: number,
    threads?: number | undefined,
    rewardFunctions?: readonly RewardFunction[],
    /** Runs the checks of code problems (needed when there are any). */
    verifier?: CodeVerifier | undefined,
    /** Called every evalEvery steps with the current adapter; its numbers go into that step's metrics. */
    evaluate?: ((adapter: Adapter, step: number) => Promise<Record<string, number>>) | undefined,
    signal?: AbortSignal | undefined,
    onEvent?: ((e: GrpoEvent) => void) | undefined,
    /**
     * Sample on servers instead of the local engine: called with the adapter each sampling pass
     * uses (its file; undefined for the base model), it puts it on the servers and says how to reach them.
     */
    remote?: ((adapter: string | undefined) => Promise<EndpointOptions>) | undefined,
    /** A new trainer process for every update, resumed from the checkpoint of the step before (the per-step-process
     * baseline of bench:rl: how the loop trains with a still-train call per phase). Checkpoints every step. */
    trainerPerStep?: boolean
};

export type GrpoResult = {adapter: string, steps: GrpoStepMetrics[], problems: number, seconds: number};

const RESERVED = ["outcome", "format", "overlong"];
const MAX_RESTARTS = 2;

const rewardRowSchema = z.object({
    id: z.string(), sample: z.number().int(), reward: z.number(), parts: z.record(z.string(), z.number().nullable()),
    correct: z.boolean(), unfinished: z.boolean()
});
type RewardRow = z.infer<typeof rewardRowSchema>;
const metricsRowSchema = z.object({step: z.number().int()}).passthrough();

/** Checks a configuration against itself and the problems, before any work (`remote`: sampling on servers). */
export function checkGrpoConfig(c: ResolvedGrpoConfig, problems: number, functions: readonly RewardFunction[] = [], remote = false) {
    const scale = c.policy.scaleRewards ?? c.policy.loss !== "dr_grpo";
    if (c.samplesPerPrompt < 2 && scale)
        throw new OptionError("samplesPerPrompt 1 leaves each group one reward and no std to scale advantages by; sample at least 2 per prompt, or set policy.scaleRewards false.");
    if (c.promptsPerStep > problems) throw new OptionError(`promptsPerStep (${c.promptsPerStep}) exceeds the ${problems} problems.`);
    if (c.minibatches > c.promptsPerStep * c.samplesPerPrompt)
        throw new OptionError(`minibatches (${c.minibatches}) exceeds the ${c.promptsPerStep * c.samplesPerPrompt} samples of a step.`);
    // (the local engine reports log-probs at the sampling temperature for the trainer to compare with; servers at temperature 1)
    if (remote && c.policy.tisCap > 0 && c.temperature !== 1)
        throw new OptionError(`policy.tisCap weighs the trainer's log-probs at temperature ${c.temperature} against the servers', which are at temperature 1; ` +
            "sample at temperature 1, locally, or set tisCap 0.");
    const band = c.curation.passRate;
    if (band != null && band[0] > band[1]) throw new OptionError(`curation.passRate [${band.join(", ")}] is empty: its low end is above its high end.`);
    const names = new Set<string>();
    for (const f of functions) {
        if (RESERVED.includes(f.name) || names.has(f.name)) throw new OptionError(`reward function name ${JSON.stringify(f.name)} is taken; give each a name of its own (not ${RESERVED.join(", ")}).`);
        if (typeof f.fn !== "function") throw new OptionError(`reward function ${f.name} has no fn.`);
        names.add(f.name);
    }
}

/** Online RL over `problems`; returns the adapter written and every step's metrics. */
export async function grpo(o: GrpoOptions): Promise<GrpoResult> {
    const started = performance.now();
    const c = parseOptions(grpoConfigSchema, o.config ?? {}, "grpo options");
    checkGrpoConfig(c, o.problems.length, o.rewardFunctions, o.remote != null);
    throwIfAborted(o.signal, "grpo");
    await fsp.mkdir(o.dir, {recursive: true});
    const run = new GrpoRun(o, c);
    try {
        return {...await run.run(), seconds: (performance.now() - started) / 1000};
    } finally {
        await run.dispose();
    }
}

class GrpoRun {
    private trainer: ResidentTrainer | undefined;
    private engine: RolloutEngine | undefined;
    private adapter: Adapter | undefined;
    private readonly seed: number;
    private readonly adapterPath: string;
    private readonly metricsPath: string;
    private readonly byId: Map<string, Problem>;

    constructor(private readonly o: GrpoOptions, private readonly c: ResolvedGrpoConfig) {
        this.seed = o.seed ?? 0;
        this.adapterPath = path.join(o.dir, "adapter.gguf");
        this.metricsPath = path.join(o.dir, "metrics.jsonl");
        this.byId = new Map(o.problems.map((p) => [p.id, p]));
        if (this.byId.size !== o.problems.length) throw new OptionError("grpo: problem ids repeat; each problem needs an id of its own.");
    }

    async run(): Promise<Omit<GrpoResult, "seconds">> {
        const pool = await this.curate();
        if (pool.length < this.c.promptsPerStep)
            throw new OptionError(`curation left ${pool.length} problems, fewer than promptsPerStep (${this.c.promptsPerStep}); widen curation.passRate or lower promptsPerStep.`);
        for (let restarts = 0; ; restarts++) {
            try {
                await this.startTrainer();
                const steps = await this.stepsFrom(pool);
                await this.trainer!.stop();
                return {adapter: this.adapterPath, steps, problems: pool.length};
            } catch (err) {
                // a trainer that died (not one that refused a command, nor a cancelled run) restarts from its checkpoint
                const died = err instanceof TrainerError && this.trainer != null && !this.trainer.alive;
                if (!died || restarts >= MAX_RESTARTS || this.o.signal?.aborted) throw err;
                this.o.onEvent?.({type: "restart", reason: (err as Error).message, step: this.trainer?.ready?.policy_step ?? 0});
            }
        }
    }

    async dispose() {
        this.trainer?.kill();
        this.engine?.dispose();
        this.adapter?.dispose();
    }

    // --- the pool -------------------------------------------------------------------------

    /** The problems steps draw from: all of them, or those the curation pass keeps (recorded in curation.json). */
    private async curate(): Promise<Problem[]> {
        const cur = this.c.curation;
        if (cur.passRate == null && !cur.dropSolved) return [...this.o.problems];
        const file = path.join(this.o.dir, "curation.json");
        const recorded = z.object({kept: z.array(z.string()), passRates: z.record(z.string(), z.number())});
        if (fs.existsSync(file)) {
            const r = recorded.parse(JSON.parse(await fsp.readFile(file, "utf8")));
            return r.kept.map((id) => this.byId.get(id)!).filter((p) => p != null);
        }
        const samples = await sampleAndGrade({
            model: this.o.model, problems: this.o.problems, systemPrompt: this.o.systemPrompt,
            sampling: {...this.sampling(this.seed * 1_000_003), samples: cur.samples ?? this.c.samplesPerPrompt},
            engine: {parallel: this.c.parallel, ...(this.o.threads == null ? {} : {threads: this.o.threads})},
            ...await this.sampler(this.o.adapter), dir: path.join(this.o.dir, "curation"), chunk: this.c.chunk, signal: this.o.signal, verifier: this.o.verifier,
            onProgress: (done, total) => this.o.onEvent?.({type: "progress", step: 0, steps: this.c.steps, phase: "curation", done, total})
        });
        const passRates: Record<string, number> = {};
        for (const p of this.o.problems) {
            const mine = samples.filter((s) => s.id === p.id);
            passRates[p.id] = mine.length === 0 ? 0 : mine.filter((s) => s.correct).length / mine.length;
        }
        const [low, high] = cur.passRate ?? [0, 1];
        const kept = this.o.problems.filter((p) => {
            const rate = passRates[p.id]!;
            return rate >= low && rate <= high && !(cur.dropSolved && rate === 1);
        });
        await fsp.writeFile(`${file}.tmp`, JSON.stringify({kept: kept.map((p) => p.id), passRates}));
        await fsp.rename(`${file}.tmp`, file);
        return kept;
    }

    /** Step k's prompts (k from 1): the next promptsPerStep distinct problems of the pool's seeded epochs. */
    private stepProblems(pool: readonly Problem[], k: number): Problem[] {
        const B = this.c.promptsPerStep;
        let epoch = 0, at = 0;
        let order = shuffle(pool, this.seed * 1009 + epoch);
        let step: Problem[] = [];
        for (let s = 1; s <= k; s++) {
            step = [];
            const seen = new Set<string>();
            while (step.length < B) {
                if (at >= order.length) {
                    order = shuffle(pool, this.seed * 1009 + ++epoch);
                    at = 0;
                }
                const p = order[at++]!;
                if (!seen.has(p.id)) {
                    seen.add(p.id);
                    step.push(p);
                }
            }
        }
        return step;
    }

    // --- the trainer and the engine ---------------------------------------------------------

    private async startTrainer() {
        this.trainer?.kill();
        const c = this.c;
        const longestPrompt = Math.max(...this.o.problems.map((p) => this.promptTokens(p).length));
        const ctx = c.context ?? Math.ceil((longestPrompt + c.maxTokens) / 16) * 16;
        if (longestPrompt + c.maxTokens > ctx)
            throw new OptionError(`context (${ctx}) is shorter than the longest prompt (${longestPrompt} tokens) + maxTokens (${c.maxTokens}).`);
        this.trainer = await ResidentTrainer.start({
            model: this.o.model.path, checkpoint: path.join(this.o.dir, "trainer", "checkpoint.gguf"),
            ...(this.o.adapter == null ? {} : {adapter: this.o.adapter}),
            lora: c.lora, ctx, recompute: c.recompute, policy: c.policy, maxCompletion: c.maxTokens, seed: this.seed,
            // the trainer scores the samples at the temperature they were drawn at (greedy: 1)
            temperature: c.temperature > 0 ? c.temperature : 1,
            ...(this.o.threads == null ? {} : {threads: this.o.threads})
        }, {signal: this.o.signal, onPlan: (plan) => this.o.onEvent?.({type: "plan", plan})});
    }

    private async rollouts(): Promise<RolloutEngine> {
        this.engine ??= this.o.model.rollouts({parallel: this.c.parallel, ...(this.o.threads == null ? {} : {threads: this.o.threads})});
        if (this.adapter == null && this.o.adapter != null) await this.use(this.o.adapter);
        return this.engine;
    }

    /** Where a sampling pass with `adapter` runs: on the servers (loaded there when a chunk needs it), or the local engine. */
    private async sampler(adapter: string | undefined): Promise<{rollouts: RolloutEngine} | {remote: () => Promise<EndpointOptions>}> {
        const remote = this.o.remote;
        if (remote != null) return {remote: () => remote(adapter)};
        return {rollouts: await this.rollouts()};
    }

    /** The adapter at `file` into the engine; the previous one is freed. */
    private async use(file: string) {
        const next = await this.o.model.loadAdapter(file);
        // (sampling on servers: the adapter is for evaluations alone, and no engine is made)
        if (this.o.remote == null) {
            this.engine ??= this.o.model.rollouts({parallel: this.c.parallel, ...(this.o.threads == null ? {} : {threads: this.o.threads})});
            this.engine.setAdapters([{adapter: next}]);
        }
        this.adapter?.dispose();
        this.adapter = next;
    }

    /** The trainer's adapter written and swapped into the engine; seconds taken. */
    private async handOver(): Promise<number> {
        const t0 = performance.now();
        await fsp.mkdir(path.dirname(this.adapterPath), {recursive: true});
        await this.trainer!.save(this.adapterPath);
        await this.use(this.adapterPath);
        return (performance.now() - t0) / 1000;
    }

    // --- steps ------------------------------------------------------------------------------

    private async stepsFrom(pool: readonly Problem[]): Promise<GrpoStepMetrics[]> {
        const done = this.trainer!.ready.policy_step;
        // metrics after the checkpoint are redone
        const lines = fs.existsSync(this.metricsPath) ? await readJsonlFile(this.metricsPath, metricsRowSchema) : [];
        const kept = lines.filter((l) => l.step <= done) as unknown as GrpoStepMetrics[];
        if (kept.length !== lines.length) await writeJsonlAtomic(this.metricsPath, kept);
        await this.handOver();
        const out = [...kept];
        for (let k = done + 1; k <= this.c.steps; k++) out.push(await this.step(pool, k));
        return out;
    }

    private stepDir(k: number) {
        return path.join(this.o.dir, "steps", `step-${String(k).padStart(5, "0")}`);
    }

    private promptTokens(p: Problem) {
        return this.o.model.promptTokens(problemMessages(p, this.o.systemPrompt));
    }

    private sampling(seed: number) {
        const c = this.c;
        // log-probs at the temperature the trainer scores at (the servers' are at 1)
        return {samples: c.samplesPerPrompt, temperature: c.temperature, topK: c.topK, topP: c.topP, maxTokens: c.maxTokens, seed,
            temperedLogprobs: this.o.remote == null};
    }

    private async step(pool: readonly Problem[], k: number): Promise<GrpoStepMetrics> {
        const c = this.c;
        const tStep = performance.now();
        const dir = this.stepDir(k);
        const problems = this.stepProblems(pool, k);
        const emit = (phase: "sampling" | "training", done: number, total: number) =>
            this.o.onEvent?.({type: "progress", step: k, steps: c.steps, phase, done, total});

        // sampling, in chunks of prompts written whole
        const t0 = performance.now();
        const samples = await sampleAndGrade({
            model: this.o.model, problems, systemPrompt: this.o.systemPrompt, sampling: this.sampling(this.seed * 1_000_003 + k),
            engine: {}, ...await this.sampler(this.adapterPath), keepLogprobs: true, dir: path.join(dir, "samples"), chunk: c.chunk, verifier: this.o.verifier,
            signal: this.o.signal, onProgress: (d, t) => emit("sampling", d, t)
        });
        const sampleSeconds = (performance.now() - t0) / 1000;
        const sampledTokens = samples.reduce((n, s) => n + s.tokens.length, 0);

        // rewards, all or none written
        const t1 = performance.now();
        const rewards = await this.rewards(dir, samples);
        const rewardSeconds = (performance.now() - t1) / 1000;

        // the batch: groups by prompt; all-equal groups out with dynamic sampling
        const group = new Map(problems.map((p, i) => [p.id, i]));
        const byGroup = new Map<number, RewardRow[]>();
        rewards.forEach((r) => byGroup.set(group.get(r.id)!, [...byGroup.get(group.get(r.id)!) ?? [], r]));
        const equal = [...byGroup.values()].filter((g) => g.every((r) => r.reward === g[0]!.reward)).length;
        const dropEqual = c.dropEqualGroups ?? c.policy.loss === "dapo";
        // (a sample from a server, re-tokenized here, can come out longer than maxTokens: the trainer's context has no room for it)
        const keep = (r: RewardRow, s: GradedSample) => s.tokens.length > 0 && s.tokens.length <= c.maxTokens && !(dropEqual && byGroup.get(group.get(r.id)!)!.every((x) => x.reward === r.reward));
        const batch = path.join(dir, "batch.bin");
        const file = await TrainingFile.create(batch, "policy", this.o.model.facts.vocabSize);
        try {
            for (const [i, s] of samples.entries()) {
                const r = rewards[i]!;
                if (!keep(r, s)) continue;
                await file.addPolicy({
                    prompt: this.promptTokens(this.byId.get(s.id)!), completion: s.tokens, reward: r.reward, group: group.get(s.id)!,
                    samplerLogprobs: s.logprobs ?? s.tokens.map(() => Number.NaN)
                });
            }
            if (file.count > 0) await file.close();
            else await file.discard();
        } catch (err) {
            await file.discard();
            throw err;
        }

        // the update, then the hand-over
        throwIfAborted(this.o.signal, `grpo step ${k}`);
        emit("training", 0, 1);
        let trained: PolicyStepEvent | null = null;
        let handover = 0;
        if (file.count > 0) {
            if (this.o.trainerPerStep === true && k > this.trainer!.ready.policy_step + 1) {
                await this.trainer!.stop();
                await this.startTrainer();
            }
            trained = await this.trainer!.step({data: batch, lr: c.learningRate, minibatches: Math.min(c.minibatches, file.count), iterations: c.iterations});
            handover = await this.handOver();
        }
        emit("training", 1, 1);

        const metrics = this.metrics(k, samples, rewards, byGroup.size, equal, dropEqual ? equal : 0, trained, {
            sampling: sampleSeconds, rewards: rewardSeconds, handover, step: (performance.now() - tStep) / 1000
        }, sampledTokens);
        if (c.evalEvery > 0 && k % c.evalEvery === 0 && this.o.evaluate != null && this.adapter != null)
            metrics.eval = await this.o.evaluate(this.adapter, k);
        await appendJsonl(this.metricsPath, [metrics]);
        if (k % c.checkpointEvery === 0 || k === c.steps || this.o.trainerPerStep === true) await this.trainer!.checkpoint(k);
        this.o.onEvent?.({type: "step", metrics});
        return metrics;
    }

    /** The step's rewards: read back when written, else computed (reward functions included) and written whole. */
    private async rewards(dir: string, samples: readonly GradedSample[]): Promise<RewardRow[]> {
        const file = path.join(dir, "rewards.jsonl");
        if (fs.existsSync(file)) {
            const rows = await readJsonlFile(file, rewardRowSchema);
            if (rows.length === samples.length && rows.every((r, i) => r.id === samples[i]!.id && r.sample === samples[i]!.sample)) return rows;
        }
        const rows: RewardRow[] = [];
        for (const s of samples) {
            // the samples come graded: a code check is not run twice
            const r: RewardedSample = await rewardSample(this.byId.get(s.id)!, {...s, completionTokens: s.tokens.length, finish: s.finish, grade: s},
                this.c.rewards, this.c.maxTokens, this.o.rewardFunctions);
            rows.push({id: s.id, sample: s.sample, reward: r.reward, parts: r.parts, correct: r.correct, unfinished: r.unfinished});
        }
        await writeJsonlAtomic(file, rows);
        return rows;
    }

    private metrics(k: number, samples: readonly GradedSample[], rewards: readonly RewardRow[], groups: number, equalGroups: number,
                    dropped: number, t: PolicyStepEvent | null, s: {sampling: number, rewards: number, handover: number, step: number},
                    sampledTokens: number): GrpoStepMetrics {
        const n = Math.max(1, rewards.length);
        const mean = rewards.reduce((a, r) => a + r.reward, 0) / n;
        const std = Math.sqrt(rewards.reduce((a, r) => a + (r.reward - mean) ** 2, 0) / Math.max(1, rewards.length - 1));
        const parts: Record<string, number> = {};
        for (const name of new Set(rewards.flatMap((r) => Object.keys(r.parts)))) {
            const values = rewards.map((r) => r.parts[name]).filter((v): v is number => v != null);
            if (values.length > 0) parts[name] = values.reduce((a, v) => a + v, 0) / values.length;
        }
        const lengths = samples.map((x) => x.tokens.length);
        const trainer = t == null ? null : (({type: _type, ...rest}) => rest)(t);
        return {
            step: k, samples: samples.length, reward: mean, reward_std: std, rewards: parts,
            accuracy: rewards.filter((r) => r.correct).length / n, unfinished: rewards.filter((r) => r.unfinished).length / n,
            "completions/mean_length": lengths.reduce((a, v) => a + v, 0) / Math.max(1, lengths.length),
            "completions/max_length": Math.max(0, ...lengths),
            "completions/clipped_ratio": samples.filter((x) => x.finish === "length").length / Math.max(1, samples.length),
            "groups/dropped": dropped, frac_reward_zero_std: groups === 0 ? 0 : equalGroups / groups, skipped: t == null, trainer,
            seconds: {
                sampling: s.sampling, rewards: s.rewards, old_logps: t?.["seconds/old_logps"] ?? 0, ref_logps: t?.["seconds/ref_logps"] ?? 0,
                gradient: t?.["seconds/gradient"] ?? 0, handover: s.handover, step: s.step
            },
            tokens_per_s: {sampling: s.sampling > 0 ? sampledTokens / s.sampling : 0, training: t?.tokens_per_s ?? 0}
        };
    }
}

