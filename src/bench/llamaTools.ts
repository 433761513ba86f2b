// llama.cpp's own tools for benchmarks: built from the bundled source on first use,
// linked to the same llama.cpp libraries as the addon's variant, then cached in build/.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {execa} from "execa";
import lockfile from "proper-lockfile";
import {z} from "zod";
import {makeModel} from "../models/makeModel.js";
import {type VariantInfo, buildDir, chosenCpuBackend, getBackend, packageRoot} from "../engine/binding.js";
import {StillError} from "../errors.js";

/**
 * The tool linked to `variant`'s libraries, built on first use. A variant without
 * llama.cpp's common library (a source build made before it was built too) falls back to
 * the CPU variant's, which `log` reports.
 */
export async function llamaTool(tool: "llama-batched-bench" | "llama-perplexity" | "llama-finetune" | "llama-server", variant: VariantInfo,
                                log: (line: string) => void): Promise<{binary: string, variant: VariantInfo}> {
    const candidates = [variant, ...getBackend().manifest.variants.filter((v) => v.name === "cpu" && v !== variant && v.name !== variant.name)];
    const failures: string[] = [];
    for (const v of candidates) {
        const target = `${tool}-${v.name}`;
        const binary = path.join(buildDir, target);
        if (!fs.existsSync(binary)) {
            const failure = await buildOnce(target, binary, log);
            if (failure != null) {
                failures.push(`${target}: ${failure}`);
                continue;
            }
        }
        if (v !== variant) log(`the ${variant.name} libraries lack llama.cpp's common library; ${tool} runs on the ${v.name} libraries`);
        return {binary, variant: v};
    }
    throw new StillError(`could not build ${tool} (${failures.join("; ")}); a source build needs \`npm run build:source\` again to add llama.cpp's common library.`);
}

/**
 * Builds one tool target under a lock on the build directory: several processes asking
 * at once (test files run in parallel) wait for one build instead of racing in the same
 * tree, and none sees a binary the linker is still writing. Returns why it failed, or null.
 */
async function buildOnce(target: string, binary: string, log: (line: string) => void): Promise<string | null> {
    const release = await lockfile.lock(buildDir, {
        lockfilePath: path.join(buildDir, ".tools.lock"),
        retries: {retries: 600, minTimeout: 500, maxTimeout: 1000}
    });
    try {
        if (fs.existsSync(binary)) return null;
        log(`building ${target} from the bundled llama.cpp source (once)…`);
        const res = await execa("cmake", ["--build", path.join(packageRoot, "build"), "--target", target], {reject: false, all: true});
        if (res.exitCode !== 0 || !fs.existsSync(binary)) return (res.all ?? "").split("\n").slice(-3).join(" ");
        return null;
    } finally {
        await release();
    }
}

/** The benchmarks' switch for their node-llama-cpp peer: the schema field and its command-line flag. */
export const nodeLlamaCppField = z.boolean().describe("Measure node-llama-cpp too (its own prebuilt libraries)").default(true);
export const nodeLlamaCppFlag = {flags: "--no-node-llama-cpp", help: "Skip node-llama-cpp (where its libraries are not installed, as on the GPU check's machine)"};

/** llama.cpp tools' flags for offloading every layer where the variant has a GPU (the addon offloads every layer there too). */
export function gpuLayersArgs(hasGpu: boolean): string[] {
    return hasGpu ? ["-ngl", "999"] : [];
}

/** The ISA variant of the ggml CPU backend library named in `text` (a log, a process's mappings), or null. */
export function cpuBackendIn(text: string): string | null {
    const m = /libggml-cpu(?:-([\w.]+))?\.(?:so|dylib)/.exec(text);
    return m == null ? null : (m[1] ?? "generic");
}

/**
 * A folder holding only the ggml CPU backend module `name` of the variant (a link to it),
 * removed when the process exits: programs that load every module of a folder (llama.cpp's
 * tools from their working folder, still-train from --backend-dir) run on that one there.
 * Undefined where no module is named (unset or "auto").
 */
export function cpuBackendFolder(variant: VariantInfo, name: string | undefined): {name: string, dir: string} | undefined {
    const file = chosenCpuBackend(variant, name);
    if (file == null || name == null) return undefined;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "still-bench-cpu-"));
    fs.symlinkSync(file, path.join(dir, path.basename(file)));
    process.on("exit", () => fs.rmSync(dir, {recursive: true, force: true}));
    return {name, dir};
}

/** The working directory where a variant's programs find their backend modules. */
export function toolCwd(variant: VariantInfo) {
    return path.resolve(packageRoot, variant.libDir);
}

/** Runs a program under GNU time (where installed) for its peak RSS; never rejects. */
export async function runMeasured(command: string, args: string[], options: {cwd?: string, all?: boolean} = {}) {
    const time = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : null;
    const res = await execa(time ?? command, time == null ? args : ["-f", "peak_rss_kb=%M", command, ...args],
        {reject: false, all: options.all ?? false, ...(options.cwd == null ? {} : {cwd: options.cwd})});
    const kb = /peak_rss_kb=(\d+)/.exec(res.stderr)?.[1];
    return {res, peakRssMb: kb == null ? null : Math.round(Number(kb) / 1024)};
}

/** The median of some figures (NaN for none). */
export function median(xs: readonly number[]): number {
    const s = [...xs].sort((a, b) => a - b);
    return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Seconds from a llama.cpp log time stamp "m.ss.mmm.uuu" matched as four groups. */
export function logSeconds(m: RegExpMatchArray | RegExpExecArray): number {
    return Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) / 1e3 + Number(m[4]) / 1e6;
}

/** The benchmarks' model: the given one, or the qwen2.5-0.5b preset at Q8_0, made once in models/. */
export async function benchModel(given: string | undefined, log: (line: string) => void): Promise<string> {
    // absolute: the llama.cpp tools run in their libraries' folder
    if (given != null) return path.resolve(given);
    const model = path.join(packageRoot, "models", "qwen2.5-0.5b-q8_0.gguf");
    if (!fs.existsSync(model)) {
        log(`making ${path.relative(process.cwd(), model)} (the qwen2.5-0.5b preset, random weights)…`);
        await makeModel({preset: "qwen2.5-0.5b", type: "q8_0", out: model});
    }
    return model;
}
