// Builds llama.cpp from the source bundled in node-llama-cpp (same release as the
// prebuilt libraries), then rebuilds the addon so it gains a variant linked to it.
//
//   npm run build:source                          CPU, tuned for this machine (GGML_NATIVE)
//   npm run build:source -- --cuda --cuda-arch 90 CUDA for the given architectures
//   npm run build:source -- --vulkan              Vulkan
//   options: --name NAME (default: source, source-cuda, source-vulkan), --jobs N,
//            --cmake-arg -DKEY=VALUE (repeatable), --clean, --amx (keep Intel AMX kernels)
//
// The build lands in deps/llama-build/<name>; the addon prefers it over the prebuilt
// libraries (choose explicitly with STILL_VARIANT=<name>).
import {spawnSync} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {parseArgs} from "node:util";
import {ensureSource, sourceBuildsDir} from "./llama.mjs";

const {values: opts} = parseArgs({
    options: {
        "cuda": {type: "boolean", default: false},
        "cuda-arch": {type: "string"},
        "vulkan": {type: "boolean", default: false},
        "name": {type: "string"},
        "jobs": {type: "string"},
        "cmake-arg": {type: "string", multiple: true, default: []},
        "clean": {type: "boolean", default: false},
        "amx": {type: "boolean", default: false},
        "help": {type: "boolean", default: false}
    }
});
if (opts.help) {
    console.log(fs.readFileSync(new URL(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n"));
    process.exit(0);
}
if (opts.cuda && opts.vulkan) fail("choose one of --cuda and --vulkan.");
const name = opts.name ?? (opts.cuda ? "source-cuda" : opts.vulkan ? "source-vulkan" : "source");
if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) fail(`--name must be lowercase letters, digits and dashes, got '${name}'.`);
const jobs = opts.jobs ?? String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));

const started = performance.now();
const {dir: src, release} = ensureSource({log: (m) => console.log(`still: ${m}`)});
const buildDir = path.join(sourceBuildsDir, name);
if (opts.clean) fs.rmSync(buildDir, {recursive: true, force: true});

const hasNinja = spawnSync("ninja", ["--version"]).status === 0;
const cmakeArgs = [
    "-S", src, "-B", buildDir,
    ...(hasNinja ? ["-G", "Ninja"] : []),
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    // ggml's own thread pool, as in the prebuilt libraries (OpenMP's spinning threads
    // compete with Node's).
    "-DGGML_OPENMP=OFF",
    ...amxFlags(),
    // Nothing may be downloaded: no prebuilt web UI, no server, no HTTPS client.
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    // Tools stay configured (benchmarks build llama-perplexity, llama-batched-bench on demand).
    "-DLLAMA_BUILD_TOOLS=ON",
    ...(opts.cuda ? ["-DGGML_CUDA=ON", ...(opts["cuda-arch"] ? [`-DCMAKE_CUDA_ARCHITECTURES=${opts["cuda-arch"]}`] : [])] : []),
    ...(opts.vulkan ? ["-DGGML_VULKAN=ON"] : []),
    ...opts["cmake-arg"]
];
console.log(`still: configuring llama.cpp ${release} in ${path.relative(process.cwd(), buildDir)}`);
run("cmake", cmakeArgs);
console.log(`still: building libllama, libggml and llama.cpp's common library with ${jobs} jobs`);
run("cmake", ["--build", buildDir, "--config", "Release", "--parallel", jobs, "--target", "llama", "ggml", "llama-common"]);
const llamaSeconds = (performance.now() - started) / 1000;

console.log("still: rebuilding the addon with the new variant");
run(process.execPath, [path.join(path.dirname(new URL(import.meta.url).pathname), "build-native.mjs")]);
console.log(`still: llama.cpp built from source in ${llamaSeconds.toFixed(0)} s (total ${((performance.now() - started) / 1000).toFixed(0)} s). ` +
    `The variant '${name}' is now preferred; STILL_VARIANT=<name> picks another.`);

/**
 * A native build on a CPU with AMX compiles ggml's AMX kernels, and on Sapphire Rapids
 * they stop the process with SIGILL (`tilezero` before any tile configuration) on Q8_0
 * models, while the prebuilt libraries run fine. Leave them out unless --amx.
 */
function amxFlags() {
    if (opts.amx || process.arch !== "x64" || process.platform !== "linux") return [];
    let cpuinfo = "";
    try {
        cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
    } catch {
        return [];
    }
    if (!/\bamx_tile\b/.test(cpuinfo)) return [];
    const flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16";
    return [`-DCMAKE_C_FLAGS=${flags}`, `-DCMAKE_CXX_FLAGS=${flags}`];
}

function run(cmd, args) {
    const res = spawnSync(cmd, args, {stdio: "inherit"});
    if (res.error != null) fail(`${cmd} could not be started (${res.error.message}). Possible solutions: install CMake and a C++ compiler${opts.cuda ? ", and the CUDA toolkit (nvcc)" : ""}.`);
    if (res.status !== 0) fail(`${cmd} ${args.slice(0, 2).join(" ")} … failed with exit code ${res.status}; see its output above.`);
}

function fail(message) {
    console.error(`still: ${message}`);
    process.exit(1);
}
