// One measurement of one engine, in its own process (so its peak RSS is its own):
//   node rolloutWorker.js still|node-llama-cpp|llama-server|llama-server-no-logprobs MODEL PARALLEL PROMPT_TOKENS GEN_TOKENS THREADS SHARED(0|1) PROMPTS.json
// Prints one JSON line: {gen_tps, prompt_tps, peak_rss_mb, generated, cpu_backend, split and q8_mode (still only)}.
import fs from "node:fs";
import type {Token} from "node-llama-cpp";
import {getBackend} from "../engine/binding.js";
import {loadModel} from "../engine/Model.js";
import {cpuBackendIn} from "./llamaTools.js";

const [engine, modelPath, parallelArg, promptArg, genArg, threadsArg, sharedArg, promptsFile] = process.argv.slice(2);
const parallel = Number(parallelArg);
const promptTokens = Number(promptArg);
const genTokens = Number(genArg);
const threads = Number(threadsArg);
const shared = sharedArg === "1";

// The same prompts for every engine, made once by the parent.
const prompts = (JSON.parse(fs.readFileSync(promptsFile!, "utf8")) as number[][]).slice(0, shared ? 1 : parallel);
void promptTokens;

async function runStill() {
    const model = await loadModel(modelPath!, {trusted: true, gpuLayers: 0});
    // STILL_Q8_GEMM chooses the Q8_0 kernel's products (output layer by default); none where this CPU cannot run it.
    const {mode: q8Mode, isa: q8Isa} = getBackend().binding.q8Kernel();
    const engine = model.rollouts({parallel, threads});
    const sampling = {temperature: 1, topK: 40, maxTokens: genTokens, stopAfter: [], stopAtEog: false};
    // Warm up (first-call allocations, page faults in the weights).
    for await (const _ of engine.generate([{prompt: prompts[0]!}], {...sampling, maxTokens: 4}));
    const requests = prompts.map((prompt, i) => ({id: String(i), prompt}));
    const run = engine.generate(requests, {...sampling, samples: shared ? parallel : 1});
    for await (const _ of run);
    const stats = await run.stats;
    await model.dispose();
    // Where a decode step's time goes, in ms per step (every step of the run, prompt chunks included).
    const per = (ms: number) => ms / Math.max(1, stats.decodes);
    const measured = stats.decodeMs + stats.logitsMs + stats.sampleMs + stats.acceptMs;
    return {
        gen_tps: stats.generatedTokens / (stats.generateMs / 1000),
        prompt_tps: stats.promptTokens / (stats.promptMs / 1000),
        generated: stats.generatedTokens,
        q8_mode: q8Mode,
        q8_isa: q8Isa,
        split: {
            steps: stats.decodes, decode_ms: per(stats.decodeMs), logits_ms: per(stats.logitsMs), sample_ms: per(stats.sampleMs),
            accept_ms: per(stats.acceptMs), other_ms: per(Math.max(0, stats.elapsedMs - measured))
        }
    };
}

/** The ggml CPU backend library this process loaded (its ISA variant), from the process's mappings. */
function cpuBackend(): string | null {
    try {
        return cpuBackendIn(fs.readFileSync("/proc/self/maps", "utf8"));
    } catch {
        return null;
    }
}

async function runNodeLlamaCpp() {
    const {getLlama} = await import("node-llama-cpp");
    const llama = await getLlama({gpu: false, build: "never", logLevel: "error" as never, progressLogs: false});
    const model = await llama.loadModel({modelPath: modelPath!, gpuLayers: 0});
    const context = await model.createContext({sequences: parallel, contextSize: parallel * (promptTokens + genTokens + 16), batchSize: 2048, threads});
    const sequences = Array.from({length: parallel}, () => context.getSequence());
    // Warm up, as for still.
    for await (const _ of sequences[0]!.evaluate(promptsOf(0), {temperature: 1, topK: 40})) break;
    await sequences[0]!.clearHistory();
    // Prompt time: until every sequence has its first token; generation: the rest.
    let firsts = 0;
    let generated = 0;
    let allFirst = 0;
    const start = performance.now();
    await Promise.all(sequences.map(async (seq, i) => {
        let n = 0;
        for await (const _ of seq.evaluate(promptsOf(i), {temperature: 1, topK: 40})) {
            generated++;
            if (n === 0 && ++firsts === parallel) allFirst = performance.now();
            if (++n >= genTokens) break;
        }
    }));
    const end = performance.now();
    await context.dispose();
    await model.dispose();
    return {
        gen_tps: (generated - parallel) / ((end - allFirst) / 1000),
        prompt_tps: (prompts.length * prompts[0]!.length) / ((allFirst - start) / 1000),
        generated
    };
}

const promptsOf = (i: number) => prompts[shared ? 0 : i] as unknown as Token[];

/**
 * still's remote client driving one llama-server (built from the bundled source, the same libraries) with
 * P requests at once, one slot each. Two passes over the same prompts: one token each (the prompt time;
 * it leaves each prompt in its slot's cache), then the whole generation, whose time stands for generation
 * as the other engines' does (the prompts are not evaluated again). The server is started by this process.
 * With log-probs asked for (as `still generate --endpoint` does by default) or not.
 */
async function runLlamaServer(logprobs: boolean) {
    const {startLlamaServer} = await import("../remote/llamaServer.js");
    const {runRemote} = await import("../remote/RemoteRollouts.js");
    const server = await startLlamaServer({model: modelPath!, parallel, threads, ctx: parallel * (promptTokens + genTokens + 16), batch: 2048, ubatch: 512});
    try {
        const jobs = prompts.length === 1 && parallel > 1
            ? Array.from({length: parallel}, (_, k) => ({id: "0", sample: k, prompt: "", promptTokens: prompts[0]!, seed: k + 1}))
            : prompts.map((p, i) => ({id: String(i), sample: 0, prompt: "", promptTokens: p, seed: i + 1}));
        const sampling = {temperature: 1, topK: 40, topP: 1, minP: 0, stop: []};
        const pass = async (maxTokens: number) => {
            let generated = 0;
            const t0 = performance.now();
            await runRemote(jobs, {...sampling, maxTokens}, {urls: [server.url], concurrency: parallel, logprobs},
                {onResult: (r) => { generated += r.completionTokens ?? r.tokens?.length ?? 0; }});
            return {generated, ms: performance.now() - t0};
        };
        // warm-up, as for the others, on a prompt of its own (the measured prompts must not be in a cache yet)
        await runRemote([{id: "warm-up", sample: 0, prompt: "", promptTokens: [...prompts[0]!].reverse(), seed: 0}],
            {...sampling, maxTokens: 4}, {urls: [server.url]}, {onResult: () => {}});
        const first = await pass(1);
        const rest = await pass(genTokens);
        return {
            gen_tps: rest.generated / (rest.ms / 1000),
            prompt_tps: (shared ? promptTokens : jobs.length * promptTokens) / (first.ms / 1000),
            generated: rest.generated,
            server_peak_rss_mb: serverPeakRss(server.pid)
        };
    } finally {
        await server.stop();
    }
}

/** A process's peak RSS in MB from /proc (null where there is none). */
function serverPeakRss(pid: number): number | null {
    try {
        const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
        return m == null ? null : Math.round(Number(m[1]) / 1024);
    } catch {
        return null;
    }
}

const result = engine === "still" ? await runStill() : engine === "llama-server" || engine === "llama-server-no-logprobs" ? await runLlamaServer(engine === "llama-server") : await runNodeLlamaCpp();
process.stdout.write(JSON.stringify({...result, cpu_backend: cpuBackend(), peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024)}) + "\n");
process.exit(0);
