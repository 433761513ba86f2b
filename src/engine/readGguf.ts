// A defensive GGUF header reader. Every length and count is checked against the bytes
// the file still has before anything is read or allocated, so a damaged file yields a
// GgufFormatError, never a huge allocation or a crash. (node-llama-cpp's reader passes
// corrupt string lengths straight to fs.read, which aborts Node 20.)
import fs from "node:fs/promises";

export const GgufType = {
    UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7,
    STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12
} as const;
const typeNames = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"];
const scalarSizes = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

export type GgufScalar = number | bigint | boolean | string;
export type GgufKv =
    | {type: number, value: GgufScalar}
    | {type: typeof GgufType.ARRAY, elementType: number, length: number, /** the first `keepArray` elements */ values: GgufScalar[]};

export type GgufTensorInfo = {name: string, dims: number[], type: number, offset: bigint};

export type GgufHeader = {
    version: number,
    kv: Map<string, GgufKv>,
    tensors: GgufTensorInfo[],
    alignment: number,
    /** Where tensor data starts (end of the header, aligned). */
    dataOffset: number,
    fileSize: number
};

export class GgufFormatError extends Error {}

const MAX_NAME = 64; // GGML_MAX_NAME, counting the terminating NUL
const MAX_DIMS = 4;

export async function readGgufHeader(file: string, options: {keepArray?: number} = {}): Promise<GgufHeader> {
    const keepArray = options.keepArray ?? 16;
    const handle = await fs.open(file, "r");
    try {
        const {size} = await handle.stat();
        const r = new Reader(handle, size);
        const magic = (await r.bytes(4)).toString("latin1");
        if (magic !== "GGUF") throw new GgufFormatError(`not a GGUF file (magic ${JSON.stringify(magic)})`);
        const version = await r.u32();
        if (version !== 2 && version !== 3) throw new GgufFormatError(`GGUF version ${version} is not supported (2 and 3 are)`);
        const tensorCount = await r.u64();
        const kvCount = await r.u64();
        // Smallest possible entries: a key (length + 1 byte) with type and a 1-byte value;
        // a tensor info (name length + 1 byte, n_dims, one dim, type, offset).
        if (tensorCount * 33n + kvCount * 14n > BigInt(size))
            throw new GgufFormatError(`the header claims ${tensorCount} tensors and ${kvCount} metadata entries, more than ${size} bytes can hold`);

        const kv = new Map<string, GgufKv>();
        for (let i = 0; i < Number(kvCount); i++) {
            const key = await r.string("metadata key");
            if (kv.has(key)) throw new GgufFormatError(`metadata key ${key} appears twice`);
            const type = await r.u32();
            if (type === GgufType.ARRAY) {
                const elementType = await r.u32();
                if (elementType === GgufType.ARRAY || elementType >= typeNames.length)
                    throw new GgufFormatError(`metadata ${key} is an array of unknown type ${elementType}`);
                const length = await r.u64();
                const minBytes = elementType === GgufType.STRING ? 8n : BigInt(scalarSizes[elementType]!);
                if (length * minBytes > BigInt(r.remaining))
                    throw new GgufFormatError(`metadata ${key} claims ${length} elements, more than the file holds`);
                const n = Number(length);
                const kept = Math.min(n, keepArray);
                const values: GgufScalar[] = [];
                for (let j = 0; j < kept; j++) values.push(await r.scalar(elementType, key));
                if (elementType === GgufType.STRING) for (let j = kept; j < n; j++) await r.skip(Number(await r.u64()), key);
                else await r.skip(scalarSizes[elementType]! * (n - kept), key);
                kv.set(key, {type, elementType, length: n, values});
            } else if (type < typeNames.length) {
                kv.set(key, {type, value: await r.scalar(type, key)});
            } else {
                throw new GgufFormatError(`metadata ${key} has unknown type ${type}`);
            }
        }

        const tensors: GgufTensorInfo[] = [];
        const names = new Set<string>();
        for (let i = 0; i < Number(tensorCount); i++) {
            const name = await r.string("tensor name");
            if (Buffer.byteLength(name) >= MAX_NAME) throw new GgufFormatError(`tensor name ${JSON.stringify(name.slice(0, 80))} is longer than ${MAX_NAME - 1} bytes`);
            if (names.has(name)) throw new GgufFormatError(`tensor ${name} appears twice`);
            names.add(name);
            const nDims = await r.u32();
            if (nDims < 1 || nDims > MAX_DIMS) throw new GgufFormatError(`tensor ${name} has ${nDims} dimensions`);
            const dims: number[] = [];
            for (let d = 0; d < nDims; d++) {
                const n = await r.u64();
                if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufFormatError(`tensor ${name} has an impossible dimension ${n}`);
                dims.push(Number(n));
            }
            const type = await r.u32();
            const offset = await r.u64();
            tensors.push({name, dims, type, offset});
        }

        const alignKv = kv.get("general.alignment");
        const alignment = alignKv != null && "value" in alignKv ? Number(alignKv.value) : 32;
        if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0)
            throw new GgufFormatError(`general.alignment ${String(alignment)} is not a power of two`);
        const dataOffset = Math.ceil(r.position / alignment) * alignment;
        return {version, kv, tensors, alignment, dataOffset, fileSize: size};
    } finally {
        await handle.close();
    }
}

export function ggufTypeName(type: number) {
    return typeNames[type] ?? `type ${type}`;
}

/** Sequential reads over a file through a buffer, refusing to go past its end. */
class Reader {
    private buf = Buffer.alloc(0);
    private bufStart = 0;
    position = 0;

    constructor(private readonly handle: fs.FileHandle, private readonly size: number) {}

    get remaining() {
        return this.size - this.position;
    }

    private async need(n: number, what = "header") {
        if (n > this.remaining)
            throw new GgufFormatError(`the file ends inside the ${what} (needs ${n} more bytes at offset ${this.position}, has ${this.remaining})`);
        const end = this.position + n;
        if (end <= this.bufStart + this.buf.length) return;
        const length = Math.min(Math.max(n, 1 << 20), this.size - this.position);
        const next = Buffer.alloc(length);
        const {bytesRead} = await this.handle.read(next, 0, length, this.position);
        if (bytesRead < n) throw new GgufFormatError(`could not read ${n} bytes at offset ${this.position}`);
        this.buf = next.subarray(0, bytesRead);
        this.bufStart = this.position;
    }

    private at() {
        return this.position - this.bufStart;
    }

    async bytes(n: number, what?: string) {
        await this.need(n, what);
        const out = this.buf.subarray(this.at(), this.at() + n);
        this.position += n;
        return out;
    }

    async skip(n: number, what?: string) {
        if (n > this.remaining) throw new GgufFormatError(`the file ends inside ${what ?? "the header"}`);
        this.position += n;
    }

    async u32() {
        return (await this.bytes(4)).readUInt32LE(0);
    }

    async u64() {
        return (await this.bytes(8)).readBigUInt64LE(0);
    }

    async string(what: string) {
        const n = await this.u64();
        if (n > BigInt(this.remaining)) throw new GgufFormatError(`a ${what} claims ${n} bytes, more than the file holds`);
        return (await this.bytes(Number(n), what)).toString("utf8");
    }

    async scalar(type: number, key: string): Promise<GgufScalar> {
        if (type === GgufType.STRING) return this.string(`value of ${key}`);
        const b = await this.bytes(scalarSizes[type]!, `value of ${key}`);
        switch (type) {
            case GgufType.UINT8: return b.readUInt8(0);
            case GgufType.INT8: return b.readInt8(0);
            case GgufType.UINT16: return b.readUInt16LE(0);
            case GgufType.INT16: return b.readInt16LE(0);
            case GgufType.UINT32: return b.readUInt32LE(0);
            case GgufType.INT32: return b.readInt32LE(0);
            case GgufType.FLOAT32: return b.readFloatLE(0);
            case GgufType.BOOL: return b.readUInt8(0) !== 0;
            case GgufType.UINT64: return b.readBigUInt64LE(0);
            case GgufType.INT64: return b.readBigInt64LE(0);
            case GgufType.FLOAT64: return b.readDoubleLE(0);
            default: throw new GgufFormatError(`metadata ${key} has unknown type ${type}`);
        }
    }
}
