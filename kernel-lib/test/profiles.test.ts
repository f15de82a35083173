import { archetypes, getArchetype, profileErrors, renderProfileFor, validateProfile } from '../src/profiles';

describe('profiles', () => {
  it('has five valid archetypes with distinct preferences', () => {
    expect(Object.keys(archetypes).sort()).toEqual(['ablation-focused', 'dataset-driven', 'evidence-first', 'exploratory', 'resource-constrained']);
    for (const p of Object.values(archetypes)) expect(profileErrors(p)).toEqual([]);
    const signatures = Object.values(archetypes).map(p =>
      JSON.stringify([p.research.novelty_vs_rigor, p.research.ablation_depth, p.research.evidence_standard, p.resources.cpu_only, p.resources.gpu_hours])
    );
    expect(new Set(signatures).size).toBe(5);
    expect(archetypes['resource-constrained'].resources.cpu_only).toBe(true);
    expect(archetypes['ablation-focused'].research.ablation_depth).toBe('exhaustive');
    expect(archetypes['evidence-first'].research.evidence_standard).toBe('statistical-tests');
  });

  it('getArchetype returns a copy and names the choices on an unknown name', () => {
    const p = getArchetype('exploratory');
    p.name = 'changed';
    expect(archetypes.exploratory.name).not.toBe('changed');
    expect(() => getArchetype('bold')).toThrow(
      /Unknown profile archetype "bold"; choose one of: ablation-focused, evidence-first, exploratory, resource-constrained, dataset-driven/
    );
  });

  it('validateProfile rejects an invalid profile with the schema errors', () => {
    const bad = { ...getArchetype('exploratory'), research: { ablation_depth: 'some' } };
    expect(() => validateProfile(bad)).toThrow(/Invalid profile: .*ablation_depth/);
    expect(() => validateProfile({ id: 'x' })).toThrow(/name/);
  });

  it('renders only what each stage needs', () => {
    const p = archetypes['resource-constrained'];
    const planning = renderProfileFor('planning', p);
    expect(planning).toMatch(/compute: CPU only/);
    expect(planning).toMatch(/ablation depth: key-components/);
    expect(planning).toMatch(/evidence standard: multiple-seeds/);
    expect(planning).not.toMatch(/style|venues/);
    const writing = renderProfileFor('writing', p);
    expect(writing).toMatch(/target venues: TMLR, workshop/);
    expect(writing).toMatch(/format: markdown/);
    expect(writing).not.toMatch(/ablation depth|compute:|evidence standard/);
    const ideation = renderProfileFor('ideation', archetypes.exploratory);
    expect(ideation).toMatch(/domains: natural language processing, multimodal learning/);
    expect(ideation).toMatch(/novelty vs rigour: novelty/);
    expect(ideation).not.toMatch(/GPU hours|venues/);
    for (const stage of ['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review'] as const) {
      expect(renderProfileFor(stage, archetypes['evidence-first']).length).toBeLessThan(600);
    }
  });
});
