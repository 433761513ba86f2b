// An append-only JSONL file of rollout samples that a rerun can continue: it knows which
// (request id, sample) pairs are done, refuses to mix samples made with other settings,
// and drops a last line cut short by a crash (JsonlAppender).
import {z} from "zod";
import type {RolloutSample} from "../engine/Rollouts.js";
import {DataError} from "../errors.js";
import {JsonlAppender} from "../io/jsonl.js";

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
    private constructor(private readonly out: JsonlAppender<RolloutRecord>, readonly config: string,
                        private readonly done: Map<string, Set<number>>, readonly records: number) {}

    get path() {
        return this.out.path;
    }

    /**
     * Opens (or creates) `path` for samples made with settings `config`. Lines already
     * there must be valid records of the same config; a truncated last line is removed.
     */
    static async open(path: string, config: string): Promise<RolloutFile> {
        const done = new Map<string, Set<number>>();
        let records = 0;
        const out = await JsonlAppender.open(path, rolloutRecordSchema, {
            onRow: ({line, value}) => {
                if (value.config !== config)
                    throw new DataError(path, "holds samples made with other settings (model, sampling or prompt); " +
                        "give a new --out file, or the same settings to continue it", line, "config");
                markDone(done, value.id, value.sample);
                records++;
            }
        });
        return new RolloutFile(out, config, done, records);
    }

    isDone(id: string, sample: number) {
        return this.done.get(id)?.has(sample) ?? false;
    }

    /** Appends a finished sample as one line. */
    async append(sample: RolloutSample & {id: string}) {
        if (sample.finish === "aborted") throw new Error("aborted samples are not written");
        await this.out.append({
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
        });
        markDone(this.done, sample.id, sample.sample);
    }

    close() {
        return this.out.close();
    }
}

function markDone(done: Map<string, Set<number>>, id: string, sample: number) {
    let set = done.get(id);
    if (set == null) done.set(id, set = new Set());
    set.add(sample);
}
