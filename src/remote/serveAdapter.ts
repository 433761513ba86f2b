// A LoRA adapter handed to a fleet of vLLM servers between rounds: exported once in PEFT's
// layout next to the adapter, then loaded on every server through vLLM's runtime endpoint
// (POST /v1/load_lora_adapter {lora_name, lora_path}; the server needs --enable-lora,
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and read access to the folder). The name carries the
// adapter's content hash, so a server never serves stale weights under a reused name, and
// loading is idempotent: a server that lists the name already (GET /v1/models) is skipped.
import {createHash} from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {StillError} from "../errors.js";
import {exportPeft} from "../interop/peft.js";
import {HttpClient} from "./httpClient.js";
import {endpointBase, endpointOptionsSchema, type EndpointOptions, requestHeaders} from "./RemoteRollouts.js";

export type ServeAdapterOptions = {
    /** The adapter (LoRA GGUF). */
    adapter: string,
    /** Its base model (GGUF): llama adapters need its head counts for PEFT's row order. */
    baseModel: string,
    /** The name's prefix (the run and phase); the adapter's hash is appended. */
    label: string,
    endpoints: EndpointOptions,
    onLog?: (line: string) => void
};

/** Loads the adapter on every endpoint; returns the model name to sample it by, and the PEFT folder the servers read. */
export async function serveAdapter(o: ServeAdapterOptions): Promise<{name: string, dir: string}> {
    const e = endpointOptionsSchema.parse(o.endpoints);
    const hash = createHash("sha256").update(await fsp.readFile(o.adapter)).digest("hex").slice(0, 10);
    const name = `${o.label}-${hash}`.replace(/[^A-Za-z0-9._-]/g, "-");
    const dir = path.resolve(path.dirname(o.adapter), `peft-${hash}`);
    if (!fs.existsSync(path.join(dir, "adapter_config.json"))) {
        // written whole or not at all: a folder left by a crash is replaced
        const tmp = `${dir}.tmp-${process.pid}`;
        await fsp.rm(tmp, {recursive: true, force: true});
        await exportPeft(o.adapter, tmp, {model: o.baseModel});
        await fsp.rm(dir, {recursive: true, force: true});
        await fsp.rename(tmp, dir);
    }
    const headers = requestHeaders(e);
    const http = new HttpClient(1);
    try {
        await Promise.all(e.urls.map(async (raw) => {
            const url = endpointBase(raw);
            const fail = (why: string) => new StillError(`the endpoint ${url} did not load the adapter ${name} from ${dir}: ${why}. ` +
                "Loading adapters at run time needs vLLM started with --enable-lora (a --max-lora-rank of at least the adapter's rank) " +
                "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and the folder readable by the server; or set servers.adapters to \"none\" to sample adapters locally.");
            let listed: string[] = [];
            try {
                const r = await http.request(`${url}/v1/models`, {method: "GET", headers, timeoutMs: 30_000});
                if (r.status === 200) listed = ((JSON.parse(r.body) as {data?: {id?: string}[]}).data ?? []).map((m) => String(m.id));
            } catch (err) {
                throw fail((err as Error).message);
            }
            if (listed.includes(name)) return;
            let r;
            try {
                r = await http.request(`${url}/v1/load_lora_adapter`, {method: "POST", headers, body: JSON.stringify({lora_name: name, lora_path: dir}), timeoutMs: e.timeoutMs});
            } catch (err) {
                throw fail((err as Error).message);
            }
            if (r.status === 200 || r.status === 400 && r.body.includes("already been loaded")) {
                o.onLog?.(`endpoint ${url} serves the adapter ${path.basename(o.adapter)} as ${name}`);
                return;
            }
            throw fail(`${r.status} ${r.statusText}: ${r.body.slice(0, 300)}`);
        }));
    } finally {
        http.close();
    }
    return {name, dir};
}

/**
 * Unloads an adapter from every endpoint (vLLM's /v1/unload_lora_adapter), best effort: a server that refuses keeps it.
 * (An unset API key variable is refused, as when loading.)
 */
export async function unloadAdapter(name: string, endpoints: EndpointOptions): Promise<void> {
    const e = endpointOptionsSchema.parse(endpoints);
    const headers = requestHeaders(e);
    const http = new HttpClient(1);
    try {
        await Promise.all(e.urls.map((u) => http.request(`${endpointBase(u)}/v1/unload_lora_adapter`,
            {method: "POST", headers, body: JSON.stringify({lora_name: name}), timeoutMs: 30_000}).catch(() => undefined)));
    } finally {
        http.close();
    }
}
