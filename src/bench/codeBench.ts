// `npm run bench:code [-- --runs N] [-- --json]`: what checking code costs. The sandbox's
// start-up (still-sandbox running /bin/true), each interpreter's start bare and sandboxed
// (the bare one given the sandbox's environment, so like is compared with like), and
// verifications per second on the 40-problem suite (a right and a wrong solution each)
// with 1 and 2 workers. Medians of --runs runs, one at a time.
import {spawn} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {interpreter} from "../code/interpreters.js";
import {detectIsolation, runSandboxed} from "../code/sandbox.js";
import {CodeVerifier} from "../code/verifyCode.js";
import {loadCodeProblems} from "../data/loadMathProblems.js";
import {median} from "./llamaTools.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const {json, runs, workers} = parseArgv(z.object({
    runs: z.number().int().min(1).describe("Runs of each start-up measurement, and passes over the suite (medians reported)").default(10),
    workers: z.string().regex(/^\d+(,\d+)*$/).describe("Worker counts for the suite, comma-separated").default("1,2"),
    json: z.boolean().describe("Print one JSON object").default(false)
}), ["--runs <n>", "--workers <list>", "--json"]);
const log = (line: string) => { if (!json) console.log(line); };

const iso = await detectIsolation();
if (iso.kind !== "namespaces") {
    console.error(`bench:code: no sandbox on this machine (${iso.reason})`);
    process.exit(1);
}
const python = await interpreter("python");
const node = await interpreter("javascript");
const ENV = {PATH: "/usr/local/bin:/usr/bin:/bin", HOME: os.tmpdir(), LANG: "C.UTF-8", LC_ALL: "C.UTF-8", PYTHONDONTWRITEBYTECODE: "1"};

function bare(argv: string[]): Promise<number> {
    return new Promise((resolve, reject) => {
        const t0 = performance.now();
        const child = spawn(argv[0]!, argv.slice(1), {env: ENV, stdio: "ignore"});
        child.on("error", reject);
        child.on("close", (code) => code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${argv.join(" ")} exited with ${code}`)));
    });
}

/** A whole sandboxed run as a caller sees it: its folder made and removed, the namespaces, the program. */
async function sandboxed(argv: string[], readOnly: string[]): Promise<number> {
    const t0 = performance.now();
    const r = await runSandboxed({argv, files: {"main.txt": ""}, readOnly});
    if (r.status !== "exited" || r.code !== 0) throw new Error(`${argv.join(" ")} in the sandbox: ${r.status} ${r.code} ${r.stderr}`);
    return performance.now() - t0;
}

async function timed(n: number, once: () => Promise<number>): Promise<number> {
    await once();   // warm the file cache
    const xs: number[] = [];
    for (let i = 0; i < n; i++) xs.push(await once());
    return median(xs);
}

log(`bench:code on ${os.cpus()[0]?.model ?? "?"} (${os.availableParallelism()} CPUs); ${iso.detail}`);
const startup = {
    sandboxTrueMs: await timed(runs, () => sandboxed(["/bin/true"], [])),
    bareTrueMs: await timed(runs, () => bare(["/bin/true"])),
    barePythonMs: await timed(runs, () => bare([python.executable, "-I", "-c", "pass"])),
    sandboxedPythonMs: await timed(runs, () => sandboxed([python.executable, "-I", "-c", "pass"], python.readOnly)),
    bareNodeMs: await timed(runs, () => bare([node.executable, "-e", "0"])),
    sandboxedNodeMs: await timed(runs, () => sandboxed([node.executable, "-e", "0"], node.readOnly))
};
log("\nstart-up, median ms        bare   sandboxed   added");
log(`  /bin/true             ${startup.bareTrueMs.toFixed(1).padStart(7)} ${startup.sandboxTrueMs.toFixed(1).padStart(11)} ${(startup.sandboxTrueMs - startup.bareTrueMs).toFixed(1).padStart(7)}`);
log(`  python3 -c pass       ${startup.barePythonMs.toFixed(1).padStart(7)} ${startup.sandboxedPythonMs.toFixed(1).padStart(11)} ${(startup.sandboxedPythonMs - startup.barePythonMs).toFixed(1).padStart(7)}`);
log(`  node -e 0             ${startup.bareNodeMs.toFixed(1).padStart(7)} ${startup.sandboxedNodeMs.toFixed(1).padStart(11)} ${(startup.sandboxedNodeMs - startup.bareNodeMs).toFixed(1).padStart(7)}`);

// --- the suite --------------------------------------------------------------------------
const suiteFile = path.join(root, "test/fixtures/code-suite.jsonl");
const {items: problems} = await loadCodeProblems(suiteFile);
const rows = new Map(fs.readFileSync(suiteFile, "utf8").trim().split("\n").map((l) => {
    const r = JSON.parse(l) as {id: string, right: string, wrong: string};
    return [r.id, r] as const;
}));
const suite: {workers: number, verifications: number, passed: number, seconds: number, perSecond: number}[] = [];
log(`\nsuite: ${problems.length} problems × (right, wrong) = ${2 * problems.length} verifications, median of ${runs} passes`);
for (const w of workers.split(",").map(Number)) {
    const verifier = new CodeVerifier({concurrency: w});
    const seconds: number[] = [];
    let passed = 0;
    for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        const results = await Promise.all(problems.flatMap((p) => [rows.get(p.id)!.right, rows.get(p.id)!.wrong].map((c) => verifier.verify(c, p.code!))));
        seconds.push((performance.now() - t0) / 1000);
        passed = results.filter((r) => r.status === "passed").length;
    }
    const s = median(seconds);
    suite.push({workers: w, verifications: 2 * problems.length, passed, seconds: s, perSecond: (2 * problems.length) / s});
    log(`  ${w} worker${w === 1 ? " " : "s"}: ${((2 * problems.length) / s).toFixed(1)} verifications/s (${s.toFixed(2)} s a pass, ${passed} passed)`);
}
const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
log(`\npeak RSS of this process: ${peakRssMb} MB`);
if (json) console.log(JSON.stringify({cpu: os.cpus()[0]?.model ?? null, cpus: os.availableParallelism(), isolation: iso.detail, startup, suite, peakRssMb}));
