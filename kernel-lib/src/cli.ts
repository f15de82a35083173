#!/usr/bin/env node
/**
 * `npx nanoresearch run --topic "…" --profile <archetype>`: runs a project's stages from the
 * shell through the Lab API. Progress lines go to stderr, a summary to stdout; the exit code
 * is non-zero when a stage fails or the arguments are wrong.
 */
import { parseArgs } from 'util';
import { STAGES } from '@nanoresearch/schema';
import { Lab } from './lab';
import { Literature } from './literature';
import type { StageName } from './orchestrator/types';

const HELP = `Usage: nanoresearch run --topic "<research topic>" --profile <archetype> [options]

Runs the research stages (${STAGES.join(', ')}) for a topic, resuming after the last completed stage.

Options:
  --topic TEXT        what to research (required)
  --profile NAME      profile archetype: ablation-focused, evidence-first, exploratory,
                      resource-constrained, dataset-driven (default: the lab's current profile)
  --home DIR          store and workspaces (default $NANORESEARCH_HOME, else .nanoresearch/)
  --stages LIST       comma-separated consecutive stages, e.g. ideation,planning (default: all)
  --corpus FILE       import a BibTeX (.bib) or CSL-JSON (.json) file into the local corpus first
  --restart           start a new run instead of resuming the latest one
  -h, --help          show this help

LLM: NANORESEARCH_LLM_BASE_URL / OPENAI_BASE_URL (+ OPENAI_API_KEY) for an OpenAI-compatible
server, NANORESEARCH_MODEL_<ROLE> per role; otherwise the embedded local model.
Literature: NANORESEARCH_LITERATURE_SOURCES (default openalex,semantic-scholar,arxiv),
NANORESEARCH_CONTACT_EMAIL, SEMANTIC_SCHOLAR_API_KEY.`;

class UsageError extends Error {}

/** The first and last stage of a consecutive list, or a usage error. */
export function stageRangeOf(list: string): { from: StageName; to: StageName } {
  const names = list
    .split(',')
    .map(s => s.trim())
    .filter(Boolean);
  const indexes = names.map(n => {
    const i = (STAGES as readonly string[]).indexOf(n);
    if (i < 0) throw new UsageError(`unknown stage '${n}'; stages are ${STAGES.join(', ')}`);
    return i;
  });
  if (!indexes.length) throw new UsageError('--stages needs at least one stage');
  const sorted = [...indexes].sort((a, b) => a - b);
  if (sorted.some((v, i) => i > 0 && v !== sorted[i - 1] + 1)) {
    throw new UsageError(`--stages must be consecutive (each stage needs the one before it): got ${names.join(',')}`);
  }
  return { from: STAGES[sorted[0]] as StageName, to: STAGES[sorted[sorted.length - 1]] as StageName };
}

export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        topic: { type: 'string' },
        profile: { type: 'string' },
        home: { type: 'string' },
        stages: { type: 'string' },
        corpus: { type: 'string' },
        restart: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' }
      }
    });
  } catch (error) {
    process.stderr.write(`nanoresearch: ${(error as Error).message}\n\n${HELP}\n`);
    return 2;
  }
  const { values, positionals } = args;
  if (values.help || positionals.length === 0) {
    process.stdout.write(`${HELP}\n`);
    return values.help ? 0 : 2;
  }
  try {
    if (positionals[0] !== 'run') throw new UsageError(`unknown command '${positionals[0]}'; the command is 'run'`);
    if (!values.topic?.trim()) throw new UsageError('--topic is required');
    const range = values.stages ? stageRangeOf(values.stages) : {};
    const lab = await Lab.open({ home: values.home, display: null });
    try {
      if (values.corpus) {
        const n = await new Literature({ store: lab.store }).importCorpus(values.corpus);
        process.stderr.write(`imported ${n} papers from ${values.corpus} into the local corpus\n`);
      }
      const project = await lab.project(values.topic, values.profile ? { profile: values.profile } : {});
      process.stderr.write(`project ${project.id} — workspace ${project.workspace}\n`);
      let lastLine = '';
      const stages = await project.run({
        ...range,
        restart: values.restart,
        onProgress: bundle => {
          const p = bundle.progress;
          const line = p ? `[${bundle.stage}] ${p.step}${p.total ? ` (${p.done ?? 0}/${p.total})` : ''}` : `[${bundle.stage}] ${bundle.status}`;
          if (line !== lastLine) process.stderr.write(`${line}\n`);
          lastLine = line;
        }
      });
      const lines = stages.map(
        s => `${s.status === 'done' ? 'ok  ' : 'FAIL'} ${s.stage.padEnd(10)} ${s.status === 'done' ? s.summary : (s.error ?? s.summary)}`
      );
      process.stdout.write(`${lines.join('\n')}\n`);
      const failed = stages.filter(s => s.status !== 'done');
      if (failed.length) {
        process.stderr.write(`nanoresearch: ${failed.map(s => s.stage).join(', ')} failed; fix the cause and run again to resume\n`);
        return 1;
      }
      return 0;
    } finally {
      await lab.close();
    }
  } catch (error) {
    const usage = error instanceof UsageError;
    process.stderr.write(`nanoresearch: ${(error as Error).message}${usage ? '\n\nRun nanoresearch --help for usage.' : ''}\n`);
    return usage ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(code => {
    process.exitCode = code;
  });
}
