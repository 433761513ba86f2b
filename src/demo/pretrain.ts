// The demo's base model: the tiny random model pre-trained on what a base model would know
// (problems counted out line by line when asked to, direct answers; never the thought
// format, never a held-out problem), in stages until a probe of the skill imitation needs
// passes: counting out exactly (the question's two numbers copied, then every minute
// without a slip), asked in words it was not trained on.
//
// Each stage is a full fine-tune of the previous stage's model on fresh examples; its
// model and its probe are kept, so a stopped pre-training resumes at the stage it was in,
// and a finished base is reused by every later run with the same seed and recipe.
import fs from "node:fs";
import path from "node:path";
import {z} from "zod";
import {throwIfAborted} from "../errors.js";
import {loadModel} from "../engine/Model.js";
import {buildChatMessages} from "../format/buildChatMessages.js";
import {readJsonFile, writeJsonAtomic} from "../io/jsonl.js";
import {rng, shuffle} from "../loop/seeded.js";
import type {LoopEvent} from "../loop/runLoop.js";
import {makeModel} from "../models/makeModel.js";
import {type PresetName, presets} from "../models/presets.js";
import {sft} from "../train/sft.js";
import {type DemoProblem, countedOut, countsOnFromItsStart, opening, plainAnswer, probeRequest, workedSteps} from "./demoTask.js";

/**
 * Version of the pre-training recipe (data, stages, probe). A cached base is reused only
 * with the same seed and version; change it with anything that changes what the base learns.
 */
export const PRETRAIN_RECIPE = 4;

export const pretrainPlanSchema = z.object({
    /** The built-in model (presets.ts) made with random weights from the seed and pre-trained. */
    preset: z.enum(Object.keys(presets) as [PresetName, ...PresetName[]]),
    /** Worked examples ("count it out") per stage. */
    workedPerStage: z.number().int().min(0),
    /** Direct answers per stage, drawn in turn from the first `directProblems` pre-training problems. */
    directPerStage: z.number().int().min(0),
    directProblems: z.number().int().min(0),
    /** Stop after this many stages even when the probe has not passed (and say so). */
    maxStages: z.number().int().min(1),
    /** Problems of the probe (from the exploration pool: never a held-out one) and the share it must count out exactly. */
    probeProblems: z.number().int().min(1),
    probePass: z.number().min(0).max(1),
    learningRate: z.number().positive()
});
export type PretrainPlan = z.infer<typeof pretrainPlanSchema>;

const stageSchema = z.object({
    stage: z.number().int(), steps: z.number().int(), seconds: z.number(), loss: z.number().nullable(),
    /**
     * Shares of the probe's problems. exact: counted out exactly, the right numbers copied
     * and then every line right (what the probe passes on); probe: counted on correctly
     * from the response's own first line, whatever it copied; copied: first line right.
     */
    probe: z.number(), exact: z.number(), copied: z.number()
});
export const baseRecordSchema = z.object({
    seed: z.number().int(), recipe: z.number().int(), passed: z.boolean(), probePass: z.number(),
    stages: z.array(stageSchema)
});
export type BaseRecord = z.infer<typeof baseRecordSchema>;

/** Where the base for `seed` is kept under `modelsDir`, with its record beside it, and the random model it starts from. */
export function basePaths(modelsDir: string, seed: number, preset: PresetName) {
    const stem = path.join(modelsDir, `${preset}-base-seed${seed}-recipe${PRETRAIN_RECIPE}`);
    return {model: `${stem}.gguf`, record: `${stem}.json`, work: `${stem}.stages`, random: path.join(modelsDir, `${preset}-random-seed${seed}.gguf`)};
}

export type PretrainOptions = {
    modelsDir: string,
    seed: number,
    /** Problems the base may learn from (every pair but the held-out ones). */
    pretrainSet: readonly DemoProblem[],
    /** Problems the probe asks (pairs of the exploration pool). */
    probeSet: readonly DemoProblem[],
    plan: PretrainPlan,
    maxTokens: number,
    threads?: number | undefined,
    signal?: AbortSignal | undefined,
    emit?: ((e: LoopEvent) => void) | undefined
};

/** The base model for the demo: a cached one when its seed and recipe match, else pre-trained now. */
export async function pretrainBase(o: PretrainOptions): Promise<{model: string, record: BaseRecord, reused: boolean}> {
    const {model, record: recordFile, work, random} = basePaths(o.modelsDir, o.seed, o.plan.preset);
    if (fs.existsSync(model) && fs.existsSync(recordFile)) {
        const record = await readJsonFile(recordFile, baseRecordSchema);
        return {model, record, reused: true};
    }
    o.emit?.({type: "step", step: "pretrain", status: "start", message: `pre-training ${o.plan.preset} on counting and direct answers (full fine-tune, in stages until its probe passes)`});
    if (!fs.existsSync(random)) await makeModel({preset: o.plan.preset, out: random, seed: o.seed, ...(o.signal == null ? {} : {signal: o.signal})});
    fs.mkdirSync(work, {recursive: true});
    const p = o.plan;
    const stages: BaseRecord["stages"] = [];
    let current = random;
    let passed = false;
    for (let stage = 1; stage <= p.maxStages && !passed; stage++) {
        throwIfAborted(o.signal, "pre-training");
        const stageModel = path.join(work, `stage-${stage}.gguf`);
        const stageRecord = path.join(work, `stage-${stage}.json`);
        if (fs.existsSync(stageModel) && fs.existsSync(stageRecord)) {
            stages.push(await readJsonFile(stageRecord, stageSchema));
        } else {
            const started = performance.now();
            const r = await sft({
                model: current, out: stageModel, full: true, workDir: path.join(work, `stage-${stage}.run`), resume: true, seed: o.seed * 1000 + stage,
                data: stageData(o.pretrainSet, o.seed, stage, p), systemPrompt: null,
                epochs: 1, ctx: 384, gradAccum: 1, saveEvery: 100,
                // each stage a warm restart of a cosine decay, so the probe sees a settled model (2e-3 and more stall this model)
                optimizer: {lr: p.learningRate, minLr: p.learningRate / 10, warmupSteps: 10},
                ...(o.threads == null ? {} : {threads: o.threads}),
                ...(o.signal == null ? {} : {signal: o.signal}),
                onProgress: (e) => {
                    if (e.type === "step") o.emit?.({type: "progress", step: "pretrain", done: e.step, total: e.steps, detail: `stage ${stage}, loss ${e.loss.toFixed(3)}`});
                }
            });
            const loss = r.history.at(-1)?.loss ?? null;
            const shares = await probeModel(stageModel, o.probeSet, o);
            const record = {stage, steps: r.steps, seconds: (performance.now() - started) / 1000, loss, ...shares};
            await writeJsonAtomic(stageRecord, record);
            stages.push(record);
        }
        const last = stages.at(-1)!;
        passed = last.exact >= p.probePass;
        o.emit?.({type: "step", step: "pretrain/probe", status: "done",
            message: `stage ${stage}: ${last.steps} steps; probe: ${pct(last.exact)} counted out exactly (${pct(p.probePass)} passes), ` +
                `${pct(last.copied)} copied the question's numbers, ${pct(last.probe)} counted on right from its first line`});
        current = stageModel;
    }
    const record: BaseRecord = {seed: o.seed, recipe: PRETRAIN_RECIPE, passed, probePass: p.probePass, stages};
    fs.copyFileSync(current, `${model}.tmp`);
    fs.renameSync(`${model}.tmp`, model);
    await writeJsonAtomic(recordFile, record);
    return {model, record, reused: false};
}

/** A stage's examples: worked problems from a window of the set that moves on each stage, direct answers in turn. */
function stageData(set: readonly DemoProblem[], seed: number, stage: number, p: PretrainPlan) {
    const wording = rng(seed * 7919 + 100 + stage);
    const at = (i: number) => set[i % set.length]!;
    const worked = Array.from({length: p.workedPerStage}, (_, i) => workedSteps(at((stage - 1) * p.workedPerStage + i), wording));
    const direct = Array.from({length: p.directPerStage}, (_, i) => {
        const q = at(((stage - 1) * p.directPerStage + i) % Math.max(1, Math.min(p.directProblems, set.length)));
        return {question: q.question, response: plainAnswer(q)};
    });
    return shuffle([...direct, ...worked], seed * 31 + stage);
}

const pct = (v: number) => `${(v * 100).toFixed(0)}%`;

/** One line on a base: its last probe and the stages it took ("probe: 98% counted out exactly, after 6 stages (1636 steps)"). */
export function probeSummary(record: BaseRecord): string {
    const steps = record.stages.reduce((n, st) => n + st.steps, 0);
    const stages = record.stages.length;
    return `probe: ${pct(record.stages.at(-1)!.exact)} counted out exactly, after ${stages} stage${stages > 1 ? "s" : ""} (${steps} steps)`;
}

/** The probe's shares (stageSchema) of `problems`, answered greedily to the probe's request. */
async function probeModel(file: string, problems: readonly DemoProblem[], o: {maxTokens: number, threads?: number | undefined, signal?: AbortSignal | undefined}): Promise<{probe: number, exact: number, copied: number}> {
    const model = await loadModel(file, o.signal == null ? {} : {signal: o.signal});
    try {
        const engine = model.rollouts({parallel: 16, ...(o.threads == null ? {} : {threads: o.threads})});
        try {
            const byId = new Map(problems.map((p) => [p.id, p]));
            let [counted, exact, copied] = [0, 0, 0];
            const run = engine.generate(problems.map((p) => ({id: p.id, prompt: buildChatMessages(probeRequest(p), {systemPrompt: null})})),
                {samples: 1, temperature: 0, topK: 0, maxTokens: o.maxTokens, seed: 0}, o.signal == null ? {} : {signal: o.signal});
            for await (const s of run) {
                if (s.finish === "aborted") continue;
                const p = byId.get(s.id!)!;
                if (countsOnFromItsStart(s.text)) counted++;
                if (s.text.includes(countedOut(p))) exact++;
                if (s.text.includes(opening(p))) copied++;
            }
            await run.stats;
            throwIfAborted(o.signal, "the probe");
            const n = problems.length;
            return {probe: counted / n, exact: exact / n, copied: copied / n};
        } finally {
            engine.dispose();
        }
    } finally {
        model.dispose();
    }
}
