// The decode options that the rollout engine and the scorer share (native/engine/decode.h,
// DecodeParams), declared once, and the thread count used when none is given.
import os from "node:os";
import {z} from "zod";
import type {NativeDecodeOptions} from "./native.js";

export const decodeOptionFields = {
    batchSize: z.number().int().min(1).describe("Most tokens per llama_decode call").default(2048),
    ubatchSize: z.number().int().min(1).describe("Most tokens per compute graph inside a decode").default(512),
    threads: z.number().int().min(1).optional().describe("CPU threads; default: STILL_THREADS, else every available CPU")
};

export const flashAttentionSchema = z.enum(["auto", "on", "off"]);

/** llama.cpp threads when none are given: STILL_THREADS, else every available CPU. */
export function defaultThreads() {
    const fromEnv = Number.parseInt(process.env.STILL_THREADS ?? "", 10);
    return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : Math.max(1, os.availableParallelism());
}

export function nativeDecodeOptions(o: {parallel: number, batchSize: number, ubatchSize: number, threads?: number | undefined,
    flashAttention: z.infer<typeof flashAttentionSchema>}): NativeDecodeOptions {
    return {
        parallel: o.parallel, batchSize: o.batchSize, ubatchSize: o.ubatchSize, threads: o.threads ?? defaultThreads(),
        flashAttn: {auto: -1, on: 1, off: 0}[o.flashAttention]
    };
}
