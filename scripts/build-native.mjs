// Builds the native addon (one module per llama.cpp variant) with cmake-js.
// Runs at `npm install`; rerun with `npm run build:native` after changing native/ or
// after `npm run build:source`.
import {spawnSync} from "node:child_process";
import os from "node:os";
import path from "node:path";
import {packageDir, projectRoot} from "./llama.mjs";

const started = performance.now();
const cmakeJsDir = packageDir("cmake-js");
if (cmakeJsDir == null) fail("cmake-js is not installed; run `npm install` first.");

const probe = spawnSync("cmake", ["--version"], {encoding: "utf8"});
if (probe.error != null || probe.status !== 0)
    fail("CMake was not found. Possible solutions: install it (Debian/Ubuntu: `apt install cmake`, macOS: `brew install cmake`), then run `npm run build:native`.");

const jobs = String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
const common = ["--directory", projectRoot, "--out", path.join(projectRoot, "build"), "--log-level", "warn"];
for (const step of [["configure"], ["build", "--parallel", jobs]]) {
    const res = spawnSync(process.execPath, [path.join(cmakeJsDir, "bin", "cmake-js"), ...step, ...common], {stdio: "inherit"});
    if (res.status !== 0)
        fail(`cmake-js ${step[0]} failed (exit code ${res.status}). ` +
            "Possible solutions: check that a C++17 compiler is installed, and read the compiler output above.");
}
console.log(`still: native addon built in ${((performance.now() - started) / 1000).toFixed(1)} s`);

function fail(message) {
    console.error(`still: ${message}`);
    process.exit(1);
}
