// `still train sft|dpo`: LoRA (or full) fine-tuning through the still-train binary, with a
// progress bar, Ctrl-C as a checkpoint, and --resume.
import type {Command} from "commander";
import {z} from "zod";
import {OptionError} from "../errors.js";
import {dpo} from "../train/dpo.js";
import type {TrainerEvent} from "../train/runTrainer.js";
import type {TrainResult} from "../train/runTraining.js";
import {sft} from "../train/sft.js";
import {LORA_MODULES} from "../train/trainingOptions.js";
import {Progress} from "./Progress.js";

const int = z.coerce.number().int();
const num = z.coerce.number();
const commonSchema = z.object({
    model: z.string().min(1),
    out: z.string().min(1),
    full: z.boolean().default(false),
    rank: int.min(1).default(8),
    loraAlpha: num.positive().default(16),
    modules: z.string().default(LORA_MODULES.join(",")),
    lr: num.positive().default(1e-4),
    minLr: num.min(0).default(0),
    schedule: z.enum(["cosine", "constant"]).default("cosine"),
    warmupSteps: int.min(0).optional(),
    warmupRatio: num.min(0).max(1).default(0),
    weightDecay: num.min(0).max(1).default(0),
    maxGradNorm: num.min(0).default(1),
    epochs: int.min(1).default(1),
    ctx: int.min(16).default(1024),
    gradAccum: int.min(1).default(1),
    maxSteps: int.min(0).default(0),
    seed: int.min(0).default(0),
    saveEvery: int.min(0).default(0),
    logEvery: int.min(1).default(1),
    resume: z.boolean().default(false),
    workDir: z.string().optional(),
    adapter: z.string().optional(),
    system: z.union([z.string(), z.literal(false)]).optional(),
    overflow: z.enum(["error", "truncate"]).default("error"),
    threads: int.min(1).optional(),
    gpu: z.boolean().default(true),
    json: z.boolean().default(false)
});

function commonOptions(cmd: Command) {
    return cmd
        .requiredOption("--model <file>", "base GGUF model (llama, qwen2, qwen3)")
        .requiredOption("--out <file>", "adapter GGUF to write (a full model with --full)")
        .option("--full", "train every weight in F32 and write a full model (small models)")
        .option("--adapter <file>", "continue this LoRA adapter (for dpo also the starting policy and the reference)")
        .option("--rank <r>", "LoRA rank", "8")
        .option("--lora-alpha <a>", "LoRA alpha (updates scaled by alpha/rank)", "16")
        .option("--modules <list>", `LoRA modules among ${LORA_MODULES.join(",")}`, LORA_MODULES.join(","))
        .option("--lr <x>", "peak learning rate (AdamW)", "1e-4")
        .option("--min-lr <x>", "learning rate at the end of the cosine decay", "0")
        .option("--schedule <s>", "cosine or constant (after the warmup)", "cosine")
        .option("--warmup-steps <n>", "warmup steps (default: --warmup-ratio of all steps)")
        .option("--warmup-ratio <x>", "warmup as a fraction of all steps", "0")
        .option("--weight-decay <x>", "AdamW weight decay", "0")
        .option("--max-grad-norm <x>", "clip the gradient norm (0: off)", "1")
        .option("--epochs <n>", "passes over the data", "1")
        .option("--ctx <n>", "longest packed row in tokens (short examples share rows)", "1024")
        .option("--grad-accum <n>", "rows per optimizer step", "1")
        .option("--max-steps <n>", "stop after N steps (0: all epochs)", "0")
        .option("--seed <n>", "data order and LoRA initialisation", "0")
        .option("--save-every <n>", "checkpoint every N steps (0: when stopped and at the end)", "0")
        .option("--log-every <n>", "a progress line every N steps", "1")
        .option("--resume", "continue from the run directory's checkpoint")
        .option("--work-dir <dir>", "run directory (default: OUT.run)")
        .option("--system <text>", "system prompt for question/answer data (default: the STILL prompt)")
        .option("--no-system", "no system prompt")
        .option("--overflow <policy>", "examples longer than --ctx: error or truncate", "error")
        .option("--threads <n>", "CPU threads of the trainer")
        .option("--no-gpu", "train on the CPU even when a GPU backend is present")
        .option("--json", "print the result as one JSON object");
}

function resolveCommon(o: z.output<typeof commonSchema>) {
    const modules = o.modules.split(",").map((m) => m.trim());
    const bad = modules.find((m) => !(LORA_MODULES as readonly string[]).includes(m));
    if (bad != null) throw new OptionError(`unknown LoRA module '${bad}'; choose among ${LORA_MODULES.join(", ")}.`);
    return {
        model: o.model, out: o.out, full: o.full,
        lora: {rank: o.rank, alpha: o.loraAlpha, modules: modules as (typeof LORA_MODULES)[number][]},
        optimizer: {
            lr: o.lr, minLr: o.minLr, schedule: o.schedule, warmupRatio: o.warmupRatio, weightDecay: o.weightDecay,
            maxGradNorm: o.maxGradNorm, ...(o.warmupSteps == null ? {} : {warmupSteps: o.warmupSteps})
        },
        epochs: o.epochs, ctx: o.ctx, gradAccum: o.gradAccum, maxSteps: o.maxSteps, seed: o.seed,
        saveEvery: o.saveEvery, logEvery: o.logEvery, resume: o.resume, overflow: o.overflow, gpu: o.gpu,
        ...(o.workDir == null ? {} : {workDir: o.workDir}),
        ...(o.adapter == null ? {} : {adapter: o.adapter}),
        ...(o.threads == null ? {} : {threads: o.threads}),
        ...(o.system === undefined ? {} : {systemPrompt: o.system === false ? null : o.system})
    };
}

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

    commonOptions(train.command("sft")
        .description("Supervised fine-tuning on chat examples (loss on the whole answer or only its thought)")
        .requiredOption("--data <file>", "JSONL examples: {messages} ending with the answer, {question, response}, or {prompt, completion}")
        .option("--mask <m>", "tokens with loss: completion (the whole answer) or thought", "completion"))
        .action(async (raw: unknown) => {
            const parsed = commonSchema.extend({data: z.string().min(1), mask: z.enum(["completion", "thought"]).default("completion")}).safeParse(raw);
            if (!parsed.success) throw new OptionError(`invalid options: ${z.prettifyError(parsed.error)}`);
            const o = parsed.data;
            const progress = progressReporter(o.json);
            try {
                report(o.json, await sft({...resolveCommon(o), data: o.data, mask: o.mask, signal, onProgress: progress.onProgress}));
            } finally {
                progress.stop();
            }
        });

    commonOptions(train.command("dpo")
        .description("Direct preference optimisation on pairs (chosen vs rejected), with an optional SFT term")
        .requiredOption("--pairs <file>", "JSONL pairs: {question | messages | prompt, chosen, rejected}")
        .option("--beta <x>", "temperature of the implicit reward", "0.1")
        .option("--alpha <x>", "weight of the SFT term on the chosen answer", "0")
        .option("--align <a>", "tokens in the DPO term: response or thought", "response")
        .option("--loss <l>", "sigmoid, ipo or hinge", "sigmoid"))
        .action(async (raw: unknown) => {
            const parsed = commonSchema.extend({
                pairs: z.string().min(1), beta: num.positive().default(0.1), alpha: num.min(0).default(0),
                align: z.enum(["response", "thought"]).default("response"), loss: z.enum(["sigmoid", "ipo", "hinge"]).default("sigmoid")
            }).safeParse(raw);
            if (!parsed.success) throw new OptionError(`invalid options: ${z.prettifyError(parsed.error)}`);
            const o = parsed.data;
            const progress = progressReporter(o.json);
            try {
                report(o.json, await dpo({
                    ...resolveCommon(o), pairs: o.pairs, beta: o.beta, alpha: o.alpha, align: o.align, loss: o.loss,
                    signal, onProgress: progress.onProgress
                }));
            } finally {
                progress.stop();
            }
        });
}
