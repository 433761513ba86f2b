// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON
// header ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}),
// then the tensors' bytes, row-major. Read defensively: every length and offset is checked
// against the file before anything is read, so a damaged file is one DataError naming it.
import fs from "node:fs/promises";
import {DataError} from "../errors.js";

export const dtypeBytes = {F32: 4, F16: 2, BF16: 2} as const;
export type Dtype = keyof typeof dtypeBytes;

export type SafeTensor = {name: string, dtype: Dtype, shape: number[], data: Buffer};
export type SafeTensorsFile = {tensors: SafeTensor[], metadata: Record<string, string>};

const MAX_HEADER = 100 << 20;

export async function readSafetensors(file: string): Promise<SafeTensorsFile> {
    let bytes: Buffer;
    try {
        bytes = await fs.readFile(file);
    } catch (err) {
        throw new DataError(file, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (bytes.length < 8) throw new DataError(file, "not a safetensors file: shorter than its 8-byte header length");
    const headerLength = bytes.readBigUInt64LE(0);
    if (headerLength > BigInt(Math.min(MAX_HEADER, bytes.length - 8)))
        throw new DataError(file, `not a safetensors file: the header claims ${headerLength} bytes, the file has ${bytes.length - 8} after the length`);
    const start = 8 + Number(headerLength);
    let header: unknown;
    try {
        header = JSON.parse(bytes.subarray(8, start).toString("utf8"));
    } catch {
        throw new DataError(file, "not a safetensors file: its header is not JSON");
    }
    if (header == null || typeof header !== "object" || Array.isArray(header)) throw new DataError(file, "the header is not a JSON object");
    const tensors: SafeTensor[] = [];
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
        if (name === "__metadata__") {
            if (value == null || typeof value !== "object" || Object.values(value).some((v) => typeof v !== "string"))
                throw new DataError(file, "__metadata__ must map strings to strings", undefined, "__metadata__");
            metadata = value as Record<string, string>;
            continue;
        }
        const v = value as {dtype?: unknown, shape?: unknown, data_offsets?: unknown};
        if (typeof v?.dtype !== "string" || !(v.dtype in dtypeBytes))
            throw new DataError(file, `dtype ${JSON.stringify(v?.dtype)} is not supported (F32, F16, BF16 are)`, undefined, name);
        if (!Array.isArray(v.shape) || v.shape.some((d) => !Number.isSafeInteger(d) || d < 0))
            throw new DataError(file, "shape must be a list of whole numbers ≥ 0", undefined, name);
        const offsets = v.data_offsets;
        if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((o) => !Number.isSafeInteger(o) || o < 0) || offsets[0] > offsets[1])
            throw new DataError(file, "data_offsets must be [begin, end] with begin ≤ end", undefined, name);
        const dtype = v.dtype as Dtype;
        const shape = v.shape as number[];
        const expected = shape.reduce((a, b) => a * b, 1) * dtypeBytes[dtype];
        const [b0, b1] = offsets as [number, number];
        if (b1 - b0 !== expected)
            throw new DataError(file, `data_offsets span ${b1 - b0} bytes, but ${dtype} [${shape.join(", ")}] needs ${expected}`, undefined, name);
        if (start + b1 > bytes.length) throw new DataError(file, `the data ends at byte ${start + b1}, past the file's end (${bytes.length}): truncated?`, undefined, name);
        tensors.push({name, dtype, shape, data: bytes.subarray(start + b0, start + b1)});
    }
    return {tensors, metadata};
}

/** Writes tensors in the given order, the header padded with spaces to a multiple of 8 bytes (as the reference writer does). */
export async function writeSafetensors(file: string, tensors: readonly SafeTensor[], metadata: Record<string, string> = {}): Promise<void> {
    const header: Record<string, unknown> = {};
    if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
    let offset = 0;
    for (const t of tensors) {
        const n = t.shape.reduce((a, b) => a * b, 1) * dtypeBytes[t.dtype];
        if (n !== t.data.length) throw new Error(`tensor ${t.name}: ${t.data.length} bytes for ${t.dtype} [${t.shape.join(", ")}]`);
        header[t.name] = {dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n]};
        offset += n;
    }
    let json = Buffer.from(JSON.stringify(header), "utf8");
    const padded = Math.ceil(json.length / 8) * 8;
    json = Buffer.concat([json, Buffer.alloc(padded - json.length, " ")]);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    await fs.writeFile(file, Buffer.concat([length, json, ...tensors.map((t) => t.data)]));
}
