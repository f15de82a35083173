/**
 * The schemas are one contract for TypeScript and Python: a record written by TypeScript validates in
 * Python (jsonschema, as the trainer uses it) and a record written by Python validates in TypeScript
 * (Ajv), and both reject the same broken record.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { PlannerCall, SdpoExample, StageBundle } from '@nanoresearch/schema';
import { schemaErrors } from '../src/validate';

const root = path.resolve(__dirname, '..', '..');
const python = path.join(root, '.venv', 'bin', 'python');
const schemaDir = path.join(root, 'schema');

/** Validates each JSON file with Python's jsonschema against the named schema; returns error lists. */
function validateInPython(cases: Array<{ schema: string; file: string }>): string[][] {
  const script = `
import json, pathlib, sys
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
schema_dir = pathlib.Path(sys.argv[1])
resources = [Resource.from_contents(json.loads(p.read_text())) for p in schema_dir.glob("*.schema.json")]
registry = Registry().with_resources((r.contents["$id"], r) for r in resources)
out = []
for case in json.loads(sys.argv[2]):
    schema = json.loads((schema_dir / (case["schema"] + ".schema.json")).read_text())
    v = Draft202012Validator(schema, registry=registry, format_checker=FormatChecker())
    out.append([e.message for e in v.iter_errors(json.loads(pathlib.Path(case["file"]).read_text()))])
print(json.dumps(out))
`;
  return JSON.parse(execFileSync(python, ['-c', script, schemaDir, JSON.stringify(cases)], { encoding: 'utf8' }));
}

const plannerCall: PlannerCall = {
  id: 'pc_1',
  stage_run_id: 'sr_1',
  stage: 'planning',
  x: 'Stage: planning\nCandidates: skill blueprint-ablations ...',
  y: '{"selected_skill_ids":["blueprint-ablations"],"selected_memory_ids":[],"prompt_plan":"Add a linear baseline.","update_memory":[],"update_skill":[]}',
  parsed: {
    selected_skill_ids: ['blueprint-ablations'],
    selected_memory_ids: [],
    prompt_plan: 'Add a linear baseline.',
    update_memory: [],
    update_skill: []
  },
  model: 'SmolLM2-135M-Instruct',
  adapter_version: null,
  fallback: null,
  created_at: '2026-11-26T12:00:00.000Z'
};

const example: SdpoExample = {
  id: 'fb_1',
  x: plannerCall.x,
  y: plannerCall.y,
  feedback: 'Always include a linear baseline.',
  stage: 'planning',
  planner_call_id: 'pc_1'
};

const bundle: StageBundle = {
  version: 1,
  stage: 'experiment',
  project_id: 'prj_1',
  stage_run_id: 'sr_2',
  status: 'done',
  title: 'Experiment',
  summary: 'Nearest centroid beats the majority baseline.',
  outputs: { metrics: [{ run: 'centroid', metric: 'accuracy', value: 0.9 }], isolation: ['network: none'] },
  skills_used: [{ id: 'debug-from-traceback', name: 'Debug from a traceback' }],
  memories_used: [],
  usage: { prompt_tokens: 120, completion_tokens: 40, calls: 2, cost_usd: 0, wall_ms: 1500 }
};

describe('schemas shared by TypeScript and Python', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'schema-roundtrip-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('records written by TypeScript validate in Python, and a broken one fails in both', () => {
    const broken = { ...example, y: '' };
    const cases = [
      { schema: 'planner-call', value: plannerCall },
      { schema: 'sdpo-example', value: example },
      { schema: 'stage-bundle', value: bundle },
      { schema: 'sdpo-example', value: broken }
    ].map((c, i) => {
      const file = path.join(dir, `ts-${i}.json`);
      fs.writeFileSync(file, JSON.stringify(c.value));
      return { schema: c.schema, file, value: c.value };
    });
    const pyErrors = validateInPython(cases);
    expect(pyErrors.slice(0, 3)).toEqual([[], [], []]);
    expect(pyErrors[3].length).toBeGreaterThan(0);
    expect(schemaErrors('sdpo-example', broken).length).toBeGreaterThan(0);
    cases.slice(0, 3).forEach(c => expect(schemaErrors(c.schema, c.value)).toEqual([]));
  });

  it('records written by Python validate in TypeScript', () => {
    const file = path.join(dir, 'py-manifest.json');
    const script = `
import json, sys
manifest = {"version": "v1", "base_model": "SmolLM2-135M-Instruct", "data_sha256": "ab" * 32, "examples": 3,
            "steps": 50, "rank": 16, "alpha": 32.0, "loss_type": "token", "final_loss": 0.12,
            "mean_advantage": 0.4, "files": {"peft_dir": "peft", "gguf": "adapter.gguf"},
            "created_at": "2026-11-26T12:00:00Z"}
json.dump(manifest, open(sys.argv[1], "w"))
`;
    execFileSync(python, ['-c', script, file]);
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(schemaErrors('adapter-manifest', manifest)).toEqual([]);
    expect(schemaErrors('adapter-manifest', { ...manifest, rank: 0 })).toEqual(['/rank must be >= 1']);
    expect(validateInPython([{ schema: 'adapter-manifest', file }])).toEqual([[]]);
  });
});
