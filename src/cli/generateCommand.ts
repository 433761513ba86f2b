// `still generate`: sample rollouts for a prompt or a JSONL file of problems into a
// resumable JSONL file.
import {createHash} from "node:crypto";
import path from "node:path";
import type {Command} from "commander";
import {z} from "zod";
import {readProblemRows} from "../data/loadMathProblems.js";
import {decodeOptionFields} from "../engine/decodeOptions.js";
import {type ChatMessage, gpuLayersSchema, loadModel} from "../engine/Model.js";
import {type RolloutRequest, type SamplingOptions, rolloutEngineOptionsSchema, samplingSchema} from "../engine/Rollouts.js";
import {OptionError, StillError} from "../errors.js";
import {type RemoteJob, runRemote} from "../remote/RemoteRollouts.js";
import {keptStops, remoteSampling, remoteSeed, serverSampleReader} from "../remote/remoteSamples.js";
import {buildChatMessages} from "../format/buildChatMessages.js";
import {resolveSystemPrompt} from "../format/systemPrompt.js";
import {RolloutFile} from "../explore/RolloutFile.js";
import {type CliOption, adapterFields, adapterFlags, addOptions, commonFields, parseCli, systemFlags} from "./cliOptions.js";
import {endpointFields, endpointFlags, endpointOptionsFrom} from "./endpointOptions.js";
import {Progress} from "./Progress.js";

const optionsSchema = samplingSchema.pick({samples: true, temperature: true, topK: true, topP: true, minP: true, seed: true, maxTokens: true, stop: true})
    .extend({
        model: commonFields.model,
        prompt: z.string().optional().describe("One prompt (a user message, or raw text with --raw)"),
        problems: z.string().optional().describe("JSONL problems: each line {id, question | problem | prompt | messages, choices?}"),
        systemPrompt: commonFields.systemPrompt,
        systemFile: commonFields.systemFile,
        raw: z.boolean().describe("Use the prompt text as is, without the model's chat template").default(false),
        parallel: rolloutEngineOptionsSchema.shape.parallel,
        ...adapterFields(),
        gpuLayers: gpuLayersSchema,
        threads: decodeOptionFields.threads,
        out: z.string().min(1).describe("JSONL output; samples already there are skipped"),
        ...endpointFields,
        json: commonFields.json
    });
const flags: (string | CliOption)[] = [
    "--model <file>", "--prompt <text>", "--problems <file>", ...systemFlags, "--raw", "--samples <k>", "--temperature <t>",
    "--top-k <k>", "--top-p <p>", "--min-p <p>", "--seed <n>", "--max-tokens <n>", "--stop <text...>", "--parallel <n>", ...adapterFlags,
    "--gpu-layers <n>", "--threads <n>", "--out <file>",
    ...endpointFlags, "--json"
];

export function generateCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("generate")
        .description("Sample rollouts for a prompt or a JSONL file of problems; rerunning continues an interrupted run"), optionsSchema, flags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(optionsSchema, raw, flags);
            if ((o.prompt == null) === (o.problems == null)) throw new OptionError("generate needs exactly one of --prompt and --problems.");

            const problems = o.problems != null ? await readProblems(o.problems)
                : [{id: "prompt", text: o.prompt!, choices: undefined, messages: undefined}];
            const system = await resolveSystemPrompt({system: o.systemPrompt, systemFile: o.systemFile});
            const sampling = {
                samples: o.samples, temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP,
                seed: o.seed, maxTokens: o.maxTokens, stop: o.stop
            };
            const remote = o.endpoint != null && o.endpoint.length > 0;
            if (remote && o.adapter != null) throw new OptionError("--adapter applies to local sampling; for servers, name the adapter the server serves with --endpoint-model.");
            const config = createHash("sha256").update(JSON.stringify({
                model: path.resolve(o.model), adapter: o.adapter == null ? null : [path.resolve(o.adapter), o.adapterScale],
                sampling, system, raw: o.raw, ...(remote ? {backend: "remote", endpointModel: o.endpointModel ?? null, ...(o.samplesPerRequest > 1 ? {samplesPerRequest: o.samplesPerRequest} : {})} : {})
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

            if (remote) {
                await generateRemote(o, requests, sampling, out, total, already, signal);
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

/** Samples on servers: prompts rendered and tokenized by the model file (vocabulary only), each (problem, sample) written once. */
async function generateRemote(o: z.output<typeof optionsSchema>, requests: RolloutRequest[], sampling: SamplingOptions & {seed: number, maxTokens: number},
                              out: RolloutFile, total: number, already: number, signal: AbortSignal) {
    const model = await loadModel(o.model, {vocabOnly: true, signal});
    let written = 0;
    let roundTripFailures = 0;
    let serverTokens = 0;
    const bar = o.json ? undefined : new Progress("generating", total, "auto", (v, t) => `${v}/${t} samples`);
    const started = performance.now();
    try {
        // each prompt rendered once: its text, and its tokens from that text
        const promptTokens = new Map<string, number[]>();
        const jobs: RemoteJob[] = requests.flatMap((r) => {
            const prompt = typeof r.prompt === "string" ? r.prompt : model.applyChatTemplate(r.prompt as ChatMessage[]);
            promptTokens.set(r.id!, model.promptTokens(prompt));
            return r.sampleIndices!.map((k) => ({id: r.id!, sample: k, prompt, promptTokens: promptTokens.get(r.id!)!, seed: remoteSeed(sampling.seed, r.id!, k)}));
        });
        const read = serverSampleReader(model, keptStops(sampling));
        try {
            await runRemote(jobs, remoteSampling(sampling), endpointOptionsFrom(o)!, {
                signal,
                onLog: (line) => process.stderr.write(`still: ${line}\n`),
                onResult: async (r) => {
                    const s = read(r);
                    if (s.source === "server") serverTokens++;
                    else if (s.source === "round-trip-failed") roundTripFailures++;
                    await out.append({
                        id: r.id, sample: r.sample, text: s.text, tokens: s.tokens, logprobs: s.logprobs, finish: s.finish, stop: s.stop,
                        request: 0, promptTokens: r.promptTokens ?? promptTokens.get(r.id)?.length ?? 0, completionTokens: r.completionTokens ?? s.tokens.length,
                        timings: {startMs: 0, firstTokenMs: 0, endMs: r.elapsedMs}
                    });
                    written++;
                    bar?.update(written);
                }
            });
        } catch (err) {
            bar?.stop();
            if (err instanceof StillError && !signal.aborted) throw new StillError(`${err.message} (${written} new samples written to ${o.out})`);
            throw err;
        }
        bar?.stop();
        const seconds = (performance.now() - started) / 1000;
        if (roundTripFailures > 0)
            process.stderr.write(`still: ${roundTripFailures} responses do not survive the local tokenizer's round trip; their tokens are left empty\n`);
        report(o.json, {written, skipped: already, remaining: total - written, out: o.out, seconds: Math.round(seconds * 10) / 10, endpoints: o.endpoint!.length,
                        server_tokens: serverTokens, retokenized: written - serverTokens - roundTripFailures, round_trip_failures: roundTripFailures},
            signal.aborted ? `stopped: ${written} samples written to ${o.out}, ${total - written} left; run the same command to continue`
                : `wrote ${written} samples to ${o.out} from ${o.endpoint!.length} endpoint${o.endpoint!.length === 1 ? "" : "s"}` +
                  `${already > 0 ? ` (${already} were already there)` : ""} in ${seconds.toFixed(1)} s`);
    } finally {
        bar?.stop();
        await out.close();
        await model.dispose();
    }
}

function report(json: boolean, summary: object, text: string) {
    process.stdout.write(json ? JSON.stringify(summary) + "\n" : text + "\n");
}

type Problem = {id: string, text: string, choices: string[] | undefined, messages: ChatMessage[] | undefined};

/** Reads problems one line at a time; any bad line stops with its file, line and field. */
async function readProblems(file: string): Promise<Problem[]> {
    const problems: Problem[] = [];
    for await (const {id, row} of readProblemRows(file, {policy: "strict"}))
        problems.push({id, text: row.question ?? row.problem ?? row.prompt ?? "", choices: row.choices, messages: row.messages});
    return problems;
}
