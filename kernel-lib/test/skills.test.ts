import fs from 'fs';
import os from 'os';
import path from 'path';
import { Store } from '../src/store';
import { createLlm } from '../src/llm';
import { startScriptedLlmServer, ScriptedLlmServer } from '../src/testing';
import { SAME_SKILL_SIMILARITY, SkillBank, SkillCandidate, parseFrontMatter, parseSkillMd, renderSkillMd, textSimilarity } from '../src/skills';
import { retrieve } from '../src/retrieval';

const BUILTIN_DIR = path.resolve(__dirname, '..', '..', 'skills');
let dir: string;
let store: Store;
let bank: SkillBank;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-skills-'));
  store = await Store.open({ home: dir });
  bank = await SkillBank.open(store, { builtinDir: BUILTIN_DIR });
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const reviews = () =>
  store.read(q => q.all<{ decision: string; reason: string; similarity: number; skill_id: string }>('SELECT * FROM skill_reviews ORDER BY created_at, id'));

describe('built-in skills', () => {
  it('load and parse: nine skills with stages, tags and numbered instructions', async () => {
    const skills = await bank.list();
    expect(skills).toHaveLength(9);
    for (const s of skills) {
      expect(s.source).toBe('builtin');
      expect(s.instructions.length).toBeGreaterThanOrEqual(4);
      expect(s.stages?.length).toBeGreaterThan(0);
      expect(s.when_to_use).toBeTruthy();
    }
    expect((await bank.get('experiment-blueprint'))?.name).toBe('Experiment blueprint with baselines and ablations');
    expect((await bank.list({ stage: 'writing' })).map(s => s.id)).toEqual(['grounded-numbers-writing']);
  });

  it('are distinct from each other under the review gate similarity (none would merge into another)', async () => {
    const skills = await bank.list();
    const text = (s: (typeof skills)[number]) => [s.name, s.description, s.when_to_use, ...s.instructions].join('\n');
    for (const a of skills) for (const b of skills) if (a.id < b.id) expect(textSimilarity(text(a), text(b))).toBeLessThan(SAME_SKILL_SIMILARITY);
  });

  it('sync keeps usage counts and does not duplicate', async () => {
    await bank.markUsed(['novelty-check', 'novelty-check', 'section-review']);
    await bank.markUsed(['novelty-check']);
    expect(await bank.syncBuiltins()).toEqual({ added: 0, updated: 0 });
    expect((await bank.get('novelty-check'))?.usage_count).toBe(2);
    expect((await bank.get('section-review'))?.usage_count).toBe(1);
    expect(await bank.list()).toHaveLength(9);
  });

  it('rejects a malformed SKILL.md with the file and the problem', () => {
    expect(() => parseSkillMd('no front matter', 'x/SKILL.md', 'builtin')).toThrow(/x\/SKILL.md: no YAML front matter/);
    expect(() => parseSkillMd('---\nname: Bad Name\ndescription: d\n---\n## Instructions\n1. a b c\n', 'y/SKILL.md', 'builtin')).toThrow(/lowercase slug/);
    expect(() => parseSkillMd('---\nname: ok\ndescription: d\n---\n## Instructions\nno numbers\n', 'z/SKILL.md', 'builtin')).toThrow(/no numbered items/);
    expect(parseFrontMatter('---\na: "x: y"\nb: [p, "q, r"]\nc:\n  - one\n  - two\nd: 3\n---\nbody').fields).toEqual({
      a: 'x: y',
      b: ['p', 'q, r'],
      c: ['one', 'two'],
      d: 3
    });
  });
});

const seedCandidate: SkillCandidate = {
  name: 'Seed variance reporting',
  description: 'Report results over several random seeds with their spread.',
  when_to_use: 'When experiment results are summarised.',
  instructions: ['Run every configuration with three random seeds.', 'Report the mean and standard deviation across seeds for every metric.'],
  stages: ['analysis'],
  tags: ['seeds']
};

describe('review gate', () => {
  it('adds, merges, revises and discards, logging each decision with reason and similarity', async () => {
    const [added] = await bank.review([seedCandidate], { stage: 'analysis', source: 'distilled' });
    expect(added.decision).toBe('add');
    expect(added.skill?.id).toBe('seed-variance-reporting');

    const [merged] = await bank.review([{ ...seedCandidate, instructions: [...seedCandidate.instructions, 'Plot per-seed curves in the appendix figure.'] }]);
    expect(merged.decision).toBe('merge');
    expect(merged.skill?.version).toBe(2);
    expect(merged.skill?.instructions).toEqual([...seedCandidate.instructions, 'Plot per-seed curves in the appendix figure.']);

    const [duplicate] = await bank.review([seedCandidate]);
    expect(duplicate.decision).toBe('discard');
    expect(duplicate.reason).toMatch(/near-duplicate of "seed-variance-reporting"/);

    const [revised] = await bank.review([
      {
        ...seedCandidate,
        instructions: ['Never run configurations with only three random seeds; use five.', 'Report the mean and standard deviation across seeds.']
      }
    ]);
    expect(revised.decision).toBe('revise');
    expect(revised.reason).toMatch(/contradicts/);
    expect(revised.skill?.version).toBe(3);
    expect(revised.skill?.instructions[0]).toMatch(/^Never run/);

    const [thin] = await bank.review([{ name: 'Care', description: 'Be careful.', instructions: ['Be careful.'] }]);
    expect(thin.decision).toBe('discard');
    expect(thin.reason).toMatch(/too short/);

    const log = await reviews();
    expect(log.map(r => r.decision)).toEqual(['add', 'merge', 'discard', 'revise', 'discard']);
    expect(log.every(r => r.reason.length > 10)).toBe(true);
    expect(log[1].similarity).toBeGreaterThanOrEqual(0.55);
    expect((await bank.get('seed-variance-reporting'))?.version).toBe(3);
  });

  it('revises a skill when a related candidate refines one of its steps', async () => {
    await bank.review([seedCandidate]);
    const [refined] = await bank.review([
      {
        name: 'Uncertainty in result tables',
        description: 'Result tables carry their uncertainty.',
        instructions: ['Report the mean and standard deviation across seeds in each table cell, with the seed count in the caption.']
      }
    ]);
    expect(refined.similarity).toBeGreaterThanOrEqual(0.3);
    expect(refined.similarity).toBeLessThan(0.55);
    expect(refined.decision).toBe('revise');
    expect(refined.reason).toMatch(/refines "seed-variance-reporting"/);
  });

  it('updated and retired skills, usage counts', async () => {
    const updated = await bank.update('novelty-check', {
      instructions: ['Compare the idea with the three closest papers along task, data, method and mechanism.']
    });
    expect(updated.version).toBe(2);
    await bank.retire('novelty-check');
    expect((await bank.list({ status: 'active' })).map(s => s.id)).not.toContain('novelty-check');
    await expect(bank.update('nope', {})).rejects.toThrow(/No skill with id "nope"/);
  });
});

describe('distillation', () => {
  let server: ScriptedLlmServer;
  let answer: string;
  beforeEach(async () => {
    server = await startScriptedLlmServer(() => answer);
  });
  afterEach(async () => server.close());
  const llm = () => createLlm({ provider: 'openai', baseURL: server.url, models: { default: 'judge' }, maxRetries: 0 });

  it('asks the judge for at most 3 candidates and reviews them', async () => {
    answer = JSON.stringify({ skills: [seedCandidate] });
    const outcomes = await bank.distill({ stage: 'analysis', trajectory: 'Ran 3 seeds; reviewer asked for std.', feedback: 'Always report std.', llm: llm() });
    expect(outcomes.map(o => o.decision)).toEqual(['add']);
    expect(outcomes[0].skill?.provenance?.trace_excerpt).toMatch(/Ran 3 seeds/);
    expect(server.requests.at(-1)?.body?.model).toBe('judge');
  });

  it('accepts an empty answer as "nothing learned"', async () => {
    answer = '{"skills": []}';
    expect(await bank.distill({ stage: 'analysis', trajectory: 't', llm: llm() })).toEqual([]);
  });

  it('fails closed on an answer that breaks the schema', async () => {
    answer = JSON.stringify({ skills: [{ name: 'x' }] });
    await expect(bank.distill({ stage: 'analysis', trajectory: 't', llm: llm() })).rejects.toThrow(/distillation for stage analysis failed/);
    expect(await reviews()).toEqual([]);
  });
});

describe('SKILL.md export and import', () => {
  it('round-trips through a folder into a fresh store', async () => {
    await bank.review([seedCandidate], { source: 'distilled' });
    await bank.review([{ ...seedCandidate, instructions: [...seedCandidate.instructions, 'Plot per-seed curves in the appendix figure.'] }]);
    const out = path.join(dir, 'export');
    const files = await bank.exportTo(out);
    expect(files).toHaveLength(10);
    const original = (await bank.get('seed-variance-reporting'))!;
    expect(parseSkillMd(renderSkillMd(original), 'r', 'imported')).toMatchObject({
      id: original.id,
      name: original.name,
      description: original.description,
      when_to_use: original.when_to_use,
      instructions: original.instructions,
      stages: original.stages,
      tags: original.tags,
      version: 2
    });

    const otherHome = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-skills-b-'));
    const other = await Store.open({ home: otherHome });
    try {
      const otherBank = await SkillBank.open(other, { builtinDir: BUILTIN_DIR });
      const outcomes = await otherBank.importFrom(out, 'colleague@example.org');
      expect(outcomes.filter(o => o.decision === 'add').map(o => o.skill?.id)).toEqual(['seed-variance-reporting']);
      expect(outcomes.filter(o => o.decision === 'discard')).toHaveLength(9); // the built-ins it already has
      const imported = (await otherBank.get('seed-variance-reporting'))!;
      expect(imported).toMatchObject({
        name: original.name,
        description: original.description,
        instructions: original.instructions,
        stages: original.stages,
        tags: original.tags,
        version: 2,
        source: 'imported',
        provenance: { origin: 'colleague@example.org' }
      });
    } finally {
      await other.close();
      fs.rmSync(otherHome, { recursive: true, force: true });
    }
  });
});

describe('skill retrieval', () => {
  it('ranks the built-in matching the query and stage first, with usage counted', async () => {
    const r = await retrieve(store, { stage: 'experiment', query: 'traceback out of memory NaN loss in the failed run' });
    expect(r.skills[0].item.id).toBe('debug-failed-run');
    expect(r.skills[0].breakdown.stage).toBe(1);
    await bank.markUsed(['debug-failed-run']);
    const again = await retrieve(store, { stage: 'experiment', query: 'traceback out of memory NaN loss in the failed run' });
    expect(again.skills[0].breakdown.usage).toBeGreaterThan(r.skills[0].breakdown.usage);
  });
});
