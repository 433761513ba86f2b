// The remote client's HTTP: node:http(s) with one keep-alive agent per origin, whose
// sockets are reused across requests. Lighter per request than the global fetch (no
// streams, no Headers or Response objects), which matters when one process drives a fleet.
// A body cut short (a connection closed before its length was read) is an error, never
// a shorter answer.
import http from "node:http";
import https from "node:https";

export type HttpAnswer = {status: number, statusText: string, body: string};
export type HttpRequest = {method: "GET" | "POST", headers?: Record<string, string>, body?: string, timeoutMs: number, signal?: AbortSignal};

/** Why a request got no answer: `timeout` (no complete answer in time), `aborted` (the caller's signal) or `network`. */
export class HttpError extends Error {
    constructor(message: string, readonly kind: "timeout" | "aborted" | "network") {
        super(message);
    }
}

export class HttpClient {
    private readonly agents = new Map<string, http.Agent>();

    /** `maxSockets`: connections kept per origin (the requests in flight to one server). */
    constructor(private readonly maxSockets: number) {}

    request(url: string, r: HttpRequest): Promise<HttpAnswer> {
        const u = new URL(url);
        const secure = u.protocol === "https:";
        let agent = this.agents.get(u.origin);
        if (agent == null) {
            const options = {keepAlive: true, maxSockets: this.maxSockets, maxFreeSockets: this.maxSockets};
            agent = secure ? new https.Agent(options) : new http.Agent(options);
            this.agents.set(u.origin, agent);
        }
        const body = r.body == null ? undefined : Buffer.from(r.body, "utf8");
        return new Promise<HttpAnswer>((resolve, reject) => {
            if (r.signal?.aborted) return reject(new HttpError("cancelled", "aborted"));
            let settled = false;
            const fail = (err: HttpError) => {
                if (settled) return;
                settled = true;
                cleanup();
                req.destroy();
                reject(err);
            };
            const onAbort = () => fail(new HttpError("cancelled", "aborted"));
            const timer = setTimeout(() => fail(new HttpError(`no answer within ${r.timeoutMs} ms`, "timeout")), r.timeoutMs);
            const cleanup = () => {
                clearTimeout(timer);
                r.signal?.removeEventListener("abort", onAbort);
            };
            r.signal?.addEventListener("abort", onAbort, {once: true});
            const req = (secure ? https : http).request({
                protocol: u.protocol, hostname: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: r.method, agent,
                headers: {...r.headers, ...(body == null ? {} : {"content-length": String(body.length)})}
            }, (res) => {
                const chunks: Buffer[] = [];
                res.on("data", (c: Buffer) => chunks.push(c));
                res.on("aborted", () => fail(new HttpError("the connection closed before the whole answer came", "network")));
                res.on("error", (err) => fail(new HttpError(err.message, "network")));
                res.on("end", () => {
                    if (settled) return;
                    if (!res.complete) return fail(new HttpError("the connection closed before the whole answer came", "network"));
                    settled = true;
                    cleanup();
                    resolve({status: res.statusCode ?? 0, statusText: res.statusMessage ?? "", body: Buffer.concat(chunks).toString("utf8")});
                });
            });
            req.on("error", (err: NodeJS.ErrnoException) => fail(new HttpError(err.message, "network")));
            req.end(body);
        });
    }

    /** Closes every kept connection. */
    close() {
        for (const a of this.agents.values()) a.destroy();
        this.agents.clear();
    }
}
