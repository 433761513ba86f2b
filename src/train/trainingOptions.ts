// Options shared by sft() and dpo(), documented where they are declared (TRL-style), and
// the trainer arguments they become.
import {z} from "zod";

export const LORA_MODULES = ["q", "k", "v", "o", "gate", "up", "down"] as const;

export const loraOptionsSchema = z.strictObject({
    rank: z.number().int().min(1).max(4096).describe("LoRA rank: of the update B·A").default(16),
    alpha: z.number().positive().describe("LoRA alpha: the update is scaled by alpha / rank (as in PEFT and llama.cpp)").default(32),
    modules: z.array(z.enum(LORA_MODULES)).min(1)
        .describe(`Linear maps that get an adapter, among ${LORA_MODULES.join(", ")} (attention q, k, v, o; feed-forward gate, up, down)`)
        .default([...LORA_MODULES])
});

export const optimizerOptionsSchema = z.strictObject({
    lr: z.number().positive().max(10).describe("Peak learning rate (AdamW)").default(1e-4),
    minLr: z.number().min(0).describe("Learning rate at the end of the cosine decay").default(0),
    schedule: z.enum(["cosine", "constant"]).describe("cosine: warmup, then cosine decay to minLr; constant: warmup, then lr").default("cosine"),
    warmupSteps: z.number().int().min(0).optional().describe("Warmup steps; when unset, warmupRatio of all steps"),
    warmupRatio: z.number().min(0).max(1).describe("Warmup as a share of all steps").default(0),
    weightDecay: z.number().min(0).max(1).describe("AdamW weight decay").default(0),
    beta1: z.number().min(0).lt(1).describe("AdamW β1").default(0.9),
    beta2: z.number().min(0).lt(1).describe("AdamW β2").default(0.999),
    eps: z.number().min(0).max(1).describe("AdamW ε").default(1e-8),
    maxGradNorm: z.number().min(0).describe("Clip the global gradient norm to this (0: no clipping)").default(1)
});

export const trainingOptionsSchema = z.object({
    model: z.string().min(1).describe("Base model GGUF (llama, qwen2 or qwen3 architecture)"),
    out: z.string().min(1).describe("The adapter GGUF to write (the full model with full)"),
    full: z.boolean().describe("Train every weight in F32 and write a full model instead of an adapter (small models)").default(false),
    adapter: z.string().optional().describe("Continue this LoRA adapter (its rank, alpha and modules) instead of a fresh one; " +
        "for DPO it is also the starting policy and so the reference"),
    lora: loraOptionsSchema.describe("The LoRA adapter: rank, alpha and the modules it adapts").prefault({}),
    optimizer: optimizerOptionsSchema.describe("AdamW and its learning-rate schedule").prefault({}),
    epochs: z.number().int().min(1).describe("Passes over the data").default(1),
    ctx: z.number().int().min(16).max(1 << 17)
        .describe("Longest packed row in tokens, up to the model's context: short examples share a row, each attending only to itself").default(1024),
    recompute: z.enum(["auto", "on", "off"]).describe("How a step is taken: in one graph (off: fastest on short rows, memory grows " +
        "with the square of the row's length), or chunked with recomputation (on: memory linear in it, gradients the same); auto " +
        "takes one graph for rows up to 2,048 tokens when the memory plan says it fits, else chunked").default("auto"),
    gradAccum: z.number().int().min(1).describe("Rows per optimizer step").default(1),
    maxSteps: z.number().int().min(0).describe("Stop after this many optimizer steps (0: all epochs); the schedule spans them").default(0),
    seed: z.number().int().min(0).describe("Data order and LoRA initialisation").default(0),
    saveEvery: z.number().int().min(0).describe("Checkpoint every N steps (0: only when stopped and at the end)").default(0),
    logEvery: z.number().int().min(1).describe("A progress event every N steps (metrics averaged over them)").default(1),
    resume: z.boolean().describe("Continue from the run directory's checkpoint when there is one").default(false),
    workDir: z.string().optional().describe("Run directory for the trainer input, checkpoint and metrics (default: <out>.run)"),
    systemPrompt: z.string().nullable().optional().describe("System prompt for question/answer examples; null for none (default: the STILL prompt)"),
    overflow: z.enum(["error", "truncate"]).describe("Examples longer than ctx: error names the first one; truncate shortens the answers").default("error"),
    threads: z.number().int().min(1).optional().describe("CPU threads of the trainer (default: STILL_THREADS or all cores)"),
    gpu: z.boolean().describe("Use a GPU backend when the variant has one").default(true),
    variant: z.string().optional().describe("llama.cpp variant (cpu, cuda, a source build's name); defaults to this process's")
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
    args.push("--recompute", o.recompute);
    if (o.threads != null) args.push("--threads", String(o.threads));
    if (!o.gpu) args.push("--no-gpu");
    return args;
}
