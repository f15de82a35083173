/** The stage contract lives in the leaf module ../stage-contract; the orchestrator re-exports it for its callers. */
export type {
  Ablation,
  ArtifactKind,
  ArtifactRecord,
  LearnedMemory,
  ProgressFn,
  StageArtifact,
  StageContext,
  StageFn,
  StageName,
  StageResult,
  StageRunInput,
  StageTable
} from '../stage-contract';
