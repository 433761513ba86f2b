// llama.cpp's own tools for benchmarks: built from the bundled source on first use,
// linked to the same llama.cpp libraries as the addon's variant, then cached in build/.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {type VariantInfo, buildDir, packageRoot} from "../engine/binding.js";
import {StillError} from "../errors.js";

export async function llamaTool(tool: "llama-batched-bench" | "llama-perplexity", variant: VariantInfo, log: (line: string) => void): Promise<string> {
    const target = `${tool}-${variant.name}`;
    const binary = path.join(buildDir, target);
    if (fs.existsSync(binary)) return binary;
    log(`building ${target} from the bundled llama.cpp source (once)…`);
    const res = await execa("cmake", ["--build", path.join(packageRoot, "build"), "--target", target], {reject: false, all: true});
    if (res.exitCode !== 0 || !fs.existsSync(binary))
        throw new StillError(`could not build ${target} (${variant.source ? "this source build lacks llama.cpp's common library; rerun `npm run build:source`" :
            "the prebuilt package lacks llama.cpp's common library"}): ${(res.all ?? "").split("\n").slice(-5).join(" ")}`);
    return binary;
}

/** The working directory where a variant's programs find their backend modules. */
export function toolCwd(variant: VariantInfo) {
    return path.resolve(packageRoot, variant.libDir);
}

/** GNU time, for a child's peak RSS, where installed. */
export function gnuTime(): string | null {
    return fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : null;
}
