// The demo task's data files for loop tests: held-out problems, problems to explore and
// teacher thoughts for imitation, from one seeded draw split in that order.
import fs from "node:fs";
import path from "node:path";
import {demoProblems, teacherResponse} from "../../src/demo/demoTask.js";
import {rng} from "../../src/loop/seeded.js";

/** Writes heldout.jsonl, problems.jsonl and thoughts.jsonl into `dir` (`count` problems drawn, the first `heldout`, the next `explore`, the rest thoughts). */
export function writeDemoData(dir: string, o: {count: number, heldout: number, explore: number}) {
    fs.mkdirSync(dir, {recursive: true});
    const problems = demoProblems(11, o.count);
    const teacher = rng(4);
    const line = (p: (typeof problems)[number]) => JSON.stringify({id: p.id, problem: p.question, answer: p.answer});
    const split = o.heldout + o.explore;
    fs.writeFileSync(path.join(dir, "heldout.jsonl"), problems.slice(0, o.heldout).map(line).join("\n") + "\n");
    fs.writeFileSync(path.join(dir, "problems.jsonl"), problems.slice(o.heldout, split).map(line).join("\n") + "\n");
    fs.writeFileSync(path.join(dir, "thoughts.jsonl"), problems.slice(split).map((p) =>
        JSON.stringify({question: p.question, response: teacherResponse(p, teacher), domain: "math", source: "test"})).join("\n") + "\n");
}
