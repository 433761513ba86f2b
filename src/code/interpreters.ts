// The interpreters that run checked code: Python 3 and Node.js. Each is found once, as
// the real executable (not a version manager's shim) and the folder it is installed in,
// which the sandbox mounts read-only when it lies outside /usr.
import {execFile} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {promisify} from "node:util";
import {z} from "zod";
import type {CodeLanguage} from "./codeSpec.js";
import {CodeExecutionError} from "./sandbox.js";

export type {CodeLanguage};

export type Interpreter = {language: CodeLanguage, executable: string, readOnly: string[]};

const run = promisify(execFile);
const found = new Map<CodeLanguage, Promise<Interpreter>>();

/** The interpreter for `language` (STILL_PYTHON / STILL_NODE name another). */
export function interpreter(language: CodeLanguage): Promise<Interpreter> {
    let p = found.get(language);
    if (p == null) {
        p = language === "python" ? findPython() : findNode();
        found.set(language, p);
        p.catch(() => found.delete(language));
    }
    return p;
}

function outsideUsr(dirs: string[]): string[] {
    const real = dirs.map((d) => fs.realpathSync(d));
    return [...new Set(real.filter((d) => d !== "/usr" && !d.startsWith("/usr/")))];
}

async function findPython(): Promise<Interpreter> {
    const name = process.env.STILL_PYTHON ?? "python3";
    // our own probe, not model code: where the interpreter really lives
    const probe = "import sys, json; print(json.dumps([sys.executable, sys.base_prefix, sys.prefix]))";
    let out: string;
    try {
        out = (await run(name, ["-c", probe], {timeout: 20_000})).stdout;
    } catch (e) {
        throw new CodeExecutionError(`Python is needed to check Python code, and \`${name} -c …\` failed: ${(e as Error).message.split("\n")[0]}. ` +
            "Possible solutions: install python3, or set STILL_PYTHON to its path.");
    }
    const [executable, basePrefix, prefix] = z.tuple([z.string(), z.string(), z.string()]).parse(JSON.parse(out));
    const exe = fs.realpathSync(executable);
    return {language: "python", executable: exe, readOnly: outsideUsr([basePrefix, prefix, path.dirname(exe)])};
}

async function findNode(): Promise<Interpreter> {
    const exe = fs.realpathSync(process.env.STILL_NODE ?? process.execPath);
    // a Node.js installed by a version manager keeps its libraries beside bin/
    return {language: "javascript", executable: exe, readOnly: outsideUsr([path.dirname(path.dirname(exe))])};
}
