#!/usr/bin/env node
// The `still` command line.
import {Command, CommanderError} from "commander";
import {StillError} from "../errors.js";
import {adapterCommand} from "./adapterCommand.js";
import {evalCommand} from "./evalCommand.js";
import {exportCommand} from "./exportCommand.js";
import {generateCommand} from "./generateCommand.js";
import {gradeCommand} from "./gradeCommand.js";
import {infoCommand} from "./infoCommand.js";
import {makeModelCommand} from "./makeModelCommand.js";
import {runCommand} from "./runCommand.js";
import {scoreCommand} from "./scoreCommand.js";
import {trainCommand} from "./trainCommand.js";

const program = new Command("still")
    .description("Run the STILL-2 slow-thinking recipe on GGUF models: imitate, explore, self-improve, evaluate.")
    .version("0.1.0")
    .showHelpAfterError()
    .exitOverride();

// Ctrl-C aborts the running command through this signal; a second Ctrl-C exits at once.
const controller = new AbortController();
process.once("SIGINT", () => {
    process.stderr.write("\nstill: stopping (press Ctrl-C again to exit now)\n");
    controller.abort();
    process.once("SIGINT", () => process.exit(130));
});

infoCommand(program, controller.signal);
makeModelCommand(program, controller.signal);
generateCommand(program, controller.signal);
scoreCommand(program, controller.signal);
trainCommand(program, controller.signal);
gradeCommand(program, controller.signal);
runCommand(program, controller.signal);
evalCommand(program, controller.signal);
exportCommand(program, controller.signal);
adapterCommand(program, controller.signal);

try {
    await program.parseAsync(process.argv);
} catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode);
    if (err instanceof StillError) {
        process.stderr.write(`still: error: ${err.message}\n`);
        process.exit(controller.signal.aborted ? 130 : 1);
    }
    throw err;
}
