// Checks a file before llama.cpp sees it: llama.cpp may abort the whole process on a
// damaged file, so every structural fact it relies on is verified here first.
import fs from "node:fs/promises";
import path from "node:path";
import {ModelError} from "../errors.js";
import {type GgufHeader, type GgufKv, type GgufScalar, GgufFormatError, ggufTypeName, readGgufHeader} from "./readGguf.js";

export type GgufMetadataValue = string | number | boolean | GgufMetadataValue[];

export type GgufInspection = {
    path: string,
    fileSize: number,
    version: number,
    architecture: string,
    /** general.type when present: "model", "adapter", ... */
    type: string | null,
    tensorCount: number,
    /** Elements in all tensors, and their bytes. */
    parameterCount: number,
    tensorBytes: number,
    /** Flat key -> value; arrays longer than 16 entries are summarised as "[N × type]". */
    metadata: Record<string, GgufMetadataValue>,
    splitParts: number
};

/** Sizes of the ggml tensor types, from the native addon (ggml's own tables). */
export type TypeSizes = (type: number) => {name: string, blockSize: number, typeSize: number} | null;

export async function inspectGguf(file: string, typeSizes: TypeSizes, options: {allowNoTensors?: boolean} = {}): Promise<GgufInspection> {
    await checkFile(file);
    const header = await readHeader(file);
    const metadata = Object.fromEntries([...header.kv].map(([k, v]) => [k, summarise(v)]));

    const architecture = metadata["general.architecture"];
    if (typeof architecture !== "string" || architecture === "")
        throw new ModelError(file, `${file} has no general.architecture string in its metadata, so it is not a model llama.cpp can load.`);
    const type = typeof metadata["general.type"] === "string" ? metadata["general.type"] as string : null;

    // A split model: llama.cpp opens the other parts itself, so check them too.
    const splitCount = typeof metadata["split.count"] === "number" ? metadata["split.count"] as number : 1;
    const parts = [header];
    if (splitCount > 1) {
        const m = /-(\d{5})-of-(\d{5})\.gguf$/.exec(file);
        if (m == null || Number(m[1]) !== 1)
            throw new ModelError(file, `${file} is part of a split model (${splitCount} parts); load the first part, named *-00001-of-${String(splitCount).padStart(5, "0")}.gguf.`);
        for (let i = 2; i <= splitCount; i++) {
            const part = `${file.slice(0, m.index)}-${String(i).padStart(5, "0")}-of-${m[2]}.gguf`;
            await checkFile(part);
            parts.push(await readHeader(part));
        }
    }

    let tensorCount = 0;
    let parameterCount = 0;
    let tensorBytes = 0;
    for (const [i, part] of parts.entries()) {
        const partFile = i === 0 ? file : `${path.basename(file)} part ${i + 1}`;
        tensorBytes += checkTensors(file, partFile, part, typeSizes);
        tensorCount += part.tensors.length;
        for (const t of part.tensors) parameterCount += t.dims.reduce((a, b) => a * b, 1);
    }
    if (tensorCount === 0 && !options.allowNoTensors)
        throw new ModelError(file, `${file} holds no tensors (a vocabulary-only file?); load it with vocabOnly to read its tokenizer.`);

    return {
        path: file, fileSize: header.fileSize, version: header.version, architecture, type,
        tensorCount, parameterCount, tensorBytes, metadata, splitParts: parts.length
    };
}

/** Checks each tensor's type, shape and extent; returns their total bytes. */
function checkTensors(file: string, where: string, header: GgufHeader, typeSizes: TypeSizes): number {
    let total = 0n;
    for (const t of header.tensors) {
        const sizes = typeSizes(t.type);
        if (sizes == null)
            throw new ModelError(file, `${where}: tensor ${t.name} has ggml type ${t.type}, which this llama.cpp does not know.`);
        if (t.dims.some((d) => d < 0))
            throw new ModelError(file, `${where}: tensor ${t.name} has impossible dimensions [${t.dims.join(", ")}].`);
        const cols = t.dims[0]!;
        if (cols % sizes.blockSize !== 0)
            throw new ModelError(file, `${where}: tensor ${t.name} has ${cols} columns, not a multiple of the ${sizes.name} block size ${sizes.blockSize}.`);
        if (t.offset % BigInt(header.alignment) !== 0n)
            throw new ModelError(file, `${where}: tensor ${t.name} starts at offset ${t.offset}, not aligned to ${header.alignment} bytes (damaged tensor list).`);
        const bytes = t.dims.slice(1).reduce((n, d) => n * BigInt(d), BigInt(cols / sizes.blockSize) * BigInt(sizes.typeSize));
        const end = BigInt(header.dataOffset) + t.offset + bytes;
        if (end > BigInt(header.fileSize))
            throw new ModelError(file, `${where} is truncated: tensor ${t.name} needs bytes up to ${end} but the file ends at ${header.fileSize}.`);
        total += bytes;
    }
    return Number(total);
}

async function checkFile(file: string) {
    let stat;
    try {
        stat = await fs.stat(file);
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") throw new ModelError(file, `${file} does not exist.`);
        if (code === "EACCES") throw new ModelError(file, `${file} cannot be read (permission denied).`);
        throw new ModelError(file, `${file} cannot be read (${code ?? String(err)}).`, {cause: err});
    }
    if (stat.isDirectory()) throw new ModelError(file, `${file} is a directory, not a GGUF model file.`);
    if (!stat.isFile()) throw new ModelError(file, `${file} is not a regular file.`);
    if (stat.size === 0) throw new ModelError(file, `${file} is empty, not a GGUF model.`);

    const handle = await fs.open(file, "r");
    const head = Buffer.alloc(Math.min(64, stat.size));
    try {
        await handle.read(head, 0, head.length, 0);
    } finally {
        await handle.close();
    }
    if (head.length >= 4 && head.toString("latin1", 0, 4) === "GGUF") return;
    if (looksLikeText(head)) throw new ModelError(file, `${file} is a text file, not a GGUF model.`);
    const bytes = [...head.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new ModelError(file, `${file} is not a GGUF model (it starts with bytes ${bytes}, not "GGUF").`);
}

async function readHeader(file: string): Promise<GgufHeader> {
    try {
        return await readGgufHeader(file);
    } catch (err) {
        if (!(err instanceof GgufFormatError)) throw err;
        const version = /GGUF version (\d+)/.exec(err.message);
        if (version?.[1] === "1")
            throw new ModelError(file, `${file} is GGUF version 1, which llama.cpp no longer reads; convert it again with a current llama.cpp.`);
        throw new ModelError(file, `${file} is truncated or damaged: ${err.message}.`, {cause: err});
    }
}

function looksLikeText(buf: Buffer) {
    let printable = 0;
    for (const b of buf) if (b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127) || b >= 0xc0) printable++;
    return buf.length > 0 && printable / buf.length > 0.9;
}

function summarise(kv: GgufKv): GgufMetadataValue {
    if ("value" in kv) return scalar(kv.value);
    if (kv.length > kv.values.length) return `[${kv.length} × ${ggufTypeName(kv.elementType)}]`;
    return kv.values.map(scalar);
}

function scalar(v: GgufScalar): string | number | boolean {
    return typeof v === "bigint" ? Number(v) : v;
}
