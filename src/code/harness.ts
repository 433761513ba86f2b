// The test harnesses for function tests, one per language, run inside the sandbox next to
// the solution. Each reads a random key from its standard input, then runs the solution
// and the tests of /code/spec.json, reporting one JSON line per event (start, pass, fail,
// crash, done) that carries the key. The program's own output goes to standard error, so
// a program that prints a report line, or exits before the tests end, does not pass.
//
// Test kinds: `assert` (a test statement; `assert a == b` is split to report both sides),
// `check` (HumanEval's check(candidate) given the entry point), `call` (the function
// called with JSON arguments, its result compared as JSON: LiveCodeBench's functional
// cases, APPS' call-based ones).

export const PYTHON_HARNESS = String.raw`
import ast, json, os, sys, traceback

def main():
    key = sys.stdin.readline().strip()
    report = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    def emit(**kw):
        kw["key"] = key
        report.write(json.dumps(kw) + "\n")
        report.flush()
    def cut(text, n=300):
        return text if len(text) <= n else text[:n] + "…"
    def show(v):
        try:
            return cut(repr(v))
        except BaseException:
            return "<unprintable>"
    def error_text(e, filename=None, text=None):
        where = ""
        if filename is not None:
            for frame in traceback.extract_tb(e.__traceback__):
                if frame.filename == filename:
                    lines = (text if text is not None else source).splitlines()
                    line = lines[frame.lineno - 1].strip() if frame.lineno and 0 < frame.lineno <= len(lines) else ""
                    where = " at line %d: %s" % (frame.lineno, line)
        text = "%s%s%s" % (type(e).__name__, (": " + str(e)) if str(e) else "", where)
        return cut(text)
    with open("/code/spec.json") as f:
        spec = json.load(f)
    with open("/code/solution.py") as f:
        source = f.read()
    g = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(source, "solution.py", "exec"), g)
        if spec.get("setup"):
            exec(compile(spec["setup"], "setup", "exec"), g)
    except BaseException as e:
        emit(event="crash", message="the solution failed to load: " + error_text(e, "solution.py"))
        return
    def lookup(name):
        if "Solution" in g and isinstance(g["Solution"], type) and hasattr(g["Solution"], name):
            return getattr(g["Solution"](), name)
        if name in g:
            return g[name]
        raise NameError("the solution defines no %s" % name)
    def as_json(v):
        return json.loads(json.dumps(v, default=str))
    for i, t in enumerate(spec["tests"]):
        emit(event="start", test=i)
        try:
            kind = t["kind"]
            if kind == "assert":
                code = t["code"]
                tree = ast.parse(code, filename="test")
                node = tree.body[0] if len(tree.body) == 1 else None
                if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
                        and isinstance(node.test.ops[0], ast.Eq)):
                    left = eval(compile(ast.Expression(node.test.left), "test", "eval"), g)
                    right = eval(compile(ast.Expression(node.test.comparators[0]), "test", "eval"), g)
                    if not (left == right):
                        emit(event="fail", test=i, expected=show(right), got=show(left), message=cut(code.strip()))
                        continue
                else:
                    exec(compile(tree, "test", "exec"), g)
            elif kind == "check":
                exec(compile(t["code"], "check", "exec"), g)
                g["check"](lookup(t["entryPoint"]))
            elif kind == "call":
                got = lookup(t["name"])(*t["args"])
                if as_json(got) != t["expected"]:
                    emit(event="fail", test=i, expected=cut(json.dumps(t["expected"])), got=cut(json.dumps(as_json(got))),
                         message="%s(%s)" % (t["name"], cut(", ".join(json.dumps(a) for a in t["args"]), 200)))
                    continue
        except AssertionError as e:
            emit(event="fail", test=i, message=error_text(e, "check" if t["kind"] == "check" else "test", t.get("code", "")))
            continue
        except BaseException as e:
            emit(event="fail", test=i, message=error_text(e, "solution.py"))
            continue
        emit(event="pass", test=i)
    emit(event="done")

main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)   # threads the program left do not hold the run open
`;

export const JAVASCRIPT_HARNESS = String.raw`
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const util = require("node:util");
const assert = require("node:assert");

const key = fs.readFileSync(0, "utf8").split("\n")[0].trim();
const write = (line) => fs.writeSync(1, line + "\n");
process.stdout.write = process.stderr.write.bind(process.stderr);
const emit = (o) => write(JSON.stringify({...o, key}));
const cut = (s, n = 300) => s.length <= n ? s : s.slice(0, n) + "…";
const show = (v) => { try { return cut(util.inspect(v, {depth: 4, breakLength: Infinity})); } catch { return "<unprintable>"; } };
const errorText = (e) => cut(e instanceof Error ? (e.name + (e.message ? ": " + e.message.split("\n")[0] : "")) : "thrown: " + show(e));

const spec = JSON.parse(fs.readFileSync("/code/spec.json", "utf8"));
const source = fs.readFileSync("/code/solution.js", "utf8");
const module_ = {exports: {}};
Object.assign(globalThis, {assert, require, module: module_, exports: module_.exports});
try {
    vm.runInThisContext(source, {filename: "solution.js"});
    for (const [k, v] of Object.entries(module_.exports ?? {})) if (!(k in globalThis)) globalThis[k] = v;
    if (spec.setup) vm.runInThisContext(spec.setup, {filename: "setup"});
} catch (e) {
    emit({event: "crash", message: "the solution failed to load: " + errorText(e)});
    process.exit(0);
}
const lookup = (name) => {
    let Solution;
    try { Solution = vm.runInThisContext("typeof Solution === 'function' ? Solution : undefined"); } catch { Solution = undefined; }
    if (Solution != null && typeof Solution.prototype?.[name] === "function") { const s = new Solution(); return s[name].bind(s); }
    const f = vm.runInThisContext("typeof " + name + " === 'undefined' ? undefined : " + name);
    if (typeof f !== "function") throw new ReferenceError("the solution defines no " + name);
    return f;
};
const asJson = (v) => JSON.parse(JSON.stringify(v === undefined ? null : v));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

(async () => {
    for (const [i, t] of spec.tests.entries()) {
        emit({event: "start", test: i});
        try {
            if (t.kind === "assert") {
                const r = vm.runInThisContext(t.code, {filename: "test"});
                if (r instanceof Promise) await r;
            } else if (t.kind === "check") {
                vm.runInThisContext(t.code, {filename: "check"});
                const check = vm.runInThisContext("typeof check === 'function' ? check : undefined");
                if (check != null) { const r = check(lookup(t.entryPoint)); if (r instanceof Promise) await r; }
            } else if (t.kind === "call") {
                let got = lookup(t.name)(...t.args);
                if (got instanceof Promise) got = await got;
                if (!same(asJson(got), t.expected)) {
                    emit({event: "fail", test: i, expected: cut(JSON.stringify(t.expected)), got: cut(JSON.stringify(asJson(got))),
                        message: t.name + "(" + cut(t.args.map((a) => JSON.stringify(a)).join(", "), 200) + ")"});
                    continue;
                }
            }
        } catch (e) {
            const fail = {event: "fail", test: i, message: errorText(e)};
            if (e instanceof assert.AssertionError && !(e.actual === false && e.expected === true)) {
                Object.assign(fail, {expected: show(e.expected), got: show(e.actual)});
                if (e.generatedMessage) fail.message = "AssertionError (" + e.operator + "): " + cut(t.code.trim(), 200);
            }
            emit(fail);
            continue;
        }
        emit({event: "pass", test: i});
    }
    emit({event: "done"});
    process.exit(0);
})();
`;
