// A streaming JSONL reader. It reads bytes, splits lines itself and decodes each line on
// its own, so a broken line (bad JSON, wrong types, missing fields, invalid UTF-8, a line
// longer than the limit) is reported by its number and costs nothing else: the lines
// around it are read as usual. Memory stays bounded by the longest accepted line.
import fs from "node:fs";
import {z} from "zod";
import {DataError, throwIfAborted} from "../errors.js";

/** strict: the first bad line throws a DataError; skip: bad lines are reported and left out. */
export type ReadPolicy = "strict" | "skip";

export type ReadOptions<S extends z.ZodType> = {
    /** Each record is checked against this schema (and transformed by it). */
    schema?: S,
    policy?: ReadPolicy,
    /** Called with each bad line under the skip policy. */
    onIssue?: (issue: DataError) => void,
    /** Longest line accepted, in bytes (default 64 MiB). */
    maxLineBytes?: number,
    signal?: AbortSignal
};

export type Row<T> = {line: number, value: T};

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

/** Streams the records of a JSONL file. */
export async function* readJsonl<S extends z.ZodType = z.ZodUnknown>(file: string, options: ReadOptions<S> = {}): AsyncGenerator<Row<z.output<S>>> {
    const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    const report = issueReporter(options);
    const decoder = new TextDecoder("utf-8", {fatal: true});

    let stream: fs.ReadStream;
    try {
        await fs.promises.access(file, fs.constants.R_OK);
        stream = fs.createReadStream(file, {highWaterMark: 1024 * 1024});
    } catch (err) {
        throw new DataError(file, `cannot read the file: ${(err as Error).message}`, undefined, undefined, {cause: err});
    }

    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let oversized = false;
    let line = 0;

    const finish = (bytes: Buffer | null): Row<z.output<S>> | null => {
        line++;
        if (oversized) {
            oversized = false;
            report(new DataError(file, `line is longer than ${maxLineBytes} bytes; skipped`, line));
            return null;
        }
        if (bytes == null) return null;
        let text: string;
        try {
            text = decoder.decode(bytes);
        } catch {
            report(new DataError(file, `invalid UTF-8 (at byte ${firstInvalidUtf8(bytes)} of the line)`, line));
            return null;
        }
        if (line === 1) text = text.replace(/^\uFEFF/, "");
        if (text.endsWith("\r")) text = text.slice(0, -1);
        if (text.trim() === "") return null;
        let json: unknown;
        try {
            json = JSON.parse(text);
        } catch (err) {
            report(new DataError(file, `not valid JSON (${(err as Error).message})`, line));
            return null;
        }
        return validate(json, options.schema, file, line, report);
    };

    try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
            throwIfAborted(options.signal, `reading ${file}`);
            let pos = 0;
            for (let nl = chunk.indexOf(10, pos); nl >= 0; nl = chunk.indexOf(10, pos)) {
                let bytes: Buffer | null = null;
                if (!oversized) {
                    const piece = chunk.subarray(pos, nl);
                    if (pendingBytes + piece.length > maxLineBytes) oversized = true;
                    else bytes = pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
                }
                pending = [];
                pendingBytes = 0;
                const row = finish(bytes);
                if (row != null) yield row;
                pos = nl + 1;
            }
            if (pos < chunk.length && !oversized) {
                const tail = chunk.subarray(pos);
                if (pendingBytes + tail.length > maxLineBytes) {
                    oversized = true;
                    pending = [];
                    pendingBytes = 0;
                } else {
                    // Copy: the stream may reuse its buffers.
                    pending.push(Buffer.from(tail));
                    pendingBytes += tail.length;
                }
            }
        }
        if (pendingBytes > 0 || oversized) {
            const row = finish(oversized ? null : Buffer.concat(pending));
            if (row != null) yield row;
        }
    } catch (err) {
        if (err instanceof DataError || (err instanceof Error && err.name === "AbortError")) throw err;
        throw new DataError(file, `cannot read the file: ${(err as Error).message}`, line + 1, undefined, {cause: err});
    } finally {
        stream.destroy();
    }
}

/** Under `strict` a reporter throws; under `skip` it passes the issue on. */
export function issueReporter(options: {policy?: ReadPolicy, onIssue?: (issue: DataError) => void}): (issue: DataError) => void {
    const policy = options.policy ?? "strict";
    return (issue) => {
        if (policy === "strict") throw issue;
        options.onIssue?.(issue);
    };
}

/** Checks one record against the schema; reports the first problem by field. */
export function validate<S extends z.ZodType>(value: unknown, schema: S | undefined, file: string, line: number,
                                              report: (issue: DataError) => void): Row<z.output<S>> | null {
    if (schema == null) return {line, value: value as z.output<S>};
    const parsed = schema.safeParse(value);
    if (parsed.success) return {line, value: parsed.data};
    const issue = parsed.error.issues[0];
    const field = issue == null || issue.path.length === 0 ? undefined : issue.path.map(String).join(".");
    let message = issue?.message ?? "does not match the schema";
    if (issue?.code === "invalid_type" && /received undefined/.test(message)) message = "missing";
    report(new DataError(file, message, line, field));
    return null;
}

/** Byte offset of the first invalid UTF-8 sequence (for the report): the longest prefix that decodes. */
function firstInvalidUtf8(bytes: Buffer): number {
    let lo = 0;
    let hi = bytes.length;
    while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        try {
            new TextDecoder("utf-8", {fatal: true}).decode(bytes.subarray(0, mid), {stream: true});
            lo = mid;
        } catch {
            hi = mid - 1;
        }
    }
    return lo;
}
