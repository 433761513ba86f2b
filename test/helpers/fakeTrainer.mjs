// A stand-in for still-train that prints JSON lines as it does, for the process wrapper's
// tests. FAKE_MODE picks the behaviour: ok, error, hang (until SIGINT), garbage, crash.
const mode = process.env.FAKE_MODE ?? "ok";
const print = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const start = {type: "start", task: "sft", mode: "lora", architecture: "llama", layers: 4, trainable_params: 1000, rank: 8, alpha: 16,
    modules: "q,v", examples: 10, tokens_per_epoch: 500, epochs: 1, steps: 3, warmup_steps: 0, step: 0, resumed: false, checkpoint: "ck.gguf"};
const step = (n) => ({type: "step", step: n, steps: 3, epoch: n / 3, loss: 5 - n, learning_rate: 1e-4, grad_norm: 0.5, tokens: 100,
    tokens_per_s: 1000, elapsed: n, eta: 3 - n});

print(start);
if (mode === "ok") {
    for (let n = 1; n <= 3; n++) print(step(n));
    print({type: "done", step: 3, out: "a.gguf", seconds: 1.5, tokens: 300, peak_rss_mb: 50});
    process.exit(0);
} else if (mode === "error") {
    print(step(1));
    process.stderr.write("load_backend: loaded CPU backend\n");
    process.stderr.write("read_dataset: error: data.bin: record 3: tokens[2] = 999 is not a token of the model\n");
    process.exit(1);
} else if (mode === "garbage") {
    process.stdout.write("this is not json\n");
    process.exit(0);
} else if (mode === "crash") {
    process.stderr.write("something went very wrong\n");
    process.kill(process.pid, "SIGSEGV");
} else if (mode === "hang") {
    let n = 0;
    const timer = setInterval(() => print(step(++n % 3)), 50);
    process.on("SIGINT", () => {
        clearInterval(timer);
        print({type: "checkpoint", step: n, path: "ck.gguf"});
        print({type: "stopped", step: n, checkpoint: "ck.gguf"});
        process.exit(130);
    });
}
