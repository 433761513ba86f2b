// llama.cpp's own checks on a model file, run in a child process: its loader asserts
// (aborting the process) on some malformed metadata that a structural check cannot
// foresee, such as a layer count over its limit or duplicate vocabulary entries. The
// probe reads no tensor data, so it costs little even for large models.
import fs from "node:fs/promises";
import path from "node:path";
import {execa} from "execa";
import {ModelError} from "../errors.js";
import {type Backend, buildDir, packageRoot} from "./binding.js";

const childScript = `
const [addon, libDir, fallbacks, file, vocabOnly] = process.argv.slice(1);
const b = require(addon);
b.init(libDir, JSON.parse(fallbacks));
b.probeModel(file, vocabOnly === "vocab-only").then(() => process.exit(0), (e) => {
    process.stderr.write(JSON.stringify({code: e.code, message: e.message}));
    process.exit(3);
});`;

const passed = new Map<string, Promise<void>>();

/**
 * Resolves when llama.cpp accepts the file; rejects with a ModelError (or the coded
 * native error of an ordinary load failure, for the caller to word) otherwise. Results
 * are remembered per file path, size and modification time.
 */
export async function probeModel(file: string, backend: Backend, options: {vocabOnly?: boolean} = {}): Promise<void> {
    const vocabOnly = options.vocabOnly ?? false;
    const stat = await fs.stat(file);
    const key = `${path.resolve(file)}:${stat.size}:${stat.mtimeMs}:${vocabOnly}`;
    let probe = passed.get(key);
    if (probe == null) {
        probe = runProbe(file, backend, vocabOnly);
        passed.set(key, probe);
        probe.catch(() => passed.delete(key));
    }
    return probe;
}

async function runProbe(file: string, backend: Backend, vocabOnly: boolean): Promise<void> {
    // Vocabulary and hyperparameter checks are the same in every variant of a release;
    // the CPU one starts fastest (no GPU runtime to initialise).
    const variant = backend.manifest.variants.find((v) => v.name === "cpu") ?? backend.variant;
    const res = await execa(process.execPath, [
        "-e", childScript,
        path.join(buildDir, variant.addon),
        path.resolve(packageRoot, variant.libDir),
        JSON.stringify(variant.fallbackBackendDirs.map((d) => path.resolve(packageRoot, d))),
        path.resolve(file),
        vocabOnly ? "vocab-only" : "full"
    ], {reject: false, env: {GGML_NO_BACKTRACE: "1", STILL_LOG: ""}, stdin: "ignore"});
    if (res.exitCode === 0) return;
    if (res.exitCode === 3) {
        let failure: {code?: string, message?: string} | undefined;
        try {
            failure = JSON.parse(res.stderr);
        } catch {
            // fall through to the generic message
        }
        if (failure?.message != null) throw Object.assign(new Error(failure.message), {code: failure.code});
    }
    const assertion = /GGML_ASSERT\([^\n]*\) failed|GGML_ABORT[^\n]*|[^\n]*fatal error[^\n]*/.exec(res.stderr)?.[0];
    throw new ModelError(file, `llama.cpp cannot load ${file}: its loader aborts on this file` +
        (assertion == null ? ` (${res.signal ?? `exit code ${res.exitCode}`}).` : ` (${assertion.replace(/^.*\/(src|ggml)\//, "")}).`));
}
