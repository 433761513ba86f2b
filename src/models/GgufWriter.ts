// A streaming GGUF (version 3) writer for F32 models: metadata, tensor infos, then
// tensor data produced chunk by chunk, so a 2 GB model never sits in memory.
import fs from "node:fs/promises";

// GGUF metadata value types (the ones this writer emits).
const ValueType = {UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9} as const;
const GGML_TYPE_F32 = 0;
const ALIGNMENT = 32;
const CHUNK_ELEMENTS = 1 << 20;

type KvEntry = {key: string, write: (b: ByteWriter) => void};

/** Fills `out` with the tensor's elements starting at flat index `start`. */
export type TensorFill = (start: number, out: Float32Array) => void;

type TensorEntry = {name: string, dims: number[], fill: TensorFill, elements: number};

export class GgufWriter {
    private readonly kv: KvEntry[] = [];
    private readonly tensors: TensorEntry[] = [];

    string(key: string, value: string) {
        return this.add(key, (b) => { b.u32(ValueType.STRING); b.str(value); });
    }
    u32(key: string, value: number) {
        return this.add(key, (b) => { b.u32(ValueType.UINT32); b.u32(value); });
    }
    i32(key: string, value: number) {
        return this.add(key, (b) => { b.u32(ValueType.INT32); b.i32(value); });
    }
    f32(key: string, value: number) {
        return this.add(key, (b) => { b.u32(ValueType.FLOAT32); b.f32(value); });
    }
    bool(key: string, value: boolean) {
        return this.add(key, (b) => { b.u32(ValueType.BOOL); b.u8(value ? 1 : 0); });
    }
    strings(key: string, values: readonly string[]) {
        return this.add(key, (b) => {
            b.u32(ValueType.ARRAY); b.u32(ValueType.STRING); b.u64(values.length);
            for (const v of values) b.str(v);
        });
    }
    i32s(key: string, values: readonly number[]) {
        return this.add(key, (b) => {
            b.u32(ValueType.ARRAY); b.u32(ValueType.INT32); b.u64(values.length);
            for (const v of values) b.i32(v);
        });
    }

    /** An F32 tensor; `dims` in ggml order (fastest-varying first). */
    tensor(name: string, dims: readonly number[], fill: TensorFill) {
        if (this.tensors.some((t) => t.name === name)) throw new Error(`duplicate tensor ${name}`);
        if (dims.length < 1 || dims.length > 4 || dims.some((d) => !Number.isInteger(d) || d <= 0))
            throw new Error(`tensor ${name}: bad dimensions [${dims.join(", ")}]`);
        this.tensors.push({name, dims: [...dims], fill, elements: dims.reduce((a, b) => a * b, 1)});
        return this;
    }

    get parameterCount() {
        return this.tensors.reduce((n, t) => n + t.elements, 0);
    }

    /** Writes the file; `onProgress(doneBytes, totalBytes)` follows the tensor data. */
    async write(path: string, options: {onProgress?: (done: number, total: number) => void, signal?: AbortSignal} = {}) {
        const head = new ByteWriter();
        head.raw(Buffer.from("GGUF", "latin1"));
        head.u32(3);
        head.u64(this.tensors.length);
        head.u64(this.kv.length);
        for (const e of this.kv) {
            head.str(e.key);
            e.write(head);
        }
        let offset = 0;
        for (const t of this.tensors) {
            head.str(t.name);
            head.u32(t.dims.length);
            for (const d of t.dims) head.u64(d);
            head.u32(GGML_TYPE_F32);
            head.u64(offset);
            offset = align(offset + t.elements * 4);
        }
        const total = offset;
        head.pad(ALIGNMENT);

        const file = await fs.open(path, "w");
        try {
            await file.write(head.bytes());
            const chunk = new Float32Array(CHUNK_ELEMENTS);
            const zeros = Buffer.alloc(ALIGNMENT);
            let done = 0;
            for (const t of this.tensors) {
                for (let start = 0; start < t.elements; start += CHUNK_ELEMENTS) {
                    options.signal?.throwIfAborted();
                    const view = chunk.subarray(0, Math.min(CHUNK_ELEMENTS, t.elements - start));
                    t.fill(start, view);
                    await file.write(new Uint8Array(view.buffer, 0, view.byteLength));
                    done += view.byteLength;
                    options.onProgress?.(done, total);
                }
                const padding = align(t.elements * 4) - t.elements * 4;
                if (padding > 0) {
                    await file.write(zeros.subarray(0, padding));
                    done += padding;
                }
            }
        } finally {
            await file.close();
        }
    }

    private add(key: string, write: (b: ByteWriter) => void) {
        if (this.kv.some((e) => e.key === key)) throw new Error(`duplicate metadata key ${key}`);
        this.kv.push({key, write});
        return this;
    }
}

function align(n: number) {
    return Math.ceil(n / ALIGNMENT) * ALIGNMENT;
}

/** A growable little-endian byte buffer for the header. */
class ByteWriter {
    private buf = Buffer.alloc(1 << 16);
    private len = 0;

    private reserve(n: number) {
        if (this.len + n <= this.buf.length) return;
        const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
        this.buf.copy(next, 0, 0, this.len);
        this.buf = next;
    }
    u8(v: number) { this.reserve(1); this.buf.writeUInt8(v, this.len); this.len += 1; }
    u32(v: number) { this.reserve(4); this.buf.writeUInt32LE(v, this.len); this.len += 4; }
    i32(v: number) { this.reserve(4); this.buf.writeInt32LE(v, this.len); this.len += 4; }
    f32(v: number) { this.reserve(4); this.buf.writeFloatLE(v, this.len); this.len += 4; }
    u64(v: number) { this.reserve(8); this.buf.writeBigUInt64LE(BigInt(v), this.len); this.len += 8; }
    raw(bytes: Uint8Array) { this.reserve(bytes.length); this.buf.set(bytes, this.len); this.len += bytes.length; }
    str(s: string) {
        const bytes = Buffer.from(s, "utf8");
        this.u64(bytes.length);
        this.raw(bytes);
    }
    pad(alignment: number) {
        const n = Math.ceil(this.len / alignment) * alignment - this.len;
        this.reserve(n);
        this.buf.fill(0, this.len, this.len + n);
        this.len += n;
    }
    bytes() { return this.buf.subarray(0, this.len); }
}
