// Options shared by sft() and dpo(), documented where they are declared (TRL-style), and
// the trainer arguments they become.
import {z} from "zod";

export const LORA_MODULES = ["q", "k", "v", "o", "gate", "up", "down"] as const;

export const loraOptionsSchema = z.object({
    /** Rank of the update B·A. */
    rank: z.number().int().min(1).max(4096).default(8),
    /** The update is scaled by alpha / rank (as in PEFT and llama.cpp). */
    alpha: z.number().positive().default(16),
    /** Linear maps that get an adapter: attention q, k, v, o and the feed-forward gate, up, down. */
    modules: z.array(z.enum(LORA_MODULES)).min(1).default([...LORA_MODULES])
});

export const optimizerOptionsSchema = z.object({
    /** Peak learning rate (AdamW). */
    lr: z.number().positive().max(10).default(1e-4),
    /** Learning rate at the end of the cosine decay. */
    minLr: z.number().min(0).default(0),
    /** "cosine": warmup, then cosine decay to minLr; "constant": warmup, then lr. */
    schedule: z.enum(["cosine", "constant"]).default("cosine"),
    /** Warmup steps; when unset, warmupRatio of all steps. */
    warmupSteps: z.number().int().min(0).optional(),
    warmupRatio: z.number().min(0).max(1).default(0),
    weightDecay: z.number().min(0).max(1).default(0),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.999),
    eps: z.number().min(0).max(1).default(1e-8),
    /** Clip the global gradient norm to this (0: no clipping). */
    maxGradNorm: z.number().min(0).default(1)
});

export const trainingOptionsSchema = z.object({
    /** Base model GGUF (llama, qwen2 or qwen3 architecture). */
    model: z.string().min(1),
    /** The adapter GGUF to write (the full model with `full`). */
    out: z.string().min(1),
    /** Train every weight in F32 and write a full model instead of an adapter (small models). */
    full: z.boolean().default(false),
    /**
     * Continue this LoRA adapter (its rank, alpha and modules) instead of a fresh one; for
     * DPO it is also the starting policy and so the reference.
     */
    adapter: z.string().optional(),
    lora: loraOptionsSchema.default(loraOptionsSchema.parse({})),
    optimizer: optimizerOptionsSchema.default(optimizerOptionsSchema.parse({})),
    /** Passes over the data. */
    epochs: z.number().int().min(1).default(1),
    /** Longest packed row in tokens: short examples share a row, each attending only to itself. */
    ctx: z.number().int().min(16).max(1 << 16).default(1024),
    /** Rows per optimizer step. */
    gradAccum: z.number().int().min(1).default(1),
    /** Stop after this many optimizer steps (0: all epochs); the schedule spans them. */
    maxSteps: z.number().int().min(0).default(0),
    /** Data order and LoRA initialisation. */
    seed: z.number().int().min(0).default(0),
    /** Checkpoint every N steps (0: only when stopped and at the end). */
    saveEvery: z.number().int().min(0).default(0),
    /** A progress event every N steps (metrics averaged over them). */
    logEvery: z.number().int().min(1).default(1),
    /** Continue from the run directory's checkpoint when there is one. */
    resume: z.boolean().default(false),
    /** Run directory for the trainer input, checkpoint and metrics (default: `<out>.run`). */
    workDir: z.string().optional(),
    /** System prompt for question/answer examples; null for none (default: the STILL prompt). */
    systemPrompt: z.string().nullable().optional(),
    /** Examples longer than ctx: "error" names the first one; "truncate" shortens the answers. */
    overflow: z.enum(["error", "truncate"]).default("error"),
    /** CPU threads of the trainer (default: STILL_THREADS or all cores). */
    threads: z.number().int().min(1).optional(),
    /** Use a GPU backend when the variant has one. */
    gpu: z.boolean().default(true),
    /** llama.cpp variant ("cpu", "cuda", a source build); defaults to this process's. */
    variant: z.string().optional()
});
export type TrainingOptions = z.input<typeof trainingOptionsSchema>;
export type ResolvedTrainingOptions = z.output<typeof trainingOptionsSchema>;

/** Command-line arguments of still-train for the shared options. */
export function trainerArgs(o: ResolvedTrainingOptions, files: {data: string, checkpoint: string}): string[] {
    const opt = o.optimizer;
    const args = [
        "--model", o.model, "--data", files.data, "--out", o.out, "--checkpoint", files.checkpoint,
        "--epochs", String(o.epochs), "--ctx", String(o.ctx), "--grad-accum", String(o.gradAccum),
        "--max-steps", String(o.maxSteps), "--seed", String(o.seed),
        "--save-every", String(o.saveEvery), "--log-every", String(o.logEvery),
        "--lr", String(opt.lr), "--min-lr", String(opt.minLr),
        "--warmup-ratio", String(opt.warmupRatio), "--weight-decay", String(opt.weightDecay),
        "--adam-beta1", String(opt.beta1), "--adam-beta2", String(opt.beta2), "--adam-eps", String(opt.eps),
        "--max-grad-norm", String(opt.maxGradNorm)
    ];
    if (opt.schedule === "constant") args.push("--constant-lr");
    if (opt.warmupSteps != null) args.push("--warmup-steps", String(opt.warmupSteps));
    if (o.adapter != null) args.push("--adapter", o.adapter);
    if (o.full) args.push("--full");
    else args.push("--rank", String(o.lora.rank), "--alpha", String(o.lora.alpha), "--modules", o.lora.modules.join(","));
    if (o.resume) args.push("--resume");
    if (o.threads != null) args.push("--threads", String(o.threads));
    if (!o.gpu) args.push("--no-gpu");
    return args;
}
