/**
 * The notebook surface is small on purpose: @nanoresearch/kernel exports Lab, Project, Stage, the
 * set-up cell's LLM configuration and the errors; everything else is @nanoresearch/kernel/internals.
 * A name added to index.ts must be added here, deliberately.
 */
import { readFileSync } from 'fs';
import * as path from 'path';
import * as publicApi from '../src/index';
import * as internals from '../src/internals';
import type { Lab } from '../src/lab';

const PUBLIC_VALUES = [
  'AdapterRejectedError',
  'BudgetExceededError',
  'DEFAULT_ARCHETYPE',
  'Lab',
  'LlmError',
  'LlmOutputError',
  'NotebookImportError',
  'Project',
  'SchemaValidationError',
  'Stage',
  'StoreLockedError',
  'StoreMigrationError',
  'StoreReadOnlyError',
  'StoreRecoveryError',
  'StoreVersionError',
  'TrainingError',
  'llmConfigFromEnv'
];

describe('public API', () => {
  test('the main entry exports the notebook surface and nothing else', () => {
    expect(Object.keys(publicApi).sort()).toEqual([...PUBLIC_VALUES].sort());
    for (const name of PUBLIC_VALUES.filter(n => n.endsWith('Error'))) {
      const ErrorClass = publicApi[name as keyof typeof publicApi] as unknown as new (...args: never[]) => Error;
      expect(ErrorClass.prototype).toBeInstanceOf(Error);
    }
  });

  test('the internals entry has the surface too, and what the CLI, the bridge call and the benches use', () => {
    for (const name of PUBLIC_VALUES) expect(internals[name as keyof typeof internals]).toBe(publicApi[name as keyof typeof publicApi]);
    expect(typeof internals.bridge.respond).toBe('function');
    expect(typeof internals.Store.open).toBe('function');
    expect(typeof internals.Orchestrator).toBe('function');
  });

  test('the package exports exactly the two entries, with their types', () => {
    const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as {
      exports: Record<string, unknown>;
      main: string;
      types: string;
    };
    expect(pkg.exports).toEqual({
      '.': { types: './dist/index.d.ts', default: './dist/index.js' },
      './internals': { types: './dist/internals.d.ts', default: './dist/internals.js' },
      './package.json': './package.json'
    });
    // tslab resolves with Node10 rules, which read main and types, not exports.
    expect([pkg.main, pkg.types]).toEqual(['dist/index.js', 'dist/index.d.ts']);
  });

  // Enforced by the type-check of the tests (tsc -p test/tsconfig.json): the directive fails the build if the access compiles.
  test("a Lab's orchestrator is not part of its type", () => {
    const orchestratorOf = (lab: Lab) =>
      // @ts-expect-error the orchestrator is private: a notebook runs stages through Project
      lab.orchestrator;
    expect(typeof orchestratorOf).toBe('function');
  });
});
