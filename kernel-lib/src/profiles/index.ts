/**
 * Researcher profiles: five archetypes as complete Profile records, validation against
 * schema/profile.schema.json, and per-stage rendering that passes each stage only the
 * preferences it acts on (short prompts; nothing a stage cannot use).
 */
import type { Profile } from '@nanoresearch/schema';
import type { StageName } from '../stage-contract';
import { schemaErrors } from '../validate';

export type ArchetypeName = Exclude<NonNullable<Profile['archetype']>, 'custom'>;

const CREATED = '2026-01-01T00:00:00.000Z';

function archetype(name: ArchetypeName, body: Omit<Profile, 'id' | 'name' | 'archetype' | 'created_at' | 'updated_at'> & { name: string }): Profile {
  return { id: `profile-${name}`, archetype: name, created_at: CREATED, updated_at: CREATED, ...body };
}

/** The five seed archetypes, keyed by name. */
export const archetypes: Readonly<Record<ArchetypeName, Profile>> = {
  'ablation-focused': archetype('ablation-focused', {
    name: 'Ablation-focused conference researcher',
    research: {
      domains: ['machine learning', 'representation learning'],
      methodology: 'Small, removable method components, each justified by a direct counterfactual ablation.',
      novelty_vs_rigor: 'balanced',
      ablation_depth: 'exhaustive',
      evidence_standard: 'multiple-seeds',
      preferred_datasets: ['UCI HAR', 'CIFAR-10'],
      avoided_methods: ['unablatable end-to-end pipelines']
    },
    resources: { gpu_hours: 24, cpu_only: false, max_experiment_minutes: 60, max_llm_cost_usd: 5, max_tokens_per_run: 400000, memory_gb: 32 },
    writing: {
      style: 'Concise conference prose; every component gets its own ablation row.',
      length: 'standard',
      format: 'latex',
      citation_style: 'natbib author-year'
    },
    publication: { target_venues: ['NeurIPS', 'ICLR'], open_access: true },
    interaction: { verbosity: 'normal', autonomy: 'checkpoints', feedback_style: 'Point at the missing ablation or baseline.' },
    notes: 'A method that cannot be removed cleanly for an ablation is not worth proposing.'
  }),
  'evidence-first': archetype('evidence-first', {
    name: 'Evidence-first journal researcher',
    research: {
      domains: ['AI for science', 'time-series'],
      methodology: 'Conservative methods with scientific plausibility; claims only as strong as the statistics allow.',
      novelty_vs_rigor: 'rigor',
      ablation_depth: 'key-components',
      evidence_standard: 'statistical-tests',
      preferred_datasets: [],
      avoided_methods: ['leaderboard-only tuning']
    },
    resources: { gpu_hours: 40, cpu_only: false, max_experiment_minutes: 120, max_llm_cost_usd: 10, max_tokens_per_run: 600000, memory_gb: 64 },
    writing: {
      style: 'Restrained, evidence-first academic tone; every claim traceable to a table.',
      length: 'long',
      format: 'latex',
      citation_style: 'numeric'
    },
    publication: { target_venues: ['Nature Machine Intelligence', 'JMLR'], open_access: true },
    interaction: { verbosity: 'detailed', autonomy: 'ask-often', feedback_style: 'Flags claims that outrun the evidence.' },
    notes: 'Unacceptable: a reported improvement inside the seed variance.'
  }),
  exploratory: archetype('exploratory', {
    name: 'High-novelty exploratory researcher',
    research: {
      domains: ['natural language processing', 'multimodal learning'],
      methodology: 'Bold ideas with a named mechanism, as long as the evaluation plan stays falsifiable.',
      novelty_vs_rigor: 'novelty',
      ablation_depth: 'key-components',
      evidence_standard: 'exploratory',
      preferred_datasets: [],
      avoided_methods: ['incremental hyperparameter tweaks']
    },
    resources: { gpu_hours: 80, cpu_only: false, max_experiment_minutes: 180, max_llm_cost_usd: 15, max_tokens_per_run: 800000, memory_gb: 80 },
    writing: {
      style: 'Vivid framing around the mechanism; breadth of comparison over depth.',
      length: 'standard',
      format: 'both',
      citation_style: 'natbib author-year'
    },
    publication: { target_venues: ['NeurIPS', 'ACL'], open_access: true },
    interaction: { verbosity: 'normal', autonomy: 'autonomous', feedback_style: 'Pushes for more surprising directions.' },
    notes: 'Prefers a risky idea with a clear test over a safe incremental one.'
  }),
  'resource-constrained': archetype('resource-constrained', {
    name: 'Resource-constrained pragmatic researcher',
    research: {
      domains: ['tabular learning', 'efficient machine learning'],
      methodology: 'Low-risk incremental methods that run end to end on a laptop CPU.',
      novelty_vs_rigor: 'balanced',
      ablation_depth: 'key-components',
      evidence_standard: 'multiple-seeds',
      preferred_datasets: ['Adult', 'Covertype'],
      avoided_methods: ['large pretrained models', 'multi-GPU training']
    },
    resources: { gpu_hours: 0, cpu_only: true, max_experiment_minutes: 15, max_llm_cost_usd: 1, max_tokens_per_run: 150000, memory_gb: 8 },
    writing: { style: 'Plain and practical; report compute used next to every result.', length: 'short', format: 'markdown', citation_style: 'numeric' },
    publication: { target_venues: ['TMLR', 'workshop'], open_access: true },
    interaction: { verbosity: 'terse', autonomy: 'checkpoints', feedback_style: 'Short notes on cost and feasibility.' },
    notes: 'Anything that needs a GPU is out of scope.'
  }),
  'dataset-driven': archetype('dataset-driven', {
    name: 'Dataset-driven empirical researcher',
    research: {
      domains: ['data-centric machine learning', 'benchmarking'],
      methodology: 'Start from the data: audit splits, label noise and leakage before modelling; many datasets over one.',
      novelty_vs_rigor: 'rigor',
      ablation_depth: 'key-components',
      evidence_standard: 'multiple-seeds',
      preferred_datasets: ['OpenML-CC18', 'UCI HAR', 'SpeechCommands V2'],
      avoided_methods: ['single-dataset claims']
    },
    resources: { gpu_hours: 16, cpu_only: false, max_experiment_minutes: 45, max_llm_cost_usd: 5, max_tokens_per_run: 400000, memory_gb: 32 },
    writing: { style: 'Dataset cards and per-dataset tables before aggregate claims.', length: 'standard', format: 'markdown', citation_style: 'numeric' },
    publication: { target_venues: ['NeurIPS Datasets and Benchmarks', 'DMLR'], open_access: true },
    interaction: { verbosity: 'normal', autonomy: 'checkpoints', feedback_style: 'Asks about splits, leakage and dataset coverage.' },
    notes: 'A result on one dataset is an anecdote.'
  })
};

/** The archetype of that name; an unknown name is an error listing the known ones. */
export function getArchetype(name: string): Profile {
  const profile = (archetypes as Record<string, Profile>)[name];
  if (!profile) throw new Error(`Unknown profile archetype "${name}"; choose one of: ${Object.keys(archetypes).join(', ')}`);
  return structuredClone(profile);
}

/** Validation errors of a profile against schema/profile.schema.json (empty when valid). */
export function profileErrors(profile: unknown): string[] {
  return schemaErrors('profile', profile);
}

/** Throws with every schema error unless the profile is valid; returns it typed. */
export function validateProfile(profile: unknown): Profile {
  const errors = profileErrors(profile);
  if (errors.length) throw new Error(`Invalid profile: ${errors.join('; ')}`);
  return profile as Profile;
}

type Line = [label: string, value: unknown];

function lines(entries: Line[]): string {
  return entries
    .filter(([, v]) => v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && v.length === 0))
    .map(([label, v]) => `- ${label}: ${Array.isArray(v) ? v.join(', ') : typeof v === 'boolean' ? (v ? 'yes' : 'no') : String(v)}`)
    .join('\n');
}

function resourceLines(p: Profile): Line[] {
  const r = p.resources;
  return [
    ['compute', r.cpu_only ? 'CPU only' : r.gpu_hours !== undefined ? `${r.gpu_hours} GPU hours` : undefined],
    ['max minutes per experiment', r.max_experiment_minutes],
    ['memory (GB)', r.memory_gb]
  ];
}

/**
 * The profile excerpt a stage needs, as a compact Markdown list: ideation gets domains,
 * methodology and the novelty/rigour balance; planning and experiment get resources,
 * ablation depth and evidence standard; analysis gets the evidence standard; writing gets
 * writing and publication; review gets the evidence standard, writing style and venues.
 */
export function renderProfileFor(stage: StageName, profile: Profile): string {
  const r = profile.research;
  const w = profile.writing;
  let entries: Line[];
  switch (stage) {
    case 'ideation':
      entries = [
        ['domains', r.domains],
        ['methodology', r.methodology],
        ['novelty vs rigour', r.novelty_vs_rigor],
        ['preferred datasets', r.preferred_datasets],
        ['avoid', r.avoided_methods],
        ['compute', profile.resources.cpu_only ? 'CPU only' : undefined]
      ];
      break;
    case 'planning':
      entries = [
        ...resourceLines(profile),
        ['ablation depth', r.ablation_depth],
        ['evidence standard', r.evidence_standard],
        ['preferred datasets', r.preferred_datasets],
        ['avoid', r.avoided_methods]
      ];
      break;
    case 'experiment':
      entries = [...resourceLines(profile), ['evidence standard', r.evidence_standard], ['ablation depth', r.ablation_depth]];
      break;
    case 'analysis':
      entries = [
        ['evidence standard', r.evidence_standard],
        ['novelty vs rigour', r.novelty_vs_rigor]
      ];
      break;
    case 'writing':
      entries = [
        ['style', w.style],
        ['length', w.length],
        ['format', w.format],
        ['citations', w.citation_style],
        ['target venues', profile.publication.target_venues],
        ['open access', profile.publication.open_access]
      ];
      break;
    case 'review':
      entries = [
        ['evidence standard', r.evidence_standard],
        ['style', w.style],
        ['target venues', profile.publication.target_venues],
        ['feedback style', profile.interaction.feedback_style]
      ];
      break;
  }
  const body = lines(entries);
  const notes = profile.notes && (stage === 'ideation' || stage === 'planning' || stage === 'review') ? `\n- researcher's note: ${profile.notes}` : '';
  return `Researcher profile (${profile.name}):\n${body}${notes}`;
}
