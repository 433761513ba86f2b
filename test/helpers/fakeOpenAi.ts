// A fake OpenAI-compatible completions server on 127.0.0.1 for the remote backend's tests:
// answers /v1/completions with text made from the prompt and the seed (the same request
// gives the same answer, as a server honouring seeds does), /health; and misbehaves on
// request: error statuses, slow, malformed or truncated bodies, or going away.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import type {AddressInfo} from "node:net";

export type Fault = "500" | "429" | "400" | "malformed" | "truncated" | "slow";

export type FakeServer = {
    url: string,
    /** Requests answered, by prompt (text or token ids, as sent), with their seeds and model names. */
    served: {prompt: string | number[], seed: number, model: string | undefined, n: number, promptLogprobs: boolean}[],
    /** vLLM mode: the adapters loaded at run time, with their folders. */
    loaded: {name: string, path: string}[],
    /** vLLM mode: the adapters unloaded, by name. */
    unloaded: string[],
    /** Faults for the next requests, in order. */
    faults: Fault[],
    /** Stops listening and cuts open connections (as a killed server). */
    kill: () => Promise<void>,
    /** Listens again on the same port. */
    restart: () => Promise<void>,
    close: () => Promise<void>
};

/** The log-prob the fake vLLM gives token `token` at position `i` of a prompt. */
export function promptLogprob(token: number, i: number): number {
    return -((token * 7 + i) % 11) / 10 - 0.05;
}

/** The fake's answer to a prompt (token ids joined by commas) at a seed. */
export function answer(prompt: string, seed: number): string {
    let h = 2166136261;
    for (const c of `${prompt}|${seed}`) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
    return `The answer is $\\boxed{${h % 1000}}$.`;
}

/**
 * `tokenIds`: answer as vLLM does when asked with return_token_ids — the choice's
 * `token_ids` (made by the given function from the text) and legacy `token_logprobs`.
 */
/**
 * `llamaServer`: answer as llama-server does when asked with verbose and return_tokens — the
 * text cut before the stop string it met (`stop`, ending every answer), every sampled token
 * (the stop string's too) and the stop in `__verbose`, and `logprobs.content` without the
 * stop string's tokens.
 */
export async function fakeOpenAi(o: {delayMs?: number, tokenIds?: (text: string) => number[],
                                     llamaServer?: {stop: string, tokenize: (text: string) => number[]},
                                     vllm?: {model: string}} = {}): Promise<FakeServer> {
    const sockets = new Set<import("node:net").Socket>();
    const state: FakeServer = {url: "", served: [], loaded: [], unloaded: [], faults: [], kill: async () => {}, restart: async () => {}, close: async () => {}};
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
        const json = (status: number, value: unknown) => res.writeHead(status, {"content-type": "application/json"}).end(JSON.stringify(value));
        // vLLM's model list and run-time adapter loading (the folder must hold a PEFT adapter)
        if (o.vllm != null && req.method === "GET" && req.url === "/v1/models")
            return json(200, {object: "list", data: [o.vllm.model, ...state.loaded.map((l) => l.name)].map((id) => ({id, object: "model"}))});
        if (o.vllm != null && req.method === "POST" && req.url === "/v1/load_lora_adapter") {
            let body = "";
            req.on("data", (c) => { body += c; });
            req.on("end", () => {
                const r = JSON.parse(body) as {lora_name: string, lora_path: string};
                if (state.loaded.some((l) => l.name === r.lora_name))
                    return json(400, {object: "error", message: `The lora adapter '${r.lora_name}' has already been loaded.`, type: "InvalidUserInput", code: 400});
                if (!["adapter_config.json", "adapter_model.safetensors"].every((f) => fs.existsSync(path.join(r.lora_path, f))))
                    return json(404, {object: "error", message: `No adapter found for ${r.lora_path}`, type: "NotFoundError", code: 404});
                state.loaded.push({name: r.lora_name, path: r.lora_path});
                res.writeHead(200, {"content-type": "text/plain"}).end(`Success: LoRA adapter '${r.lora_name}' added successfully.`);
            });
            return;
        }
        if (o.vllm != null && req.method === "POST" && req.url === "/v1/unload_lora_adapter") {
            let body = "";
            req.on("data", (c) => { body += c; });
            req.on("end", () => {
                const name = (JSON.parse(body) as {lora_name: string}).lora_name;
                if (!state.loaded.some((l) => l.name === name))
                    return json(404, {object: "error", message: `The lora adapter '${name}' cannot be found.`, type: "NotFoundError", code: 404});
                state.loaded = state.loaded.filter((l) => l.name !== name);
                state.unloaded.push(name);
                res.writeHead(200, {"content-type": "text/plain"}).end(`Success: LoRA adapter '${name}' removed successfully.`);
            });
            return;
        }
        if (req.method === "GET" && (req.url === "/health" || req.url === "/v1/models")) {
            res.writeHead(200, {"content-type": "application/json"}).end(JSON.stringify({status: "ok"}));
            return;
        }
        if (req.url !== "/v1/completions") return json(404, {error: {code: 404, message: "File Not Found", type: "not_found_error"}});
        let body = "";
        req.on("data", (c) => { body += c; });
        req.on("end", () => {
            const fault = state.faults.shift();
            const reply = () => {
                if (fault === "500") return res.writeHead(500).end("internal error");
                if (fault === "429") return res.writeHead(429).end("slow down");
                if (fault === "400") return res.writeHead(400, {"content-type": "application/json"}).end(JSON.stringify({error: {message: "model 'x' not found"}}));
                if (fault === "malformed") return res.writeHead(200, {"content-type": "application/json"}).end("{\"choices\": [{\"tex");
                const r = JSON.parse(body) as {prompt: string | number[], seed: number, max_tokens: number, model?: string, n?: number, prompt_logprobs?: number,
                                              return_token_ids?: boolean, verbose?: boolean, return_tokens?: boolean};
                if (o.vllm != null && r.model !== o.vllm.model && !state.loaded.some((l) => l.name === r.model))
                    return json(404, {object: "error", message: `The model \`${r.model}\` does not exist.`, type: "NotFoundError", code: 404});
                state.served.push({prompt: r.prompt, seed: r.seed, model: r.model, n: r.n ?? 1, promptLogprobs: r.prompt_logprobs != null});
                // vLLM's prompt log-probs: each prompt token's own (the first has none)
                if (o.vllm != null && r.prompt_logprobs != null && Array.isArray(r.prompt)) {
                    const tokens = r.prompt;
                    return json(200, {id: "cmpl", object: "text_completion", choices: [{index: 0, text: "x", finish_reason: "length", logprobs: null,
                        prompt_logprobs: tokens.map((t, i) => i === 0 ? null : {[String(t)]: {logprob: promptLogprob(t, i), rank: 1, decoded_token: "?"}})}],
                        usage: {prompt_tokens: tokens.length, completion_tokens: 1}});
                }
                const text = answer(typeof r.prompt === "string" ? r.prompt : r.prompt.join(","), r.seed);
                // n > 1 (vLLM's way): choice k from seed + k, the choices listed last to first (their index says which)
                const n = r.n ?? 1;
                const choice = (k: number) => {
                    const t = answer(typeof r.prompt === "string" ? r.prompt : r.prompt.join(","), r.seed + k);
                    const ids = o.tokenIds != null && r.return_token_ids === true ? o.tokenIds(t) : null;
                    return {index: k, text: t, finish_reason: "stop", ...(ids == null ? {logprobs: null}
                        : {token_ids: ids, logprobs: {tokens: ids.map(String), token_logprobs: ids.map((_, i) => -0.25 - i / 1000)}})};
                };
                const ls = o.llamaServer;
                const payload = ls != null ? JSON.stringify({
                    choices: [{index: 0, text, finish_reason: "stop", logprobs: {content: ls.tokenize(text).map((id) => ({id, logprob: -0.5}))}}],
                    usage: {prompt_tokens: 10, completion_tokens: ls.tokenize(text + ls.stop).length},
                    ...(r.verbose === true && r.return_tokens === true ? {__verbose: {tokens: ls.tokenize(text + ls.stop), stop_type: "word", stopping_word: ls.stop}} : {})
                }) : JSON.stringify({
                    id: "cmpl", object: "text_completion",
                    choices: Array.from({length: n}, (_, k) => choice(n - 1 - k)),
                    usage: {prompt_tokens: 10, completion_tokens: 8 * n}
                });
                if (fault === "truncated") {
                    res.writeHead(200, {"content-type": "application/json", "content-length": String(payload.length)});
                    res.write(payload.slice(0, 20));
                    res.destroy();
                    return;
                }
                res.writeHead(200, {"content-type": "application/json"}).end(payload);
            };
            const delay = fault === "slow" ? 60_000 : o.delayMs ?? 0;
            if (delay > 0) setTimeout(reply, delay).unref();
            else reply();
        });
    };
    let server = http.createServer(handler);
    const track = (s: http.Server) => s.on("connection", (c) => { sockets.add(c); c.on("close", () => sockets.delete(c)); });
    track(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    state.url = `http://127.0.0.1:${port}`;
    const stop = async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
    };
    state.kill = stop;
    state.close = async () => { if (server.listening) await stop(); };
    state.restart = async () => {
        server = http.createServer(handler);
        track(server);
        await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    };
    return state;
}
