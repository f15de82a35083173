import { execFileSync } from 'child_process';
import * as path from 'path';
import { main, stageRangeOf } from '../src/cli';

describe('nanoresearch CLI', () => {
  let out = '';
  let err = '';
  beforeEach(() => {
    out = err = '';
    jest.spyOn(process.stdout, 'write').mockImplementation(c => ((out += String(c)), true));
    jest.spyOn(process.stderr, 'write').mockImplementation(c => ((err += String(c)), true));
  });
  afterEach(() => jest.restoreAllMocks());

  test('--help prints usage and exits 0', async () => {
    expect(await main(['--help'])).toBe(0);
    expect(out).toMatch(/Usage: nanoresearch run --topic/);
  });

  test('`npx nanoresearch --help` works from the repository root, resolving the built workspace command, never a registry package', () => {
    const root = path.resolve(__dirname, '../..');
    const help = execFileSync('npx', ['--no-install', 'nanoresearch', '--help'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    expect(help).toMatch(/Usage: nanoresearch run --topic/);
  });

  test('usage errors exit 2 with a clear message', async () => {
    expect(await main(['run'])).toBe(2);
    expect(err).toMatch(/--topic is required/);
    expect(await main(['fly', '--topic', 'x'])).toBe(2);
    expect(err).toMatch(/unknown command 'fly'/);
  });

  test('--stages must name consecutive known stages', () => {
    expect(stageRangeOf('planning,ideation')).toEqual({ from: 'ideation', to: 'planning' });
    expect(stageRangeOf('review')).toEqual({ from: 'review', to: 'review' });
    expect(() => stageRangeOf('ideation,experiment')).toThrow(/consecutive/);
    expect(() => stageRangeOf('ideation,coding')).toThrow(/unknown stage 'coding'/);
  });
});
