// `still generate`: sample rollouts for a prompt or a JSONL file of problems into a
// resumable JSONL file.
import {createHash} from "node:crypto";
import path from "node:path";
import type {Command} from "commander";
import {z} from "zod";
import {readJsonl} from "../io/jsonl.js";
import {type ChatMessage, loadModel} from "../engine/Model.js";
import type {RolloutRequest} from "../engine/Rollouts.js";
import {DataError, OptionError} from "../errors.js";
import {buildChatMessages} from "../format/buildChatMessages.js";
import {DEFAULT_SYSTEM_PROMPT, loadSystemPrompt} from "../format/systemPrompt.js";
import {RolloutFile} from "../explore/RolloutFile.js";
import {Progress} from "./Progress.js";

const number = z.coerce.number();
const optionsSchema = z.object({
    model: z.string().min(1),
    prompt: z.string().optional(),
    problems: z.string().optional(),
    system: z.union([z.string(), z.literal(false)]).optional(),
    systemFile: z.string().optional(),
    raw: z.boolean().default(false),
    samples: z.coerce.number().int().min(1).default(1),
    temperature: number.min(0).default(1),
    topK: z.coerce.number().int().min(0).default(0),
    topP: number.gt(0).max(1).default(1),
    minP: number.min(0).max(1).default(0),
    seed: z.coerce.number().int().min(0).default(0),
    maxTokens: z.coerce.number().int().min(1).default(1024),
    stop: z.array(z.string().min(1)).default([]),
    parallel: z.coerce.number().int().min(1).max(128).default(8),
    adapter: z.string().optional(),
    adapterScale: number.default(1),
    gpuLayers: z.union([z.enum(["auto", "max"]), z.coerce.number().int().min(0)]).default("auto"),
    threads: z.coerce.number().int().min(1).optional(),
    out: z.string().min(1),
    json: z.boolean().default(false)
});

export function generateCommand(program: Command, signal: AbortSignal) {
    program.command("generate")
        .description("Sample rollouts for a prompt or a JSONL file of problems; rerunning continues an interrupted run")
        .requiredOption("--model <file>", "GGUF model")
        .option("--prompt <text>", "one prompt (a user message, or raw text with --raw)")
        .option("--problems <file>", "JSONL problems: each line {id, question | problem | prompt | messages, choices?}")
        .option("--system <text>", "system message before each problem (default: the one asking for the STILL thought format)")
        .option("--system-file <file>", "read the system message from a file")
        .option("--no-system", "no system message")
        .option("--raw", "use the prompt text as is, without the model's chat template")
        .option("--samples <k>", "samples per prompt", "1")
        .option("--temperature <t>", "sampling temperature (0 = greedy)", "1")
        .option("--top-k <k>", "top-k cut (0 = off)", "0")
        .option("--top-p <p>", "nucleus cut (1 = off)", "1")
        .option("--min-p <p>", "min-p cut (0 = off)", "0")
        .option("--seed <n>", "base seed", "0")
        .option("--max-tokens <n>", "most tokens per sample", "1024")
        .option("--stop <text...>", "stop strings (cut from the text)")
        .option("--parallel <n>", "samples decoded together", "8")
        .option("--adapter <file>", "LoRA adapter GGUF to apply")
        .option("--adapter-scale <s>", "scale of the adapter", "1")
        .option("--gpu-layers <n>", "layers on the GPU: a number, max, or auto", "auto")
        .option("--threads <n>", "CPU threads for llama.cpp")
        .requiredOption("--out <file>", "JSONL output; samples already there are skipped")
        .option("--json", "print a JSON summary at the end instead of text")
        .action(async (raw: unknown) => {
            const parsed = optionsSchema.safeParse(raw);
            if (!parsed.success) throw new OptionError(`invalid options: ${z.prettifyError(parsed.error)}`);
            const o = parsed.data;
            if ((o.prompt == null) === (o.problems == null)) throw new OptionError("generate needs exactly one of --prompt and --problems.");

            const problems = o.problems != null ? await readProblems(o.problems)
                : [{id: "prompt", text: o.prompt!, choices: undefined, messages: undefined}];
            const system = o.system === false ? null
                : o.systemFile != null ? await loadSystemPrompt(o.systemFile)
                : o.system ?? DEFAULT_SYSTEM_PROMPT;
            const sampling = {
                samples: o.samples, temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP,
                seed: o.seed, maxTokens: o.maxTokens, stop: o.stop
            };
            const config = createHash("sha256").update(JSON.stringify({
                model: path.resolve(o.model), adapter: o.adapter == null ? null : [path.resolve(o.adapter), o.adapterScale],
                sampling, system, raw: o.raw
            })).digest("hex").slice(0, 16);
            const out = await RolloutFile.open(o.out, config);

            const requests: RolloutRequest[] = [];
            for (const p of problems) {
                const todo = Array.from({length: o.samples}, (_, k) => k).filter((k) => !out.isDone(p.id, k));
                if (todo.length === 0) continue;
                const prompt = p.messages ?? (o.raw ? p.text : buildChatMessages(p.text, {systemPrompt: system, ...(p.choices == null ? {} : {choices: p.choices})}));
                requests.push({id: p.id, prompt, sampleIndices: todo});
            }
            const total = requests.reduce((n, r) => n + r.sampleIndices!.length, 0);
            const already = problems.length * o.samples - total;
            if (total === 0) {
                report(o.json, {written: 0, skipped: already, out: o.out}, `nothing to do: all ${already} samples are already in ${o.out}`);
                return;
            }

            const model = await loadModel(o.model, {gpuLayers: o.gpuLayers, signal});
            let written = 0;
            let generated = 0;
            const started = performance.now();
            const bar = o.json ? undefined : new Progress("generating", total, "auto",
                (v, t) => `${v}/${t} samples, ${Math.round(generated / Math.max(1e-3, (performance.now() - started) / 1000))} tokens/s`);
            try {
                const engine = model.rollouts({parallel: o.parallel, ...(o.threads == null ? {} : {threads: o.threads})});
                if (o.adapter != null) engine.setAdapters([{adapter: await model.loadAdapter(o.adapter), scale: o.adapterScale}]);
                const run = engine.generate(requests, sampling, {signal, onProgress: (s) => {
                    generated = s.generatedTokens;
                    bar?.update(written);
                }});
                for await (const sample of run) {
                    if (sample.finish === "aborted") continue;
                    await out.append({...sample, id: sample.id!});
                    written++;
                    bar?.update(written);
                }
                const stats = await run.stats;
                bar?.stop();
                const seconds = (performance.now() - started) / 1000;
                const summary = {
                    written, skipped: already, remaining: total - written, out: o.out,
                    generated_tokens: stats.generatedTokens, prompt_tokens: stats.promptTokens,
                    tokens_per_s: Math.round(stats.generatedTokens / Math.max(1e-3, stats.generateMs / 1000)), seconds: Math.round(seconds * 10) / 10
                };
                report(o.json, summary, signal.aborted
                    ? `stopped: ${written} samples written to ${o.out}, ${total - written} left; run the same command to continue`
                    : `wrote ${written} samples to ${o.out}${already > 0 ? ` (${already} were already there)` : ""}: ` +
                      `${stats.generatedTokens} tokens in ${seconds.toFixed(1)} s, ${summary.tokens_per_s} tokens/s while generating`);
            } finally {
                bar?.stop();
                await out.close();
                await model.dispose();
            }
        });
}

function report(json: boolean, summary: object, text: string) {
    process.stdout.write(json ? JSON.stringify(summary) + "\n" : text + "\n");
}

const problemLineSchema = z.object({
    id: z.union([z.string(), z.number()]).optional(),
    unique_id: z.string().optional(),
    question: z.string().optional(),
    problem: z.string().optional(),
    prompt: z.string().optional(),
    choices: z.array(z.string()).optional(),
    messages: z.array(z.object({role: z.string(), content: z.string()})).min(1).optional()
}).refine((p) => p.question != null || p.problem != null || p.prompt != null || p.messages != null,
    {message: "needs one of question, problem, prompt or messages", path: ["question"]});

type Problem = {id: string, text: string, choices: string[] | undefined, messages: ChatMessage[] | undefined};

/** Reads problems one line at a time; any bad line stops with its file, line and field. */
async function readProblems(file: string): Promise<Problem[]> {
    const problems: Problem[] = [];
    const seen = new Set<string>();
    for await (const {line, value: p} of readJsonl(file, {schema: problemLineSchema, policy: "strict"})) {
        const id = String(p.id ?? p.unique_id ?? `line-${line}`);
        if (seen.has(id)) throw new DataError(file, `repeats id ${JSON.stringify(id)}`, line, "id");
        seen.add(id);
        problems.push({id, text: p.question ?? p.problem ?? p.prompt ?? "", choices: p.choices, messages: p.messages});
    }
    return problems;
}
