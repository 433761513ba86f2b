// bench:remote — the remote client alone: how many short completions per second it drives
// across many endpoints that answer at once (servers in another process, so the figures
// are the client's), its CPU time per request and its peak memory. The client must never be
// what limits a fleet. `--json`: the last line is one object with requests_per_s and cpu_ms_per_request.
import {spawn} from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {runRemote, type RemoteJob} from "../remote/RemoteRollouts.js";

const o = parseArgv(z.object({
    endpoints: z.number().int().min(1).describe("Fake endpoints").default(64),
    requests: z.number().int().min(1).describe("Requests in the measured run").default(20_000),
    concurrency: z.number().int().min(1).describe("Requests in flight per endpoint").default(4),
    samples: z.number().int().min(1).describe("Samples per problem").default(8),
    json: z.boolean().describe("Print one JSON object as the last line").default(false)
}), ["--endpoints <n>", "--requests <n>", "--concurrency <n>", "--samples <k>", "--json"]);

const child = spawn(process.execPath, [path.join(import.meta.dirname, "remoteServers.js"), String(o.endpoints)], {stdio: ["pipe", "pipe", "inherit"]});
const urls = await new Promise<string[]>((resolve, reject) => {
    readline.createInterface({input: child.stdout!}).once("line", (l) => resolve(JSON.parse(l) as string[]));
    child.once("exit", (code) => reject(new Error(`the servers exited (${code})`)));
});

const jobs = (n: number): RemoteJob[] => Array.from({length: n}, (_, i) => ({
    id: `p${Math.floor(i / o.samples)}`, sample: i % o.samples, prompt: `<|im_start|>user\nWhat is ${Math.floor(i / o.samples)} + 1?<|im_end|>\n<|im_start|>assistant\n`, seed: i
}));
const sampling = {maxTokens: 16, temperature: 0.7, topK: 40, topP: 1, minP: 0, stop: []};
const run = async (n: number) => {
    let done = 0;
    let peak = process.memoryUsage().rss;
    const watch = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 50);
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    await runRemote(jobs(n), sampling, {urls, concurrency: o.concurrency}, {onResult: () => { done++; }});
    const seconds = (performance.now() - t0) / 1000;
    const used = process.cpuUsage(cpu);
    clearInterval(watch);
    return {done, seconds, cpuMs: (used.user + used.system) / 1000, peakRss: Math.max(peak, process.memoryUsage().rss)};
};
await run(Math.min(2000, o.requests)); // warm-up: connections, JIT
const r = await run(o.requests);
child.stdin!.end();
child.kill();
const summary = {
    endpoints: o.endpoints, requests: r.done, seconds: Number(r.seconds.toFixed(2)),
    requests_per_s: Math.round(r.done / r.seconds), cpu_ms_per_request: Number((r.cpuMs / r.done).toFixed(4)),
    client_cpu_share: Number((r.cpuMs / 1000 / r.seconds).toFixed(2)), peak_rss_mb: Math.round(r.peakRss / 2 ** 20)
};
process.stdout.write(o.json ? JSON.stringify(summary) + "\n"
    : `${summary.requests} requests over ${summary.endpoints} endpoints in ${summary.seconds} s: ${summary.requests_per_s} requests/s, ` +
      `${summary.cpu_ms_per_request} ms of client CPU per request (${summary.client_cpu_share} cores busy), peak RSS ${summary.peak_rss_mb} MiB\n`);
