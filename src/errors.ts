// The error classes a user of still can meet. Each message is one sentence that says
// what is wrong and, where it helps, what to do; the CLI prints `message` alone.
import {z} from "zod";

export class StillError extends Error {
    override name = "StillError";

    constructor(message: string, options?: {cause?: unknown}) {
        super(message, options);
    }
}

/** A model file that cannot be used: missing, not GGUF, damaged, or refused by llama.cpp. */
export class ModelError extends StillError {
    override name = "ModelError";

    constructor(readonly path: string, message: string, options?: {cause?: unknown}) {
        super(message, options);
    }
}

/** Bad input data: names the file, and the line and field when known. */
export class DataError extends StillError {
    override name = "DataError";

    constructor(
        readonly file: string,
        message: string,
        readonly line?: number,
        readonly field?: string,
        options?: {cause?: unknown}
    ) {
        super(DataError.format(file, message, line, field), options);
    }

    private static format(file: string, message: string, line?: number, field?: string) {
        const where = line == null ? file : `${file}:${line}`;
        return field == null ? `${where}: ${message}` : `${where}: ${field}: ${message}`;
    }
}

/** The native addon could not be loaded or initialised. */
export class NativeError extends StillError {
    override name = "NativeError";
}

/** A long operation stopped because its AbortSignal fired. */
export class AbortError extends StillError {
    override name = "AbortError";

    constructor(message = "the operation was cancelled") {
        super(message);
    }
}

/** An option value that cannot work (wrong type, out of range, contradicting another). */
export class OptionError extends StillError {
    override name = "OptionError";
}

/** Throws the project's AbortError (not the DOM one) when `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what = "the operation") {
    if (signal?.aborted) throw new AbortError(`${what} was cancelled`);
}

/** The trainer process (still-train) failed: its exit code and the end of its stderr. */
export class TrainerError extends StillError {
    override name = "TrainerError";

    constructor(message: string, readonly exitCode: number | null, readonly stderrTail: string, options?: {cause?: unknown}) {
        super(message, options);
    }
}

/** Options checked against their schema: the parsed value, or one OptionError naming `what` and every problem. */
export function parseOptions<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> {
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw new OptionError(`invalid ${what}: ${z.prettifyError(parsed.error)}`);
    return parsed.data;
}
