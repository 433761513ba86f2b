// Remote rollouts on real llama-server processes, built from the bundled llama.cpp source
// (once, cached in build/) and started on 127.0.0.1 with a made tiny model: greedy outputs
// through a server equal the local engine's token for token (log-probs too); a server killed
// with SIGKILL mid-run leaves every (problem, sample) written exactly once; with every server
// gone, one sentence and nothing lost, and a rerun after restarting finishes.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {afterEach, beforeAll, describe, expect, it} from "vitest";
import {startLlamaServer, type LlamaServer} from "../src/remote/llamaServer.js";
import {fixtures} from "./helpers/fixtures.js";
import {randomAdapter, testModel, tmpDir} from "./helpers/models.js";

const node = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
type Line = {id: string, sample: number, text: string, tokens: number[], logprobs: number[], finish: string};
const lines = (out: string) => fs.readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Line);
const servers: LlamaServer[] = [];
let model: string;
let qwen3: string;

function problemsFile(name: string, n: number): string {
    const file = path.join(tmpDir, name);
    fs.writeFileSync(file, Array.from({length: n}, (_, i) => JSON.stringify({id: `p${i}`, question: `What is ${i} + ${2 * i + 1}? Show the steps.`})).join("\n") + "\n");
    return file;
}
async function serve(o: {model?: string, port?: number, parallel?: number} = {}) {
    const s = await startLlamaServer({model: o.model ?? model, parallel: o.parallel ?? 4, ctx: 8192, threads: 1, ...(o.port == null ? {} : {port: o.port})});
    servers.push(s);
    return s;
}
function expectComplete(out: string, n: number, k: number) {
    const keys = lines(out).map((l) => `${l.id}/${l.sample}`);
    expect(keys.length).toBe(n * k);
    expect(new Set(keys).size).toBe(n * k);
}
const waitFor = async (cond: () => boolean, ms = 60_000) => {
    for (const end = Date.now() + ms; !cond() && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
};
const lineCount = (f: string) => fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter((l) => l !== "").length : 0;

beforeAll(async () => {
    model = await testModel("tiny");
    qwen3 = await testModel("tiny-qwen3-tokenizer");
    // the first start builds llama-server (minutes); later ones find it in build/
    await (await startLlamaServer({model, parallel: 1, threads: 1})).stop();
}, 900_000);
afterEach(async () => {
    for (const s of servers.splice(0)) await s.kill();
});

describe("rollouts on llama-server", () => {
    for (const preset of ["tiny", "tiny-qwen3-tokenizer"] as const) {
        it(`greedy outputs through a server equal the local engine's, token for token (${preset})`, async () => {
            const m = preset === "tiny" ? model : qwen3;
            const problems = problemsFile(`greedy-problems-${preset}.jsonl`, 8);
            const s = await serve({model: m});
            const common = ["--model", m, "--problems", problems, "--samples", "1", "--temperature", "0", "--max-tokens", "48", "--seed", "1"];
            const local = path.join(tmpDir, `greedy-local-${preset}.jsonl`);
            const remote = path.join(tmpDir, `greedy-remote-${preset}.jsonl`);
            const a = await node(["generate", ...common, "--parallel", "4", "--threads", "1", "--out", local]);
            expect(a.exitCode, a.stderr).toBe(0);
            const b = await node(["generate", ...common, "--endpoint", s.url, "--endpoint-concurrency", "4", "--out", remote, "--json"]);
            expect(b.exitCode, b.stderr).toBe(0);
            // the tokens are the server's own, not a re-tokenization of its text
            expect(JSON.parse(b.stdout.trim().split("\n").at(-1)!)).toMatchObject({written: 8, server_tokens: 8});
            const byId = (f: string) => new Map(lines(f).map((l) => [l.id, l]));
            const [l, r] = [byId(local), byId(remote)];
            expect(r.size).toBe(8);
            let compared = 0, comparedLogprobs = 0;
            for (const [id, x] of l) {
                const y = r.get(id)!;
                expect(y.tokens, id).toEqual(x.tokens);
                expect(y.text, id).toBe(x.text);
                expect(y.finish, id).toBe(x.finish);
                // llama-server leaves out the log-prob of a token that ends inside a UTF-8 character, and
                // the tiny model's random bytes are seldom whole characters: there a sample has none
                compared += x.tokens.length;
                if (preset === "tiny" && y.logprobs.length === 0) continue;
                expect(y.logprobs.length).toBe(x.logprobs.length);
                for (let i = 0; i < y.logprobs.length; i++) expect(Math.abs(y.logprobs[i]! - x.logprobs[i]!), `${id} token ${i}`).toBeLessThan(1e-3);
                comparedLogprobs += y.logprobs.length;
            }
            expect(compared).toBeGreaterThan(8 * 10);
            if (preset !== "tiny") expect(comparedLogprobs).toBe(compared);
        }, 300_000);
    }

    it("a server killed with SIGKILL mid-run: the run completes on the other, each sample exactly once", async () => {
        const N = 16, K = 4;
        const problems = problemsFile("kill-problems.jsonl", N);
        const [a, b] = [await serve({parallel: 2}), await serve({parallel: 2})];
        const out = path.join(tmpDir, "kill.jsonl");
        const run = node(["generate", "--model", model, "--problems", problems, "--samples", String(K), "--temperature", "0.8", "--seed", "5",
            "--max-tokens", "160", "--endpoint", a.url, "--endpoint", b.url, "--endpoint-concurrency", "2", "--out", out]);
        await waitFor(() => lineCount(out) >= 6);
        await b.kill();
        const r = await run;
        expect(r.exitCode, r.stderr).toBe(0);
        expect(lineCount(out)).toBeGreaterThan(6);
        expect(r.stderr).toMatch(new RegExp(`endpoint ${b.url} out of rotation`));
        expectComplete(out, N, K);
        // every sample has its tokens (an empty one ended at once with end-of-generation)
        for (const l of lines(out)) expect(l.tokens.length === 0, `${l.id}/${l.sample}`).toBe(l.text === "");
    }, 300_000);

    it("every server gone: one sentence, nothing lost; restarted, the same command finishes", async () => {
        const N = 12, K = 4;
        const problems = problemsFile("down-problems.jsonl", N);
        const a = await serve({parallel: 2});
        const out = path.join(tmpDir, "down.jsonl");
        const cmd = ["generate", "--model", model, "--problems", problems, "--samples", String(K), "--temperature", "0.8", "--seed", "6",
            "--max-tokens", "160", "--endpoint", a.url, "--endpoint-concurrency", "2", "--out", out];
        const run = node(cmd);
        await waitFor(() => lineCount(out) >= 4);
        await a.kill();
        const r = await run;
        expect(r.exitCode).toBe(1);
        const errors = r.stderr.split("\n").filter((l) => l.startsWith("still: error:"));
        expect(errors).toHaveLength(1);
        expect(errors[0]).toMatch(new RegExp(`every endpoint failed \\(${a.url}: .*\\).*rerun the same command`));
        const kept = lines(out);
        expect(kept.length).toBeGreaterThanOrEqual(4);
        expect(kept.length).toBeLessThan(N * K);
        await serve({parallel: 2, port: a.port});
        const resumed = await node(cmd);
        expect(resumed.exitCode, resumed.stderr).toBe(0);
        expect(resumed.stdout).toMatch(new RegExp(`\\(${kept.length} were already there\\)`));
        expectComplete(out, N, K);
        // what was there before is unchanged
        expect(lines(out).slice(0, kept.length)).toEqual(kept);
    }, 300_000);

    it("n > 1 per request: each choice one sample, the same ones again on a rerun", async () => {
        const problems = problemsFile("n-problems.jsonl", 4);
        const s = await serve({model: qwen3, parallel: 4});
        const cmd = (out: string) => ["generate", "--model", qwen3, "--problems", problems, "--samples", "4", "--samples-per-request", "4", "--temperature", "1",
            "--seed", "9", "--max-tokens", "24", "--endpoint", s.url, "--endpoint-concurrency", "1", "--out", out];
        const [a, b] = [path.join(tmpDir, "n-a.jsonl"), path.join(tmpDir, "n-b.jsonl")];
        for (const out of [a, b]) {
            const r = await node(cmd(out));
            expect(r.exitCode, r.stderr).toBe(0);
            expectComplete(out, 4, 4);
        }
        const texts = (out: string) => new Map(lines(out).map((l) => [`${l.id}/${l.sample}`, l.text]));
        expect(texts(b)).toEqual(texts(a));
        // the choices are different samples (their seeds differ)
        for (let i = 0; i < 4; i++) expect(new Set([0, 1, 2, 3].map((k) => texts(a).get(`p${i}/${k}`))).size).toBeGreaterThan(1);
    }, 300_000);

    it("still merge's file loads in llama-server and samples as the base with its adapter at run time", async () => {
        const base = await testModel("tiny", "f32", 4);
        const adapter = await randomAdapter(path.join(tmpDir, "server-adapter.gguf"), 1, ["attn_q", "attn_v", "ffn_down"]);
        const merged = path.join(tmpDir, "server-merged.gguf");
        const m = await node(["merge", "--model", base, "--adapter", adapter, "--out", merged]);
        expect(m.exitCode, m.stderr).toBe(0);
        const s = await serve({model: merged});
        const problems = problemsFile("merge-problems.jsonl", 6);
        const common = ["--problems", problems, "--samples", "1", "--temperature", "0", "--max-tokens", "32", "--seed", "1"];
        const [local, remote] = [path.join(tmpDir, "merge-local.jsonl"), path.join(tmpDir, "merge-remote.jsonl")];
        const a = await node(["generate", "--model", base, "--adapter", adapter, ...common, "--parallel", "3", "--threads", "1", "--out", local]);
        expect(a.exitCode, a.stderr).toBe(0);
        const b = await node(["generate", "--model", base, ...common, "--endpoint", s.url, "--out", remote]);
        expect(b.exitCode, b.stderr).toBe(0);
        const byId = (f: string) => new Map(lines(f).map((l) => [l.id, l]));
        const [x, y] = [byId(local), byId(remote)];
        expect(y.size).toBe(6);
        // and not what the base alone writes: the adapter is in the merged weights
        const plain = path.join(tmpDir, "merge-base.jsonl");
        expect((await node(["generate", "--model", base, ...common, "--parallel", "3", "--threads", "1", "--out", plain])).exitCode).toBe(0);
        let differs = 0;
        for (const [id, l] of byId(plain)) if (JSON.stringify(l.tokens) !== JSON.stringify(x.get(id)!.tokens)) differs++;
        expect(differs).toBeGreaterThan(0);
        for (const [id, l] of x) {
            expect(y.get(id)!.tokens, id).toEqual(l.tokens);
            const lp = y.get(id)!.logprobs;
            for (let i = 0; i < lp.length; i++) expect(Math.abs(lp[i]! - l.logprobs[i]!)).toBeLessThan(1e-3);
        }
    }, 300_000);

    it("still eval on a server: the same greedy responses, verdicts and figures as the local engine's", async () => {
        const set = path.join(tmpDir, "eval-set.jsonl");
        fs.writeFileSync(set, fs.readFileSync(path.join(fixtures, "data/math500.jsonl"), "utf8").trim().split("\n").slice(0, 8).join("\n") + "\n");
        const s = await serve({model: qwen3});
        const common = ["eval", "--model", qwen3, "--set", `math=${set}`, "--max-tokens", "24", "--threads", "1", "--json"];
        const [local, remote] = [path.join(tmpDir, "eval-local"), path.join(tmpDir, "eval-remote")];
        const a = await node([...common, "--parallel", "4", "--out", local]);
        expect(a.exitCode, a.stderr).toBe(0);
        const b = await node([...common, "--endpoint", s.url, "--endpoint-concurrency", "4", "--out", remote]);
        expect(b.exitCode, b.stderr).toBe(0);
        type Response = {id: string, kind: string, text: string, tokens: number[], correct: boolean, finish: string};
        const responses = (dir: string) => fs.readFileSync(path.join(dir, "responses", "math.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Response);
        const [x, y] = [responses(local), responses(remote)];
        expect(y).toHaveLength(8);
        for (let i = 0; i < x.length; i++) {
            expect(y[i]!.id).toBe(x[i]!.id);
            expect(y[i]!.tokens, x[i]!.id).toEqual(x[i]!.tokens);
            expect(y[i]!.text).toBe(x[i]!.text);
            expect([y[i]!.correct, y[i]!.finish]).toEqual([x[i]!.correct, x[i]!.finish]);
        }
        const figures = (out: string) => {
            const r = JSON.parse(out.trim().split("\n").at(-1)!) as {sets: {accuracy: number, lengths: number[]}[], settings: {remote?: unknown}};
            return {sets: r.sets.map((m) => ({accuracy: m.accuracy, lengths: m.lengths})), remote: r.settings.remote};
        };
        expect(figures(b.stdout).sets).toEqual(figures(a.stdout).sets);
        expect(figures(b.stdout).remote).toEqual({urls: [s.url], model: null});
        // adapters are the server's business
        const refused = await node([...common, "--endpoint", s.url, "--adapter", "x.gguf", "--out", path.join(tmpDir, "eval-refused")]);
        expect(refused.exitCode).toBe(1);
        expect(refused.stderr).toMatch(/adapters apply to the local engine/);
    }, 300_000);
});
