// The resident trainer: one `still-train serve` process that keeps the model, the adapter
// and AdamW's moments loaded between online-RL steps. Commands go one JSON line at a time
// on its stdin (native/trainer/serve.cpp has the protocol); each answer comes back typed.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import {execa, type ResultPromise} from "execa";
import {z} from "zod";
import {getBackend} from "../engine/binding.js";
import {AbortError, OptionError, TrainerError} from "../errors.js";
import {planEventSchema, trainerBinary} from "../train/runTrainer.js";
import {optimizerOptionsSchema, trainingOptionsSchema} from "../train/trainingOptions.js";

export const policyLossSchema = z.strictObject({
    loss: z.enum(["grpo", "dr_grpo", "dapo"]).describe("grpo: per-sequence mean, group mean/std advantages; dr_grpo: no std " +
        "scaling, no per-length normalisation; dapo: token-level normalisation (use with clipHigh 0.28 and dropEqualGroups)").default("grpo"),
    scaleRewards: z.boolean().optional().describe("Divide advantages by the group's reward std; default: true for grpo and dapo, false for dr_grpo"),
    clipLow: z.number().min(0).lt(1).describe("ε_low: the ratio's floor is 1 − clipLow").default(0.2),
    clipHigh: z.number().min(0).describe("ε_high: the ratio's ceiling is 1 + clipHigh (DAPO's clip-higher: 0.28)").default(0.2),
    klBeta: z.number().min(0).describe("β of the KL term to the starting policy (k3 estimator); 0: none, and no reference pass").default(0),
    tisCap: z.number().min(0).describe("Truncated importance sampling against the sampler's log-probs, capped at this weight (0: off)").default(0)
}).refine((p) => p.clipHigh >= p.clipLow, {message: "clipHigh (ε_high) is below clipLow (ε_low)", path: ["clipHigh"]})
    .describe("The policy loss");
export type PolicyLossOptions = z.output<typeof policyLossSchema>;

const training = trainingOptionsSchema.shape;
export const residentTrainerOptionsSchema = z.strictObject({
    model: training.model,
    checkpoint: z.string().min(1).describe("The trainer's checkpoint file: written on request, resumed from when it exists"),
    adapter: training.adapter,
    lora: training.lora,
    ctx: training.ctx,
    recompute: training.recompute,
    policy: policyLossSchema.prefault({}),
    maxCompletion: z.number().int().min(0).describe("dr_grpo's length normaliser: the longest completion allowed (0: the step's longest)").default(0),
    temperature: z.number().positive().max(100).describe("The sampling temperature: the policy's log-probs are log softmax(logits / T)").default(1),
    optimizer: optimizerOptionsSchema.pick({beta1: true, beta2: true, eps: true, weightDecay: true, maxGradNorm: true}).prefault({}),
    seed: training.seed,
    threads: training.threads,
    gpu: training.gpu,
    variant: training.variant
});
export type ResidentTrainerOptions = z.input<typeof residentTrainerOptionsSchema>;

const num = z.number().nullable().transform((v) => v ?? Number.NaN);
const replySchema = z.discriminatedUnion("type", [
    planEventSchema,
    z.object({type: z.literal("ready"), step: z.number(), policy_step: z.number(), resumed: z.boolean(), mode: z.string(),
        trainable_params: z.number(), loss: z.string(), checkpoint: z.string()}),
    z.object({
        type: z.literal("policy_step"), step: z.number(), updates: z.number(), samples: z.number(), completion_tokens: z.number(),
        tokens: z.number(), loss: num, grad_norm: num, learning_rate: z.number(), entropy: num, kl: num,
        "clip_ratio/low_mean": num, "clip_ratio/high_mean": num, "clip_ratio/region_mean": num, "sampler/logp_diff": num,
        "tis/mean": num.optional(), seconds: z.number(), "seconds/old_logps": z.number(), "seconds/ref_logps": z.number(),
        "seconds/gradient": z.number(), tokens_per_s: z.number(), peak_rss_mb: z.number()
    }),
    z.object({type: z.literal("saved"), out: z.string(), step: z.number(), seconds: z.number()}),
    z.object({type: z.literal("checkpoint"), step: z.number(), policy_step: z.number(), path: z.string(), seconds: z.number()}),
    z.object({type: z.literal("error"), cmd: z.string(), message: z.string(), fatal: z.boolean()}),
    z.object({type: z.literal("stopped"), cmd: z.string()}),
    z.object({type: z.literal("bye")})
]);
type Reply = z.infer<typeof replySchema>;
export type ReadyEvent = Extract<Reply, {type: "ready"}>;
export type PolicyStepEvent = Extract<Reply, {type: "policy_step"}>;
export type PlanEvent = Extract<Reply, {type: "plan"}>;

const STDERR_TAIL = 4096;

export class ResidentTrainer {
    private readonly replies: Reply[] = [];
    private wake: (() => void) | undefined;
    private exited = false;
    private stderr = "";
    private busy = false;
    ready!: ReadyEvent;
    plan: PlanEvent | undefined;

    private constructor(private readonly child: ResultPromise, private readonly signal: AbortSignal | undefined) {
        child.stderr?.setEncoding("utf8");
        child.stderr?.on("data", (chunk: string) => {
            this.stderr = (this.stderr + chunk).slice(-STDERR_TAIL);
        });
        const lines = readline.createInterface({input: child.stdout!, crlfDelay: Infinity});
        lines.on("line", (line) => {
            if (line.trim() === "") return;
            let reply: Reply;
            try {
                reply = replySchema.parse(JSON.parse(line));
            } catch {
                reply = {type: "error", cmd: "?", message: `the trainer printed a line that is not an answer: ${line.slice(0, 200)}`, fatal: true};
            }
            this.replies.push(reply);
            this.notify();
        });
        child.then(() => undefined, () => undefined).finally(() => {
            this.exited = true;
            this.notify();
        });
    }

    /** Starts the trainer (resuming from the checkpoint when it exists) and waits until it is ready. */
    static async start(options: ResidentTrainerOptions, hooks: {signal?: AbortSignal, onPlan?: (p: PlanEvent) => void} = {}): Promise<ResidentTrainer> {
        const o = residentTrainerOptionsSchema.safeParse(options);
        if (!o.success) throw new OptionError(`invalid trainer options: ${z.prettifyError(o.error)}`);
        if (hooks.signal?.aborted) throw new AbortError("training was cancelled before it started");
        const {command, backendDir} = trainerBinary(getBackend(o.data.variant == null ? {} : {variant: o.data.variant}));
        fs.mkdirSync(path.dirname(path.resolve(o.data.checkpoint)), {recursive: true});
        const child = execa(command, ["serve", ...serveArgs(o.data), "--backend-dir", backendDir], {
            reject: false, buffer: false, stdin: "pipe", stdout: "pipe", stderr: "pipe",
            cancelSignal: hooks.signal, killSignal: "SIGINT", forceKillAfterDelay: 60_000
        });
        const trainer = new ResidentTrainer(child, hooks.signal);
        for (;;) {
            const r = await trainer.next("start");
            if (r.type === "plan") {
                trainer.plan = r;
                hooks.onPlan?.(r);
                continue;
            }
            if (r.type === "ready") {
                trainer.ready = r;
                return trainer;
            }
            trainer.kill();
            throw trainer.failure("start", r);
        }
    }

    /** One online-RL update over the policy samples in `data` (a TrainingFile of kind "policy"). */
    async step(o: {data: string, lr: number, minibatches?: number, iterations?: number}): Promise<PolicyStepEvent> {
        const r = await this.command({cmd: "step", data: o.data, lr: o.lr, minibatches: o.minibatches ?? 1, iterations: o.iterations ?? 1});
        if (r.type !== "policy_step") throw this.failure("step", r);
        return r;
    }

    /** Writes the adapter (or full model) now. */
    async save(out: string): Promise<{seconds: number}> {
        const r = await this.command({cmd: "save", out});
        if (r.type !== "saved") throw this.failure("save", r);
        return r;
    }

    /** Writes the checkpoint, recording `policyStep` (given back as ready.policy_step after a resume). */
    async checkpoint(policyStep: number): Promise<{seconds: number}> {
        const r = await this.command({cmd: "checkpoint", step: policyStep});
        if (r.type !== "checkpoint") throw this.failure("checkpoint", r);
        return r;
    }

    /** Asks the trainer to exit and waits for it. */
    async stop() {
        if (this.exited) return;
        try {
            await this.command({cmd: "stop"});
        } catch {
            // exiting anyway
        }
        this.child.stdin?.end();
        await this.child.catch(() => undefined);
    }

    kill() {
        if (!this.exited) this.child.kill("SIGKILL");
    }

    get alive() {
        return !this.exited;
    }

    private async command(c: Record<string, unknown>): Promise<Reply> {
        if (this.busy) throw new OptionError("the trainer is busy with another command; await it first.");
        if (this.exited) throw new TrainerError(`the trainer has exited${this.tail()}`, this.child.exitCode ?? null, this.stderr);
        this.busy = true;
        try {
            this.child.stdin!.write(`${JSON.stringify(c)}\n`);
            return await this.next(String(c.cmd));
        } finally {
            this.busy = false;
        }
    }

    private async next(what: string): Promise<Reply> {
        for (;;) {
            const r = this.replies.shift();
            if (r != null) return r;
            if (this.exited) {
                const result = await this.child;
                if (this.signal?.aborted || result.isCanceled) throw new AbortError(`training was cancelled during ${what}`);
                const reason = result.signal != null ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`;
                throw new TrainerError(`the trainer ${reason} during ${what}${this.tail()}`, result.exitCode ?? null, this.stderr);
            }
            await new Promise<void>((resolve) => {
                this.wake = resolve;
            });
        }
    }

    private notify() {
        this.wake?.();
        this.wake = undefined;
    }

    private failure(what: string, r: Reply): Error {
        if (r.type === "stopped" || this.signal?.aborted) return new AbortError(`training was cancelled during ${what}`);
        if (r.type === "error") return new TrainerError(r.message, r.fatal ? 1 : null, this.stderr);
        return new TrainerError(`the trainer answered ${what} with ${r.type}`, null, this.stderr);
    }

    private tail() {
        const line = this.stderr.trim().split("\n").reverse().find((l) => /\berror: /.test(l));
        return line == null ? "" : `: ${line.replace(/^.*?\berror: /, "")}`;
    }
}

/** still-train serve's arguments for the options. */
function serveArgs(o: z.output<typeof residentTrainerOptionsSchema>): string[] {
    const p = o.policy;
    const opt = o.optimizer;
    const args = [
        "--model", o.model, "--checkpoint", o.checkpoint, "--resume", "--ctx", String(o.ctx), "--recompute", o.recompute,
        "--seed", String(o.seed), "--rank", String(o.lora.rank), "--alpha", String(o.lora.alpha), "--modules", o.lora.modules.join(","),
        "--policy-loss", p.loss, "--clip-low", String(p.clipLow), "--clip-high", String(p.clipHigh), "--kl-beta", String(p.klBeta),
        "--tis-cap", String(p.tisCap), "--max-completion", String(o.maxCompletion), "--temperature", String(o.temperature),
        "--adam-beta1", String(opt.beta1), "--adam-beta2", String(opt.beta2), "--adam-eps", String(opt.eps),
        "--weight-decay", String(opt.weightDecay), "--max-grad-norm", String(opt.maxGradNorm)
    ];
    if (p.scaleRewards != null) args.push("--scale-rewards", p.scaleRewards ? "group" : "none");
    if (o.adapter != null) args.push("--adapter", o.adapter);
    if (o.threads != null) args.push("--threads", String(o.threads));
    if (!o.gpu) args.push("--no-gpu");
    return args;
}

