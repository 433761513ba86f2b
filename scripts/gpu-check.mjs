// The GPU check: one prepared run that proves and times still's GPU paths on a machine with
// an NVIDIA GPU and no network (no npm, no Node.js of its own).
//
//   npm run gpu:check -- --pack      here: gpu-pack/payload.tar.xz, everything the GPU machine
//                                    needs beyond the working tree (Node.js, dist/, the runtime
//                                    packages, the CUDA build of llama.cpp with still's addon,
//                                    trainer and llama.cpp tools linked to it); carry gpu-pack/
//   npm run gpu:check -- --dry-run   here or in CI: packs into a temporary folder and checks it
//                                    (files, sizes against the 64 MiB that travel, the on-device
//                                    plan's files and time limits); needs no GPU, runs nothing on one
//   bash scripts/gpu-check.sh --out DIR
//                                    on the GPU machine: unpacks, then runs the plan below and
//                                    writes DIR/report.json and DIR/logs/; a step past its time
//                                    limit is stopped and reported, and the rest still run
//
// The CUDA build must be for the GPU's architecture and small enough to travel:
// `npm run build:source -- --cuda --cuda-arch 90` (H100, H200). The prebuilt CUDA libraries
// of node-llama-cpp hold every architecture (libggml-cuda.so alone is ~159 MB, ~125 MB as xz)
// and do not fit; --pack refuses them and says so.
import {spawn, spawnSync} from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {parseArgs} from "node:util";
import {fileURLToPath} from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const LIMIT_BYTES = 64 * 1024 * 1024;     // what travels to the GPU machine: working tree + carried paths
const CHECK_SECONDS = 8 * 60;             // the whole on-device run, unpacking included, leaves room for a second try

// The on-device plan: each step's command and time limit (seconds). Steps run in this order.
const PLAN = [
    {name: "facts", limit: 15},
    {name: "tests", limit: 115, files: ["test/gpu.test.ts", "test/train-native.test.ts", "test/rollouts.test.ts", "test/scorer.test.ts"]},
    {name: "bench-rollout", limit: 100, script: "dist/src/bench/rollout.js",
        args: ["--parallel", "1,32,128,256", "--runs", "1", "--shared", "0", "--no-node-llama-cpp", "--json"]},
    {name: "bench-score", limit: 45, script: "dist/src/bench/score.js", args: ["--runs", "1", "--no-node-llama-cpp", "--json"]},
    {name: "bench-train", limit: 100, script: "dist/src/bench/trainBench.js", args: ["--ctx-sweep", "1024,4096", "--steps", "2", "--json"]},
    {name: "peft-train", limit: 75, script: "scripts/gpu/peft_train_bench.py", args: ["--ctx", "1024,4096", "--steps", "2"]}
];
const UNPACK_SECONDS = 30;

const {values: opts} = parseArgs({
    options: {
        "pack": {type: "boolean", default: false},
        "dry-run": {type: "boolean", default: false},
        "out": {type: "string"},
        "variant": {type: "string"},
        "help": {type: "boolean", default: false}
    }
});
if (opts.help) {
    console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n"));
    process.exit(0);
}
const log = (line) => process.stderr.write(`gpu-check: ${line}\n`);
const fail = (line) => {
    process.stderr.write(`gpu-check: error: ${line}\n`);
    process.exit(1);
};

if (opts.pack || opts["dry-run"]) {
    const dir = opts["dry-run"] ? fs.mkdtempSync(path.join(os.tmpdir(), "still-gpu-pack-")) : path.join(root, "gpu-pack");
    try {
        const report = pack(dir, {dryRun: opts["dry-run"]});
        process.stdout.write(JSON.stringify(report) + "\n");
        if (!opts["dry-run"] && !report.fits) process.exit(1);
    } finally {
        if (opts["dry-run"]) fs.rmSync(dir, {recursive: true, force: true});
    }
} else {
    if (opts.out == null) fail("give --out DIR (or --pack / --dry-run); see --help.");
    await runOnDevice(path.resolve(opts.out));
}

// --- packing ---------------------------------------------------------------------------------

function readVariants() {
    const file = path.join(root, "build", "Release", "variants.json");
    if (!fs.existsSync(file)) fail(`${path.relative(root, file)} is missing: run \`npm ci\` (or \`npm run build:native\`) first.`);
    return JSON.parse(fs.readFileSync(file, "utf8"));
}

/** The CUDA variant to carry: a source build (one architecture) before the prebuilt one. */
function cudaVariant(manifest, requested) {
    const cuda = manifest.variants.filter((v) => v.gpu === "cuda" && (requested == null || v.name === requested));
    return cuda.find((v) => v.source) ?? cuda[0] ?? null;
}

function sizeOf(rel) {
    const p = path.join(root, rel);
    const st = fs.statSync(p, {throwIfNoEntry: false});
    if (st == null) return 0;
    if (!st.isDirectory()) return st.size;
    return fs.readdirSync(p).reduce((s, e) => s + sizeOf(path.join(rel, e)), 0);
}

/**
 * The packages the built JavaScript and the test runner load, as folders under node_modules:
 * the dependencies of package.json and of vitest, with theirs (installed optional ones
 * included), found as Node finds them (the nearest node_modules upwards).
 */
function runtimePackages() {
    // not needed there: node-llama-cpp (a peer in the CPU benchmarks, with its own libraries),
    // the TypeScript compiler (dist/ travels built), cmake-js (nothing is built there)
    const skip = new Set(["node-llama-cpp", "typescript", "cmake-js"]);
    const found = new Set();
    const resolve = (name, from) => {
        for (let dir = from; ; dir = path.dirname(dir)) {
            const candidate = path.join(dir, "node_modules", name);
            if (fs.existsSync(path.join(candidate, "package.json"))) return candidate;
            if (dir === root || dir === path.dirname(dir)) return null;
        }
    };
    const visit = (name, from) => {
        if (skip.has(name) || name.startsWith("@node-llama-cpp/")) return;
        const dir = resolve(name, from);
        if (dir == null || found.has(dir)) return;
        found.add(dir);
        const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
        for (const dep of Object.keys({...pkg.dependencies, ...pkg.optionalDependencies})) visit(dep, dir);
    };
    const own = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
    for (const dep of [...Object.keys(own.dependencies ?? {}), "vitest"]) visit(dep, root);
    return [...found].map((p) => path.relative(root, p)).sort()
        // a package nested inside another that travels goes with it
        .filter((p, i, all) => !all.some((q, j) => j !== i && p.startsWith(q + path.sep)));
}

function gitTrackedBytes() {
    const res = spawnSync("git", ["ls-files", "-z"], {cwd: root, encoding: "utf8", maxBuffer: 64 << 20});
    if (res.status !== 0) return null;
    return res.stdout.split("\0").filter(Boolean).reduce((s, f) => s + sizeOf(f), 0);
}

function pack(dir, {dryRun}) {
    fs.mkdirSync(dir, {recursive: true});
    const problems = [];
    const manifest = readVariants();
    const variant = cudaVariant(manifest, opts.variant);
    if (!fs.existsSync(path.join(root, "dist", "src", "index.js"))) problems.push("dist/ is not built: run `npm run build:ts`");

    // still's binaries of the CUDA variant, the tools the benchmarks compare with, and their libraries
    const files = ["build/Release/variants.json", "package.json"];
    let cudaLibBytes = 0;
    if (variant == null) {
        problems.push("no CUDA variant is built: run `npm run build:source -- --cuda --cuda-arch 90`");
    } else {
        const tools = [`llama-batched-bench-${variant.name}`, `llama-perplexity-${variant.name}`];
        if (!dryRun) {
            // the benchmarks' peers, linked to the same libraries (built on first use elsewhere; nothing is built there)
            const missing = tools.filter((t) => !fs.existsSync(path.join(root, "build", "Release", t)));
            if (missing.length > 0) {
                log(`building ${missing.join(", ")}…`);
                spawnSync("cmake", ["--build", path.join(root, "build"), "--target", ...missing], {stdio: "inherit"});
            }
        }
        for (const f of [variant.addon, `still-train-${variant.name}`, ...tools, `llama-simple-${variant.name}`, "still-sandbox"]) {
            const rel = path.join("build", "Release", f);
            if (fs.existsSync(path.join(root, rel))) files.push(rel);
            else if (!f.startsWith("still-sandbox")) problems.push(`${rel} is not built (cmake --build build --target ${f.replace(/\.node$/, "")})`);
        }
        for (const d of [variant.libDir, ...variant.fallbackBackendDirs]) {
            const abs = path.join(root, d);
            if (!fs.existsSync(abs)) {
                problems.push(`${d} is missing`);
                continue;
            }
            for (const f of fs.readdirSync(abs)) {
                if (!/\.so(\.\d+)*$/.test(f)) continue;
                const rel = path.join(d, f);
                files.push(rel);
                cudaLibBytes += sizeOf(rel);
            }
        }
        if (!variant.source)
            problems.push(`the ${variant.name} variant is node-llama-cpp's prebuilt CUDA build (every architecture, ${(cudaLibBytes / 2 ** 20).toFixed(0)} MiB of ` +
                "libraries; libggml-cuda.so alone compresses to ~125 MB): build one architecture with `npm run build:source -- --cuda --cuda-arch 90` and pack again");
    }
    if (fs.existsSync(path.join(root, "dist"))) files.push("dist");
    const packages = runtimePackages();
    files.push(...packages);
    for (const p of PLAN) if (p.script != null && !p.script.startsWith("dist/") && !fs.existsSync(path.join(root, p.script))) problems.push(`${p.script} is missing`);
    for (const p of PLAN) for (const f of p.files ?? []) if (!fs.existsSync(path.join(root, f))) problems.push(`${f} is missing`);

    // the archive: Node.js under gpu-pack/node, then the files above by their paths in the tree
    const stage = fs.mkdtempSync(path.join(os.tmpdir(), "still-gpu-stage-"));
    const archive = path.join(dir, "payload.tar.xz");
    const carryCuda = variant != null && variant.source;
    const listed = files.filter((f) => carryCuda || !(variant != null && (f.startsWith(variant.libDir) || variant.fallbackBackendDirs.some((d) => f.startsWith(d)))));
    const uncompressed = listed.reduce((s, f) => s + sizeOf(f), 0) + fs.statSync(process.execPath).size;
    try {
        fs.mkdirSync(path.join(stage, "gpu-pack", "node", "bin"), {recursive: true});
        fs.copyFileSync(process.execPath, path.join(stage, "gpu-pack", "node", "bin", "node"));
        fs.chmodSync(path.join(stage, "gpu-pack", "node", "bin", "node"), 0o755);
        const list = path.join(stage, "files.txt");
        fs.writeFileSync(list, listed.join("\n") + "\n");
        const started = performance.now();
        const tar = spawnSync("tar", ["-cJf", archive, "--owner=0", "--group=0", "-C", stage, "gpu-pack/node", "-C", root, "-T", list],
            {env: {...process.env, XZ_OPT: "-6 -T0"}, encoding: "utf8"});
        if (tar.status !== 0) fail(`tar failed: ${(tar.stderr ?? "").trim().split("\n").slice(-2).join(" ")}`);
        log(`packed ${listed.length} paths in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } finally {
        fs.rmSync(stage, {recursive: true, force: true});
    }
    // what the GPU machine needs first, read back from the archive
    const listing = spawnSync("tar", ["-tJf", archive], {encoding: "utf8", maxBuffer: 256 << 20});
    const entries = new Set((listing.stdout ?? "").split("\n").map((l) => l.replace(/\/$/, "")));
    const needed = ["gpu-pack/node/bin/node", "build/Release/variants.json", "dist/src/index.js", "dist/src/bench/rollout.js",
        "node_modules/vitest/vitest.mjs", "node_modules/zod/package.json", ...(variant == null ? [] : [path.join("build", "Release", variant.addon)])];
    for (const n of needed) if (!entries.has(n)) problems.push(`the archive lacks ${n}`);
    const archiveBytes = fs.statSync(archive).size;
    const tracked = gitTrackedBytes();
    const travelling = archiveBytes + (tracked ?? 0);
    // (a prebuilt CUDA variant's libraries are not in the archive: `problems` says so, and it does not fit)
    const fits = travelling <= LIMIT_BYTES && problems.length === 0;
    const planSeconds = UNPACK_SECONDS + PLAN.reduce((s, p) => s + p.limit, 0);
    if (planSeconds > CHECK_SECONDS) problems.push(`the plan's time limits add up to ${planSeconds} s, over ${CHECK_SECONDS} s`);
    const syntax = spawnSync("bash", ["-n", path.join(root, "scripts", "gpu-check.sh")], {encoding: "utf8"});
    if (syntax.status !== 0) problems.push(`scripts/gpu-check.sh: ${syntax.stderr.trim()}`);
    const sha256 = crypto.createHash("sha256").update(fs.readFileSync(archive)).digest("hex");
    const report = {
        dry_run: dryRun,
        archive: dryRun ? null : path.relative(root, archive),
        variant: variant?.name ?? null,
        variant_source_build: variant?.source ?? null,
        node: process.version,
        paths: listed.length,
        entries: entries.size,
        packages: packages.length,
        uncompressed_mb: round(uncompressed / 2 ** 20),
        archive_mb: round(archiveBytes / 2 ** 20),
        tracked_mb: tracked == null ? null : round(tracked / 2 ** 20),
        cuda_libraries_mb: round(cudaLibBytes / 2 ** 20),
        cuda_libraries_packed: carryCuda,
        travelling_mb: round(travelling / 2 ** 20),
        limit_mb: LIMIT_BYTES / 2 ** 20,
        plan: PLAN.map((p) => ({name: p.name, limit_s: p.limit})),
        plan_seconds: planSeconds,
        sha256,
        fits,
        problems
    };
    if (!dryRun) {
        fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(report, null, 2) + "\n");
        log(`carry gpu-pack/ (${report.archive_mb} MiB; with the working tree ${report.travelling_mb} of ${report.limit_mb} MiB)`);
    }
    for (const p of problems) log(p);
    return report;
}

function round(x) {
    return Math.round(x * 10) / 10;
}

// --- on the GPU machine ------------------------------------------------------------------------

/** Runs `cmd` with a time limit; its output goes to `logFile`. Resolves {exit, seconds, timed_out, stdout}. */
function runStep(cmd, args, {limit, logFile, env}) {
    return new Promise((resolve) => {
        const started = performance.now();
        const child = spawn(cmd, args, {cwd: root, env: {...process.env, ...env}, detached: true});
        const out = fs.createWriteStream(logFile);
        let stdout = "";
        child.stdout.on("data", (d) => {
            stdout += d;
            out.write(d);
        });
        child.stderr.on("data", (d) => out.write(d));
        let timedOut = false;
        const timer = setTimeout(() => {
            timedOut = true;
            try {
                process.kill(-child.pid, "SIGKILL");
            } catch {
                // already gone
            }
        }, limit * 1000);
        const finish = (exit) => {
            clearTimeout(timer);
            out.end();
            resolve({exit, timed_out: timedOut, seconds: round((performance.now() - started) / 1000), stdout});
        };
        child.on("error", (e) => {
            out.write(`\n${e.message}\n`);
            finish(null);
        });
        child.on("close", (code) => finish(code));
    });
}

/** Peak device memory used (MiB) while `work` runs, sampled from nvidia-smi twice a second. */
async function withDeviceMemory(work) {
    let peak = null;
    const sample = () => {
        const r = spawnSync("nvidia-smi", ["--query-gpu=memory.used", "--format=csv,noheader,nounits"], {encoding: "utf8"});
        const v = Number.parseInt((r.stdout ?? "").trim().split("\n")[0] ?? "", 10);
        if (Number.isFinite(v)) peak = Math.max(peak ?? 0, v);
    };
    const timer = setInterval(sample, 500);
    try {
        const res = await work();
        return {...res, peak_device_mb: peak};
    } finally {
        clearInterval(timer);
    }
}

const lastJson = (stdout) => {
    const line = stdout.trim().split("\n").reverse().find((l) => l.startsWith("{"));
    if (line == null) return null;
    try {
        return JSON.parse(line);
    } catch {
        return null;
    }
};

async function runOnDevice(out) {
    const started = new Date();
    fs.mkdirSync(path.join(out, "logs"), {recursive: true});
    const report = {started: started.toISOString(), commit: null, facts: {}, steps: [], tests: null, ratios: {}};
    const write = () => fs.writeFileSync(path.join(out, "report.json"), JSON.stringify(report, null, 2) + "\n");
    const git = spawnSync("git", ["rev-parse", "HEAD"], {cwd: root, encoding: "utf8"});
    report.commit = git.status === 0 ? git.stdout.trim() : null;
    if (!fs.existsSync("/proc/driver/nvidia/version") && spawnSync("nvidia-smi", ["-L"]).status !== 0) {
        report.error = "no NVIDIA GPU here (no /proc/driver/nvidia/version, nvidia-smi fails): nothing to check";
        write();
        fail(report.error);
    }
    const manifest = readVariants();
    const variant = cudaVariant(manifest, opts.variant);
    if (variant == null) {
        report.error = "no CUDA variant in build/Release/variants.json: pack with a CUDA build (`npm run build:source -- --cuda --cuda-arch 90`, then `npm run gpu:check -- --pack`)";
        write();
        fail(report.error);
    }
    const env = {STILL_VARIANT: variant.name, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`};
    const node = process.execPath;
    const threads = String(os.availableParallelism());

    for (const step of PLAN) {
        const logFile = path.join(out, "logs", `${step.name}.log`);
        log(`${step.name} (limit ${step.limit} s)`);
        let res;
        if (step.name === "facts") {
            res = await runStep("bash", ["-c", "nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader; " +
                "nvcc --version | tail -1; python3 -c 'import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)'; " +
                "nproc; free -g | head -2"], {limit: step.limit, logFile, env});
            const lines = fs.readFileSync(logFile, "utf8").trim().split("\n");
            report.facts = {gpu: lines[0] ?? null, nvcc: lines[1] ?? null, python: lines[2] ?? null, cpus: os.availableParallelism(), node: process.version, variant: variant.name};
        } else if (step.name === "tests") {
            const json = path.join(out, "tests.json");
            res = await runStep(node, [path.join(root, "node_modules", "vitest", "vitest.mjs"), "run", ...step.files, "--reporter=json", `--outputFile=${json}`, "--reporter=default"],
                {limit: step.limit, logFile, env});
            report.tests = summarizeTests(json);
        } else if (step.name === "peft-train") {
            const shape = path.join(out, "shape.json");
            try {
                await writeShape(shape);
            } catch (err) {
                // the model the benchmarks make is missing (a step before ran out of time): reported, the check goes on
                report.steps.push({name: step.name, limit_s: step.limit, error: `no model shape: ${err.message}`});
                write();
                continue;
            }
            res = await withDeviceMemory(() => runStep("python3", [step.script, "--shape", shape, ...step.args], {limit: step.limit, logFile, env}));
            res.result = res.stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
        } else {
            const args = [step.script, ...step.args, ...(step.name === "bench-train" ? [] : ["--threads", threads])];
            res = await withDeviceMemory(() => runStep(node, args, {limit: step.limit, logFile, env}));
            res.result = lastJson(res.stdout);
        }
        const {stdout: _stdout, ...kept} = res;
        report.steps.push({name: step.name, limit_s: step.limit, ...kept});
        write();
    }
    report.ratios = ratios(report);
    report.seconds = round((Date.now() - started.getTime()) / 1000);
    write();
    log(`report: ${path.join(out, "report.json")} (${report.seconds} s)`);
}

async function writeShape(file) {
    // the preset's shape, with the vocabulary size of the model file the benchmarks made
    const {presets} = await import(path.join(root, "dist", "src", "models", "presets.js"));
    const {loadModel} = await import(path.join(root, "dist", "src", "engine", "Model.js"));
    const model = path.join(root, "models", "qwen2.5-0.5b-q8_0.gguf");
    const m = await loadModel(model, {vocabOnly: true});
    fs.writeFileSync(file, JSON.stringify({...presets["qwen2.5-0.5b"], vocabSize: m.facts.vocabSize}));
    await m.dispose();
}

function summarizeTests(file) {
    if (!fs.existsSync(file)) return null;
    const r = JSON.parse(fs.readFileSync(file, "utf8"));
    const failures = [];
    for (const f of r.testResults ?? [])
        for (const t of f.assertionResults ?? [])
            if (t.status === "failed") failures.push({file: path.relative(root, f.name), test: t.fullName, message: (t.failureMessages ?? []).join("\n").slice(0, 2000)});
    return {passed: r.numPassedTests, failed: r.numFailedTests, skipped: r.numPendingTests + (r.numTodoTests ?? 0), total: r.numTotalTests, failures};
}

function ratios(report) {
    const step = (name) => report.steps.find((s) => s.name === name)?.result ?? null;
    const out = {};
    const rollout = step("bench-rollout");
    if (rollout?.results != null)
        out.rollout_still_over_batched_bench = Object.fromEntries(rollout.results.map((r) => [r.parallel, round(100 * r.still.gen_tps / r.llama_batched_bench.gen_tps) / 100]));
    const score = step("bench-score");
    if (score?.still != null && score?.llama_perplexity != null)
        out.score_still_over_llama_perplexity = round(100 * score.still.tokens_per_s / score.llama_perplexity.tokens_per_s) / 100;
    const train = step("bench-train");
    const peft = step("peft-train");
    if (train?.sweep != null && Array.isArray(peft)) {
        out.train_still_over_peft = {};
        for (const row of train.sweep) {
            const p = peft.find((x) => x.ctx === row.ctx);
            const still = Math.max(row.chunked.tokens_per_s ?? 0, row.one_graph.tokens_per_s ?? 0);
            if (p?.tokens_per_s != null && still > 0) out.train_still_over_peft[row.ctx] = round(100 * still / p.tokens_per_s) / 100;
        }
    }
    return out;
}
