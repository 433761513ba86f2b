// Reading the committed fixtures (tests never read outside the repository).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const fixtures = path.resolve(import.meta.dirname, "../fixtures");
export const repoRoot = path.resolve(import.meta.dirname, "../..");

export function readJsonlFixture<T = Record<string, unknown>>(file: string): T[] {
    return fs.readFileSync(path.resolve(fixtures, file), "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as T);
}

/** Where test files make their temporary folders: the run's own folder (test/helpers/globalSetup.ts, removed when the run ends) under vitest. */
export const testTmpRoot = process.env.STILL_TEST_TMP != null && fs.existsSync(process.env.STILL_TEST_TMP) ? process.env.STILL_TEST_TMP : os.tmpdir();

/** A temporary folder for this test file, removed at exit. */
export const scratch = fs.mkdtempSync(path.join(testTmpRoot, "still-grade-test-"));
process.on("exit", () => fs.rmSync(scratch, {recursive: true, force: true}));

export function scratchFile(name: string, content: string | Uint8Array): string {
    const file = path.join(scratch, name);
    fs.mkdirSync(path.dirname(file), {recursive: true});
    fs.writeFileSync(file, content);
    return file;
}

/** A small seeded generator (LCG) for reproducible sampling. */
export function seeded(seed: number): () => number {
    let s = seed >>> 0;
    return () => {
        s = (Math.imul(s, 1103515245) + 12345) >>> 0;
        return s / 2 ** 32;
    };
}
