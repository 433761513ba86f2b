// llama.cpp's own llama-perplexity, for tests that compare against it.
import {execa} from "execa";
import {llamaTool, toolCwd} from "../../src/bench/llamaTools.js";
import {getBackend} from "../../src/engine/binding.js";

/** llama-perplexity's final PPL for a model and text file (built on first use); throws with its output when it gives none. */
export async function llamaPerplexity(model: string, textFile: string, args: string[]): Promise<number> {
    const tool = await llamaTool("llama-perplexity", getBackend().variant, () => {});
    const res = await execa(tool.binary, ["-m", model, "-f", textFile, ...args], {cwd: toolCwd(tool.variant), all: true, reject: false});
    const all = res.all ?? "";
    const m = /Final estimate: PPL = ([\d.]+)/.exec(all);
    if (m != null) return Number(m[1]);
    // Its log is written by a thread of its own, whose last lines a loaded machine can lose at
    // exit; the running estimate after the last chunk is the final one.
    const chunks = /calculating perplexity over (\d+) chunks/.exec(all)?.[1];
    const last = chunks == null ? null : new RegExp(`\\[${chunks}\\]([\\d.]+)`).exec(all);
    if (res.exitCode === 0 && last != null) return Number(last[1]);
    throw new Error(`llama-perplexity (exit ${res.exitCode}) gave no estimate:\n${all.slice(-2000)}`);
}
