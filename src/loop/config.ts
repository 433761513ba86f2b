// The run configuration: one JSON file, validated strictly (a misspelt key is an error),
// every field described and given its default where it is declared (shared fields come
// from the engine's and trainer's own schemas). `still schema` prints it as JSON Schema,
// descriptions included.
import fs from "node:fs/promises";
import path from "node:path";
import {verifyOptionsSchema} from "../code/verifyCode.js";
import {z} from "zod";
import {gpuLayersSchema} from "../engine/Model.js";
import {rolloutEngineOptionsSchema, samplingSchema} from "../engine/Rollouts.js";
import {DataError} from "../errors.js";
import {evalSetSchema} from "../evaluate/loadEvalSet.js";
import {thinkingFields} from "../format/thinking.js";
import {grpoConfigSchema} from "../rl/grpo.js";
import {endpointOptionsSchema} from "../remote/RemoteRollouts.js";
import {loraOptionsSchema, trainingOptionsSchema} from "../train/trainingOptions.js";

// Sampling fields of explore and evaluate: the engine's own, with the loop's defaults.
const sampling = samplingSchema.shape;
const samplingFields = {
    topK: sampling.topK.unwrap().default(40),
    topP: sampling.topP,
    parallel: rolloutEngineOptionsSchema.shape.parallel
};

export const trainSchema = z.strictObject({
    learningRate: z.number().positive().describe("Peak learning rate (AdamW), after linear warmup, then cosine decay").default(1e-4),
    epochs: z.number().int().min(1).describe("Passes over the data").default(1),
    batchTokens: z.number().int().min(16).describe("Tokens per optimizer step (examples are packed into rows up to the context)").default(4096),
    context: z.number().int().min(16).describe("Row length examples are packed into, in tokens").default(2048),
    recompute: trainingOptionsSchema.shape.recompute,
    warmup: z.number().min(0).max(1).describe("Warmup, as a share of all steps").default(0.05),
    weightDecay: z.number().min(0).describe("AdamW weight decay").default(0),
    saveEvery: z.number().int().min(0)
        .describe("Checkpoint every N optimizer steps, so that a killed run loses at most N (0: only when stopped and at the end)").default(20),
    lora: loraOptionsSchema.describe("The LoRA adapter trained").prefault({})
}).describe("How a phase trains: the step's size, its schedule and the adapter");

export const runConfigSchema = z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "letters, digits, dot, dash and underscore")
        .describe("The run's name: its folder is <runsDir>/<name>"),
    runsDir: z.string().describe("Where run folders go (relative to the config file)").default("runs"),
    seed: z.number().int().min(0).describe("Seeds every sampling and training step").default(0),
    model: z.strictObject({
        path: z.string().min(1).describe("The base model (GGUF)"),
        gpuLayers: gpuLayersSchema,
        threads: z.number().int().min(1).optional().describe("CPU threads; default all")
    }).describe("The base model and how it runs"),
    prompt: z.strictObject({
        system: z.string().nullable().optional()
            .describe("System prompt; null for none; default: for format still, the built-in one asking for the STILL markers; for think, none"),
        systemFile: z.string().optional().describe("Read the system prompt from this file instead"),
        ...thinkingFields
    }).describe("The prompt around each problem, and the form of the thought asked for").prefault({}),
    data: z.strictObject({
        thoughts: z.string().optional().describe("Long-form thought examples for imitate (JSONL or Parquet, STILL-2 layout or {question, response})"),
        problems: z.string().min(1).describe("Problems with answers that explore samples (JSONL, MATH500 layout or {id, question, answer})"),
        eval: z.array(evalSetSchema).describe("Evaluation sets, scored after every phase").default([])
    }).describe("The run's data files"),
    imitate: z.strictObject({
        enabled: z.boolean().describe("Runs when data.thoughts is given").default(true),
        mask: z.enum(["completion", "thought"]).describe("Loss on every response token (completion), or only the thought's").default("completion"),
        train: trainSchema.prefault({})
    }).describe("Imitation: LoRA SFT on the long-form thoughts").prefault({}),
    explore: z.strictObject({
        samples: z.number().int().min(1).describe("Samples per problem (STILL-2 used up to 20)").default(8),
        ...samplingFields,
        temperature: sampling.temperature.unwrap().default(0.8),
        maxTokens: sampling.maxTokens.unwrap().default(4096),
        problemsPerRound: z.number().int().min(1).optional().describe("Problems sampled per round; default all that are left"),
        domainWeights: z.record(z.string(), z.number().min(0)).optional()
            .describe("Shares of problemsPerRound by problem domain, e.g. {\"math\": 2, \"code\": 1}; a domain left out (or 0) is not sampled"),
        dropSolved: z.boolean().describe("Drop problems every sample solved: hard problems matter most").default(true),
        chunk: z.number().int().min(1).describe("Problems per unit of resumable work").default(64)
    }).describe("Exploration: sampling problems and grading the answers").prefault({}),
    select: z.strictObject({
        policy: z.enum(["lowest", "highest", "band"]).describe("Which correct trajectories to keep by perplexity under the current model").default("lowest"),
        band: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]).describe("For band: the perplexity quantiles kept").default([0.25, 0.75]),
        maxPerProblem: z.number().int().min(1).describe("Most trajectories kept per problem").default(2),
        minTokens: z.number().int().min(0).describe("Shortest response kept, in tokens").default(0),
        maxTokens: z.number().int().min(1).optional().describe("Longest response kept, in tokens")
    }).describe("Selection of trajectories for training").prefault({}),
    rounds: z.array(z.strictObject({
        method: z.enum(["sft", "dpo", "grpo"]).describe("sft: on the selected correct trajectories; dpo: on correct/incorrect pairs; " +
            "grpo: online RL with verifiable rewards (samples, rewards and updates of its own: no explore or select)"),
        train: trainSchema.prefault({}),
        keepImitationData: z.boolean().describe("SFT: also train on the original thought data again").default(true),
        dpo: z.strictObject({
            beta: z.number().positive().describe("Strength of the preference (β)").default(0.1),
            alpha: z.number().min(0).describe("Weight of the SFT term on the chosen response").default(0.1),
            align: z.enum(["response", "thought"]).describe("Align the whole response, or the thought only").default("response"),
            maxPairsPerProblem: z.number().int().min(1).describe("Most pairs per problem").default(2)
        }).describe("DPO settings").prefault({}),
        grpo: grpoConfigSchema.prefault({})
    })).describe("One entry per self-improvement round").prefault([{method: "sft"}, {method: "dpo"}]),
    code: z.strictObject({
        workers: z.number().int().min(1).optional().describe("Code checks run at once; default the CPU count"),
        testTimeoutMs: verifyOptionsSchema.shape.testTimeoutMs,
        problemTimeoutMs: verifyOptionsSchema.shape.problemTimeoutMs,
        unsafeRunWithoutSandbox: z.boolean()
            .describe("Where no sandbox is available, run model-written code in a plain subprocess (no isolation of files or network)").default(false)
    }).describe("Checking code problems: sandboxed runs of the sampled programs against the problems' tests").prefault({}),
    servers: z.strictObject({
        urls: endpointOptionsSchema.shape.urls,
        model: z.string().min(1).describe("The base model's name on the servers (vLLM: its --served-model-name, else the path it was started with)"),
        concurrency: endpointOptionsSchema.shape.concurrency,
        apiKeyEnv: endpointOptionsSchema.shape.apiKeyEnv,
        timeoutMs: endpointOptionsSchema.shape.timeoutMs,
        prompt: endpointOptionsSchema.shape.prompt,
        logprobs: endpointOptionsSchema.shape.logprobs,
        samplesPerRequest: endpointOptionsSchema.shape.samplesPerRequest,
        adapters: z.enum(["load", "none"]).describe("load: each phase's adapter is exported in PEFT's layout next to it and loaded on every server " +
            "by vLLM's /v1/load_lora_adapter (vLLM started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, the run folder readable by it); " +
            "none: the servers sample the base model only, and phases with an adapter sample locally").default("load"),
        phases: z.array(z.enum(["explore", "select", "evaluate", "grpo"])).min(1).describe("What runs on the servers: sampling (explore, evaluate; grpo: every step's " +
            "samples, each step's adapter loaded there and the one before unloaded) and the perplexity scores of selection (select: servers with prompt log-probs, " +
            "as vLLM's prompt_logprobs; llama-server has none)").default(["explore", "evaluate"])
    }).optional().describe("OpenAI-compatible servers (vLLM, SGLang, llama-server) that sample instead of the local engine; the model file still gives the template and tokenizer"),
    evaluate: z.strictObject({
        greedy: z.boolean().describe("Greedy pass@1").default(true),
        samples: z.number().int().min(0).describe("Also k samples per problem for maj@k / pass@k (0: none)").default(0),
        ...samplingFields,
        temperature: sampling.temperature.unwrap().default(0.6),
        maxTokens: sampling.maxTokens.unwrap().default(4096)
    }).describe("Evaluation after every phase").prefault({})
}).describe("A still run: the loop of imitate, explore, select, improve, evaluate");

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
