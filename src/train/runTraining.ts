// What sft() and dpo() share: the run directory, the trainer input written with the
// model's tokenizer, the still-train process, metrics.jsonl and summary.json.
import fs from "node:fs/promises";
import path from "node:path";
import {getBackend} from "../engine/binding.js";
import {type Model, loadModel} from "../engine/Model.js";
import {ModelError, OptionError, TrainerError, throwIfAborted} from "../errors.js";
import {appendJsonl, writeJsonAtomic} from "../io/jsonl.js";
import {type DoneEvent, type StepEvent, type TrainerEvent, runTrainer, trainerBinary} from "./runTrainer.js";
import type {ResolvedTrainingOptions} from "./trainingOptions.js";
import {trainerArgs} from "./trainingOptions.js";
import {TrainingFile} from "./TrainingFile.js";

export const TRAINABLE_ARCHITECTURES = ["llama", "qwen2", "qwen3"];

export type TrainResult = {
    /** The adapter (or full model) written. */
    out: string,
    workDir: string,
    /** Records in the trainer input, and answers shortened to fit `ctx`. */
    records: number,
    truncated: number,
    /** Steps of the run, and the step this process started from (0 unless resumed). */
    steps: number,
    startStep: number,
    /** The progress events of the steps this process ran. */
    history: StepEvent[],
    done: DoneEvent,
    seconds: number
};

export type WrittenData = {
    records: number,
    truncated: number,
    /** Where each record came from ("file.jsonl:12"), to name it in trainer errors. */
    sources: string[]
};

export type RunHooks = {signal?: AbortSignal, onProgress?: (event: TrainerEvent) => void};

export async function runTraining(task: "sft" | "dpo", o: ResolvedTrainingOptions, extraArgs: string[], hooks: RunHooks,
                                  writeData: (model: Model, file: TrainingFile) => Promise<WrittenData>,
                                  beforeStart?: (workDir: string) => Promise<void>): Promise<TrainResult> {
    const started = performance.now();
    throwIfAborted(hooks.signal, "training");
    if (o.full && o.adapter != null) throw new OptionError("full training cannot continue a LoRA adapter; drop adapter or full.");
    const backend = getBackend(o.variant == null ? {} : {variant: o.variant});
    const {command, backendDir} = trainerBinary(backend);
    const workDir = path.resolve(o.workDir ?? `${o.out}.run`);
    await fs.mkdir(workDir, {recursive: true});
    await fs.mkdir(path.dirname(path.resolve(o.out)), {recursive: true});
    const files = {
        data: path.join(workDir, "data.bin"),
        checkpoint: path.join(workDir, "checkpoint.gguf"),
        metrics: path.join(workDir, "metrics.jsonl"),
        config: path.join(workDir, "config.json"),
        summary: path.join(workDir, "summary.json")
    };

    // the trainer input, tokenized here with the model's tokenizer (no weights loaded)
    const model = await loadModel(o.model, {vocabOnly: true, ...(o.variant == null ? {} : {variant: o.variant}), ...(hooks.signal == null ? {} : {signal: hooks.signal})});
    let written: WrittenData;
    try {
        if (!TRAINABLE_ARCHITECTURES.includes(model.facts.architecture))
            throw new ModelError(o.model, `${o.model} is a '${model.facts.architecture}' model; the trainer supports ${TRAINABLE_ARCHITECTURES.join(", ")}.`);
        const file = await TrainingFile.create(files.data, task, model.facts.vocabSize);
        try {
            written = await writeData(model, file);
            await file.close();
        } catch (err) {
            await file.discard();
            throw err;
        }
    } finally {
        await model.dispose();
    }

    if (!o.resume) {
        for (const f of [files.checkpoint, files.metrics, files.summary]) await fs.rm(f, {force: true});
    }
    await beforeStart?.(workDir);
    await writeJsonAtomic(files.config, {task, ...o, records: written.records, truncated: written.truncated});

    const args = [task, ...trainerArgs(o, files), "--backend-dir", backendDir, ...extraArgs];
    const history: StepEvent[] = [];
    let startStep = 0;
    let steps = 0;
    let metricsWritten: Promise<void> = Promise.resolve();
    let run: Awaited<ReturnType<typeof runTrainer>>;
    try {
        run = await runTrainer(command, args, {
            ...(hooks.signal == null ? {} : {signal: hooks.signal}),
            onEvent: (event) => {
                if (event.type === "start") {
                    startStep = event.step;
                    steps = event.steps;
                }
                if (event.type === "step") {
                    history.push(event);
                    metricsWritten = metricsWritten.then(() => appendJsonl(files.metrics, [event]));
                }
                hooks.onProgress?.(event);
            },
            // "…/data.bin: record 12: …" -> "examples.jsonl:13 (record 12): …"
            explain: (message) => message.replace(/^(.*?): record (\d+)\b/, (m, file: string, i: string) => {
                const source = written.sources[Number(i)];
                return source == null || file !== files.data ? m : `${source} (record ${i})`;
            })
        });
    } finally {
        await metricsWritten; // every step line on disk, also when the run stops
    }
    const done = run.events.findLast((e) => e.type === "done");
    if (done == null) throw new TrainerError("the trainer finished without reporting its result.", run.exitCode, "");
    const result: TrainResult = {
        out: path.resolve(o.out), workDir, records: written.records, truncated: written.truncated,
        steps, startStep, history, done, seconds: (performance.now() - started) / 1000
    };
    await writeJsonAtomic(files.summary, {...result, history: undefined, last: history.at(-1) ?? null});
    return result;
}

/**
 * Fits one answer (or a pair) into `ctx` tokens: null when it fits, the new lengths when
 * "truncate" may shorten the answers, or an error sentence.
 */
export function fitLengths(promptLen: number, answerLens: readonly number[], ctx: number, overflow: "error" | "truncate"): number[] | null | string {
    const total = promptLen * answerLens.length + answerLens.reduce((a, b) => a + b, 0);
    if (total <= ctx) return null;
    const what = answerLens.length === 1 ? "prompt and answer" : "prompt (once per answer) and answers";
    if (overflow === "error") return `${what} take ${total} tokens, more than ctx = ${ctx}; raise ctx or let overflow truncate the answers`;
    const room = ctx - promptLen * answerLens.length;
    if (room < 2 * answerLens.length) return `the prompt alone takes ${promptLen} tokens, too many for ctx = ${ctx}`;
    // shorten the longest answers first
    const lens = [...answerLens];
    let excess = total - ctx;
    while (excess > 0) {
        const i = lens.indexOf(Math.max(...lens));
        const other = Math.max(...lens.filter((_, j) => j !== i), 0);
        const cut = Math.min(excess, Math.max(1, lens[i]! - other));
        lens[i] = lens[i]! - cut;
        excess -= cut;
    }
    return lens;
}
