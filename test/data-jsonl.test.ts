// The JSONL reader on malformed input: every bad line is reported by number (and field),
// and nothing else is lost; strict mode stops at the first with a DataError.
import fs from "node:fs";
import path from "node:path";
import {describe, expect, it, vi} from "vitest";
import {z} from "zod";
import {JsonlAppender, readJsonl, readJsonlFile, writeJsonlAtomic, type Row} from "../src/io/jsonl.js";
import {DataError} from "../src/errors.js";
import {scratchFile} from "./helpers/fixtures.js";

const schema = z.object({id: z.number(), text: z.string()});

async function collect<T>(rows: AsyncIterable<Row<T>>): Promise<Row<T>[]> {
    const out: Row<T>[] = [];
    for await (const r of rows) out.push(r);
    return out;
}

const good = (id: number) => JSON.stringify({id, text: `record ${id} ✓`});

describe("readJsonl", () => {
    it("reads records with their line numbers (BOM, CRLF, blank lines, no final newline)", async () => {
        const file = scratchFile("ok.jsonl", `\uFEFF${good(1)}\r\n\n${good(2)}\n   \n${good(3)}`);
        const rows = await collect(readJsonl(file, {schema}));
        expect(rows.map((r) => [r.line, r.value.id])).toEqual([[1, 1], [3, 2], [5, 3]]);
        expect(rows[0]!.value.text).toBe("record 1 ✓");
    });

    it("reports each kind of bad line by number and field, and keeps every good line", async () => {
        const invalidUtf8 = Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x37, 0x2c, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]);
        const huge = JSON.stringify({id: 9, text: "x".repeat(5000)});
        const parts: (string | Buffer)[] = [
            good(1), "{\"id\": 2, \"text\": ", good(3), "{\"id\": \"four\", \"text\": \"t\"}", good(5), "{\"text\": \"no id\"}",
            invalidUtf8, good(8), huge, good(10), "[1, 2, 3]", good(12), "{\"id\": 13, \"text\": \"trailing\"} garbage", good(14)
        ];
        const file = scratchFile("bad.jsonl", Buffer.concat(parts.flatMap((p) => [Buffer.from(p), Buffer.from("\n")])));
        const issues: DataError[] = [];
        const rows = await collect(readJsonl(file, {schema, policy: "skip", maxLineBytes: 1000, onIssue: (i) => issues.push(i)}));
        expect(rows.map((r) => r.value.id)).toEqual([1, 3, 5, 8, 10, 12, 14]);
        expect(rows.map((r) => r.line)).toEqual([1, 3, 5, 8, 10, 12, 14]);
        expect(issues.map((i) => i.line)).toEqual([2, 4, 6, 7, 9, 11, 13]);
        const byLine = new Map(issues.map((i) => [i.line, i]));
        expect(byLine.get(2)!.message).toMatch(/not valid JSON/);
        expect(byLine.get(4)).toMatchObject({field: "id"});
        expect(byLine.get(4)!.message).toMatch(/expected number/);
        expect(byLine.get(6)).toMatchObject({field: "id"});
        expect(byLine.get(6)!.message).toMatch(/missing/);
        expect(byLine.get(7)!.message).toMatch(/invalid UTF-8 \(at byte 16/);
        expect(byLine.get(9)!.message).toMatch(/longer than 1000 bytes/);
        expect(byLine.get(13)!.message).toMatch(/not valid JSON/);
        for (const i of issues) {
            expect(i).toBeInstanceOf(DataError);
            expect(i.file).toBe(file);
            expect(i.message.startsWith(`${file}:${i.line}: `)).toBe(true);
        }
    });

    it("under the strict policy stops at the first bad line with one sentence naming file, line and field", async () => {
        const file = scratchFile("strict.jsonl", [good(1), good(2), "{\"id\": 3, \"text\": 4}", good(4)].join("\n"));
        const seen: number[] = [];
        const run = async () => {
            for await (const r of readJsonl(file, {schema})) seen.push(r.value.id);
        };
        await expect(run()).rejects.toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3: text: .*expected string`));
        expect(seen).toEqual([1, 2]);
    });

    it("finds a bad line after a line longer than the read buffer, and one at the very end", async () => {
        const long = JSON.stringify({id: 2, text: "y".repeat(3 * 1024 * 1024)});
        const file = scratchFile("long.jsonl", [good(1), long, "{oops", good(4), "{\"id\": 5"].join("\n"));
        const issues: DataError[] = [];
        const rows = await collect(readJsonl(file, {schema, policy: "skip", onIssue: (i) => issues.push(i)}));
        expect(rows.map((r) => r.value.id)).toEqual([1, 2, 4]);
        expect(rows[1]!.value.text).toHaveLength(3 * 1024 * 1024);
        expect(issues.map((i) => i.line)).toEqual([3, 5]);
    });

    it("never holds a line over the limit: a 96 MB line costs a fraction of that", async () => {
        const file = scratchFile("huge.jsonl", "");
        const fd = fs.openSync(file, "w");
        fs.writeSync(fd, good(1) + "\n" + "{\"id\": 2, \"text\": \"");
        const block = "z".repeat(1024 * 1024);
        for (let k = 0; k < 96; k++) fs.writeSync(fd, block);
        fs.writeSync(fd, "\"}\n" + good(3) + "\n");
        fs.closeSync(fd);

        // The largest buffer the reader assembles, and the memory in use while it reads.
        const concat = vi.spyOn(Buffer, "concat");
        const before = process.memoryUsage();
        let peak = 0;
        const issues: DataError[] = [];
        const ids: number[] = [];
        try {
            for await (const r of readJsonl(file, {schema, policy: "skip", maxLineBytes: 2 * 1024 * 1024, onIssue: (i) => issues.push(i)})) {
                ids.push(r.value.id);
                const now = process.memoryUsage();
                peak = Math.max(peak, now.heapUsed + now.arrayBuffers - before.heapUsed - before.arrayBuffers);
            }
            const largest = Math.max(0, ...concat.mock.results.map((r) => (r.value as Buffer).length));
            expect(largest).toBeLessThanOrEqual(2 * 1024 * 1024);
        } finally {
            concat.mockRestore();
            fs.rmSync(file);
        }
        expect(ids).toEqual([1, 3]);
        expect(issues.map((i) => [i.line, /longer than/.test(i.message)])).toEqual([[2, true]]);
        // Read buffers that wait for collection count here too; a reader that kept the line would be far above.
        expect(peak).toBeLessThan(48 * 1024 * 1024);
    });

    it("says when the file cannot be read", async () => {
        await expect(collect(readJsonl("/nonexistent/x.jsonl"))).rejects.toThrow(/\/nonexistent\/x\.jsonl: cannot read the file/);
    });

    it("yields plain values without a schema", async () => {
        const file = scratchFile("any.jsonl", "1\n\"two\"\n[3]\n");
        expect((await collect(readJsonl(file))).map((r) => r.value)).toEqual([1, "two", [3]]);
    });
});

describe("JsonlAppender", () => {
    const line = (id: number) => good(id) + "\n";

    it("reads back what is there, drops a last line cut short, and appends after it", async () => {
        const file = scratchFile("append.jsonl", line(1) + line(2) + good(3).slice(0, 9));
        const seen: number[] = [];
        const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
        const out = await JsonlAppender.open(file, schema, {onRow: (r) => seen.push(r.value.id)});
        expect(warn).toHaveBeenCalledWith(expect.stringMatching(/append\.jsonl:3: dropping an incomplete last line \(9 bytes\)/));
        warn.mockRestore();
        await out.append({id: 3, text: "again"});
        await out.close();
        expect(seen).toEqual([1, 2]);
        expect((await readJsonlFile(file, schema)).map((r) => r.id)).toEqual([1, 2, 3]);
    });

    it("ends a whole last record that lost its newline before appending", async () => {
        const file = scratchFile("no-newline.jsonl", line(1) + good(2));
        const out = await JsonlAppender.open(file, schema);
        await out.append({id: 3, text: "c"});
        await out.close();
        expect((await readJsonlFile(file, schema)).map((r) => r.id)).toEqual([1, 2, 3]);
    });

    it("refuses a damaged line that is not the last, and lets the caller refuse a record", async () => {
        const file = scratchFile("middle.jsonl", line(1) + "{oops\n" + line(3));
        await expect(JsonlAppender.open(file, schema)).rejects.toThrow(/middle\.jsonl:2: not valid JSON/);
        const other = scratchFile("refused.jsonl", line(1) + line(2));
        await expect(JsonlAppender.open(other, schema, {onRow: (r) => {
            if (r.value.id === 2) throw new DataError(other, "holds another run's record", r.line, "id");
        }})).rejects.toThrow(/refused\.jsonl:2: id: holds another run's record/);
        expect(fs.readFileSync(other, "utf8")).toBe(line(1) + line(2));
    });

    it("writes whole files atomically, leaving no temporary file", async () => {
        const file = scratchFile("atomic/rows.jsonl", "");
        await writeJsonlAtomic(file, [{id: 1, text: "a"}, {id: 2, text: "b"}]);
        expect((await readJsonlFile(file, schema)).map((r) => r.id)).toEqual([1, 2]);
        expect(fs.readdirSync(path.dirname(file))).toEqual(["rows.jsonl"]);
    });
});
