// Containment: hostile programs, each graded as a failure with its reason, with the test
// process and the machine unharmed and nothing left running or on disk afterwards.
// (Loopback only: the one server here listens on 127.0.0.1 and stops with the test.)
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {afterAll, describe, expect, it} from "vitest";
import type {CodeSpec} from "../src/code/codeSpec.js";
import {detectIsolation, runSandboxed} from "../src/code/sandbox.js";
import {CodeVerifier} from "../src/code/verifyCode.js";
import {interpreter} from "../src/code/interpreters.js";

const isolation = await detectIsolation();
const work = fs.mkdtempSync(path.join(os.tmpdir(), "still-sandbox-test-"));
const runs = path.join(work, "runs");
fs.mkdirSync(runs);
const verifier = new CodeVerifier({concurrency: 2, testTimeoutMs: 4000, tmpDir: runs, limits: {cpuSeconds: 2}});
// the program should print "ok"; whatever it does instead is graded
const expectOk: CodeSpec = {language: "python", tests: [{input: "", output: "ok"}]};
const expectOkJs: CodeSpec = {language: "javascript", tests: [{input: "", output: "ok"}]};

afterAll(() => fs.rmSync(work, {recursive: true, force: true}));

/** Processes whose command line holds `marker` (none may outlive a run). */
function running(marker: string): string[] {
    const out = execFileSync("ps", ["-eo", "pid,args"], {encoding: "utf8"});
    return out.split("\n").filter((l) => l.includes(marker) && !l.includes("ps -eo"));
}

/** As root the program runs as nobody: none of nobody's processes may outlive a run. */
function nobodys(): string[] {
    if (process.getuid?.() !== 0) return [];
    const out = execFileSync("ps", ["-eo", "uid=,pid=,args="], {encoding: "utf8"});
    return out.split("\n").filter((l) => l.trim().split(/\s+/)[0] === "65534");
}

async function check(code: string, spec: CodeSpec = expectOk) {
    const r = await verifier.verify(code, spec);
    // nothing of the run is left on disk
    expect(fs.readdirSync(runs)).toEqual([]);
    return r;
}

describe.skipIf(isolation.kind !== "namespaces")("the sandbox contains", () => {
    it("an infinite loop (CPU limit)", async () => {
        const r = await check("while True:\n    pass\n");
        expect(r.status).toBe("timeout");
        expect(r.message).toMatch(/test 1 of 1: (the CPU time limit ran out|no result within)/);
    }, 30_000);

    it("sleeping past the wall limit", async () => {
        const started = performance.now();
        const r = await check("import time\ntime.sleep(60)\nprint('ok')\n");
        expect(r.status).toBe("timeout");
        expect(r.message).toMatch(/no result within 4\.0 s/);
        expect(performance.now() - started).toBeLessThan(15_000);
    }, 30_000);

    it("a fork bomb", async () => {
        const r = await check("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n");
        expect(r.status === "timeout" || r.status === "crashed").toBe(true);
        expect(nobodys()).toEqual([]);
        // the machine can still start processes
        expect(execFileSync("true").length).toBe(0);
    }, 30_000);

    it("allocating 10 GB, in Python and in JavaScript", async () => {
        const py = await check("x = bytearray(10 * 1024 ** 3)\nprint('ok')\n");
        expect(py.status).toBe("crashed");
        expect(py.message).toMatch(/MemoryError|exit status|killed/);
        const js = await check("const kept = [];\nfor (let i = 0; i < 80; i++) kept.push(new Float64Array(1 << 24).fill(i));\nconsole.log('ok');\n", expectOkJs);
        expect(js.status).toBe("crashed");
        expect(js.message).toMatch(/allocation failed|out of memory|killed|exit status/i);
    }, 30_000);

    it("writing a 5 GB file", async () => {
        const r = await check("chunk = b'x' * (1 << 20)\nwith open('/tmp/big', 'wb') as f:\n    for _ in range(5 * 1024):\n        f.write(chunk)\nprint('ok')\n");
        expect(r.status).toBe("crashed");
        expect(r.message).toMatch(/File too large|No space left|file size limit|exit status/);
    }, 30_000);

    it("connecting to a port this test listens on at 127.0.0.1: no network at all", async () => {
        let connections = 0;
        const server = net.createServer((s) => {
            connections++;
            s.end("ok\n");
        });
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        const port = (server.address() as net.AddressInfo).port;
        try {
            const r = await check(`import socket\ns = socket.create_connection(("127.0.0.1", ${port}), timeout=2)\nprint(s.recv(10).decode().strip())\n`);
            expect(r.status).toBe("crashed");
            expect(r.message).toMatch(/Network is unreachable|OSError|exit status/);
            const js = await check(`require("net").connect(${port}, "127.0.0.1").on("data", (d) => process.stdout.write(d));\n`, expectOkJs);
            expect(js.status).not.toBe("passed");
            expect(connections).toBe(0);
        } finally {
            server.close();
        }
    }, 30_000);

    it("reading a file outside the sandbox", async () => {
        const marker = path.join(work, "secret.txt");
        fs.writeFileSync(marker, "ok\n");
        fs.chmodSync(marker, 0o644);
        const r = await check(`print(open(${JSON.stringify(marker)}).read().strip())\n`);
        expect(r.status).toBe("crashed");
        expect(r.message).toMatch(/FileNotFoundError|No such file/);
        const home = await check(`import os\nprint(os.listdir(${JSON.stringify(os.homedir())}))\n`);
        expect(home.status).not.toBe("passed");
    }, 30_000);

    it("deleting files outside it", async () => {
        const marker = path.join(work, "keep.txt");
        fs.writeFileSync(marker, "keep");
        const r = await check(`import os, shutil\nfor p in [${JSON.stringify(marker)}, ${JSON.stringify(work)}]:\n    shutil.rmtree(p, ignore_errors=True)\n    try: os.remove(p)\n    except OSError: pass\nshutil.rmtree("/usr", ignore_errors=True)\nprint("ok")\n`);
        // it may print ok: it deleted nothing
        expect(r.isolation).toBe("namespaces");
        expect(fs.readFileSync(marker, "utf8")).toBe("keep");
        expect(fs.existsSync("/usr/bin/env")).toBe(true);
    }, 30_000);

    it("sending a signal to its parent, and to every process it can", async () => {
        const r = await check("import os, signal\nfor pid in (os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\nprint('ok')\n");
        // the test process is alive to see the verdict, whatever it is
        expect(["passed", "crashed", "failed"]).toContain(r.status);
        expect(process.kill(process.pid, 0)).toBe(true);
    }, 30_000);

    it("printing 1 GB to standard output", async () => {
        const r = await check("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(1024 * 1024):\n    sys.stdout.write(line)\n");
        expect(r.status).toBe("crashed");
        expect(r.message).toMatch(/more than the output limit/);
    }, 60_000);

    it("a detached daemon that would outlive the run", async () => {
        const marker = `${300 + (process.pid % 1000)}`;
        const r = await check(`import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv("/bin/sleep", ["/bin/sleep", "${marker}"])\n    os._exit(0)\ntime.sleep(0.3)\nprint("ok")\n`);
        expect(r.status).toBe("passed");
        // the daemon went with the sandbox's PID namespace
        expect(running(`sleep ${marker}`)).toEqual([]);
        expect(nobodys()).toEqual([]);
    }, 30_000);

    it("gives the program no secret of ours, no root, and read-only code and system folders", async () => {
        process.env.STILL_SANDBOX_SECRET = "do-not-leak";
        try {
            const python = await interpreter("python");
            const r = await runSandboxed({
                argv: [python.executable, "-I", "/code/probe.py"], readOnly: python.readOnly, tmpDir: runs, files: {
                    "probe.py": "import os, json\nout = {'env': dict(os.environ), 'uid': os.getuid()}\n" +
                        "for p in ['/code/x', '/usr/x', '/x']:\n    try:\n        open(p, 'w')\n        out[p] = 'written'\n    except OSError as e:\n        out[p] = e.strerror\n" +
                        "print(json.dumps(out))\n"
                }
            });
            expect(r.status).toBe("exited");
            const out = JSON.parse(r.stdout) as {env: Record<string, string>, uid: number} & Record<string, unknown>;
            expect(JSON.stringify(out.env)).not.toContain("do-not-leak");
            expect(out.env.HOME).toBe("/tmp");
            expect(out.uid).not.toBe(0);
            for (const p of ["/code/x", "/usr/x", "/x"]) expect(out[p]).not.toBe("written");
        } finally {
            delete process.env.STILL_SANDBOX_SECRET;
        }
        expect(fs.readdirSync(runs)).toEqual([]);
    }, 30_000);
});
