// The run configuration: one JSON file, validated strictly (a misspelt key is an error),
// every default documented where it is declared. `still schema` prints it as JSON Schema.
import fs from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";

const sampling = {
    /** Sampling temperature (0 is greedy). */
    temperature: z.number().min(0).max(10),
    /** Top-k cut; 0 is off. */
    topK: z.number().int().min(0).default(40),
    /** Nucleus cut; 1 is off. */
    topP: z.number().gt(0).max(1).default(1),
    /** Most tokens per response. */
    maxTokens: z.number().int().min(1),
    /** Samples decoded together. */
    parallel: z.number().int().min(1).max(128).default(8)
};

export const loraSchema = z.strictObject({
    /** LoRA rank. */
    rank: z.number().int().min(1).max(512).default(16),
    /** LoRA alpha (the update is scaled by alpha / rank). */
    alpha: z.number().positive().default(32),
    /** Projections that get adapters. */
    modules: z.array(z.enum(["q", "k", "v", "o", "gate", "up", "down"])).min(1).default(["q", "k", "v", "o", "gate", "up", "down"])
});

export const trainSchema = z.strictObject({
    /** Peak learning rate (AdamW), after linear warmup, then cosine decay. */
    learningRate: z.number().positive().default(1e-4),
    /** Passes over the data. */
    epochs: z.number().positive().default(1),
    /** Tokens per optimizer step (examples are packed into sequences up to the context). */
    batchTokens: z.number().int().min(16).default(4096),
    /** Sequence length examples are packed into. */
    context: z.number().int().min(16).default(2048),
    /** Warmup, as a share of all steps. */
    warmup: z.number().min(0).max(1).default(0.05),
    weightDecay: z.number().min(0).default(0),
    /** Checkpoint every N optimizer steps, so that a killed run loses at most N (0: only when stopped and at the end). */
    saveEvery: z.number().int().min(0).default(20),
    lora: loraSchema.prefault({})
});

export const evalSetSchema = z.strictObject({
    /** Name in reports. */
    name: z.string().min(1),
    /** JSONL problems (MATH500 / AIME layout, or {id, question, answer, type?, choices?}), or a GPQA CSV. */
    path: z.string().min(1),
    format: z.enum(["math", "gpqa"]).default("math"),
    /** Only the first N problems. */
    limit: z.number().int().min(1).optional()
});

export const runConfigSchema = z.strictObject({
    /** The run's name: its folder is <runsDir>/<name>. */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "letters, digits, dot, dash and underscore"),
    /** Where run folders go (relative to the config file). */
    runsDir: z.string().default("runs"),
    /** Seeds every sampling and training step. */
    seed: z.number().int().min(0).default(0),
    model: z.strictObject({
        /** The base model (GGUF). */
        path: z.string().min(1),
        /** Layers on the GPU: a number, "max" or "auto". */
        gpuLayers: z.union([z.number().int().min(0), z.enum(["auto", "max"])]).default("auto"),
        /** CPU threads; default all. */
        threads: z.number().int().min(1).optional()
    }),
    prompt: z.strictObject({
        /** System prompt asking for the thought format; null for none; default: the built-in one. */
        system: z.string().nullable().optional(),
        /** Read the system prompt from this file instead. */
        systemFile: z.string().optional()
    }).prefault({}),
    data: z.strictObject({
        /** Long-form thought examples for imitate (JSONL or Parquet, STILL-2 layout or {question, response}). */
        thoughts: z.string().optional(),
        /** Problems with answers that explore samples (JSONL, MATH500 layout or {id, question, answer}). */
        problems: z.string().min(1),
        /** Evaluation sets, scored after every phase. */
        eval: z.array(evalSetSchema).default([])
    }),
    imitate: z.strictObject({
        /** Runs when data.thoughts is given. */
        enabled: z.boolean().default(true),
        /** Loss on every response token, or only the thought's. */
        mask: z.enum(["completion", "thought"]).default("completion"),
        train: trainSchema.prefault({})
    }).prefault({}),
    explore: z.strictObject({
        /** Samples per problem (STILL-2 used up to 20). */
        samples: z.number().int().min(1).default(8),
        ...sampling,
        temperature: sampling.temperature.default(0.8),
        maxTokens: sampling.maxTokens.default(4096),
        /** Problems sampled per round; default all that are left. */
        problemsPerRound: z.number().int().min(1).optional(),
        /** Drop problems every sample solved: hard problems matter most. */
        dropSolved: z.boolean().default(true),
        /** Problems per unit of resumable work. */
        chunk: z.number().int().min(1).default(64)
    }).prefault({}),
    select: z.strictObject({
        /** Which correct trajectories to keep by perplexity under the current model. */
        policy: z.enum(["lowest", "highest", "band"]).default("lowest"),
        /** For "band": the perplexity quantiles kept. */
        band: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]).default([0.25, 0.75]),
        /** Most trajectories kept per problem. */
        maxPerProblem: z.number().int().min(1).default(2),
        /** Response length bounds, in tokens. */
        minTokens: z.number().int().min(0).default(0),
        maxTokens: z.number().int().min(1).optional()
    }).prefault({}),
    /** One entry per self-improvement round. */
    rounds: z.array(z.strictObject({
        method: z.enum(["sft", "dpo"]),
        train: trainSchema.prefault({}),
        /** SFT: also train on the original thought data again. */
        keepImitationData: z.boolean().default(true),
        dpo: z.strictObject({
            /** Strength of the preference (β). */
            beta: z.number().positive().default(0.1),
            /** Weight of the SFT term on the chosen response. */
            alpha: z.number().min(0).default(0.1),
            /** Align the whole response, or the thought only. */
            align: z.enum(["response", "thought"]).default("response"),
            /** Most pairs per problem. */
            maxPairsPerProblem: z.number().int().min(1).default(2)
        }).prefault({})
    })).prefault([{method: "sft"}, {method: "dpo"}]),
    evaluate: z.strictObject({
        /** Greedy pass@1. */
        greedy: z.boolean().default(true),
        /** Also k samples per problem for maj@k / pass@k (0: none). */
        samples: z.number().int().min(0).default(0),
        ...sampling,
        temperature: sampling.temperature.default(0.6),
        maxTokens: sampling.maxTokens.default(4096)
    }).prefault({})
});

export type RunConfig = z.infer<typeof runConfigSchema>;
export type TrainConfig = z.infer<typeof trainSchema>;

/** Reads and validates a config file; paths in it are resolved against its folder. */
export async function loadRunConfig(file: string): Promise<RunConfig> {
    let raw: unknown;
    try {
        raw = JSON.parse(await fs.readFile(file, "utf8"));
    } catch (err) {
        throw new DataError(file, `cannot be read as JSON (${(err as Error).message})`);
    }
    return parseRunConfig(raw, file);
}

export function parseRunConfig(raw: unknown, file: string): RunConfig {
    const parsed = runConfigSchema.safeParse(raw);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const field = issue.path.join(".");
        const message = issue.code === "unrecognized_keys" ? `unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}` : issue.message;
        throw new DataError(file, message, undefined, field || undefined);
    }
    const config = parsed.data;
    const base = path.dirname(path.resolve(file));
    const at = (p: string) => path.resolve(base, p);
    return {
        ...config,
        runsDir: at(config.runsDir),
        model: {...config.model, path: at(config.model.path)},
        prompt: {...config.prompt, ...(config.prompt.systemFile == null ? {} : {systemFile: at(config.prompt.systemFile)})},
        data: {
            ...config.data,
            ...(config.data.thoughts == null ? {} : {thoughts: at(config.data.thoughts)}),
            problems: at(config.data.problems),
            eval: config.data.eval.map((e) => ({...e, path: at(e.path)}))
        }
    };
}

/** The config's JSON Schema, for editors. */
export function runConfigJsonSchema(): object {
    return z.toJSONSchema(runConfigSchema, {io: "input"});
}
