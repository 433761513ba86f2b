// Files that readers see whole or not at all: written under a temporary name in the same
// folder, then renamed into place. A killed writer leaves the old file (or none) and a
// temporary file that the next writer of the same path replaces.
import fs from "node:fs/promises";
import path from "node:path";

export class AtomicFile {
    private constructor(readonly path: string, private readonly tmp: string, readonly handle: fs.FileHandle) {}

    /** Opens a temporary file beside `file` for writing. */
    static async open(file: string): Promise<AtomicFile> {
        await fs.mkdir(path.dirname(path.resolve(file)), {recursive: true});
        const tmp = `${file}.tmp-${process.pid}`;
        return new AtomicFile(file, tmp, await fs.open(tmp, "w"));
    }

    /** Closes the temporary file and renames it to its final name. */
    async commit() {
        await this.handle.close();
        await fs.rename(this.tmp, this.path);
    }

    /** Closes and removes the temporary file (after an error). */
    async discard() {
        await this.handle.close().catch(() => {});
        await fs.rm(this.tmp, {force: true});
    }
}

/** Writes `data` to `file` atomically. */
export async function writeFileAtomic(file: string, data: string | Uint8Array) {
    const out = await AtomicFile.open(file);
    try {
        await out.handle.writeFile(data);
    } catch (err) {
        await out.discard();
        throw err;
    }
    await out.commit();
}
