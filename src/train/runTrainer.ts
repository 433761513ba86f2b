// Runs a still-train process: its JSON lines become typed events, an AbortSignal becomes
// SIGINT (the trainer checkpoints and exits), and a failure becomes a TrainerError with
// the exit code and the end of stderr.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import {execa} from "execa";
import {z} from "zod";
import {type Backend, buildDir, getBackend, packageRoot} from "../engine/binding.js";
import {AbortError, NativeError, TrainerError} from "../errors.js";

const num = z.number().nullable().transform((v) => v ?? Number.NaN);

/** The memory plan the trainer prints before its first step. */
export const planEventSchema = z.object({
    type: z.literal("plan"), tokens: z.number(), recompute: z.boolean(), estimated_peak_mb: z.number(), step_mb: z.number(),
    activations_mb: z.number(), compute_mb: z.number(), one_graph_mb: z.number(), chunked_mb: z.number(), available_mb: z.number()
});

export const trainerEventSchema = z.discriminatedUnion("type", [
    z.object({
        type: z.literal("start"), task: z.enum(["sft", "dpo"]), mode: z.enum(["lora", "full"]), architecture: z.string(),
        layers: z.number(), trainable_params: z.number(), rank: z.number(), alpha: z.number(), modules: z.string(),
        examples: z.number().optional(), pairs: z.number().optional(), tokens_per_epoch: z.number(), epochs: z.number(),
        steps: z.number(), warmup_steps: z.number(), step: z.number(), resumed: z.boolean(), checkpoint: z.string()
    }),
    z.object({
        type: z.literal("step"), step: z.number(), steps: z.number(), epoch: z.number(), loss: num, learning_rate: z.number(),
        grad_norm: num, tokens: z.number(), tokens_per_s: z.number(), elapsed: z.number(), eta: z.number(),
        "rewards/chosen": num.optional(), "rewards/rejected": num.optional(), "rewards/margins": num.optional(),
        "rewards/accuracies": num.optional(), "logps/chosen": num.optional(), "logps/rejected": num.optional(), nll: num.optional()
    }),
    z.object({type: z.literal("reference"), pairs: z.number(), cached: z.boolean(), path: z.string(), seconds: z.number().optional()}),
    planEventSchema,
    z.object({type: z.literal("checkpoint"), step: z.number(), path: z.string()}),
    z.object({type: z.literal("stopped"), step: z.number(), checkpoint: z.string()}),
    z.object({type: z.literal("done"), step: z.number(), out: z.string(), seconds: z.number(), tokens: z.number(), peak_rss_mb: z.number()}),
    z.object({type: z.literal("grad"), tensor: z.string(), grad_norm: z.number(), rel_error: z.number(),
        rel_error_gradient_direction: z.number(), rel_error_mixed_direction: z.number(), entries: z.number(), rel_error_entries: z.number()}),
    z.object({type: z.literal("grad_check"), loss: z.number(), tensors: z.number(), entries: z.number(), worst_rel_error: z.number(), worst_tensor: z.string(),
        f32_products: z.number().optional(), q8_products: z.number().optional()}),
    z.object({type: z.literal("logits"), tokens: z.number(), vocab: z.number(), out: z.string()})
]);
export type TrainerEvent = z.infer<typeof trainerEventSchema>;
export type StepEvent = Extract<TrainerEvent, {type: "step"}>;
export type DoneEvent = Extract<TrainerEvent, {type: "done"}>;

/** The still-train executable of this process's llama.cpp variant, and its backend folder. */
export function trainerBinary(backend: Backend = getBackend()): {command: string, backendDir: string} {
    const name = `still-train-${backend.variant.name}${process.platform === "win32" ? ".exe" : ""}`;
    const command = path.join(buildDir, name);
    if (!fs.existsSync(command))
        throw new NativeError(`the trainer ${command} is not built. Possible solutions: run \`npm run build:native\` in ${packageRoot}.`);
    return {command, backendDir: path.resolve(packageRoot, backend.variant.libDir)};
}

export type RunTrainerOptions = {
    signal?: AbortSignal,
    onEvent?: (event: TrainerEvent) => void,
    env?: Record<string, string>,
    /** Turns a trainer error line into the message shown (e.g. record numbers into file lines). */
    explain?: (message: string) => string,
    /** How long the trainer may take to checkpoint after SIGINT before it is killed. */
    stopTimeoutMs?: number
};

export type TrainerRun = {events: TrainerEvent[], exitCode: number};

const STDERR_TAIL = 4096;

/** Runs `command args`; resolves when it exits 0, throws AbortError when stopped, TrainerError otherwise. */
export async function runTrainer(command: string, args: readonly string[], options: RunTrainerOptions = {}): Promise<TrainerRun> {
    if (options.signal?.aborted) throw new AbortError("training was cancelled before it started");
    const child = execa(command, args, {
        reject: false,
        buffer: false,
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        env: options.env,
        cancelSignal: options.signal,
        killSignal: "SIGINT",
        forceKillAfterDelay: options.stopTimeoutMs ?? 120_000
    });

    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
        stderr = (stderr + chunk).slice(-STDERR_TAIL);
    });

    const events: TrainerEvent[] = [];
    let badLine: string | undefined;
    if (child.stdout != null) {
        const lines = readline.createInterface({input: child.stdout, crlfDelay: Infinity});
        for await (const line of lines) {
            if (line.trim() === "") continue;
            let parsed: TrainerEvent;
            try {
                parsed = trainerEventSchema.parse(JSON.parse(line));
            } catch {
                badLine ??= line.slice(0, 200);
                continue;
            }
            events.push(parsed);
            options.onEvent?.(parsed);
        }
    }
    const result = await child;
    const exitCode = result.exitCode ?? null;
    const tail = stderr.trim();

    if (options.signal?.aborted || result.isCanceled) {
        const stopped = events.findLast((e) => e.type === "stopped");
        throw new AbortError(stopped != null
            ? `training was cancelled at step ${stopped.step}; the checkpoint is ${stopped.checkpoint} (resume to continue)`
            : "training was cancelled");
    }
    if (exitCode === 0 && badLine == null) return {events, exitCode};

    let message: string;
    if (exitCode === 0) {
        message = `the trainer printed a line that is not a progress event: ${badLine}`;
    } else {
        const errorLine = tail.split("\n").reverse().find((l) => /\berror: /.test(l));
        message = errorLine != null ? errorLine.replace(/^.*?\berror: /, "")
            : result.signal != null ? `the trainer was killed by ${result.signal}`
            : `the trainer exited with code ${exitCode}`;
        message = options.explain?.(message) ?? message;
        if (errorLine == null && tail !== "") message += ` (stderr: ${tail.split("\n").slice(-3).join(" | ")})`;
    }
    throw new TrainerError(message, exitCode, tail);
}
