// Loads the native addon: one module per llama.cpp variant (CPU, CUDA, Vulkan, Metal, or a
// build made by `npm run build:source`), chosen at run time for this machine.
import fs from "node:fs";
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {z} from "zod";
import {NativeError} from "../errors.js";
import {type Device, type NativeAbortFlag, type NativeBinding, deviceSchema} from "./native.js";

const require = createRequire(import.meta.url);

const manifestSchema = z.object({
    release: z.string(),
    variants: z.array(z.object({
        name: z.string(),
        addon: z.string(),
        source: z.boolean(),
        gpu: z.enum(["cuda", "vulkan", "metal"]).nullable(),
        libDir: z.string(),
        fallbackBackendDirs: z.array(z.string())
    }))
});
export type {Device};
export type VariantInfo = z.infer<typeof manifestSchema>["variants"][number];

export type Backend = {
    binding: NativeBinding,
    variant: VariantInfo,
    manifest: z.infer<typeof manifestSchema>,
    release: string,
    devices: Device[],
    hasGpu: boolean,
    /** Set when the variant expected a GPU but none registered (missing driver or runtime). */
    warning?: string
};

/** The root of the still package (holds package.json, build/, node_modules/). */
export const packageRoot = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(from: string): string {
    for (let dir = from; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        try {
            const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as {name?: string};
            if (pkg.name === "still") return dir;
        } catch {
            // keep walking up
        }
    }
    throw new NativeError("cannot find the still package root above " + from);
}

export const buildDir = path.join(packageRoot, "build", "Release");

function readManifest() {
    const file = path.join(buildDir, "variants.json");
    let raw: unknown;
    try {
        raw = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch {
        throw new NativeError(`the native addon is not built (${file} is missing). ` +
            "Possible solutions: run `npm install` (or `npm run build:native`) in " + packageRoot + ".");
    }
    const parsed = manifestSchema.safeParse(raw);
    if (!parsed.success)
        throw new NativeError(`${file} is not a valid variant manifest; rebuild with \`npm run build:native\`.`);
    return parsed.data;
}

/** GPU kinds this machine appears to have a driver for. */
function detectGpuKinds(): Set<string> {
    const kinds = new Set<string>();
    if (process.platform === "linux" && fs.existsSync("/proc/driver/nvidia/version")) kinds.add("cuda");
    if (process.platform === "win32" && fs.existsSync(path.join(process.env.SystemRoot ?? "C:\\Windows", "System32", "nvcuda.dll")))
        kinds.add("cuda");
    if (process.platform === "darwin" && process.arch === "arm64") kinds.add("metal");
    return kinds;
}

/**
 * Candidate variants, best first: an explicit request (STILL_VARIANT or the `variant`
 * option) alone; otherwise source builds before prebuilt ones, and among each, GPU
 * variants this machine has a driver for before CPU. Vulkan is used only on request.
 */
export function rankVariants(variants: VariantInfo[], gpuKinds: Set<string>, requested?: string): VariantInfo[] {
    if (requested != null && requested !== "" && requested !== "auto") {
        const found = variants.find((v) => v.name === requested);
        if (found == null)
            throw new NativeError(`llama.cpp variant '${requested}' is not built; available: ${variants.map((v) => v.name).join(", ") || "none"}.`);
        return [found];
    }
    const usable = (v: VariantInfo) => v.gpu == null || (v.gpu !== "vulkan" && gpuKinds.has(v.gpu));
    const score = (v: VariantInfo) => (v.source ? 2 : 0) + (v.gpu != null ? 1 : 0);
    return variants.filter(usable).sort((a, b) => score(b) - score(a));
}

/** ggml's CPU backend modules in a variant's library folder: ISA variant name → file. */
export function cpuBackendModules(variant: VariantInfo): Map<string, string> {
    const dir = path.resolve(packageRoot, variant.libDir);
    const out = new Map<string, string>();
    let files: string[] = [];
    try {
        files = fs.readdirSync(dir);
    } catch {
        // a variant without a library folder of its own (a static source build)
    }
    for (const f of files) {
        const m = /^(?:lib)?ggml-cpu-([\w.]+)\.(?:so|dylib|dll)$/.exec(f);
        if (m != null) out.set(m[1]!, path.join(dir, f));
    }
    return out;
}

/**
 * The CPU backend module STILL_GGML_CPU names (one of ggml's ISA variants: haswell,
 * alderlake, zen4, …) in the cpu variant's library folder, to run that variant instead of
 * the best one this CPU can run (to compare kernels, or to measure as another CPU would
 * run); undefined where it is unset or "auto".
 */
export function chosenCpuBackend(variant: VariantInfo, name = process.env.STILL_GGML_CPU): string | undefined {
    if (name == null || name === "" || name === "auto") return undefined;
    if (variant.gpu != null)
        throw new NativeError(`STILL_GGML_CPU=${name} chooses one of the cpu variant's CPU backends; the ${variant.name} variant loads its own (set STILL_VARIANT=cpu).`);
    const modules = cpuBackendModules(variant);
    const file = modules.get(name);
    if (file == null)
        throw new NativeError(`STILL_GGML_CPU=${name}: the ${variant.name} variant has no such ggml CPU backend (it has: ${[...modules.keys()].sort().join(", ") || "none as modules"}).`);
    return file;
}

let cached: Backend | undefined;

/**
 * The loaded backend for this process. The first call picks and loads a variant; a
 * process can hold only one, so a later call that names another variant fails.
 */
export function getBackend(options: {variant?: string} = {}): Backend {
    if (cached != null) {
        const requested = options.variant;
        if (requested != null && requested !== "auto" && requested !== cached.variant.name)
            throw new NativeError(`llama.cpp variant '${requested}' was asked for, but this process already runs '${cached.variant.name}'; ` +
                "a process holds one variant (choose it with STILL_VARIANT before the first model loads).");
        return cached;
    }
    const manifest = readManifest();
    const candidates = rankVariants(manifest.variants, detectGpuKinds(), options.variant ?? process.env.STILL_VARIANT);
    const failures: string[] = [];
    for (const variant of candidates) {
        const file = path.join(buildDir, variant.addon);
        let binding: NativeBinding;
        try {
            binding = require(file) as NativeBinding;
        } catch (err) {
            failures.push(`${variant.name}: ${(err as Error).message.split("\n")[0]}`);
            continue;
        }
        const cpuBackend = chosenCpuBackend(variant);
        try {
            binding.init(path.resolve(packageRoot, variant.libDir), variant.fallbackBackendDirs.map((d) => path.resolve(packageRoot, d)), cpuBackend);
        } catch (err) {
            throw new NativeError(`llama.cpp's ${variant.name} libraries: ${(err as Error).message}`);
        }
        const devices = z.array(deviceSchema).parse(binding.devices());
        const hasGpu = devices.some((d) => d.type === "gpu" || d.type === "igpu");
        cached = {binding, variant, manifest, release: manifest.release, devices, hasGpu};
        if (variant.gpu != null && !hasGpu)
            cached.warning = `the ${variant.name} variant found no ${variant.gpu} device (driver or runtime libraries missing?); running on CPU`;
        return cached;
    }
    throw new NativeError("could not load the native addon (" + (failures.join("; ") || "no variant fits this machine") + "). " +
        "Possible solutions: run `npm run build:native`; set STILL_VARIANT=cpu; or build llama.cpp here with `npm run build:source`.");
}

/** Runs native work with an abort flag that `signal` sets. */
export async function withAbortFlag<T>(backend: Backend, signal: AbortSignal | undefined, work: (flag: NativeAbortFlag) => Promise<T>): Promise<T> {
    const flag = new backend.binding.AbortFlag();
    const onAbort = () => flag.abort();
    signal?.addEventListener("abort", onAbort, {once: true});
    try {
        return await work(flag);
    } finally {
        signal?.removeEventListener("abort", onAbort);
    }
}
