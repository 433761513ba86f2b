// Tensor data of the types an adapter or a merge reads and writes, to and from F32: F32,
// F16, BF16 (round to nearest even) and Q8_0 (ggml's reference layout: per 32 values an F16
// scale, amax / 127, and 32 signed bytes).
import {StillError} from "../errors.js";

export const GgmlType = {F32: 0, F16: 1, Q8_0: 8, BF16: 30} as const;
const Q8_BLOCK = 32;
const Q8_BYTES = 34;

export function isSupportedType(type: number): boolean {
    return type === GgmlType.F32 || type === GgmlType.F16 || type === GgmlType.BF16 || type === GgmlType.Q8_0;
}

/** Bytes of `n` values of `type`. */
export function tensorBytes(type: number, n: number): number {
    switch (type) {
        case GgmlType.F32: return 4 * n;
        case GgmlType.F16: case GgmlType.BF16: return 2 * n;
        case GgmlType.Q8_0: return (n / Q8_BLOCK) * Q8_BYTES;
        default: throw new StillError(`tensor type ${type} is not one of F32, F16, BF16, Q8_0`);
    }
}

export function f32(buf: Buffer): Float32Array {
    const out = new Float32Array(buf.length / 4);
    Buffer.from(out.buffer).set(buf);
    return out;
}

function halfToFloat(h: number): number {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) return sign * frac * 2 ** -24;
    if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
    return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function halfToF32(buf: Buffer, bf16: boolean): Float32Array {
    const out = new Float32Array(buf.length / 2);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < out.length; i++) {
        const h = buf.readUInt16LE(2 * i);
        if (bf16) u[i] = h << 16;
        else out[i] = halfToFloat(h);
    }
    return out;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

function floatToHalf(v: number): number {
    scratch[0] = v;
    const x = scratchBits[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let frac = x & 0x7fffff;
    if (exp === 0xff) return sign | 0x7c00 | (frac !== 0 ? 0x200 : 0);
    let e = exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00;
    if (e <= 0) {
        if (e < -10) return sign;
        frac |= 0x800000;
        const shift = 14 - e;
        let half = frac >>> shift;
        const rest = frac & ((1 << shift) - 1), mid = 1 << (shift - 1);
        if (rest > mid || (rest === mid && (half & 1) === 1)) half++;
        return sign | half;
    }
    let half = (e << 10) | (frac >>> 13);
    const rest = frac & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) half++;
    e = half >>> 10;
    return sign | half;
}

function floatToBf16(v: number): number {
    scratch[0] = v;
    const x = scratchBits[0]!;
    if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
    return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** `n` values of `type` in `buf` as F32. */
export function decodeTensor(type: number, buf: Buffer, n: number): Float32Array {
    switch (type) {
        case GgmlType.F32: return f32(buf);
        case GgmlType.F16: return halfToF32(buf, false);
        case GgmlType.BF16: return halfToF32(buf, true);
        case GgmlType.Q8_0: {
            const out = new Float32Array(n);
            for (let b = 0; b < n / Q8_BLOCK; b++) {
                const d = halfToFloat(buf.readUInt16LE(b * Q8_BYTES));
                for (let i = 0; i < Q8_BLOCK; i++) out[b * Q8_BLOCK + i] = d * buf.readInt8(b * Q8_BYTES + 2 + i);
            }
            return out;
        }
        default: throw new StillError(`tensor type ${type} is not one of F32, F16, BF16, Q8_0`);
    }
}

/** F32 values as `type`. */
export function encodeTensor(type: number, data: Float32Array): Buffer {
    const out = Buffer.alloc(tensorBytes(type, data.length));
    switch (type) {
        case GgmlType.F32:
            Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out);
            return out;
        case GgmlType.F16: case GgmlType.BF16: {
            const conv = type === GgmlType.F16 ? floatToHalf : floatToBf16;
            for (let i = 0; i < data.length; i++) out.writeUInt16LE(conv(data[i]!), 2 * i);
            return out;
        }
        case GgmlType.Q8_0: {
            for (let b = 0; b < data.length / Q8_BLOCK; b++) {
                let amax = 0;
                for (let i = 0; i < Q8_BLOCK; i++) amax = Math.max(amax, Math.abs(data[b * Q8_BLOCK + i]!));
                const d = amax / 127;
                const id = d !== 0 ? 1 / d : 0;
                out.writeUInt16LE(floatToHalf(d), b * Q8_BYTES);
                for (let i = 0; i < Q8_BLOCK; i++) out.writeInt8(Math.round(data[b * Q8_BLOCK + i]! * id), b * Q8_BYTES + 2 + i);
            }
            return out;
        }
        default: throw new StillError(`tensor type ${type} is not one of F32, F16, BF16, Q8_0`);
    }
}
