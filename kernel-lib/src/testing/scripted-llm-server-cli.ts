#!/usr/bin/env node
/**
 * Runs the scripted LLM server as its own process (for UI tests):
 *   node dist/testing/scripted-llm-server-cli.js --port 8123 --script path/to/script.js
 * script.js sets `module.exports` to an LlmScript (it may require `routeByModel` / `sequence`
 * from this package's dist/testing). Prints `READY <url>` on stdout once listening; stops on
 * SIGINT/SIGTERM.
 */
import * as path from 'path';
import { startScriptedLlmServer, type LlmScript } from './scripted-llm-server';

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const scriptPath = argValue(args, '--script');
  const portArg = argValue(args, '--port');
  if (!scriptPath) throw new Error('usage: scripted-llm-server-cli --script path/to/script.js [--port P]');
  const port = portArg === undefined ? 0 : Number(portArg);
  if (!Number.isInteger(port) || port < 0) throw new Error(`--port ${portArg} is not a port number`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the script is a CommonJS file named at run time
  const loaded = require(path.resolve(scriptPath)) as LlmScript | { default?: LlmScript };
  const script = typeof loaded === 'function' ? loaded : loaded.default;
  if (typeof script !== 'function') throw new Error(`${scriptPath} must set module.exports to a script function`);
  const server = await startScriptedLlmServer(script, { port });
  const stop = () => void server.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.stdout.write(`READY ${server.url}\n`);
}

main().catch(err => {
  process.stderr.write(`scripted-llm-server: ${(err as Error).message}\n`);
  process.exit(1);
});
