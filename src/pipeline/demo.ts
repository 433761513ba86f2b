// `still demo`: the whole recipe offline on the built-in tiny model and the arithmetic
// task. It makes the model, the data (a scripted teacher's long-form thoughts), teaches
// the model the task's plain answers first (a full fine-tune: the "base"), then runs the
// loop: imitate, one SFT round and one DPO round, evaluating on held-out problems.
import fs from "node:fs";
import path from "node:path";
import {makeModel} from "../../models/makeModel.js";
import {throwIfAborted} from "../errors.js";
import {sft} from "../train/sft.js";
import {type RunConfig, parseRunConfig} from "./config.js";
import {demoProblems, plainAnswer, rng, teacherResponse, workedSteps} from "./demoTask.js";
import {type LoopEvent, type LoopSummary, runLoop} from "./runLoop.js";
import {writeJsonAtomic, writeJsonlAtomic} from "./RunDir.js";

export type DemoOptions = {
    /** Folder for the model, the data and the run (default runs/demo). */
    out?: string,
    seed?: number,
    threads?: number,
    signal?: AbortSignal,
    onEvent?: (e: LoopEvent) => void,
    /** Smaller or larger sizes than demoPlan (the test suite runs a miniature). */
    plan?: Partial<DemoPlan>
};

/** Sizes of the demo, chosen to finish in minutes on two cores. */
export const demoPlan = {
    /** Problems the base is pre-trained on: each as a plain answer and as worked steps. */
    pretrainProblems: 2500,
    thoughtProblems: 400,
    explorePool: 300,
    heldOut: 100,
    pretrainEpochs: 2,
    maxTokens: 448,
    /** Samples per problem in explore. */
    samples: 4,
    /** Self-improvement rounds, in order. */
    rounds: ["sft", "dpo"] as ("sft" | "dpo")[]
};
export type DemoPlan = typeof demoPlan;

/** Runs the demo; the summary's seconds count everything this call did, pre-training included. */
export async function runDemo(options: DemoOptions = {}): Promise<LoopSummary> {
    const started = performance.now();
    const out = path.resolve(options.out ?? path.join("runs", "demo"));
    const seed = options.seed ?? 1;
    const plan: DemoPlan = {...demoPlan, ...options.plan};
    const signal = options.signal;
    const emit = options.onEvent;
    fs.mkdirSync(path.join(out, "data"), {recursive: true});
    fs.mkdirSync(path.join(out, "models"), {recursive: true});

    // Disjoint problem sets from one stream of the generator.
    const all = demoProblems(seed, plan.pretrainProblems + plan.thoughtProblems + plan.explorePool + plan.heldOut);
    const seen = new Set<string>();
    const distinct = all.filter((p) => (seen.has(p.question) ? false : (seen.add(p.question), true)));
    let at = 0;
    const take = (n: number) => distinct.slice(at, (at += n));
    const heldOut = take(plan.heldOut);
    const pool = take(plan.explorePool);
    const thoughtSet = take(plan.thoughtProblems);
    const pretrainSet = take(plan.pretrainProblems);
    const teacher = rng(seed * 7919 + 1);
    const wording = rng(seed * 7919 + 2);
    const file = (name: string) => path.join(out, "data", name);
    const asProblem = (p: (typeof all)[number]) => ({id: p.id, problem: p.question, answer: p.answer});
    await writeJsonlAtomic(file("heldout.jsonl"), heldOut.map(asProblem));
    await writeJsonlAtomic(file("problems.jsonl"), pool.map(asProblem));
    await writeJsonlAtomic(file("thoughts.jsonl"), thoughtSet.map((p) => ({question: p.question, response: teacherResponse(p, teacher), domain: "math", source: "demo teacher"})));

    // The base: the tiny model pre-trained on what a base model would know: problems
    // worked step by step when asked to, and plain answers to "What is …?" (never the
    // thought format).
    const random = path.join(out, "models", "tiny.gguf");
    const base = path.join(out, "models", "tiny-base.gguf");
    if (!fs.existsSync(base)) {
        emit?.({type: "step", step: "pretrain", status: "start", message: "pre-training the tiny model on worked steps and plain answers (full fine-tune)"});
        if (!fs.existsSync(random)) await makeModel({preset: "tiny", out: random, seed, ...(signal == null ? {} : {signal})});
        await sft({
            model: random, out: base, full: true, workDir: path.join(out, "models", "pretrain"), resume: true, seed,
            data: pretrainSet.flatMap((p) => [{question: p.question, response: plainAnswer(p)}, workedSteps(p, wording)]), systemPrompt: null,
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
        name: "demo",
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
        rounds: plan.rounds.map((method) => method === "sft" ? {method, train: {...train, learningRate: 3e-3, epochs: 2}}
            : {method, train: {...train, learningRate: 5e-4, epochs: 1}, dpo: {beta: 0.1, alpha: 0.2}}),
        evaluate: {greedy: true, maxTokens: plan.maxTokens, parallel: 16}
    };
    await writeJsonAtomic(path.join(out, "demo.config.json"), raw);
    const config: RunConfig = parseRunConfig(raw, path.join(out, "demo.config.json"));
    const summary = await runLoop(config, {...(signal == null ? {} : {signal}), ...(emit == null ? {} : {onEvent: emit})});
    return {...summary, seconds: (performance.now() - started) / 1000};
}
