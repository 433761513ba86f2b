// Checks a file before llama.cpp sees it: llama.cpp may abort the whole process on a
// damaged file, so every structural fact it relies on is verified here first.
import fs from "node:fs/promises";
import {readGgufFileInfo} from "node-llama-cpp";
import {ModelError} from "../errors.js";

export type GgufMetadataValue = string | number | boolean | GgufMetadataValue[];

export type GgufInspection = {
    path: string,
    fileSize: number,
    version: number,
    architecture: string,
    /** general.type when present: "model", "adapter", ... */
    type: string | null,
    tensorCount: number,
    /** Flat key -> value; arrays longer than 16 entries are summarised as "[N × type]". */
    metadata: Record<string, GgufMetadataValue>,
    splitParts: number
};

/** Sizes of the ggml tensor types, from the native addon (ggml's own tables). */
export type TypeSizes = (type: number) => {name: string, blockSize: number, typeSize: number} | null;

const headerSize = 24; // magic, version, tensor count, metadata count
// The smallest a metadata entry (key length + 1-byte key + type + 1-byte value) and a
// tensor info (name length + 1-byte name + n_dims + one dim + type + offset) can be.
const minKvBytes = 8 + 1 + 4 + 1;
const minTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
// Big vocabulary arrays are not needed for validation; llama.cpp checks them itself.
const ignoredKeys = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"];

export async function inspectGguf(file: string, typeSizes: TypeSizes, options: {allowNoTensors?: boolean} = {}): Promise<GgufInspection> {
    const fileSize = await checkFile(file);
    const {version, tensorCount, kvCount} = await readHeader(file, fileSize);

    if (tensorCount * minTensorInfoBytes + kvCount * minKvBytes > fileSize - headerSize)
        throw new ModelError(file, `${file} is truncated or damaged: its header claims ${tensorCount} tensors and ${kvCount} metadata entries, more than its ${fileSize} bytes can hold.`);

    let info: Awaited<ReturnType<typeof readGgufFileInfo>>;
    try {
        info = await readGgufFileInfo(file, {readTensorInfo: true, logWarnings: false, ignoreKeys: ignoredKeys, sourceType: "filesystem"});
    } catch (err) {
        throw new ModelError(file, `${file} has GGUF metadata that cannot be read (truncated or damaged: ${firstLine(err)}).`, {cause: err});
    }

    const metadata = flatten(info.metadata as Record<string, unknown>);
    const architecture = metadata["general.architecture"];
    if (typeof architecture !== "string" || architecture === "")
        throw new ModelError(file, `${file} has no general.architecture string in its metadata, so it is not a model llama.cpp can load.`);
    const type = typeof metadata["general.type"] === "string" ? metadata["general.type"] as string : null;

    const tensors = info.fullTensorInfo ?? info.tensorInfo ?? [];
    if (tensors.length === 0 && !options.allowNoTensors)
        throw new ModelError(file, `${file} holds no tensors (a vocabulary-only file?); load it with vocabOnly to read its tokenizer.`);
    const partSizes = await splitPartSizes(file, info.splicedParts, fileSize);
    for (const t of tensors) {
        const dims = t.dimensions.map(Number);
        const sizes = typeSizes(Number(t.ggmlType));
        if (sizes == null)
            throw new ModelError(file, `${file}: tensor ${t.name} has ggml type ${t.ggmlType}, which this llama.cpp does not know.`);
        if (dims.length === 0 || dims.length > 4 || dims.some((d) => !Number.isSafeInteger(d) || d < 0))
            throw new ModelError(file, `${file}: tensor ${t.name} has impossible dimensions [${dims.join(", ")}].`);
        if ((dims[0] ?? 0) % sizes.blockSize !== 0)
            throw new ModelError(file, `${file}: tensor ${t.name} has ${dims[0]} columns, not a multiple of the ${sizes.name} block size ${sizes.blockSize}.`);
        const rows = dims.slice(1).reduce((a, b) => a * b, 1);
        const bytes = ((dims[0] ?? 0) / sizes.blockSize) * sizes.typeSize * rows;
        const end = Number(t.fileOffset) + bytes;
        const partSize = partSizes[(t.filePart ?? 1) - 1] ?? fileSize;
        if (!Number.isSafeInteger(end) || end > partSize)
            throw new ModelError(file, `${file} is truncated: tensor ${t.name} needs bytes up to ${end} but the file ends at ${partSize}.`);
    }

    return {
        path: file,
        fileSize,
        version,
        architecture,
        type,
        tensorCount: tensors.length,
        metadata,
        splitParts: info.splicedParts
    };
}

async function checkFile(file: string): Promise<number> {
    let stat;
    try {
        stat = await fs.stat(file);
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") throw new ModelError(file, `${file} does not exist.`);
        if (code === "EACCES") throw new ModelError(file, `${file} cannot be read (permission denied).`);
        throw new ModelError(file, `${file} cannot be read (${code ?? firstLine(err)}).`, {cause: err});
    }
    if (stat.isDirectory()) throw new ModelError(file, `${file} is a directory, not a GGUF model file.`);
    if (!stat.isFile()) throw new ModelError(file, `${file} is not a regular file.`);
    if (stat.size === 0) throw new ModelError(file, `${file} is empty, not a GGUF model.`);
    return stat.size;
}

async function readHeader(file: string, fileSize: number) {
    const handle = await fs.open(file, "r");
    const head = Buffer.alloc(Math.min(headerSize, fileSize));
    try {
        await handle.read(head, 0, head.length, 0);
    } finally {
        await handle.close();
    }
    if (head.length < 4 || head.toString("latin1", 0, 4) !== "GGUF") {
        if (looksLikeText(head))
            throw new ModelError(file, `${file} is a text file, not a GGUF model.`);
        throw new ModelError(file, `${file} is not a GGUF model (it starts with bytes ${[...head.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ")}, not "GGUF").`);
    }
    if (head.length < headerSize)
        throw new ModelError(file, `${file} is truncated: it ends inside the GGUF header (${fileSize} bytes).`);
    const version = head.readUInt32LE(4);
    if (version === 1) throw new ModelError(file, `${file} is GGUF version 1, which llama.cpp no longer reads; convert it again with a current llama.cpp.`);
    if (version !== 2 && version !== 3) throw new ModelError(file, `${file} has GGUF version ${version}; only versions 2 and 3 exist (damaged header?).`);
    const tensorCount = head.readBigUInt64LE(8);
    const kvCount = head.readBigUInt64LE(16);
    const limit = BigInt(fileSize);
    if (tensorCount > limit || kvCount > limit)
        throw new ModelError(file, `${file} is truncated or damaged: its header claims ${tensorCount} tensors and ${kvCount} metadata entries, more than its ${fileSize} bytes can hold.`);
    return {version, tensorCount: Number(tensorCount), kvCount: Number(kvCount)};
}

function looksLikeText(buf: Buffer) {
    if (buf.length === 0) return false;
    let printable = 0;
    for (const b of buf) if (b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127) || b >= 0xc0) printable++;
    return printable / buf.length > 0.9;
}

async function splitPartSizes(file: string, parts: number, fileSize: number): Promise<number[]> {
    if (parts <= 1) return [fileSize];
    const m = /-(\d{5})-of-(\d{5})\.gguf$/.exec(file);
    if (m == null) return [fileSize];
    const sizes: number[] = [];
    for (let i = 1; i <= parts; i++) {
        const part = file.slice(0, m.index) + `-${String(i).padStart(5, "0")}-of-${m[2]}.gguf`;
        sizes.push(await checkFile(part));
    }
    return sizes;
}

function flatten(obj: Record<string, unknown>, prefix = "", out: Record<string, GgufMetadataValue> = {}) {
    for (const [key, value] of Object.entries(obj)) {
        const name = prefix === "" ? key : `${prefix}.${key}`;
        if (value != null && typeof value === "object" && !Array.isArray(value)) flatten(value as Record<string, unknown>, name, out);
        else out[name] = summarise(value);
    }
    return out;
}

function summarise(value: unknown): GgufMetadataValue {
    if (typeof value === "bigint") return Number(value);
    if (Array.isArray(value)) {
        if (value.length > 16) return `[${value.length} × ${typeof value[0]}]`;
        return value.map(summarise);
    }
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return value;
    return String(value);
}

function firstLine(err: unknown) {
    return (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";
}
