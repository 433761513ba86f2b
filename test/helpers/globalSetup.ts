// One temporary folder for the whole test run, removed when the run ends. Test files make
// their folders inside it: vitest ends its worker processes with a signal, so a worker's own
// exit handlers do not always run, and folders made straight in the system's temporary
// directory would be left behind (each holds that file's test models).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export default function setup(): () => void {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "still-tests-"));
    process.env.STILL_TEST_TMP = root;
    return () => fs.rmSync(root, {recursive: true, force: true});
}
