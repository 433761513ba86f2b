// `still train sft|dpo`: LoRA (or full) fine-tuning through the still-train binary, with a
// progress bar, Ctrl-C as a checkpoint, and --resume.
import type {Command} from "commander";
import {z} from "zod";
import {dpo, dpoOptionsSchema} from "../train/dpo.js";
import type {TrainerEvent} from "../train/runTrainer.js";
import type {TrainResult} from "../train/runTraining.js";
import {sft, sftOptionsSchema} from "../train/sft.js";
import {type CliOption, addOptions, commonFields, parseCli} from "./cliOptions.js";
import {Progress} from "./Progress.js";

// The flags of both methods, each setting a field of the training options.
const commonFlags: (string | CliOption)[] = [
    "--model <file>", "--out <file>", "--full", "--adapter <file>",
    {flags: "--rank <r>", field: "lora.rank"}, {flags: "--lora-alpha <a>", field: "lora.alpha"}, {flags: "--modules <list>", field: "lora.modules"},
    {flags: "--lr <x>", field: "optimizer.lr"}, {flags: "--min-lr <x>", field: "optimizer.minLr"}, {flags: "--schedule <s>", field: "optimizer.schedule"},
    {flags: "--warmup-steps <n>", field: "optimizer.warmupSteps"}, {flags: "--warmup-ratio <x>", field: "optimizer.warmupRatio"},
    {flags: "--weight-decay <x>", field: "optimizer.weightDecay"}, {flags: "--max-grad-norm <x>", field: "optimizer.maxGradNorm"},
    "--epochs <n>", "--ctx <n>", "--recompute <mode>", "--grad-accum <n>", "--max-steps <n>", "--seed <n>", "--save-every <n>", "--log-every <n>",
    "--resume", "--work-dir <dir>",
    {flags: "--system <text>", field: "systemPrompt"}, {flags: "--no-system", field: "systemPrompt", help: "No system prompt"},
    "--overflow <policy>", "--threads <n>", {flags: "--no-gpu", field: "gpu", help: "Train on the CPU even when a GPU backend is present"},
    "--json"
];

const sftCli = sftOptionsSchema.extend({
    data: z.string().min(1).describe("JSONL examples: {messages} ending with the answer, {question, response}, or {prompt, completion}"),
    json: commonFields.json
});
const sftFlags = [...commonFlags, "--data <file>", "--mask <m>"];

const dpoCli = dpoOptionsSchema.extend({
    pairs: z.string().min(1).describe("JSONL pairs: {question | messages | prompt, chosen, rejected}"),
    json: commonFields.json
});
const dpoFlags = [...commonFlags, "--pairs <file>", "--beta <x>", "--alpha <x>", "--align <a>", "--loss <l>"];

/** A bar over the run's steps, made when the trainer reports how many there are. */
function progressReporter(json: boolean) {
    let bar: Progress | undefined;
    let last = "";
    return {
        onProgress: (e: TrainerEvent) => {
            if (json) return;
            if (e.type === "start") {
                bar = new Progress("training", e.steps, "auto", (v, t) => `step ${v}/${t}${last}`);
                bar.update(e.step);
            } else if (e.type === "plan") {
                // MiB from the trainer; GB (10^9 bytes) as its own messages print them
                const gb = (mib: number) => ((mib * 2 ** 20) / 1e9).toFixed(1);
                process.stderr.write(`memory: rows of up to ${e.tokens} tokens, ${e.recompute ? "chunked with recomputation" : "one graph per row"}, ` +
                    `about ${gb(e.estimated_peak_mb)} GB at the peak (${gb(e.available_mb)} GB free)\n`);
            } else if (e.type === "reference" && !e.cached) {
                process.stderr.write(`reference log-probs of ${e.pairs} pairs computed in ${(e.seconds ?? 0).toFixed(1)} s\n`);
            } else if (e.type === "step") {
                const dpoPart = e["rewards/accuracies"] != null ? `, reward acc ${e["rewards/accuracies"].toFixed(2)}, margin ${(e["rewards/margins"] ?? 0).toFixed(3)}` : "";
                last = `, loss ${e.loss.toFixed(4)}${dpoPart}, lr ${e.learning_rate.toExponential(2)}, ${Math.round(e.tokens_per_s)} tokens/s`;
                bar?.update(e.step);
            }
        },
        stop: () => bar?.stop()
    };
}

function report(json: boolean, r: TrainResult) {
    const last = r.history.at(-1);
    const summary = {
        out: r.out, work_dir: r.workDir, records: r.records, truncated: r.truncated, steps: r.steps, start_step: r.startStep,
        loss: last?.loss ?? null, seconds: Math.round(r.seconds * 10) / 10, tokens: r.done.tokens, peak_rss_mb: Math.round(r.done.peak_rss_mb)
    };
    process.stdout.write(json ? JSON.stringify(summary) + "\n"
        : `wrote ${r.out}: ${r.steps} steps${r.startStep > 0 ? ` (resumed at ${r.startStep})` : ""} over ${r.records} records` +
          `${r.truncated > 0 ? ` (${r.truncated} truncated)` : ""}, final loss ${last?.loss.toFixed(4) ?? "n/a"}, ${summary.seconds} s\n`);
}

export function trainCommand(program: Command, signal: AbortSignal) {
    const train = program.command("train").description("Fine-tune a GGUF model with LoRA (or fully): SFT or DPO");

    addOptions(train.command("sft")
        .description("Supervised fine-tuning on chat examples (loss on the whole answer or only its thought)"), sftCli, sftFlags)
        .action(async (raw: Record<string, unknown>) => {
            const {json, ...o} = parseCli(sftCli, raw, sftFlags);
            const progress = progressReporter(json);
            try {
                report(json, await sft({...o, signal, onProgress: progress.onProgress}));
            } finally {
                progress.stop();
            }
        });

    addOptions(train.command("dpo")
        .description("Direct preference optimisation on pairs (chosen vs rejected), with an optional SFT term"), dpoCli, dpoFlags)
        .action(async (raw: Record<string, unknown>) => {
            const {json, ...o} = parseCli(dpoCli, raw, dpoFlags);
            const progress = progressReporter(json);
            try {
                report(json, await dpo({...o, signal, onProgress: progress.onProgress}));
            } finally {
                progress.stop();
            }
        });
}
