// Runs a program that a model wrote. This file and still-sandbox (native/sandbox) are the
// only places in still that execute model text.
//
// On Linux every run goes through still-sandbox: new user, mount, network, PID, IPC and
// UTS namespaces, a root of read-only system folders with the code at /code (read-only)
// and a private /tmp, limits on CPU time, address space, file size, open files and
// processes, no network at all (loopback included), a built environment, and nothing
// left running afterwards. Where that is not available (macOS, a kernel without user
// namespaces), running code is refused unless the caller opts in with `unsafe`, which
// gives a plain subprocess in its own process group with ulimits, a temporary folder and
// a clean environment, and no isolation of files or network.
import {spawn} from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {z} from "zod";
import {buildDir} from "../engine/binding.js";
import {AbortError, OptionError, StillError} from "../errors.js";

/** Code execution is refused: no sandbox here and no opt-in, or turned off. */
export class CodeExecutionError extends StillError {
    override name = "CodeExecutionError";
}

export const sandboxLimitsSchema = z.object({
    cpuSeconds: z.number().int().min(1).describe("CPU seconds for the program and its children (SIGKILL one second later)").default(10),
    wallMs: z.number().int().min(100).describe("Wall-clock limit of one run, in milliseconds").default(10_000),
    memoryBytes: z.number().int().min(64 << 20).describe("Address space of each process, in bytes").default(1 << 30),
    fileBytes: z.number().int().min(1).describe("Largest file the program may write, in bytes").default(16 << 20),
    tmpBytes: z.number().int().min(1 << 20).describe("Size of the program's /tmp, in bytes").default(64 << 20),
    openFiles: z.number().int().min(16).describe("Open files per process").default(64),
    processes: z.number().int().min(8).describe("Processes and threads of the program's user").default(64),
    outputBytes: z.number().int().min(1024).describe("Standard output and standard error kept, each; a program printing more is stopped").default(1 << 20)
});
export type SandboxLimits = z.input<typeof sandboxLimitsSchema>;

export type Isolation =
    | {kind: "namespaces", detail: string}
    | {kind: "none", reason: string};

export type RunStatus =
    /** The program ended by itself (`code` is its exit status). */
    | "exited"
    /** Killed by a signal: SIGKILL/SIGXCPU from the CPU limit, SIGXFSZ from the file limit, a crash. */
    | "signaled"
    | "timeout"
    | "output_limit"
    /** The interpreter could not be started. */
    | "exec_failed";

export type RunResult = {
    status: RunStatus,
    code: number | null,
    signal: number | null,
    stdout: string,
    stderr: string,
    wallMs: number,
    isolation: Isolation["kind"]
};

export type RunOptions = {
    /** The interpreter (an absolute path) and its arguments; the code is under /code. */
    argv: readonly string[],
    /** Files written to the code folder (name → text). */
    files: Readonly<Record<string, string>>,
    stdin?: string | undefined,
    limits?: SandboxLimits | undefined,
    /** Folders the interpreter needs besides /usr (its own installation), read-only. */
    readOnly?: readonly string[] | undefined,
    /** Run without isolation where there is none (a subprocess with ulimits: unsafe). */
    unsafe?: boolean | undefined,
    /** Where the run's temporary folder is made (default the system's); it is removed afterwards. */
    tmpDir?: string | undefined,
    signal?: AbortSignal | undefined
};

const statusSchema = z.discriminatedUnion("status", [
    z.object({status: z.literal("exited"), code: z.number().int()}),
    z.object({status: z.literal("signaled"), signal: z.number().int()}),
    z.object({status: z.literal("exec_failed"), message: z.string()}),
    z.object({status: z.literal("unavailable"), message: z.string()})
]);

const SANDBOX = path.join(buildDir, "still-sandbox");

/** `STILL_CODE_EXECUTION=off` turns code execution off for the whole process. */
export function codeExecutionDisabled() {
    return (process.env.STILL_CODE_EXECUTION ?? "").toLowerCase() === "off";
}

let isolation: Promise<Isolation> | undefined;

/** Which isolation runs code on this machine (probed once: still-sandbox runs /bin/true). */
export function detectIsolation(): Promise<Isolation> {
    isolation ??= probe();
    return isolation;
}

async function probe(): Promise<Isolation> {
    if (process.platform !== "linux") return {kind: "none", reason: `no sandbox on ${process.platform} (still-sandbox needs Linux namespaces)`};
    if (!fs.existsSync(SANDBOX)) return {kind: "none", reason: `${SANDBOX} is not built (run \`npm run build:native\`)`};
    const truePath = ["/bin/true", "/usr/bin/true"].find((p) => fs.existsSync(p));
    if (truePath == null) return {kind: "none", reason: "no /bin/true to probe the sandbox with"};
    const r = await sandboxed({argv: [truePath], files: {}}, sandboxLimitsSchema.parse({}));
    if (r.kind === "unavailable") return {kind: "none", reason: `still-sandbox cannot isolate here: ${r.message}`};
    if (r.result.status !== "exited" || r.result.code !== 0) return {kind: "none", reason: `still-sandbox's probe ended with ${r.result.status}`};
    return {kind: "namespaces", detail: "still-sandbox: user, mount, network, PID, IPC and UTS namespaces; read-only system folders; rlimits"};
}

/**
 * Why code may not run here (null: it may): turned off, or no isolation and no opt-in.
 */
export async function codeRefusal(unsafe: boolean): Promise<string | null> {
    if (codeExecutionDisabled()) return "code execution is turned off (STILL_CODE_EXECUTION=off).";
    const iso = await detectIsolation();
    if (iso.kind === "none" && !unsafe)
        return `${iso.reason}. Possible solutions: run on Linux with user namespaces enabled, or opt in to running model code ` +
            "unisolated (--unsafe-run-code-without-sandbox, code.unsafeRunWithoutSandbox in a run config, `unsafe: true`) " +
            "on a machine you do not mind it harming.";
    return null;
}

/** Runs one program under the limits; refuses (CodeExecutionError) where it may not run. */
export async function runSandboxed(o: RunOptions): Promise<RunResult> {
    const refused = await codeRefusal(o.unsafe === true);
    if (refused != null) throw new CodeExecutionError(`code is refused: ${refused}`);
    if (o.argv.length === 0 || !path.isAbsolute(o.argv[0]!)) throw new OptionError("runSandboxed needs the interpreter as an absolute path.");
    const limits = sandboxLimitsSchema.parse(o.limits ?? {});
    if ((await detectIsolation()).kind === "none") return runUnisolated(o);
    const r = await sandboxed(o, limits);
    if (r.kind === "unavailable") throw new CodeExecutionError(`the sandbox failed to start: ${r.message}`);
    return r.result;
}

type Outcome = {kind: "ran", result: RunResult} | {kind: "unavailable", message: string};

async function withCodeDir<T>(o: RunOptions, work: (dir: string, code: string) => Promise<T>): Promise<T> {
    const files = o.files;
    const dir = await fsp.mkdtemp(path.join(o.tmpDir ?? os.tmpdir(), "still-code-"));
    try {
        const code = path.join(dir, "code");
        await fsp.mkdir(path.join(dir, "root"));
        await fsp.mkdir(code);
        // readable by the program's user (nobody), writable by no one inside
        await fsp.chmod(dir, 0o755);
        await fsp.chmod(code, 0o755);
        for (const [name, text] of Object.entries(files)) {
            if (name.includes("/") || name.startsWith(".")) throw new OptionError(`a code file's name must be plain: ${name}`);
            await fsp.writeFile(path.join(code, name), text, {mode: 0o644});
        }
        return await work(dir, code);
    } finally {
        await fsp.rm(dir, {recursive: true, force: true});
    }
}

/** The program's whole environment (nothing of ours is passed on). */
const ENVIRONMENT: Readonly<Record<string, string>> = {
    PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", TMPDIR: "/tmp", LANG: "C.UTF-8", LC_ALL: "C.UTF-8",
    PYTHONDONTWRITEBYTECODE: "1", PYTHONHASHSEED: "0", PYTHONIOENCODING: "utf-8", PYTHONUNBUFFERED: "1"
};

function sandboxed(o: RunOptions, limits: z.output<typeof sandboxLimitsSchema>): Promise<Outcome> {
    return withCodeDir(o, (dir, code) => {
        const args = [
            "--root", path.join(dir, "root"), "--code", code,
            "--cpu", String(limits.cpuSeconds), "--mem", String(limits.memoryBytes), "--fsize", String(limits.fileBytes),
            "--tmp-size", String(limits.tmpBytes), "--nofile", String(limits.openFiles), "--nproc", String(limits.processes),
            ...(o.readOnly ?? []).flatMap((p) => ["--ro", p]),
            ...Object.entries(ENVIRONMENT).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
            "--", ...o.argv
        ];
        return collect(SANDBOX, args, {}, o, limits, "namespaces", false);
    });
}

/**
 * What runSandboxed does with `unsafe` where there is no isolation: a subprocess in its own
 * process group, under ulimits, in a temporary folder, with a built environment. It does
 * not stop the program from reading or writing the user's files or using the network.
 */
export function runUnisolated(o: RunOptions): Promise<RunResult> {
    if (codeExecutionDisabled()) throw new CodeExecutionError("code execution is turned off (STILL_CODE_EXECUTION=off).");
    const limits = sandboxLimitsSchema.parse(o.limits ?? {});
    return withCodeDir(o, async (_dir, code) => {
        // the code folder is the working folder; /code in argv points at it
        const argv = o.argv.map((a) => a.startsWith("/code/") ? path.join(code, a.slice(6)) : a);
        const kb = (n: number) => String(Math.max(1, Math.floor(n / 1024)));
        // one limit per ulimit call: POSIX sh takes one
        const script = `ulimit -t ${limits.cpuSeconds}; ulimit -v ${kb(limits.memoryBytes)}; ulimit -f ${kb(limits.fileBytes)}; ` +
            `ulimit -n ${limits.openFiles}; ulimit -c 0; exec "$@"`;
        const env = {...ENVIRONMENT, HOME: code, TMPDIR: code};
        const r = await collect("/bin/sh", ["-c", script, "sh", ...argv], env, o, limits, "none", true, code);
        if (r.kind === "unavailable") throw new CodeExecutionError(r.message);
        return r.result;
    });
}

function collect(cmd: string, args: string[], env: Record<string, string>, o: RunOptions,
    limits: z.output<typeof sandboxLimitsSchema>, kind: Isolation["kind"], group: boolean, cwd?: string): Promise<Outcome> {
    return new Promise((resolve, reject) => {
        const started = performance.now();
        const child = spawn(cmd, args, {
            env, cwd: cwd ?? os.tmpdir(), detached: group,
            stdio: ["pipe", "pipe", "pipe", group ? "ignore" : "pipe"]
        });
        const status: Buffer[] = [];
        let ended: RunStatus | null = null;
        const stop = (why: RunStatus) => {
            if (ended == null) ended = why;
            try {
                if (group && child.pid != null) process.kill(-child.pid, "SIGKILL");
                else child.kill("SIGKILL");   // still-sandbox's death takes the namespace with it
            } catch {
                // already gone
            }
        };
        const timer = setTimeout(() => stop("timeout"), limits.wallMs);
        const onAbort = () => stop("timeout");
        o.signal?.addEventListener("abort", onAbort, {once: true});
        // each of stdout and stderr kept up to the cap; past it the program is stopped
        const capped = (stream: NodeJS.ReadableStream) => {
            const kept: Buffer[] = [];
            let bytes = 0;
            stream.on("data", (b: Buffer) => {
                if (bytes < limits.outputBytes) kept.push(b.subarray(0, limits.outputBytes - bytes));
                bytes += b.length;
                if (bytes > limits.outputBytes) stop("output_limit");
            });
            return kept;
        };
        const out = capped(child.stdout!), err = capped(child.stderr!);
        child.stdio[3]?.on("data", (b: Buffer) => status.push(b));
        child.stdin!.on("error", () => { /* the program need not read its input */ });
        child.stdin!.end(o.stdin ?? "");
        child.on("error", (e) => {
            clearTimeout(timer);
            reject(new CodeExecutionError(`cannot start ${cmd}: ${e.message}`));
        });
        child.on("close", (code, sig) => {
            clearTimeout(timer);
            o.signal?.removeEventListener("abort", onAbort);
            if (o.signal?.aborted) {
                reject(new AbortError("running code was cancelled"));
                return;
            }
            const base = {stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8"),
                wallMs: performance.now() - started, isolation: kind};
            if (ended != null) {
                resolve({kind: "ran", result: {...base, status: ended, code: null, signal: null}});
                return;
            }
            if (group) {
                // the unisolated shell: its own status is the program's
                const signal = sig == null ? null : os.constants.signals[sig] ?? null;
                resolve({kind: "ran", result: {...base, status: signal == null ? "exited" : "signaled", code, signal}});
                return;
            }
            const line = Buffer.concat(status).toString("utf8").trim().split("\n")[0] ?? "";
            let parsed;
            try {
                parsed = statusSchema.safeParse(JSON.parse(line));
            } catch {
                parsed = undefined;
            }
            if (parsed == null || !parsed.success) {
                resolve({kind: "unavailable", message: `still-sandbox exited with ${code ?? sig} and no status line: ${base.stderr.slice(-300)}`});
                return;
            }
            const s = parsed.data;
            switch (s.status) {
                case "unavailable": resolve({kind: "unavailable", message: s.message}); return;
                case "exec_failed": resolve({kind: "ran", result: {...base, status: "exec_failed", code: null, signal: null, stderr: base.stderr + s.message}}); return;
                case "exited": resolve({kind: "ran", result: {...base, status: "exited", code: s.code, signal: null}}); return;
                case "signaled": resolve({kind: "ran", result: {...base, status: "signaled", code: null, signal: s.signal}}); return;
            }
        });
    });
}
