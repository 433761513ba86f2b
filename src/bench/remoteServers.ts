// The remote benchmark's endpoints, in a process of their own: `count` OpenAI-compatible
// completion servers on 127.0.0.1 that answer at once with a short fixed completion. Prints
// their URLs as one JSON line, then serves until its parent goes away.
import http from "node:http";
import type {AddressInfo} from "node:net";

const count = Number(process.argv[2] ?? 64);
const body = JSON.stringify({id: "c", object: "text_completion", choices: [{index: 0, text: "The answer is $\\boxed{4}$.", finish_reason: "stop"}],
    usage: {prompt_tokens: 12, completion_tokens: 9}});
const urls: string[] = [];
for (let i = 0; i < count; i++) {
    const server = http.createServer((req, res) => {
        req.resume();
        req.on("end", () => res.writeHead(200, {"content-type": "application/json", "content-length": Buffer.byteLength(body)}).end(body));
    });
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
}
process.stdout.write(JSON.stringify(urls) + "\n");
process.on("disconnect", () => process.exit(0));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
