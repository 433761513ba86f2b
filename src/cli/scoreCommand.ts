// `still score`: log-probabilities of completions (JSONL in, JSONL out, resumable), or
// the perplexity of a text file by llama-perplexity's protocol.
import {createHash} from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import type {Command} from "commander";
import {z} from "zod";
import {JsonlAppender, readJsonl} from "../io/jsonl.js";
import {gpuLayersSchema, loadModel} from "../engine/Model.js";
import {type ScoreRecord, perplexityOptionsSchema, scoreRecordSchema, scorerOptionsSchema} from "../engine/Scorer.js";
import {DataError, OptionError} from "../errors.js";
import {adapterFields, adapterFlags, addOptions, commonFields, parseCli} from "./cliOptions.js";
import {Progress} from "./Progress.js";

const optionsSchema = scorerOptionsSchema.pick({parallel: true, batchSize: true, contextSize: true, overflow: true, threads: true})
    .extend({
        model: commonFields.model,
        data: z.string().optional().describe("JSONL records: {id?, prompt (text | token ids | chat messages), completion (text | token ids), spans?}"),
        out: z.string().optional().describe("JSONL scores, one line per record in input order; a rerun continues an interrupted file"),
        text: z.string().optional().describe("Plain text: its perplexity by llama-perplexity's protocol"),
        ctx: perplexityOptionsSchema.shape.ctx,
        chunks: perplexityOptionsSchema.shape.chunks,
        logprobs: z.boolean().describe("Write every token's log-probability too").default(false),
        ...adapterFields(),
        gpuLayers: gpuLayersSchema,
        json: commonFields.json
    });
const flags = ["--model <file>", "--data <file>", "--out <file>", "--text <file>", "--ctx <n>", "--chunks <n>", "--batch-size <n>", "--parallel <n>",
    "--context-size <n>", "--overflow <policy>", "--logprobs", ...adapterFlags, "--gpu-layers <n>", "--threads <n>", "--json"];

/** Records per call of the scorer: bounds memory on large files, and what a rerun can skip. */
const CHUNK = 512;

export function scoreCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("score")
        .description("Score completions (log-probabilities, perplexity, per thought/solution) or a text's perplexity"), optionsSchema, flags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(optionsSchema, raw, flags);
            if ((o.data == null) === (o.text == null)) throw new OptionError("score needs exactly one of --data and --text.");
            if (o.data != null && o.out == null) throw new OptionError("score --data needs --out.");

            const text = o.text != null ? await readText(o.text) : null;
            const records = o.data != null ? await readRecords(o.data) : [];
            const model = await loadModel(o.model, {gpuLayers: o.gpuLayers, signal});
            try {
                const adapters = o.adapter == null ? [] : [{adapter: await model.loadAdapter(o.adapter), scale: o.adapterScale}];
                if (text != null) {
                    const bar = o.json ? undefined : new Progress("scoring", 1, "auto", () => "");
                    const r = await model.perplexity(text, {
                        ctx: o.ctx, batchSize: o.batchSize, adapters, signal, ...(o.chunks == null ? {} : {chunks: o.chunks}),
                        ...(o.threads == null ? {} : {threads: o.threads}),
                        onProgress: (s) => bar?.update(s.recordsDone / Math.max(1, s.recordsTotal), `${s.recordsDone}/${s.recordsTotal} chunks`)
                    }).finally(() => bar?.stop());
                    const summary = {perplexity: r.perplexity, chunks: r.chunks, ctx: r.ctx, tokens_scored: r.tokensScored,
                        tokens_per_s: Math.round(r.tokensPerSecond * 10) / 10};
                    process.stdout.write(o.json ? JSON.stringify(summary) + "\n"
                        : `perplexity ${r.perplexity.toFixed(4)} over ${r.chunks} chunks of ${r.ctx} tokens (${r.tokensScored} scored), ${summary.tokens_per_s} tokens/s\n`);
                    return;
                }

                const out = o.out!;
                const config = createHash("sha256").update(JSON.stringify({
                    model: path.resolve(o.model), adapter: o.adapter == null ? null : [path.resolve(o.adapter), o.adapterScale],
                    overflow: o.overflow, contextSize: o.contextSize ?? null, logprobs: o.logprobs
                })).digest("hex").slice(0, 16);
                const {file, done} = await openScores(out, config);
                const scorer = model.scorer({
                    parallel: o.parallel, batchSize: o.batchSize, overflow: o.overflow,
                    ...(o.contextSize == null ? {} : {contextSize: o.contextSize}),
                    ...(o.threads == null ? {} : {threads: o.threads})
                });
                scorer.setAdapters(adapters);
                const started = performance.now();
                let tokens = 0;
                const bar = o.json ? undefined : new Progress("scoring", records.length, "auto", (v, t) => `${v}/${t} records`);
                bar?.update(done);
                let written = done;
                try {
                    for (let start = done; start < records.length && !signal.aborted; start += CHUNK) {
                        const chunk = records.slice(start, start + CHUNK);
                        const results = await scorer.score(chunk.map((r) => r.record), {
                            signal,
                            onProgress: (s) => bar?.update(start + s.recordsDone)
                        }).catch((err: unknown) => {
                            if (signal.aborted) return null;
                            throw err;
                        });
                        if (results == null) break;
                        for (const r of results) {
                            const {logprobs, index, ...rest} = r;
                            tokens += r.tokens;
                            await file.append({config, index: start + index, ...rest, ...(o.logprobs ? {logprobs} : {})});
                        }
                        written = start + chunk.length;
                        bar?.update(written);
                    }
                } finally {
                    bar?.stop();
                    await file.close();
                }
                const seconds = (performance.now() - started) / 1000;
                const summary = {written: written - done, skipped: done, remaining: records.length - written, out,
                    tokens_scored: tokens, tokens_per_s: Math.round(tokens / Math.max(1e-3, seconds))};
                process.stdout.write(o.json ? JSON.stringify(summary) + "\n"
                    : signal.aborted ? `stopped: ${written} of ${records.length} records scored in ${out}; run the same command to continue\n`
                    : `scored ${written - done} records into ${out}${done > 0 ? ` (${done} were already there)` : ""}: ${tokens} tokens, ${summary.tokens_per_s} tokens/s\n`);
            } finally {
                await model.dispose();
            }
        });
}

async function readText(file: string): Promise<string> {
    try {
        return await fsp.readFile(file, "utf8");
    } catch (err) {
        throw new DataError(file, `cannot read the text: ${(err as Error).message}`);
    }
}

async function readRecords(file: string): Promise<{line: number, record: ScoreRecord}[]> {
    const out: {line: number, record: ScoreRecord}[] = [];
    for await (const {line, value} of readJsonl(file, {schema: scoreRecordSchema, policy: "strict"})) out.push({line, record: value});
    return out;
}

/** A scores file that a rerun continues: its lines (made with the same settings, in record order) are records done. */
async function openScores(out: string, config: string): Promise<{file: JsonlAppender<Record<string, unknown>>, done: number}> {
    let done = 0;
    const file = await JsonlAppender.open(out, z.looseObject({config: z.string(), index: z.number().int()}), {
        onRow: ({line, value}) => {
            if (value.config !== config)
                throw new DataError(out, "holds scores made with other settings; give a new --out file, or the same settings to continue it", line, "config");
            if (value.index !== done) throw new DataError(out, `expected the score of record ${done}`, line, "index");
            done++;
        }
    });
    return {file, done};
}
