// llama.cpp's own llama-server, built from the bundled source (once, like the other
// llama.cpp tools) and started on 127.0.0.1 on a port the system picks: the real server the
// remote-rollout tests and bench:remote drive. Linked to the same llama.cpp libraries as the
// addon's variant, so its kernels are the engine's.
import path from "node:path";
import {execa, type ResultPromise} from "execa";
import {type VariantInfo, getBackend} from "../engine/binding.js";
import {StillError} from "../errors.js";
import {llamaTool, toolCwd} from "../bench/llamaTools.js";

export type LlamaServerOptions = {
    model: string,
    /** Slots (requests decoded together). */
    parallel?: number,
    /** Context of all slots together. */
    ctx?: number,
    threads?: number,
    /** Continuous batching's logical and physical batch. */
    batch?: number,
    ubatch?: number,
    /** LoRA adapters loaded at start (llama-server cannot load one later). */
    lora?: string[],
    /** A fixed port (to restart a server where it was); 0 lets the system pick. */
    port?: number,
    variant?: VariantInfo,
    extraArgs?: string[],
    log?: (line: string) => void,
    /** How long loading may take before giving up. */
    startTimeoutMs?: number
};

export type LlamaServer = {
    url: string,
    port: number,
    pid: number,
    /** Its output so far (for a failing test's message). */
    output: () => string,
    /** kill -9, at once. */
    kill: () => Promise<void>,
    /** SIGTERM, then SIGKILL after a grace period. */
    stop: () => Promise<void>
};

/** Starts llama-server on 127.0.0.1 and waits until it has loaded the model and answers /health. */
export async function startLlamaServer(o: LlamaServerOptions): Promise<LlamaServer> {
    const variant = o.variant ?? getBackend().variant;
    const tool = await llamaTool("llama-server", variant, o.log ?? (() => {}));
    // paths made absolute: the server runs in its libraries' folder
    const args = ["-m", path.resolve(o.model), "--host", "127.0.0.1", "--port", String(o.port ?? 0),
        "-np", String(o.parallel ?? 4), "-c", String(o.ctx ?? 4096), "-t", String(o.threads ?? 1),
        ...(o.batch == null ? [] : ["-b", String(o.batch)]), ...(o.ubatch == null ? [] : ["-ub", String(o.ubatch)]),
        ...(o.lora ?? []).flatMap((a) => ["--lora", path.resolve(a)]), "--no-webui", ...(tool.variant.gpu ? ["-ngl", "999"] : []), ...(o.extraArgs ?? [])];
    let output = "";
    const child: ResultPromise = execa(tool.binary, args, {cwd: toolCwd(tool.variant), reject: false, all: true, buffer: false, stdin: "ignore"});
    let exited = false;
    const done = child.then(() => { exited = true; });
    const listening = new Promise<number>((resolve, reject) => {
        child.all?.on("data", (chunk: Buffer) => {
            output += chunk.toString("utf8");
            if (output.length > 200_000) output = output.slice(-100_000);
            const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
            if (m != null) resolve(Number(m[1]));
        });
        void done.then(() => reject(new StillError(`llama-server exited before listening: ${output.split("\n").slice(-5).join(" ")}`)));
    });
    const kill = async () => {
        if (!exited) child.kill("SIGKILL");
        await done;
    };
    const stop = async () => {
        if (exited) return;
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await done;
        clearTimeout(t);
    };
    try {
        const timeoutMs = o.startTimeoutMs ?? 120_000;
        const deadline = Date.now() + timeoutMs;
        const port = await Promise.race([listening, new Promise<never>((_r, reject) => setTimeout(() => reject(new StillError(`llama-server did not listen within ${timeoutMs} ms`)), timeoutMs).unref())]);
        const url = `http://127.0.0.1:${port}`;
        for (;;) {
            if (exited) throw new StillError(`llama-server exited while loading ${o.model}: ${output.split("\n").slice(-5).join(" ")}`);
            try {
                const r = await fetch(`${url}/health`, {signal: AbortSignal.timeout(2_000)});
                await r.arrayBuffer();
                if (r.ok) break;
            } catch { /* not yet */ }
            if (Date.now() > deadline) throw new StillError(`llama-server at ${url} did not become healthy within ${timeoutMs} ms`);
            await new Promise((r) => setTimeout(r, 100));
        }
        return {url, port, pid: child.pid!, output: () => output, kill, stop};
    } catch (err) {
        await kill();
        throw err;
    }
}
