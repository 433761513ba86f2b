// A Parquet reader over hyparquet (pure JavaScript), one row group at a time so a large
// file never sits in memory whole. Rows are numbered from 1 in reports ("file:row").
import {asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, type AsyncBuffer, type FileMetaData} from "hyparquet";
import {compressors} from "hyparquet-compressors";
import {z} from "zod";
import {DataError, throwIfAborted} from "../errors.js";
import {issueReporter, validate, type ReadOptions, type Row} from "./jsonl.js";

/** Streams the rows of a Parquet file as objects by column name. */
export async function* readParquet<S extends z.ZodType = z.ZodUnknown>(file: string, options: Omit<ReadOptions<S>, "maxLineBytes"> = {}): AsyncGenerator<Row<z.output<S>>> {
    const report = issueReporter(options);
    let buffer: AsyncBuffer;
    let metadata: FileMetaData;
    try {
        buffer = await asyncBufferFromFile(file);
        metadata = await parquetMetadataAsync(buffer);
    } catch (err) {
        throw new DataError(file, `not a readable Parquet file (${(err as Error).message})`, undefined, undefined, {cause: err});
    }
    let rowStart = 0;
    for (const group of metadata.row_groups) {
        throwIfAborted(options.signal, `reading ${file}`);
        const rowEnd = rowStart + Number(group.num_rows);
        let rows: Record<string, unknown>[];
        try {
            rows = await parquetReadObjects({file: buffer, metadata, rowStart, rowEnd, compressors});
        } catch (err) {
            throw new DataError(file, `cannot decode rows ${rowStart + 1}–${rowEnd} (${(err as Error).message})`, rowStart + 1, undefined, {cause: err});
        }
        for (const [k, raw] of rows.entries()) {
            const row = validate(plain(raw), options.schema, file, rowStart + k + 1, report);
            if (row != null) yield row;
        }
        rowStart = rowEnd;
    }
}

/** 64-bit integers arrive as BigInt: numbers when they fit, decimal strings otherwise. */
function plain(value: unknown): unknown {
    if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
    if (Array.isArray(value)) return value.map(plain);
    if (value != null && typeof value === "object" && !(value instanceof Date) && !(value instanceof Uint8Array))
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
    return value;
}
