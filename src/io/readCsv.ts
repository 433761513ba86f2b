// A streaming CSV reader over csv-parse: the first row names the columns; each record is
// an object by column name. Errors name the file and line like readJsonl's.
import fs from "node:fs";
import {parse, type CsvError} from "csv-parse";
import {z} from "zod";
import {DataError, throwIfAborted} from "../errors.js";
import {issueReporter, validate, type ReadOptions, type Row} from "./jsonl.js";

/** Streams the records of a CSV file (with a header row); a header without one of `columns` is one error. */
export async function* readCsv<S extends z.ZodType = z.ZodUnknown>(file: string, options: Omit<ReadOptions<S>, "maxLineBytes"> & {columns?: readonly string[]} = {}): AsyncGenerator<Row<z.output<S>>> {
    const report = issueReporter(options);
    try {
        await fs.promises.access(file, fs.constants.R_OK);
    } catch (err) {
        throw new DataError(file, `cannot read the file: ${(err as Error).message}`, undefined, undefined, {cause: err});
    }
    const parser = fs.createReadStream(file).pipe(parse({
        columns: (header: string[]) => {
            const names = header.map((h) => h.trim());
            const missing = (options.columns ?? []).filter((c) => !names.includes(c));
            if (missing.length > 0)
                throw new DataError(file, `has no column${missing.length > 1 ? "s" : ""} ${missing.map((c) => JSON.stringify(c)).join(", ")} ` +
                    `(its header: ${names.map((c) => JSON.stringify(c)).join(", ")})`, 1);
            return names;
        },
        bom: true,
        info: true,
        skip_empty_lines: true,
        relax_quotes: false,
        skip_records_with_error: options.policy === "skip"
    }));
    // The parser runs ahead of the consumer: hold skipped-row reports until the rows before them are out.
    const skipped: DataError[] = [];
    parser.on("skip", (err: CsvError) => skipped.push(csvError(file, err)));
    const flush = (upTo: number) => {
        while (skipped.length > 0 && (skipped[0]!.line ?? 0) <= upTo) report(skipped.shift()!);
    };
    try {
        for await (const item of parser as AsyncIterable<{record: Record<string, string>, info: {lines: number}}>) {
            throwIfAborted(options.signal, `reading ${file}`);
            flush(item.info.lines - 1);
            const row = validate(item.record, options.schema, file, item.info.lines, report);
            if (row != null) yield row;
        }
        flush(Number.POSITIVE_INFINITY);
    } catch (err) {
        if (err instanceof DataError || (err instanceof Error && err.name === "AbortError")) throw err;
        throw csvError(file, err as CsvError);
    } finally {
        parser.destroy();
    }
}

function csvError(file: string, err: CsvError): DataError {
    const line = typeof err.lines === "number" ? err.lines : undefined;
    const message = err.message.replace(/\s*at line \d+/i, "");
    return new DataError(file, `not valid CSV (${message})`, line, undefined, {cause: err});
}
