// JSONL, the project's one format for records on disk, in one module: a streaming reader
// checked by a schema with line numbers (readJsonl, readJsonlFile), atomic writes of whole
// files (writeJsonlAtomic, writeJsonAtomic), and append-only files that a rerun continues
// (JsonlAppender).
//
// The reader reads bytes, splits lines itself and decodes each line on its own, so a broken
// line (bad JSON, wrong types, missing fields, invalid UTF-8, a line longer than the limit)
// is reported by its number and costs nothing else: the lines around it are read as usual.
// Memory stays bounded by the longest accepted line.
import fs from "node:fs";
import fsp from "node:fs/promises";
import {z} from "zod";
import {DataError, throwIfAborted} from "../errors.js";
import {writeFileAtomic} from "./atomicFile.js";

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
/** A JSONL row and the byte offset just past its line (its newline included). */
export type JsonlRow<T> = Row<T> & {end: number};

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

/** Streams the records of a JSONL file. */
export async function* readJsonl<S extends z.ZodType = z.ZodUnknown>(file: string, options: ReadOptions<S> = {}): AsyncGenerator<JsonlRow<z.output<S>>> {
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
    let read = 0; // bytes of the file before the current chunk

    const finish = (bytes: Buffer | null, end: number): JsonlRow<z.output<S>> | null => {
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
        const row = validate(json, options.schema, file, line, report);
        return row == null ? null : {...row, end};
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
                const row = finish(bytes, read + nl + 1);
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
            read += chunk.length;
        }
        if (pendingBytes > 0 || oversized) {
            const row = finish(oversized ? null : Buffer.concat(pending), read);
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
    report(schemaIssue(parsed.error, file, line));
    return null;
}

/** A schema's first complaint about a record as one DataError naming the field. */
export function schemaIssue(error: z.ZodError, file: string, line: number): DataError {
    const issue = error.issues[0];
    const field = issue == null || issue.path.length === 0 ? undefined : issue.path.map(String).join(".");
    let message = issue?.message ?? "does not match the schema";
    if (issue?.code === "invalid_type" && /received undefined/.test(message)) message = "missing";
    return new DataError(file, message, line, field);
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

/** Every record of a JSONL file, checked by `schema`; the first bad line throws a DataError naming it. */
export async function readJsonlFile<S extends z.ZodType>(file: string, schema: S, options: {signal?: AbortSignal} = {}): Promise<z.output<S>[]> {
    const out: z.output<S>[] = [];
    for await (const row of readJsonl(file, {schema, policy: "strict", ...options})) out.push(row.value);
    return out;
}

/** A JSON file checked by `schema`; one DataError naming the file (and the field) when it cannot be read or does not match. */
export async function readJsonFile<S extends z.ZodType>(file: string, schema: S, hint = ""): Promise<z.output<S>> {
    let raw: unknown;
    try {
        raw = JSON.parse(await fsp.readFile(file, "utf8"));
    } catch (err) {
        throw new DataError(file, `cannot be read (${(err as Error).message})${hint}`);
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw new DataError(file, `is not valid: ${z.prettifyError(parsed.error)}`);
    return parsed.data;
}

/** Writes `rows` as a JSONL file atomically. */
export async function writeJsonlAtomic(file: string, rows: readonly unknown[]) {
    await writeFileAtomic(file, rows.map((r) => JSON.stringify(r) + "\n").join(""));
}

/** Writes `value` as an indented JSON file atomically. */
export async function writeJsonAtomic(file: string, value: unknown) {
    await writeFileAtomic(file, JSON.stringify(value, null, 2) + "\n");
}

/** Appends `rows` to a JSONL file, one line each. */
export async function appendJsonl(file: string, rows: readonly unknown[]) {
    if (rows.length > 0) await fsp.appendFile(file, rows.map((r) => JSON.stringify(r) + "\n").join(""));
}

/**
 * An append-only JSONL file that a rerun continues: opening it reads back the records
 * already there (each checked by the schema and by `onRow`, which may refuse one with a
 * DataError), drops a last line cut short by a crash, and later records are appended
 * one line at a time.
 */
export class JsonlAppender<T> {
    private stream: fs.WriteStream | undefined;

    private constructor(readonly path: string) {}

    static async open<S extends z.ZodType>(file: string, schema: S,
                                           options: {onRow?: (row: Row<z.output<S>>) => void, signal?: AbortSignal} = {}): Promise<JsonlAppender<z.input<S>>> {
        if (fs.existsSync(file)) {
            const size = (await fsp.stat(file)).size;
            let good = 0;      // bytes up to the end of the last good line
            let lastGood = 0;  // its line number
            let damaged: DataError | undefined;
            for await (const row of readJsonl(file, {schema, policy: "skip", onIssue: (i) => void (damaged ??= i), signal: options.signal})) {
                // only the last line may be damaged (cut off by a crash)
                if (damaged != null) throw damaged;
                options.onRow?.(row);
                good = row.end;
                lastGood = row.line;
            }
            if (damaged != null) {
                process.emitWarning(`${file}:${damaged.line ?? lastGood + 1}: dropping an incomplete last line (${size - good} bytes) left by an interrupted run`);
                await fsp.truncate(file, good);
            } else if (good > 0 && good === size && !(await endsWithNewline(file, size))) {
                // a whole last record whose newline never made it to disk
                await fsp.appendFile(file, "\n");
            }
        }
        return new JsonlAppender(file);
    }

    /** Appends one record as one line (waiting when the stream is busy). */
    async append(record: T) {
        this.stream ??= fs.createWriteStream(this.path, {flags: "a"});
        const stream = this.stream;
        if (!stream.write(JSON.stringify(record) + "\n")) await new Promise<void>((resolve) => stream.once("drain", () => resolve()));
    }

    async close() {
        const stream = this.stream;
        this.stream = undefined;
        if (stream != null) await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
    }
}

async function endsWithNewline(file: string, size: number): Promise<boolean> {
    const handle = await fsp.open(file, "r");
    try {
        const {buffer} = await handle.read(Buffer.alloc(1), 0, 1, size - 1);
        return buffer[0] === 10;
    } finally {
        await handle.close();
    }
}


/** A record and where it came from, to name it in errors. */
export type Sourced<T> = {
    value: T,
    /** "file.jsonl:12", or "examples[3]" for the caller's own records. */
    where: string,
    /** An error about this record: file and line, or its position in the caller's list. */
    fail: (message: string) => DataError
};

/**
 * Records from a JSONL file (each line checked by `schema`) or from the caller's own
 * iterable (each checked the same way), in order. `item` names one record in errors
 * ("example"), `items` the caller's list ("examples").
 */
export async function* readRecords<S extends z.ZodType>(input: string | Iterable<z.input<S>> | AsyncIterable<z.input<S>>, schema: S,
                                                        names: {item: string, items: string}, signal?: AbortSignal): AsyncGenerator<Sourced<z.output<S>>> {
    if (typeof input === "string") {
        for await (const {line, value} of readJsonl(input, {schema, policy: "strict", ...(signal == null ? {} : {signal})}))
            yield {value, where: `${input}:${line}`, fail: (message) => new DataError(input, message, line)};
        return;
    }
    let index = 0;
    for await (const raw of input) {
        const i = index++;
        const fail = (message: string) => new DataError(names.items, `${names.item} ${i}: ${message}`);
        const parsed = schema.safeParse(raw);
        if (!parsed.success) throw fail(z.prettifyError(parsed.error));
        yield {value: parsed.data, where: `${names.items}[${i}]`, fail};
    }
}
