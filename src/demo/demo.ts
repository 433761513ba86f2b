// `still demo`: the whole recipe offline on the built-in tiny model and the clock
// counting task (demoTask.ts). It makes the model, the data (a scripted teacher's
// long-form thoughts), teaches the model what a base model would know first (a full
// fine-tune: the "base"), then runs the loop: imitate, one SFT round and one DPO round
// (or, with rl, one round of online RL), evaluating on held-out problems.
import fs from "node:fs";
import path from "node:path";
import {makeModel} from "../models/makeModel.js";
import {z} from "zod";
import {OptionError, parseOptions, throwIfAborted} from "../errors.js";
import {sft} from "../train/sft.js";
import {type RunConfig, parseRunConfig} from "../loop/config.js";
import {demoProblems, firstLine, plainAnswer, teacherResponse, workedSteps} from "./demoTask.js";
import {type LoopEvent, type LoopSummary, runLoop} from "../loop/runLoop.js";
import {rng} from "../loop/seeded.js";
import {writeJsonAtomic, writeJsonlAtomic} from "../io/jsonl.js";
import type {GrpoConfig} from "../rl/grpo.js";

export const demoOptionsSchema = z.object({
    out: z.string().min(1).describe("Folder for the model, the data and the run").default(path.join("runs", "demo")),
    seed: z.number().int().min(0).describe("Seed of the task's problem order, the teacher, the base model and every run step").default(1),
    threads: z.number().int().min(1).optional().describe("CPU threads; default: STILL_THREADS, else every available CPU"),
    rl: z.boolean().describe("After imitation, one round of online RL (GRPO) instead of the SFT and DPO rounds (run folder demo-rl)").default(false)
});

export type DemoOptions = z.input<typeof demoOptionsSchema> & {
    signal?: AbortSignal,
    onEvent?: (e: LoopEvent) => void,
    /** Smaller or larger sizes than demoPlan (the test suite runs a miniature). */
    plan?: Partial<DemoPlan>
};

/** Sizes of the demo, chosen to finish in minutes on two cores. */
export const demoPlan = {
    /** Worked examples ("count it out") the base is pre-trained on, spread over its problems. */
    pretrainProblems: 1800,
    /** First-line drills ("start at 47 with 28 to go.") the base is pre-trained on. */
    firstLines: 2400,
    /** Direct answers the base is pre-trained on (other problems than the held-out ones). */
    directAnswers: 400,
    /** Problems with a teacher's long-form thought, for imitation. */
    thoughtProblems: 300,
    explorePool: 240,
    heldOut: 100,
    pretrainEpochs: 2,
    maxTokens: 448,
    /** Samples per problem in explore. */
    samples: 4,
    /** Self-improvement rounds, in order. */
    rounds: ["sft", "dpo"] as ("sft" | "dpo" | "grpo")[],
    /** The GRPO round of `still demo --rl`. */
    grpo: {steps: 30, promptsPerStep: 8, samplesPerPrompt: 8, learningRate: 2e-3} as GrpoConfig
};
export type DemoPlan = typeof demoPlan;

/** Runs the demo; the summary's seconds count everything this call did, pre-training included. */
export async function runDemo(options: DemoOptions = {}): Promise<LoopSummary> {
    const started = performance.now();
    const {out: outDir, seed, rl} = parseOptions(demoOptionsSchema, {out: options.out, seed: options.seed, threads: options.threads, rl: options.rl}, "demo options");
    const out = path.resolve(outDir);
    const plan: DemoPlan = {...demoPlan, ...(rl ? {rounds: ["grpo" as const]} : {}), ...options.plan};
    const signal = options.signal;
    const emit = options.onEvent;
    fs.mkdirSync(path.join(out, "data"), {recursive: true});
    fs.mkdirSync(path.join(out, "models"), {recursive: true});

    // Held-out, explore and thought problems are disjoint sets of (start, count) pairs.
    // The base is pre-trained on every pair but the held-out ones, so on those it can only
    // answer at once what it can work out.
    const all = demoProblems(seed);
    let at = 0;
    const take = (n: number) => all.slice(at, (at += n));
    const heldOut = take(plan.heldOut);
    const pool = take(plan.explorePool);
    const thoughtSet = take(plan.thoughtProblems);
    if (at > all.length) throw new OptionError(`the demo plan needs ${at} problems and the task has ${all.length}; make heldOut, explorePool or thoughtProblems smaller.`);
    const pretrainSet = all.slice(plan.heldOut);
    const teacher = rng(seed * 7919 + 1);
    const wording = rng(seed * 7919 + 2);
    const file = (name: string) => path.join(out, "data", name);
    const asProblem = (p: (typeof all)[number]) => ({id: p.id, problem: p.question, answer: p.answer});
    await writeJsonlAtomic(file("heldout.jsonl"), heldOut.map(asProblem));
    await writeJsonlAtomic(file("problems.jsonl"), pool.map(asProblem));
    await writeJsonlAtomic(file("thoughts.jsonl"), thoughtSet.map((p) => ({question: p.question, response: teacherResponse(p, teacher), domain: p.domain, source: "demo teacher"})));

    // The base: the tiny model pre-trained on what a base model would know: problems
    // counted out line by line when asked to, drills of the first line alone (taken with a
    // stride through the set, not in the worked ones' order), and direct answers
    // (never the thought format, never a held-out problem).
    const random = path.join(out, "models", "tiny.gguf");
    const base = path.join(out, "models", "tiny-base.gguf");
    if (!fs.existsSync(base)) {
        emit?.({type: "step", step: "pretrain", status: "start", message: "pre-training the tiny model on counting and direct answers (full fine-tune)"});
        if (!fs.existsSync(random)) await makeModel({preset: "tiny", out: random, seed, ...(signal == null ? {} : {signal})});
        await sft({
            model: random, out: base, full: true, workDir: path.join(out, "models", "pretrain"), resume: true, seed,
            data: [
                ...pretrainSet.slice(0, plan.directAnswers).map((p) => ({question: p.question, response: plainAnswer(p)})),
                ...Array.from({length: plan.pretrainProblems}, (_, i) => workedSteps(pretrainSet[i % pretrainSet.length]!, wording)),
                ...Array.from({length: plan.firstLines}, (_, i) => firstLine(pretrainSet[(i * 7 + 3) % pretrainSet.length]!, wording))
            ], systemPrompt: null,
            epochs: plan.pretrainEpochs, ctx: 512, gradAccum: 1, saveEvery: 200,
            optimizer: {lr: 1e-3, warmupRatio: 0.03}, // 2e-3 and more stall this model
            ...(options.threads == null ? {} : {threads: options.threads}),
            ...(signal == null ? {} : {signal}),
            onProgress: (e) => {
                if (e.type === "step") emit?.({type: "progress", step: "pretrain", done: e.step, total: e.steps, detail: `loss ${e.loss.toFixed(3)}`});
            }
        });
        emit?.({type: "step", step: "pretrain", status: "done"});
    } else {
        emit?.({type: "step", step: "pretrain", status: "skip"});
    }
    throwIfAborted(signal, "the demo");

    const train = {learningRate: 5e-3, epochs: 3, batchTokens: 2048, context: 1024, warmup: 0.05, lora: {rank: 16, alpha: 32}};
    const raw = {
        name: rl ? "demo-rl" : "demo",
        runsDir: ".",
        seed,
        model: {path: base, ...(options.threads == null ? {} : {threads: options.threads})},
        // No system prompt: the tiny base never saw one, and a character-level model that
        // small is thrown by any unseen text before the question. The format is learnt
        // by imitation alone.
        prompt: {system: null},
        data: {thoughts: file("thoughts.jsonl"), problems: file("problems.jsonl"), eval: [{name: "held-out", path: file("heldout.jsonl")}]},
        imitate: {train},
        explore: {samples: plan.samples, temperature: 0.7, topK: 20, maxTokens: plan.maxTokens, parallel: 16, chunk: 100},
        select: {policy: "lowest", maxPerProblem: 2},
        rounds: plan.rounds.map((method) => method === "sft" ? {method, train: {...train, learningRate: 3e-3, epochs: 1}}
            : method === "grpo" ? {method, grpo: {maxTokens: plan.maxTokens, temperature: 1, parallel: 16, ...plan.grpo}}
            // 5e-4 with an SFT weight of 0.2 unlearnt the format (pairs differ in a few digits
            // of long, shared working): a smaller step and a full SFT term keep it.
            : {method, train: {...train, learningRate: 1e-4, epochs: 1}, dpo: {beta: 0.1, alpha: 1}}),
        evaluate: {greedy: true, maxTokens: plan.maxTokens, parallel: 16}
    };
    await writeJsonAtomic(path.join(out, "demo.config.json"), raw);
    const config: RunConfig = parseRunConfig(raw, path.join(out, "demo.config.json"));
    const summary = await runLoop(config, {...(signal == null ? {} : {signal}), ...(emit == null ? {} : {onEvent: emit})});
    return {...summary, seconds: (performance.now() - started) / 1000};
}
