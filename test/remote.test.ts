// `still generate --endpoint`: sampling on OpenAI-compatible servers (fakes on 127.0.0.1,
// test/helpers/fakeOpenAi.ts): every (problem, sample) written exactly once through faults,
// a server going away mid-run, all servers gone and a resume; a problem's samples on one
// server; seeds passed on; refusals named by endpoint.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {afterAll, afterEach, beforeAll, describe, expect, it} from "vitest";
import {answer, fakeOpenAi, type FakeServer, promptLogprob} from "./helpers/fakeOpenAi.js";
import {scoreRemote} from "../src/remote/remoteScore.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {loadModel, type Model} from "../src/engine/Model.js";

const node = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
let model: string;
let vocab: Model;
let problems: string;
const servers: FakeServer[] = [];
const N = 12, K = 4;

beforeAll(async () => {
    model = await testModel("tiny");
    vocab = await loadModel(model, {vocabOnly: true});
    problems = path.join(tmpDir, "remote-problems.jsonl");
    fs.writeFileSync(problems, Array.from({length: N}, (_, i) => JSON.stringify({id: `p${i}`, question: `What is ${i} + ${i}?`})).join("\n") + "\n");
});
afterAll(async () => { await vocab.dispose(); });
afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
});

async function serve(n: number, o: {delayMs?: number} = {}) {
    const made = await Promise.all(Array.from({length: n}, () => fakeOpenAi(o)));
    servers.push(...made);
    return made;
}
const generate = (out: string, urls: string[], extra: string[] = []) => node(["generate", "--model", model, "--problems", problems, "--samples", String(K),
    "--temperature", "0.7", "--seed", "3", "--max-tokens", "16", "--out", out, ...urls.flatMap((u) => ["--endpoint", u]), "--endpoint-concurrency", "3", ...extra]);
const lines = (out: string) => fs.readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l) as {id: string, sample: number, text: string, tokens: number[], logprobs: number[]});
/** A prompt as the fake received it, as text. */
const promptText = (p: string | number[]) => typeof p === "string" ? p : Buffer.from(vocab.detokenizeBytes(p, {special: true})).toString("utf8");
/** Every (problem, sample) exactly once. */
function expectComplete(out: string) {
    const keys = lines(out).map((l) => `${l.id}/${l.sample}`);
    expect(keys.length).toBe(N * K);
    expect(new Set(keys).size).toBe(N * K);
}

describe("still generate --endpoint", () => {
    it("writes each sample once, keeps a problem's samples on one server, passes seeds and re-tokenizes the text", async () => {
        const [a, b] = await serve(2);
        const out = path.join(tmpDir, "remote-ok.jsonl");
        const r = await generate(out, [a!.url, b!.url], ["--json"]);
        expect(r.exitCode, r.stderr).toBe(0);
        expectComplete(out);
        // the chat template ran locally: the prompts are the model's rendered ChatML, sent as its token ids
        expect(a!.served.length + b!.served.length).toBe(N * K);
        for (const s of [...a!.served, ...b!.served]) {
            expect(Array.isArray(s.prompt)).toBe(true);
            expect(promptText(s.prompt)).toMatch(/^<\|im_start\|>system\n[\s\S]*<\|im_start\|>assistant\n$/);
        }
        expect(a!.served.length).toBeGreaterThan(0);
        expect(b!.served.length).toBeGreaterThan(0);
        const where = new Map<string, Set<string>>();
        for (const [name, s] of [["a", a!], ["b", b!]] as const) for (const x of s.served) {
            const id = /What is (\d+)/.exec(promptText(x.prompt))![1]!;
            (where.get(id) ?? where.set(id, new Set()).get(id)!).add(name);
        }
        for (const [, at] of where) expect(at.size).toBe(1);
        // distinct seeds per sample, the same on a rerun elsewhere
        const seeds = [...a!.served, ...b!.served].map((s) => s.seed);
        expect(new Set(seeds).size).toBe(N * K);
        for (const l of lines(out)) expect(l.tokens.length).toBeGreaterThan(0);
        const again = path.join(tmpDir, "remote-ok-again.jsonl");
        const [c] = await serve(1);
        expect((await generate(again, [c!.url])).exitCode).toBe(0);
        const text = (f: string) => new Map(lines(f).map((l) => [`${l.id}/${l.sample}`, l.text]));
        expect(text(again)).toEqual(text(out));
        // --endpoint-prompt text: the same prompts as text
        const asText = path.join(tmpDir, "remote-ok-text.jsonl");
        const [d] = await serve(1);
        expect((await generate(asText, [d!.url], ["--endpoint-prompt", "text"])).exitCode).toBe(0);
        const rendered = new Set([...a!.served, ...b!.served].map((s) => promptText(s.prompt)));
        expect(d!.served.length).toBe(N * K);
        for (const s of d!.served) {
            expect(typeof s.prompt).toBe("string");
            expect(rendered.has(s.prompt as string)).toBe(true);
        }
    }, 120_000);

    it("rides out 500s, 429s, malformed and truncated answers, and a server killed mid-run", async () => {
        const [a, b] = await serve(2, {delayMs: 20});
        a!.faults.push("500", "429", "malformed", "truncated", "500");
        b!.faults.push("truncated", "429");
        const out = path.join(tmpDir, "remote-faults.jsonl");
        const run = generate(out, [a!.url, b!.url]);
        // kill b once it has answered a few
        for (let t = 0; b!.served.length < 6 && t < 400; t++) await new Promise((r) => setTimeout(r, 10));
        await b!.kill();
        const r = await run;
        expect(r.exitCode, r.stderr).toBe(0);
        expect(r.stderr).toMatch(new RegExp(`endpoint ${b!.url} out of rotation`));
        expectComplete(out);
    }, 120_000);

    it("stops with one sentence when every server is gone, loses nothing, and a rerun finishes", async () => {
        const [a] = await serve(1, {delayMs: 30});
        const out = path.join(tmpDir, "remote-down.jsonl");
        const run = generate(out, [a!.url]);
        for (let t = 0; a!.served.length < 10 && t < 400; t++) await new Promise((r) => setTimeout(r, 10));
        await a!.kill();
        const r = await run;
        expect(r.exitCode).toBe(1);
        const errors = r.stderr.split("\n").filter((l) => l.startsWith("still: error:"));
        expect(errors).toHaveLength(1);
        expect(errors[0]).toMatch(new RegExp(`every endpoint failed \\(${a!.url}: .*\\).*rerun the same command`));
        const kept = lines(out);
        expect(kept.length).toBeGreaterThanOrEqual(10);
        expect(kept.length).toBeLessThan(N * K);
        await a!.restart();
        const resumed = await generate(out, [a!.url]);
        expect(resumed.exitCode, resumed.stderr).toBe(0);
        expectComplete(out);
    }, 180_000);

    it("keeps a server's own token ids and log-probs when they spell the text, else re-tokenizes", async () => {
        const honest = await fakeOpenAi({tokenIds: (t) => vocab.tokenize(t, {special: true})});
        // a server whose ids do not spell its text (another tokenizer): they are not trusted
        const other = await fakeOpenAi({tokenIds: (t) => vocab.tokenize(t.slice(1), {special: true})});
        servers.push(honest, other);
        for (const [s, trusted] of [[honest, true], [other, false]] as const) {
            const out = path.join(tmpDir, `remote-ids-${trusted}.jsonl`);
            const r = await generate(out, [s.url], ["--json"]);
            expect(r.exitCode, r.stderr).toBe(0);
            const summary = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as {server_tokens: number, retokenized: number};
            expect(summary.server_tokens).toBe(trusted ? N * K : 0);
            expect(summary.retokenized).toBe(trusted ? 0 : N * K);
            for (const l of lines(out)) {
                expect(l.tokens).toEqual(vocab.tokenize(l.text, {special: true}));
                // the server's log-probs only where its tokens are the ones written
                expect(l.logprobs).toEqual(trusted ? l.tokens.map((_, i) => -0.25 - i / 1000) : []);
            }
        }
        // llama-server's layout: every token in its verbose answer, the stop string it met put back in the
        // text when it is one that stays (the STILL form's end), log-probs missing for the stop's tokens
        const stop = "<|end_of_solution|>";
        const llama = await fakeOpenAi({llamaServer: {stop, tokenize: (t) => vocab.tokenize(t, {special: true})}});
        servers.push(llama);
        const out = path.join(tmpDir, "remote-ids-llama.jsonl");
        const r = await generate(out, [llama.url], ["--json"]);
        expect(r.exitCode, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout.trim().split("\n").at(-1)!)).toMatchObject({server_tokens: N * K, retokenized: 0});
        for (const l of lines(out)) {
            expect(l.text.endsWith(stop)).toBe(true);
            expect(l.tokens).toEqual(vocab.tokenize(l.text, {special: true}));
            expect(l.logprobs).toEqual([]);
        }
    }, 60_000);

    it("asks for a problem's samples n at a time where told, each choice written as its own sample", async () => {
        const [a] = await serve(1);
        const out = path.join(tmpDir, "remote-n.jsonl");
        // K = 4 samples in requests of 3: n = 3 (samples 0–2), then n = 1 (sample 3)
        const r = await generate(out, [a!.url], ["--samples-per-request", "3"]);
        expect(r.exitCode, r.stderr).toBe(0);
        expectComplete(out);
        expect(a!.served.map((s) => s.n).sort()).toEqual([...Array(N).fill(1), ...Array(N).fill(3)].sort());
        // choice k answers from the request's seed + k (the fake lists the choices backwards; their index says which)
        const texts = new Map(lines(out).map((l) => [`${l.id}/${l.sample}`, l.text]));
        for (const s of a!.served) {
            const id = `p${/What is (\d+)/.exec(promptText(s.prompt))![1]!}`;
            const first = s.n === 3 ? 0 : 3;
            for (let k = 0; k < s.n; k++) expect(texts.get(`${id}/${first + k}`)).toBe(answer(Array.isArray(s.prompt) ? s.prompt.join(",") : s.prompt, s.seed + k));
        }
        // done: the same command asks for nothing; a file made one sample per request is not continued with n = 3
        const served = a!.served.length;
        const again = await generate(out, [a!.url], ["--samples-per-request", "3"]);
        expect(again.exitCode, again.stderr).toBe(0);
        expect(a!.served.length).toBe(served);
        const plain = path.join(tmpDir, "remote-n-plain.jsonl");
        expect((await generate(plain, [a!.url])).exitCode).toBe(0);
        const mixed = await generate(plain, [a!.url], ["--samples-per-request", "3"]);
        expect(mixed.exitCode).toBe(1);
        expect(mixed.stderr).toMatch(/holds samples made with other settings/);
    }, 60_000);

    it("scores on a server with prompt log-probs (vLLM's prompt_logprobs); one that has none is refused", async () => {
        const vllm = await fakeOpenAi({vllm: {model: "base"}});
        const [plain] = await serve(1);
        servers.push(vllm);
        const items = [{id: "a", prompt: [5, 6, 7], completion: [8, 9]}, {id: "b", prompt: [1, 2], completion: [3, 4, 5, 6]}, {id: "c", prompt: [9], completion: []}];
        const scores = await scoreRemote(items, {urls: [vllm.url], model: "base"});
        for (const [i, item] of items.entries()) {
            const want = item.completion.map((t, k) => promptLogprob(t, item.prompt.length + k));
            expect(scores[i]!.id).toBe(item.id);
            expect(scores[i]!.logprobs).toEqual(want);
            const mean = want.length === 0 ? 0 : want.reduce((x, y) => x + y, 0) / want.length;
            expect(scores[i]!.perplexity).toBeCloseTo(Math.exp(-mean), 12);
        }
        expect(vllm.served.every((x) => x.promptLogprobs)).toBe(true);
        await expect(scoreRemote(items, {urls: [plain!.url]})).rejects.toThrow(
            new RegExp(`the endpoint ${plain!.url} refused a request: no prompt log-probs in its answer`));
    }, 60_000);

    it("names the endpoint that refuses a request; a URL that is not http(s) is refused before any work", async () => {
        const [a] = await serve(1);
        a!.faults.push("400");
        const out = path.join(tmpDir, "remote-400.jsonl");
        const r = await generate(out, [a!.url]);
        expect(r.exitCode).toBe(1);
        expect(r.stderr).toMatch(new RegExp(`the endpoint ${a!.url} refused a request: 400 .*model 'x' not found`));
        const local = await node(["generate", "--model", model, "--prompt", "hi", "--out", path.join(tmpDir, "remote-x.jsonl"), "--endpoint", "ftp://x"]);
        expect(local.exitCode).toBe(1);
        expect(local.stderr).toMatch(/Invalid URL\s+→ at endpoint\[0\]/);
        expect(fs.existsSync(path.join(tmpDir, "remote-x.jsonl"))).toBe(false);
    }, 60_000);
});
