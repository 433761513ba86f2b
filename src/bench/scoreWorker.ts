// One perplexity measurement of one engine, in its own process:
//   node scoreWorker.js still|node-llama-cpp MODEL TEXT_FILE CTX BATCH CHUNKS THREADS
// Prints one JSON line: {tokens_per_s, scored_tokens_per_s, ppl, seconds, peak_rss_mb}.
import fs from "node:fs";
import type {Token} from "node-llama-cpp";
import {loadModel} from "../engine/Model.js";

const [engine, modelPath, textFile, ctxArg, batchArg, chunksArg, threadsArg] = process.argv.slice(2);
const ctx = Number(ctxArg);
const batchSize = Number(batchArg);
const chunks = Number(chunksArg);
const threads = Number(threadsArg);
const text = fs.readFileSync(textFile!, "utf8");

async function runStill() {
    // Weights read in at load (no mmap), for every engine: no page faults in the timing.
    const model = await loadModel(modelPath!, {trusted: true, gpuLayers: 0, useMmap: false});
    const r = await model.perplexity(text, {ctx, batchSize, chunks, threads});
    await model.dispose();
    return {ppl: r.perplexity, chunks: r.chunks, seconds: (r.chunks * ctx) / r.tokensPerSecond};
}

// llama-perplexity's protocol through node-llama-cpp's own per-token evaluation: each
// chunk in a fresh sequence, the first token replaced by BOS where the model adds one,
// and for the second half the target's logit with the total logit weight (its cheapest
// way to a log-probability); batchSize / ctx chunks at a time, as llama-perplexity does.
async function runNodeLlamaCpp() {
    const {getLlama} = await import("node-llama-cpp");
    const llama = await getLlama({gpu: false, build: "never", logLevel: "error" as never, progressLogs: false});
    const model = await llama.loadModel({modelPath: modelPath!, gpuLayers: 0, useMmap: false});
    const tokens = model.tokenize(text, true) as Token[];
    const n = Math.min(Math.floor(tokens.length / ctx), chunks);
    const perBatch = Math.max(1, Math.floor(batchSize / ctx));
    const context = await model.createContext({sequences: perBatch, contextSize: ctx * perBatch, batchSize, threads});
    const sequences = Array.from({length: perBatch}, () => context.getSequence());
    const bos = model.tokens.bos;
    const addBos = model.tokenizer("", true).length > 0;
    const first = Math.floor(ctx / 2);
    let nll = 0;
    const start = performance.now();
    for (let c = 0; c < n; c += perBatch) {
        await Promise.all(sequences.slice(0, Math.min(perBatch, n - c)).map(async (seq, j) => {
            const chunk = tokens.slice((c + j) * ctx, (c + j + 1) * ctx);
            if (addBos && bos != null) chunk[0] = bos;
            await seq.clearHistory();
            const input = chunk.map((t, k) => (k >= first && k < ctx - 1
                ? [t, {generateNext: {logits: {filter: {tokens: [chunk[k + 1]!], includeMax: true}}, totalLogitWeight: true, options: {temperature: 0}}}]
                : t)) as Parameters<typeof seq.controlledEvaluate>[0];
            const out = await seq.controlledEvaluate(input);
            for (let k = first; k < ctx - 1; k++) {
                const next = out[k]?.next;
                const logits = next?.logits;
                if (logits == null || next?.totalLogitWeight == null) throw new Error("node-llama-cpp returned no logits");
                const target = logits.get(chunk[k + 1]!)!;
                const max = Math.max(...logits.values());
                nll -= target - (max + Math.log(next.totalLogitWeight));
            }
        }));
    }
    const seconds = (performance.now() - start) / 1000;
    await context.dispose();
    await model.dispose();
    return {ppl: Math.exp(nll / (n * (ctx - first - 1))), chunks: n, seconds};
}

const r = engine === "still" ? await runStill() : await runNodeLlamaCpp();
const scored = r.chunks * (ctx - Math.floor(ctx / 2) - 1);
process.stdout.write(JSON.stringify({
    tokens_per_s: (r.chunks * ctx) / r.seconds,
    scored_tokens_per_s: scored / r.seconds,
    ppl: r.ppl,
    seconds: r.seconds,
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024)
}) + "\n");
process.exit(0);
