// Writes the pre-tokenized input of still-train (layout in native/trainer/data.h):
// a 32-byte header, then one record per SFT example, DPO pair or policy sample. Written
// atomically, so a trainer never reads half a file.
import {StillError} from "../errors.js";
import {AtomicFile} from "../io/atomicFile.js";

export type SftRecord = {tokens: readonly number[], weights: readonly number[]};
export type DpoRecord = {
    prompt: readonly number[],
    chosen: readonly number[], chosenWeights: readonly number[], chosenSftWeights: readonly number[],
    rejected: readonly number[], rejectedWeights: readonly number[]
};

/** One sampled completion for online RL: its prompt, completion, reward and group (the samples of one prompt). */
export type PolicyRecord = {
    prompt: readonly number[], completion: readonly number[], reward: number, group: number,
    /** The sampler's log p of each completion token (NaN where unknown). */
    samplerLogprobs: readonly number[]
};

const KIND = {sft: 1, dpo: 2, policy: 3} as const;

export class TrainingFile {
    private records = 0;
    private offset = 32;
    private pending: Buffer[] = [];
    private pendingBytes = 0;

    private constructor(private readonly file: AtomicFile, readonly kind: keyof typeof KIND, private readonly vocabSize: number) {}

    static async create(path: string, kind: keyof typeof KIND, vocabSize: number): Promise<TrainingFile> {
        return new TrainingFile(await AtomicFile.open(path), kind, vocabSize);
    }

    get path() {
        return this.file.path;
    }

    get count() {
        return this.records;
    }

    async addSft(r: SftRecord) {
        this.expect("sft");
        checkSame(r.tokens, r.weights, "weights");
        this.push(u32(r.tokens.length), i32s(r.tokens), f32s(r.weights));
        await this.maybeFlush();
    }

    async addDpo(r: DpoRecord) {
        this.expect("dpo");
        checkSame(r.chosen, r.chosenWeights, "chosen weights");
        checkSame(r.chosen, r.chosenSftWeights, "chosen SFT weights");
        checkSame(r.rejected, r.rejectedWeights, "rejected weights");
        this.push(u32(r.prompt.length), u32(r.chosen.length), u32(r.rejected.length), i32s(r.prompt),
            i32s(r.chosen), f32s(r.chosenWeights), f32s(r.chosenSftWeights), i32s(r.rejected), f32s(r.rejectedWeights));
        await this.maybeFlush();
    }

    async addPolicy(r: PolicyRecord) {
        this.expect("policy");
        checkSame(r.completion, r.samplerLogprobs, "sampler log-probs");
        if (r.prompt.length === 0 || r.completion.length === 0)
            throw new StillError(`a policy sample needs a prompt and a completion (${r.prompt.length} and ${r.completion.length} tokens).`);
        if (!Number.isFinite(r.reward)) throw new StillError(`a policy sample's reward must be finite, not ${r.reward}.`);
        const tail = Buffer.alloc(8);
        tail.writeFloatLE(r.reward, 0);
        tail.writeUInt32LE(r.group, 4);
        this.push(u32(r.prompt.length), u32(r.completion.length), i32s(r.prompt), i32s(r.completion), tail, f32s(r.samplerLogprobs));
        await this.maybeFlush();
    }

    private expect(kind: keyof typeof KIND) {
        if (this.kind !== kind) throw new StillError(`a ${kind} record cannot go into a ${this.kind} training file.`);
    }

    /** Writes the header and moves the file into place. */
    async close() {
        await this.flush();
        const header = Buffer.alloc(32);
        header.write("STILLTRN", 0, "latin1");
        header.writeUInt32LE(1, 8);
        header.writeUInt32LE(KIND[this.kind], 12);
        header.writeUInt32LE(this.vocabSize, 16);
        header.writeUInt32LE(0, 20);
        header.writeBigUInt64LE(BigInt(this.records), 24);
        await this.file.handle.write(header, 0, 32, 0);
        await this.file.commit();
    }

    /** Closes and removes the temporary file (after an error). */
    async discard() {
        await this.file.discard();
    }

    private push(...parts: Buffer[]) {
        for (const p of parts) {
            this.pending.push(p);
            this.pendingBytes += p.length;
        }
        this.records++;
    }

    private async maybeFlush() {
        if (this.pendingBytes >= 1 << 22) await this.flush();
    }

    private async flush() {
        if (this.pendingBytes === 0) return;
        const buf = Buffer.concat(this.pending, this.pendingBytes);
        await this.file.handle.write(buf, 0, buf.length, this.offset);
        this.offset += buf.length;
        this.pending = [];
        this.pendingBytes = 0;
    }
}

function checkSame(tokens: readonly number[], weights: readonly number[], what: string) {
    if (tokens.length !== weights.length)
        throw new StillError(`a training record has ${tokens.length} tokens but ${weights.length} ${what}.`);
}

function u32(v: number) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
}

function i32s(a: readonly number[]) {
    const b = Buffer.alloc(4 * a.length);
    for (let i = 0; i < a.length; i++) b.writeInt32LE(a[i]!, 4 * i);
    return b;
}

function f32s(a: readonly number[]) {
    const b = Buffer.alloc(4 * a.length);
    for (let i = 0; i < a.length; i++) b.writeFloatLE(a[i]!, 4 * i);
    return b;
}
