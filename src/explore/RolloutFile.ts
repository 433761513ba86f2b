// An append-only JSONL file of rollout samples that a rerun can continue: it knows which
// (request id, sample) pairs are done, refuses to mix samples made with other settings,
// and drops a last line cut short by a crash.
import fs from "node:fs";
import fsp from "node:fs/promises";
import readline from "node:readline";
import {z} from "zod";
import {DataError} from "../errors.js";
import type {RolloutSample} from "../engine/Rollouts.js";

export const rolloutRecordSchema = z.object({
    id: z.string(),
    sample: z.number().int().min(0),
    /** Hash of the settings that produced the sample (model, sampling, prompt format). */
    config: z.string(),
    finish: z.enum(["stop", "length"]),
    stop: z.string().nullable(),
    text: z.string(),
    prompt_tokens: z.number().int(),
    completion_tokens: z.number().int(),
    tokens: z.array(z.number().int()),
    logprobs: z.array(z.number()),
    elapsed_ms: z.number()
});
export type RolloutRecord = z.infer<typeof rolloutRecordSchema>;

export class RolloutFile {
    private stream: fs.WriteStream | undefined;

    private constructor(readonly path: string, readonly config: string, readonly done: Map<string, Set<number>>, readonly records: number) {}

    /**
     * Opens (or creates) `path` for samples made with settings `config`. Lines already
     * there must be valid records of the same config; a truncated last line is removed.
     */
    static async open(path: string, config: string): Promise<RolloutFile> {
        const done = new Map<string, Set<number>>();
        let records = 0;
        if (fs.existsSync(path)) {
            let goodBytes = 0;
            let lineNo = 0;
            const lines = readline.createInterface({input: fs.createReadStream(path), crlfDelay: Infinity});
            let pending: {line: number, text: string} | undefined;
            for await (const text of lines) {
                lineNo++;
                if (pending != null) throw invalid(path, pending.line, pending.text);
                if (text.trim() === "") {
                    goodBytes += Buffer.byteLength(text) + 1;
                    continue;
                }
                let parsed: RolloutRecord;
                try {
                    parsed = rolloutRecordSchema.parse(JSON.parse(text));
                } catch {
                    // Only the last line may be damaged (cut off by a crash); decide when we know.
                    pending = {line: lineNo, text};
                    continue;
                }
                if (parsed.config !== config)
                    throw new DataError(path, "holds samples made with other settings (model, sampling or prompt); " +
                        "give a new --out file, or the same settings to continue it", lineNo, "config");
                let set = done.get(parsed.id);
                if (set == null) done.set(parsed.id, set = new Set());
                set.add(parsed.sample);
                records++;
                goodBytes += Buffer.byteLength(text) + 1;
            }
            if (pending != null) {
                const stat = await fsp.stat(path);
                process.emitWarning(`${path}:${pending.line}: dropping an incomplete last line (${stat.size - goodBytes} bytes) left by an interrupted run`);
                await fsp.truncate(path, goodBytes);
            }
        }
        return new RolloutFile(path, config, done, records);
    }

    isDone(id: string, sample: number) {
        return this.done.get(id)?.has(sample) ?? false;
    }

    /** Appends a finished sample as one line. */
    async append(sample: RolloutSample & {id: string}) {
        if (sample.finish === "aborted") throw new Error("aborted samples are not written");
        this.stream ??= fs.createWriteStream(this.path, {flags: "a"});
        const record: RolloutRecord = {
            id: sample.id,
            sample: sample.sample,
            config: this.config,
            finish: sample.finish,
            stop: sample.stop,
            text: sample.text,
            prompt_tokens: sample.promptTokens,
            completion_tokens: sample.completionTokens,
            tokens: sample.tokens,
            logprobs: sample.logprobs.map((l) => Math.round(l * 1e5) / 1e5),
            elapsed_ms: Math.round(sample.timings.endMs - sample.timings.startMs)
        };
        const line = JSON.stringify(record) + "\n";
        if (!this.stream.write(line)) await new Promise<void>((resolve) => this.stream!.once("drain", () => resolve()));
        let set = this.done.get(sample.id);
        if (set == null) this.done.set(sample.id, set = new Set());
        set.add(sample.sample);
    }

    async close() {
        const stream = this.stream;
        this.stream = undefined;
        if (stream != null) await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
    }
}

function invalid(path: string, line: number, text: string) {
    return new DataError(path, `is not a rollout record (${text.length > 60 ? text.slice(0, 60) + "…" : text})`, line);
}
