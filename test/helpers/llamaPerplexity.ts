// llama.cpp's own llama-perplexity, for tests that compare against it.
import {execa} from "execa";
import {llamaTool, toolCwd} from "../../src/bench/llamaTools.js";
import {getBackend} from "../../src/engine/binding.js";

/** llama-perplexity's final PPL for a model and text file (built on first use); throws with its output when it gives none. */
export async function llamaPerplexity(model: string, textFile: string, args: string[]): Promise<number> {
    const tool = await llamaTool("llama-perplexity", getBackend().variant, () => {});
    const res = await execa(tool.binary, ["-m", model, "-f", textFile, ...args], {cwd: toolCwd(tool.variant), all: true, reject: false});
    const m = /Final estimate: PPL = ([\d.]+)/.exec(res.all ?? "");
    if (m == null) throw new Error(`llama-perplexity (exit ${res.exitCode}) gave no estimate:\n${(res.all ?? "").slice(-2000)}`);
    return Number(m[1]);
}
